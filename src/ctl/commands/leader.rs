//! `ftsctl leader`: who leads, since when, in which epoch; exits 1 when nobody does.

use super::status::status;
use super::*;

/// `leader`.
pub(super) async fn run(cli: &Cli, ctx: &Ctx) -> Outcome {
    let mut conn = connect_any(cli).await?;
    let s = status(&mut conn).await?;
    let doc = json!({
        "leader_id": s.leader_id,
        "leader_address": s.leader_address,
        "epoch": s.epoch,
        "leader_since_ms": s.leader_since_ms,
    });
    ctx.emit(&doc, || {
        if s.leader_id.is_empty() {
            "no leader elected\n".to_string()
        } else {
            format!(
                "{} at {} (epoch {}, since {})\n",
                s.leader_id,
                s.leader_address,
                s.epoch,
                when(s.leader_since_ms)
            )
        }
    });
    Ok(if s.leader_id.is_empty() {
        exit::UNHEALTHY
    } else {
        exit::OK
    })
}
