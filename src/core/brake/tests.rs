//! The brake's rule by table, then the property it exists for: without a release, the
//! failovers admitted within any window never span more hosts than the limit.

use super::*;
use proptest::prelude::*;

const W: Duration = Duration::from_secs(600);

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
}

fn p(content: ContentId, host: &str) -> Proposed {
    Proposed {
        content,
        host: host.into(),
    }
}

fn limits(max: usize) -> Limits {
    Limits {
        max_hosts: Some(max),
        window: W,
    }
}

fn me() -> Writer {
    Writer {
        epoch: 7,
        instance_id: "fts-a".into(),
    }
}

fn admitted(host: &str, at: SystemTime) -> Admitted {
    Admitted {
        host: host.into(),
        content: 0,
        at,
    }
}

fn hosts(h: &[&str]) -> BTreeSet<String> {
    h.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_default_limit_is_half_the_primary_hosts_and_at_least_one() {
    for (primary_hosts, want) in [(0, 1), (1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (16, 8)] {
        assert_eq!(
            HostLimit::Auto.resolve(primary_hosts),
            Some(want),
            "{primary_hosts}"
        );
    }
    assert_eq!(HostLimit::Off.resolve(8), None);
    assert_eq!(HostLimit::Hosts(3).resolve(100), Some(3));
}

#[test]
fn table() {
    struct Case {
        what: &'static str,
        record: BrakeRecord,
        proposed: Vec<Proposed>,
        max: Option<usize>,
        now: SystemTime,
        /// None: proceed; Some(hosts counted): hold.
        want: Option<Vec<&'static str>>,
    }
    let released = |at, h: &[&str]| Release {
        by: "op".into(),
        at,
        reason: "checked".into(),
        hosts: hosts(h),
    };
    let engaged = Engagement {
        at: t(0),
        hosts: hosts(&["a", "b", "c"]),
        limit: 2,
        window: W,
        contents: [0, 1, 2].into(),
        epoch: 7,
        instance_id: "fts-a".into(),
    };
    let cases = vec![
        Case {
            what: "one host, several contents",
            record: BrakeRecord::default(),
            proposed: vec![p(0, "a"), p(1, "a"), p(2, "a")],
            max: Some(1),
            now: t(0),
            want: None,
        },
        Case {
            what: "as many hosts as the limit",
            record: BrakeRecord::default(),
            proposed: vec![p(0, "a"), p(1, "b")],
            max: Some(2),
            now: t(0),
            want: None,
        },
        Case {
            what: "one host more than the limit in one cycle",
            record: BrakeRecord::default(),
            proposed: vec![p(0, "a"), p(1, "b"), p(2, "c")],
            max: Some(2),
            now: t(0),
            want: Some(vec!["a", "b", "c"]),
        },
        Case {
            what: "earlier failovers in the window count",
            record: BrakeRecord {
                admitted: vec![admitted("a", t(0)), admitted("b", t(100))],
                ..Default::default()
            },
            proposed: vec![p(2, "c")],
            max: Some(2),
            now: t(500),
            want: Some(vec!["a", "b", "c"]),
        },
        Case {
            what: "a host already counted adds nothing",
            record: BrakeRecord {
                admitted: vec![admitted("a", t(0)), admitted("b", t(100))],
                ..Default::default()
            },
            proposed: vec![p(2, "b")],
            max: Some(2),
            now: t(500),
            want: None,
        },
        Case {
            what: "failovers older than the window do not count",
            record: BrakeRecord {
                admitted: vec![admitted("a", t(0)), admitted("b", t(100))],
                ..Default::default()
            },
            proposed: vec![p(2, "c")],
            max: Some(2),
            now: t(600),
            want: None,
        },
        Case {
            what: "engaged: even one failover on one host is held",
            record: BrakeRecord {
                engaged: Some(engaged.clone()),
                ..Default::default()
            },
            proposed: vec![p(0, "a")],
            max: Some(2),
            now: t(10_000),
            want: Some(vec!["a", "b", "c"]),
        },
        Case {
            what: "nothing proposed: nothing to hold",
            record: BrakeRecord {
                engaged: Some(engaged.clone()),
                ..Default::default()
            },
            proposed: vec![],
            max: Some(2),
            now: t(0),
            want: None,
        },
        Case {
            what: "off",
            record: BrakeRecord {
                engaged: Some(engaged),
                ..Default::default()
            },
            proposed: vec![p(0, "a"), p(1, "b"), p(2, "c")],
            max: None,
            now: t(0),
            want: None,
        },
        Case {
            what: "released: the released hosts proceed beyond the limit",
            record: BrakeRecord {
                released: Some(released(t(50), &["a", "b", "c"])),
                ..Default::default()
            },
            proposed: vec![p(0, "a"), p(1, "b"), p(2, "c")],
            max: Some(2),
            now: t(60),
            want: None,
        },
        Case {
            what: "released: a release resets the window",
            record: BrakeRecord {
                admitted: vec![admitted("x", t(10)), admitted("y", t(20))],
                released: Some(released(t(50), &[])),
                ..Default::default()
            },
            proposed: vec![p(0, "a"), p(1, "b")],
            max: Some(2),
            now: t(60),
            want: None,
        },
        Case {
            what: "released: other hosts beyond the limit still engage it",
            record: BrakeRecord {
                released: Some(released(t(50), &["a", "b", "c"])),
                ..Default::default()
            },
            proposed: vec![p(0, "a"), p(3, "d"), p(4, "e"), p(5, "f")],
            max: Some(2),
            now: t(60),
            want: Some(vec!["a", "d", "e", "f"]),
        },
        Case {
            what: "released: the exemption lasts one window",
            record: BrakeRecord {
                released: Some(released(t(50), &["a", "b", "c"])),
                ..Default::default()
            },
            proposed: vec![p(0, "a"), p(1, "b"), p(2, "c")],
            max: Some(2),
            now: t(650),
            want: Some(vec!["a", "b", "c"]),
        },
    ];
    for c in cases {
        let lim = Limits {
            max_hosts: c.max,
            window: W,
        };
        let (verdict, next) = judge(&c.record, &c.proposed, lim, c.now, &me());
        match (&verdict, &c.want) {
            (Verdict::Proceed, None) => {
                if !c.proposed.is_empty() && c.max.is_some() {
                    for p in &c.proposed {
                        assert!(
                            next.admitted
                                .iter()
                                .any(|a| a.host == p.host && a.at == c.now),
                            "{}: {p:?} not recorded as admitted",
                            c.what
                        );
                    }
                }
            }
            (Verdict::Hold(h), Some(want)) => {
                assert_eq!(h.hosts, hosts(want), "{}", c.what);
                assert!(next.engaged.is_some(), "{}: engaged in the record", c.what);
                let text = h.to_string();
                assert!(
                    text.starts_with(&format!(
                        "brake engaged: {} hosts in window > limit 2",
                        want.len()
                    )),
                    "{}: {text}",
                    c.what
                );
            }
            _ => panic!("{}: {verdict:?}, want hold on {:?}", c.what, c.want),
        }
    }
}

#[test]
fn engaging_records_who_and_what_and_admits_nothing() {
    let (v, next) = judge(
        &BrakeRecord::default(),
        &[p(0, "a"), p(1, "b"), p(2, "c")],
        limits(2),
        t(5),
        &me(),
    );
    assert!(matches!(v, Verdict::Hold(Held { newly: true, .. })));
    let e = next.engaged.as_ref().unwrap();
    assert_eq!(
        (e.at, e.limit, e.epoch, e.instance_id.as_str()),
        (t(5), 2, 7, "fts-a")
    );
    assert_eq!(e.contents, [0, 1, 2].into());
    assert!(next.admitted.is_empty());
    // the next cycle: still held, not newly
    let (v, again) = judge(&next, &[p(0, "a")], limits(2), t(6), &me());
    assert!(matches!(v, Verdict::Hold(Held { newly: false, .. })));
    assert_eq!(again, next);
}

#[test]
fn a_release_needs_an_engaged_brake_and_records_who_when_why() {
    assert_eq!(
        release(&BrakeRecord::default(), "op", "x", t(0)),
        Err(ReleaseError::NotEngaged)
    );
    let (_, engaged) = judge(
        &BrakeRecord::default(),
        &[p(0, "a"), p(1, "b"), p(2, "c")],
        limits(2),
        t(5),
        &me(),
    );
    let released = release(&engaged, "op@host", "checked the racks", t(9)).unwrap();
    assert!(released.engaged.is_none());
    let r = released.released.as_ref().unwrap();
    assert_eq!(
        (r.by.as_str(), r.at, r.reason.as_str()),
        ("op@host", t(9), "checked the racks")
    );
    // the held failovers, decided again from fresh probes, proceed
    let (v, after) = judge(
        &released,
        &[p(0, "a"), p(1, "b"), p(2, "c")],
        limits(2),
        t(10),
        &me(),
    );
    assert_eq!(v, Verdict::Proceed);
    assert_eq!(after.admitted.len(), 3);
}

#[test]
fn the_record_round_trips_as_json() {
    let (_, engaged) = judge(
        &BrakeRecord::default(),
        &[p(0, "a"), p(1, "b"), p(2, "c")],
        limits(2),
        t(5),
        &me(),
    );
    let text = serde_json::to_vec(&engaged).unwrap();
    assert_eq!(
        serde_json::from_slice::<BrakeRecord>(&text).unwrap(),
        engaged
    );
    assert_eq!(
        serde_json::from_slice::<BrakeRecord>(b"{}").unwrap(),
        BrakeRecord::default()
    );
}

/// One step of a run: a cycle at `dt` seconds after the previous one proposing failovers on
/// `hosts` (host indices), or an operator's release.
#[derive(Debug, Clone)]
enum Step {
    Cycle { dt: u64, hosts: Vec<u8> },
    Release { dt: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u64..400, prop::collection::vec(0u8..8, 0..4))
            .prop_map(|(dt, hosts)| Step::Cycle { dt, hosts }),
        1 => (0u64..400).prop_map(|dt| Step::Release { dt }),
    ]
}

/// Runs the steps through the rule; returns every admission (host, time) and every release
/// (time, hosts exempted).
type Run = (
    Vec<(String, SystemTime)>,
    Vec<(SystemTime, BTreeSet<String>)>,
);

fn run(steps: &[Step], max: usize) -> Run {
    let mut record = BrakeRecord::default();
    let mut now = t(0);
    let mut admissions = Vec::new();
    let mut releases = Vec::new();
    for s in steps {
        match s {
            Step::Cycle { dt, hosts } => {
                now += Duration::from_secs(*dt);
                let proposed: Vec<Proposed> = hosts
                    .iter()
                    .enumerate()
                    .map(|(i, h)| p(i as ContentId, &format!("sdw{h}")))
                    .collect();
                let (v, next) = judge(&record, &proposed, limits(max), now, &me());
                if v == Verdict::Proceed {
                    admissions.extend(proposed.iter().map(|p| (p.host.clone(), now)));
                } else {
                    assert!(next.engaged.is_some(), "a hold leaves the brake engaged");
                }
                record = next;
            }
            Step::Release { dt } => {
                now += Duration::from_secs(*dt);
                if let Ok(next) = release(&record, "op", "checked", now) {
                    releases.push((now, next.released.clone().unwrap().hosts));
                    record = next;
                }
            }
        }
    }
    (admissions, releases)
}

proptest! {
    /// Never more than max_hosts distinct hosts failed over within a window without a release.
    #[test]
    fn without_a_release_no_window_spans_more_hosts_than_the_limit(
        steps in prop::collection::vec(step(), 0..40),
        max in 1usize..4,
    ) {
        let steps: Vec<Step> = steps
            .into_iter()
            .filter(|s| matches!(s, Step::Cycle { .. }))
            .collect();
        let (admissions, _) = run(&steps, max);
        for (_, end) in &admissions {
            let hosts: BTreeSet<&String> = admissions
                .iter()
                .filter(|(_, at)| at <= end && *at + W > *end)
                .map(|(h, _)| h)
                .collect();
            prop_assert!(hosts.len() <= max, "{hosts:?} within the window ending {end:?}");
        }
    }

    /// With releases: within any window, the hosts failed over since the last release, less
    /// those it exempted while its exemption lasts, never exceed the limit.
    #[test]
    fn after_a_release_only_the_released_hosts_go_beyond_the_limit(
        steps in prop::collection::vec(step(), 0..40),
        max in 1usize..4,
    ) {
        let (admissions, releases) = run(&steps, max);
        for (_, end) in &admissions {
            let last = releases.iter().rev().find(|(at, _)| at <= end);
            let since = |at: &SystemTime| {
                *at + W > *end && last.is_none_or(|(r, _)| at >= r)
            };
            let exempt = match last {
                Some((at, h)) if *end < *at + W => h.clone(),
                _ => BTreeSet::new(),
            };
            let hosts: BTreeSet<&String> = admissions
                .iter()
                .filter(|(h, at)| at <= end && since(at) && !exempt.contains(h))
                .map(|(h, _)| h)
                .collect();
            prop_assert!(hosts.len() <= max, "{hosts:?} until {end:?} (exempt {exempt:?})");
        }
    }
}
