//! Recording which server acts when etcd records nothing about the pair (the rule is
//! [`crate::core::coordinator::adopt`]): the acting leader writes the state once, from what
//! both servers answered, in a transaction that only succeeds while the state is still
//! absent. Until then no VIP agent holds the address and no failover is decided.

use serde_json::json;

use super::probe::Endpoint;
use super::records::{CoordinatorState, Fence, HistoryRecord, Read};
use super::seen::{Answer, PrimarySide, Seen};
use super::{lock, Watcher};
use crate::core::coordinator::adopt::{adopt, Adoption, ServerAnswer};

fn primary_answer(p: &PrimarySide) -> ServerAnswer {
    if p.answer.is_none() && (p.prober_fault || p.restarting) {
        return ServerAnswer::Unknown;
    }
    answer(p.answer)
}

fn answer(a: Option<Answer>) -> ServerAnswer {
    match a {
        None => ServerAnswer::Unreachable,
        Some(a) if a.in_recovery => ServerAnswer::InRecovery,
        Some(a) if a.read_only => ServerAnswer::ReadOnly,
        Some(_) => ServerAnswer::Writable,
    }
}

impl Watcher {
    /// `primary` and `standby` are the configured servers, as this round probed them.
    /// Returns whether the state is recorded now (else the round goes on: a refusal is
    /// recorded as usual).
    pub(super) async fn adopt_pair(
        &self,
        fence: &Fence,
        epoch: i64,
        read: &Read,
        seen: &Seen,
        primary: &Endpoint,
        standby: &Endpoint,
    ) -> bool {
        let (p, s) = (primary_answer(&seen.primary), answer(seen.standby.answer));
        let (acting, other, rebuild) = match adopt(p, s) {
            Adoption::Record {
                configured_primary,
                rebuild,
            } => {
                lock(&self.memory).adoption_wait = None;
                if configured_primary {
                    (primary, standby, rebuild)
                } else {
                    (standby, primary, rebuild)
                }
            }
            Adoption::Wait(why) => {
                if lock(&self.memory).adoption_wait.replace(why) != Some(why) {
                    tracing::warn!(
                        content = -1,
                        reason = ?why,
                        primary = ?p,
                        standby = ?s,
                        "etcd records no acting coordinator and this round cannot tell which server acts; no VIP holder and no failover until it can"
                    );
                }
                return false;
            }
        };
        if self.gate(fence.revision).is_none() {
            return false;
        }
        let id = self.records.next_id();
        let state = CoordinatorState {
            acting: acting.to_string(),
            standby: other.to_string(),
            rebuild,
            intent: None,
            last_failover_us: None,
            catalog_update: None,
            epoch,
            instance_id: self.instance_id.clone(),
            updated_us: id,
        };
        let history = HistoryRecord {
            time_us: id,
            event: "adopted".into(),
            from: other.to_string(),
            to: acting.to_string(),
            epoch,
            instance_id: self.instance_id.clone(),
            desc: format!(
                "ftsd: no coordinator state in etcd; {acting} accepts writes and is recorded as the coordinator{}",
                if rebuild {
                    format!(" ({other} must be rebuilt as its standby before it runs again)")
                } else {
                    String::new()
                }
            ),
            evidence: json!({
                "configured_primary": {"address": primary.to_string(), "answer": p},
                "configured_standby": {"address": standby.to_string(), "answer": s},
                "primary_round": seen.primary_round,
                "standby_round": seen.standby_round,
            }),
        };
        match self
            .records
            .write(fence, read.mod_revision, Some(&state), &history)
            .await
        {
            Ok(_) => {
                tracing::info!(
                    content = -1,
                    coordinator = %acting,
                    standby = %other,
                    rebuild,
                    "recorded the acting coordinator in etcd"
                );
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the acting coordinator; retrying next round");
                false
            }
        }
    }
}
