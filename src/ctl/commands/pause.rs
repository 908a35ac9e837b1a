//! `ftsctl pause` and `ftsctl resume`: turn automatic failover off and on (probing goes on).

use super::*;

/// `pause`.
pub(super) async fn pause(cli: &Cli, ctx: &Ctx, reason: &str) -> Outcome {
    let mut conn = connect_any(cli).await?;
    let by = requester();
    let reason = reason.to_owned();
    let r = conn
        .mutate(|mut c| {
            let req = proto::PauseRequest {
                reason: reason.clone(),
                by: by.clone(),
            };
            async move { c.pause(req).await }
        })
        .await?;
    ctx.emit(&r, || ctx.pause_text(&r));
    Ok(exit::OK)
}

/// `resume`.
pub(super) async fn resume(cli: &Cli, ctx: &Ctx) -> Outcome {
    let mut conn = connect_any(cli).await?;
    let by = requester();
    let r = conn
        .mutate(|mut c| {
            let req = proto::ResumeRequest { by: by.clone() };
            async move { c.resume(req).await }
        })
        .await?;
    ctx.emit(&r, || ctx.pause_text(&r));
    Ok(exit::OK)
}

fn requester() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", crate::config::hostname())
}

impl Ctx {
    pub(super) fn pause_text(&self, p: &proto::PauseState) -> String {
        if p.paused {
            format!(
                "{} by {} at {}: {}\n",
                self.style.paint("paused", Color::Yellow),
                p.by,
                time_only(p.at_ms),
                p.reason
            )
        } else {
            "not paused: failover enabled\n".into()
        }
    }
}
