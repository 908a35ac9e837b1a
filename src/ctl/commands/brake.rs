//! `ftsctl brake status` and `ftsctl brake release`: the brake on correlated failures.

use super::*;

/// `brake status`: exits 1 while the brake is engaged.
pub(super) async fn status(cli: &Cli, ctx: &Ctx) -> Outcome {
    let mut conn = connect_any(cli).await?;
    let b = conn
        .read(|mut c| async move { c.brake_status(proto::BrakeStatusRequest {}).await })
        .await?;
    ctx.emit(&b, || ctx.brake_text(&b));
    Ok(if b.engaged || !b.error.is_empty() {
        exit::UNHEALTHY
    } else {
        exit::OK
    })
}

/// `brake release`.
pub(super) async fn release(cli: &Cli, ctx: &Ctx, reason: &str) -> Outcome {
    let mut conn = connect_any(cli).await?;
    let by = super::pause::requester();
    let reason = reason.to_owned();
    let b = conn
        .mutate(|mut c| {
            let req = proto::BrakeReleaseRequest {
                reason: reason.clone(),
                by: by.clone(),
            };
            async move { c.brake_release(req).await }
        })
        .await?;
    ctx.emit(&b, || ctx.brake_text(&b));
    Ok(exit::OK)
}

impl Ctx {
    pub(super) fn brake_text(&self, b: &proto::BrakeState) -> String {
        let window = humantime::format_duration(Duration::from_millis(b.window_ms));
        let mut out = String::new();
        if !b.error.is_empty() {
            let line = format!("brake record unreadable: {}", b.error);
            out.push_str(&format!("{}\n", self.style.paint(&line, Color::Red)));
        }
        if b.engaged {
            let line = format!(
                "engaged at {} by {}: {} hosts in window > limit {} ({})",
                when(b.engaged_at_ms),
                b.engaged_by,
                b.hosts.len(),
                b.limit,
                b.hosts.join(", ")
            );
            out.push_str(&format!(
                "{:<12} {}\n",
                "brake:",
                self.style.paint(&line, Color::Red)
            ));
            let held: Vec<String> = b.held_contents.iter().map(|c| c.to_string()).collect();
            out.push_str(&format!(
                "{:<12} failovers of contents {}; release with `ftsctl brake release --reason ...`\n",
                "held:",
                held.join(", ")
            ));
        } else {
            out.push_str(&format!("{:<12} not engaged\n", "brake:"));
        }
        out.push_str(&format!(
            "{:<12} {}, window {window}, record in {}\n",
            "limit:", b.max_hosts, b.store
        ));
        if b.released_at_ms > 0 {
            out.push_str(&format!(
                "{:<12} by {} at {}: {}\n",
                "released:",
                b.released_by,
                when(b.released_at_ms),
                b.release_reason
            ));
        }
        if !b.admitted.is_empty() {
            let list: Vec<String> = b
                .admitted
                .iter()
                .map(|a| format!("{} (content {}, {})", a.host, a.content, time_only(a.at_ms)))
                .collect();
            out.push_str(&format!("{:<12} {}\n", "in window:", list.join(", ")));
        }
        out
    }
}
