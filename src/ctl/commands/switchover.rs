//! `ftsctl switchover --content N`: a planned switchover of one pair (content -1: the
//! coordinator pair), run by the leader; prints its steps and what the operator must do next.

use super::*;

/// `switchover`.
pub(super) async fn run(cli: &Cli, ctx: &Ctx, content: i32, wait: Duration) -> Outcome {
    let mut conn = connect_any(cli).await?;
    // The call lasts as long as the switchover: stopping the writes and the replay are bounded
    // by `wait` each, the promotion by the server's own bounds.
    conn.call_timeout = wait * 3 + cli.timeout + Duration::from_secs(60);
    let timeout_ms = wait.as_millis().try_into().unwrap_or(u64::MAX);
    let by = super::pause::requester();
    let r = conn
        .mutate(|mut c| {
            let req = proto::SwitchoverRequest {
                content,
                by: by.clone(),
                timeout_ms,
            };
            async move { c.switchover(req).await }
        })
        .await?;
    ctx.emit(&r, || ctx.switchover_text(&r));
    Ok(if r.outcome == "done" {
        exit::OK
    } else {
        exit::FAILED
    })
}

impl Ctx {
    pub(super) fn switchover_text(&self, r: &proto::SwitchoverResponse) -> String {
        let mut out = format!(
            "switchover of content {}: {} -> {}: {}\n",
            r.content,
            r.from,
            r.to,
            self.style.paint(
                &r.outcome,
                if r.outcome == "done" {
                    Color::Green
                } else {
                    Color::Red
                }
            )
        );
        for s in &r.steps {
            out.push_str(&format!(
                "  {:>6} ms  {:<17} {}  {}\n",
                s.at_ms,
                s.step,
                if s.ok { "ok    " } else { "FAILED" },
                s.detail
            ));
        }
        out.push_str(&format!("next: {}\n", r.next));
        out
    }
}
