//! `ftsctl pause` and `ftsctl resume`: turn automatic failover off and on (probing goes on).

use super::*;

/// `pause`.
pub(super) async fn pause(
    cli: &Cli,
    ctx: &Ctx,
    reason: &str,
    duration: Option<Duration>,
) -> Outcome {
    let mut conn = connect_any(cli).await?;
    let by = requester();
    let reason = reason.to_owned();
    let r = conn
        .mutate(|mut c| {
            let req = proto::PauseRequest {
                reason: reason.clone(),
                by: by.clone(),
                duration_ms: duration.map_or(0, |d| d.as_millis().try_into().unwrap_or(u64::MAX)),
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

pub(super) fn requester() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", crate::config::hostname())
}

impl Ctx {
    pub(super) fn pause_text(&self, p: &proto::PauseState) -> String {
        if p.paused {
            format!(
                "{} by {} at {} {}: {}\n",
                self.style.paint("paused", Color::Yellow),
                p.by,
                time_only(p.at_ms),
                pause_end(p.until_ms),
                p.reason
            )
        } else {
            "not paused: failover enabled\n".into()
        }
    }
}

/// "until <time> (in 29m)" or "indefinitely (until resumed)".
pub(super) fn pause_end(until_ms: i64) -> String {
    if until_ms <= 0 {
        return "indefinitely (until resumed)".into();
    }
    let until = from_ms(until_ms);
    let left = until
        .duration_since(SystemTime::now())
        .map(|d| Duration::from_secs(d.as_secs()))
        .unwrap_or_default();
    format!(
        "until {} (in {})",
        time_only(until_ms),
        humantime::format_duration(left)
    )
}
