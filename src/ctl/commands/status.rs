//! `ftsctl status`: the cluster at a glance (leader, pause, last cycle, segments, etcd,
//! members); exits 1 when the cluster is unhealthy.

use super::*;

/// `status`.
pub(super) async fn run(cli: &Cli, ctx: &Ctx) -> Outcome {
    let mut conn = connect_any(cli).await?;
    let s = status(&mut conn).await?;
    ctx.emit(&s, || ctx.status_text(&s));
    Ok(status_code(&s))
}

pub(super) async fn status(conn: &mut Connected) -> Result<proto::StatusResponse, CtlError> {
    conn.read(|mut c| async move { c.status(proto::StatusRequest {}).await })
        .await
}

/// `status`'s exit code: 1 when a segment is down, no leader is elected, an alarm is raised
/// (a prober fault, an unconfirmed failover), or the catalog or etcd is unreadable for the
/// answering instance.
pub fn status_code(s: &proto::StatusResponse) -> u8 {
    if s.leader_id.is_empty()
        || s.segments_down > 0
        || !s.alarms.is_empty()
        || !s.catalog_error.is_empty()
        || !s.etcd_error.is_empty()
    {
        exit::UNHEALTHY
    } else {
        exit::OK
    }
}

impl Ctx {
    pub(super) fn status_text(&self, s: &proto::StatusResponse) -> String {
        let mut out = String::new();
        let leader = if s.leader_id.is_empty() {
            self.style.paint("none elected", Color::Red)
        } else {
            format!(
                "{} at {} (epoch {}, since {})",
                s.leader_id,
                s.leader_address,
                s.epoch,
                when(s.leader_since_ms)
            )
        };
        let pause = match &s.pause {
            Some(p) if p.paused => self.style.paint(
                &format!(
                    "yes, by {} at {} {}: {}",
                    p.by,
                    time_only(p.at_ms),
                    super::pause::pause_end(p.until_ms),
                    p.reason
                ),
                Color::Yellow,
            ),
            _ => "no".into(),
        };
        let cycle = if s.last_cycle_at_ms > 0 {
            format!(
                "{}, took {} ms, {}",
                when(s.last_cycle_at_ms),
                s.last_cycle_ms,
                s.last_cycle_result
            )
        } else {
            "-".into()
        };
        let segments = if s.catalog_error.is_empty() {
            format!(
                "{} rows, {} down, {} not in preferred role, {} not in sync",
                s.segments_total,
                self.yes_no(s.segments_down > 0, &s.segments_down.to_string()),
                s.segments_not_preferred,
                s.segments_not_in_sync
            )
        } else {
            self.style.paint(
                &format!("catalog unreadable: {}", s.catalog_error),
                Color::Red,
            )
        };
        let etcd = if s.etcd_error.is_empty() {
            if s.elected {
                "ok".to_string()
            } else {
                "not used (single-instance mode)".to_string()
            }
        } else {
            self.style
                .paint(&format!("unreachable: {}", s.etcd_error), Color::Red)
        };
        for (k, v) in [
            ("cluster", s.cluster.clone()),
            ("leader", leader),
            ("paused", pause),
            ("last cycle", cycle),
            ("segments", segments),
            (
                "coordinator",
                if s.coordinator.is_empty() {
                    "not watched ([coordinator] not configured)".into()
                } else {
                    s.coordinator.clone()
                },
            ),
            (
                "standby",
                match &s.coordinator_pair {
                    Some(c) => format!(
                        "{} ({}), {}{}{}",
                        c.standby,
                        c.standby_status,
                        c.sync,
                        if c.replay_lag >= 0 {
                            format!(", replay lag {} B", c.replay_lag)
                        } else {
                            String::new()
                        },
                        if c.rebuild {
                            ", former coordinator: rebuild it as a standby (gpinitstandby)"
                        } else {
                            ""
                        }
                    ),
                    None => "-".into(),
                },
            ),
            ("etcd", etcd),
            ("answered by", s.instance_id.clone()),
        ] {
            out.push_str(&format!("{:<12} {v}\n", format!("{k}:")));
        }
        for a in &s.alarms {
            let line = self.style.paint(a, Color::Red);
            out.push_str(&format!("{:<12} {line}\n", "alarm:"));
        }
        out.push('\n');
        out.push_str(&self.members_text(&s.members));
        out
    }
}
