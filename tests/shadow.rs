//! Shadow mode (`ftsd run --shadow`) beside a real catalog and `fts-segsim`: next to an acting
//! ftsd it agrees on a kill-primary run and writes nothing; with no one acting, or with a
//! change made behind its back, it reports the divergence.

mod support;

use std::time::Duration;

use fts_segsim::Fault;
use ftsd::model::{Mode, Role, Status};
use support::{addresses, content0_failover, ftsctl, wait_for, System};

const LIMIT: Duration = Duration::from_secs(60);

/// `ftsctl shadow --json` against the shadow: (exit code, document).
fn shadow_report(sys: &System, idx: usize) -> Option<(i32, serde_json::Value)> {
    let (api, _) = addresses(&sys.daemons[idx].config);
    let out = ftsctl(&api, &["--json", "shadow"]);
    let doc = serde_json::from_slice(&out.stdout).ok()?;
    Some((out.status.code().unwrap_or(-1), doc))
}

fn count(doc: &serde_json::Value, verdict: &str) -> u64 {
    doc[verdict].as_u64().unwrap_or(0)
}

fn verdicts(doc: &serde_json::Value) -> Vec<(String, i64, String, String)> {
    doc["recent"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| {
                    (
                        v["verdict"].as_str().unwrap_or_default().to_owned(),
                        v["content"].as_i64().unwrap_or(-9),
                        v["first"].as_str().unwrap_or_default().to_owned(),
                        v["shadow_rule"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn scrape(sys: &System, idx: usize) -> String {
    let (_, metrics) = addresses(&sys.daemons[idx].config);
    ureq::get(&format!("http://{metrics}/metrics"))
        .call()
        .expect("GET /metrics")
        .into_body()
        .read_to_string()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_agrees_with_an_acting_ftsd_on_a_kill_primary_run() {
    let mut sys = System::start(2, Duration::from_millis(500)).await;
    sys.spawn_ftsd("acting", &["--no-election"], "");
    let shadow = sys.spawn_ftsd("shadow", &["--shadow", "--shadow-window", "30s"], "");
    wait_for("the shadow to answer", LIMIT, || async {
        shadow_report(&sys, shadow).map(|_| ())
    })
    .await;

    sys.sim.set_fault(2, Fault::Down).await.unwrap();
    sys.wait_state(4, (Role::Primary, Status::Up, Mode::NotInSync), LIMIT)
        .await;
    let doc = wait_for("the shadow's verdict on content 0", LIMIT, || async {
        let (_, doc) = shadow_report(&sys, shadow)?;
        (count(&doc, "agree") >= 1 && doc["expecting"] == 0 && doc["judging"] == 0).then_some(doc)
    })
    .await;
    // A few more cycles on the failed-over pair: nothing else to judge.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, doc2) = shadow_report(&sys, shadow).unwrap();
    for d in [&doc, &doc2] {
        assert_eq!(count(d, "agree"), 1, "{d:#}\n{}", sys.logs());
        for kind in ["incumbent_only", "shadow_only", "different"] {
            assert_eq!(count(d, kind), 0, "{kind}: {d:#}\n{}", sys.logs());
        }
    }
    assert_eq!(code, 0, "no divergence: exit 0");
    let v = verdicts(&doc2);
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].0.as_str(), v[0].1), ("agree", 0));
    assert!(
        v[0].3 == "failover" || v[0].3 == "failover_unconfirmed",
        "decided as a failover: {v:?}"
    );
    assert!(scrape(&sys, shadow).contains("ftsd_shadow_transitions_total{verdict=\"agree\"} 1"));

    // The acting instance wrote the failover once; the shadow wrote nothing.
    assert_eq!(sys.history().await, content0_failover());
    let evidence = sys.evidence().await;
    assert!(!evidence.is_empty());
    assert!(
        evidence
            .iter()
            .all(|(_, instance, _, _)| instance == "acting"),
        "{evidence:?}"
    );
    assert!(sys.daemons[shadow]
        .log_text()
        .contains("shadow agrees with the incumbent FTS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_reports_the_divergences_it_is_provoked_into() {
    let mut sys = System::start(2, Duration::from_millis(500)).await;
    let shadow = sys.spawn_ftsd("shadow", &["--shadow", "--shadow-window", "4s"], "");
    wait_for("the shadow's first cycle", LIMIT, || async {
        let (_, doc) = shadow_report(&sys, shadow)?;
        Some(doc)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A change the shadow would not make: content 1's healthy mirror marked down behind its
    // back (a stand-in for an incumbent that gets it wrong).
    let client = sys.pg.client().await.unwrap();
    client
        .batch_execute(
            "UPDATE gp_segment_configuration SET mode = 'n' WHERE content = 1; \
             UPDATE gp_segment_configuration SET status = 'd' WHERE dbid = 5;",
        )
        .await
        .unwrap();
    // A change the shadow expects that never comes: content 0's primary dies, nobody acts.
    sys.sim.set_fault(2, Fault::Down).await.unwrap();

    let doc = wait_for("both divergences", LIMIT, || async {
        let (code, doc) = shadow_report(&sys, shadow)?;
        let v = verdicts(&doc);
        let incumbent_only = v
            .iter()
            .any(|x| x.0 == "incumbent_only" && x.1 == 1 && x.2 == "incumbent");
        let missed = v
            .iter()
            .any(|x| x.0 == "shadow_only" && x.1 == 0 && x.3 == "failover");
        (incumbent_only && missed && code == 1).then_some(doc)
    })
    .await;
    assert_eq!(count(&doc, "agree"), 0, "{doc:#}");
    let metrics = scrape(&sys, shadow);
    assert!(metrics.contains("ftsd_shadow_transitions_total{verdict=\"shadow_only\"}"));
    assert!(!metrics.contains("ftsd_shadow_transitions_total{verdict=\"incumbent_only\"} 0"));
    let log = sys.daemons[shadow].log_text();
    assert!(
        log.contains("shadow diverges from the incumbent FTS"),
        "{log}"
    );

    // The shadow acted on neither: no failover, no history, no evidence.
    let p = sys.row(2).await;
    assert_eq!((p.role, p.status), (Role::Primary, Status::Up));
    assert!(sys.history().await.is_empty());
    assert!(sys.evidence().await.is_empty());
}
