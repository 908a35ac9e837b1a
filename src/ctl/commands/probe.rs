//! `ftsctl probe`: asks the leader for a cycle now and shows its per-pair report.

use super::*;

/// `probe`.
pub(super) async fn run(cli: &Cli, ctx: &Ctx, wait: Duration) -> Outcome {
    let mut conn = connect_any(cli).await?;
    let timeout_ms = wait.as_millis() as u64;
    // The call lasts as long as the cycle; the server gives up after `wait`.
    conn.call_timeout = wait + cli.timeout;
    let r = conn
        .mutate(|mut c| async move { c.probe_now(proto::ProbeNowRequest { timeout_ms }).await })
        .await?;
    ctx.emit(&r, || ctx.cycle_text(&r));
    Ok(exit::OK)
}

impl Ctx {
    pub(super) fn cycle_text(&self, r: &proto::CycleReport) -> String {
        let mut out = format!(
            "cycle on {} started {}, took {} ms: {} pairs, {} transitions applied, {} failed, {} messages sent, {} failed{}{}\n\n",
            r.instance_id,
            time_only(r.started_at_ms),
            r.duration_ms,
            r.pairs,
            r.transitions_applied,
            r.transitions_failed,
            r.messages_sent,
            r.messages_failed,
            if r.paused { "; paused: nothing acted on" } else { "" },
            if r.fenced { "; fenced by a newer epoch" } else { "" },
        );
        let rows: Vec<Vec<Cell>> = r
            .reports
            .iter()
            .map(|p| {
                let healthy = p.rule == "healthy";
                vec![
                    p.content.to_string().into(),
                    p.primary_dbid.to_string().into(),
                    p.mirror_dbid.to_string().into(),
                    cell(&p.rule, if healthy { Color::Green } else { Color::Yellow }),
                    cell(
                        &p.outcome,
                        if p.outcome.starts_with("failed") {
                            Color::Red
                        } else {
                            Color::Plain
                        },
                    ),
                    p.attempts.to_string().into(),
                    p.probe_ms.to_string().into(),
                    dash(&p.transition).into(),
                    dash(&p.message).into(),
                ]
            })
            .collect();
        out.push_str(&render(
            self.style,
            &[
                "CONTENT",
                "PRIMARY",
                "MIRROR",
                "RULE",
                "OUTCOME",
                "ATTEMPTS",
                "MS",
                "TRANSITION",
                "MESSAGE",
            ],
            &rows,
        ));
        out
    }
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.into()
    }
}
