//! The other instances as the second opinion reaches them: the live members from the
//! registry (read through the API state's etcd client) and the instance-to-instance calls
//! `ConfirmDown` / `ReportDown`, made with this instance's own API credentials.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Mutex;

use crate::api::client::{ApiClient, Credentials};
use crate::api::proto;
use crate::api::ApiState;
use crate::engine::second_opinion::{BoxFuture, PeerAnswer, PeerMember, Peers};
use crate::model::Dbid;
use crate::wire::failure::FailureKind;

/// How long a `ReportDown` may take: it is best effort (the leader asks with `ConfirmDown`
/// anyway), so a slow leader must not hold the follower's loop.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct ApiPeers {
    state: Arc<ApiState>,
    credentials: Credentials,
    instance_id: String,
    /// Connected clients by API address (a channel reconnects by itself).
    clients: Mutex<HashMap<String, ApiClient>>,
}

impl ApiPeers {
    pub fn new(state: Arc<ApiState>, credentials: Credentials, instance_id: String) -> Self {
        ApiPeers {
            state,
            credentials,
            instance_id,
            clients: Mutex::new(HashMap::new()),
        }
    }

    async fn client(&self, address: &str, timeout: Duration) -> Result<ApiClient, String> {
        if let Some(c) = self.clients.lock().await.get(address) {
            return Ok(c.clone());
        }
        let c = self.credentials.connect(address, timeout).await?;
        self.clients
            .lock()
            .await
            .insert(address.to_owned(), c.clone());
        Ok(c)
    }

    async fn forget(&self, address: &str) {
        self.clients.lock().await.remove(address);
    }

    /// `ConfirmDown` about primary `dbid`, or (`coordinator` set) about the coordinator at
    /// that address.
    async fn ask(
        &self,
        peer: &PeerMember,
        dbid: Dbid,
        coordinator: Option<&str>,
        window: Duration,
        deadline: Instant,
    ) -> PeerAnswer {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return PeerAnswer::Error("deadline passed".into());
        }
        let mut client = match self.client(&peer.api_address, left).await {
            Ok(c) => c,
            Err(e) => return PeerAnswer::Error(e),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let mut req = tonic::Request::new(proto::ConfirmDownRequest {
            dbid: dbid.into(),
            window_ms: window.as_millis() as u64,
            // The answer must travel back before our deadline.
            timeout_ms: left.saturating_sub(Duration::from_millis(50)).as_millis() as u64,
            from_instance: self.instance_id.clone(),
            coordinator: coordinator.unwrap_or_default().to_owned(),
        });
        req.set_timeout(left);
        match tokio::time::timeout(left, client.confirm_down(req)).await {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                match r.seen.as_str() {
                    "up" => PeerAnswer::Seen {
                        failure: None,
                        age: Duration::from_millis(r.age_ms),
                        probed: r.probed,
                    },
                    "failed" => match crate::api::convert::failure_class(&r.class) {
                        Some(k) => PeerAnswer::Seen {
                            failure: Some(k),
                            age: Duration::from_millis(r.age_ms),
                            probed: r.probed,
                        },
                        None => PeerAnswer::Error(format!("unknown failure class {:?}", r.class)),
                    },
                    _ => PeerAnswer::Unknown,
                }
            }
            Ok(Err(status)) => {
                if status.code() == tonic::Code::Unavailable {
                    self.forget(&peer.api_address).await;
                }
                PeerAnswer::Error(format!("{}: {}", status.code(), status.message()))
            }
            Err(_) => PeerAnswer::Error("no answer before the deadline".into()),
        }
    }
}

impl Peers for ApiPeers {
    fn live_members(&self) -> BoxFuture<'_, Result<Vec<PeerMember>, String>> {
        Box::pin(async move {
            let members = self.state.members().await?;
            Ok(members
                .into_iter()
                .map(|m| PeerMember {
                    leader: m.role == "leader",
                    last_cycle_at: m.last_cycle_at,
                    instance_id: m.instance_id,
                    api_address: m.api_address,
                })
                .collect())
        })
    }

    fn confirm_down<'a>(
        &'a self,
        peer: &'a PeerMember,
        dbid: Dbid,
        window: Duration,
        deadline: Instant,
    ) -> BoxFuture<'a, PeerAnswer> {
        Box::pin(self.ask(peer, dbid, None, window, deadline))
    }

    fn confirm_coordinator_down<'a>(
        &'a self,
        peer: &'a PeerMember,
        address: &'a str,
        window: Duration,
        deadline: Instant,
    ) -> BoxFuture<'a, PeerAnswer> {
        Box::pin(self.ask(peer, 0, Some(address), window, deadline))
    }

    fn report_down<'a>(
        &'a self,
        leader: &'a PeerMember,
        dbid: Dbid,
        observed_at: SystemTime,
        failure: FailureKind,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut client = match self.client(&leader.api_address, REPORT_TIMEOUT).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot reach the leader to report a lost primary");
                    return;
                }
            };
            let mut req = tonic::Request::new(proto::ReportDownRequest {
                instance_id: self.instance_id.clone(),
                dbid: dbid.into(),
                observed_at_ms: observed_at
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0),
                class: failure.as_str().to_owned(),
            });
            req.set_timeout(REPORT_TIMEOUT);
            match tokio::time::timeout(REPORT_TIMEOUT, client.report_down(req)).await {
                Ok(Ok(r)) if r.get_ref().accepted => {}
                Ok(Ok(_)) => tracing::debug!(dbid, "the leader did not record the report"),
                Ok(Err(status)) => {
                    if status.code() == tonic::Code::Unavailable {
                        self.forget(&leader.api_address).await;
                    }
                    tracing::warn!(dbid, code = ?status.code(), error = %status.message(), "reporting a lost primary to the leader failed")
                }
                Err(_) => tracing::warn!(dbid, "reporting a lost primary to the leader timed out"),
            }
        })
    }
}
