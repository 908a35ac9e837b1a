//! The driver of a shadow instance: PROBE only.

use std::time::{Duration, Instant};

use crate::driver::{AuthorityGate, DriverAlarm, SegmentDriver, Survey, Upkeep};
use crate::model::{ContentId, Pair, Segment};
use crate::wire::failure::{AttemptError, FailureKind};
use crate::wire::{MessageType, ProbeReply};

/// Wraps a driver so that only PROBE reaches a segment.
pub struct ShadowDriver<D> {
    inner: D,
}

impl<D: SegmentDriver> ShadowDriver<D> {
    pub fn new(inner: D) -> Self {
        ShadowDriver { inner }
    }
}

impl<D: SegmentDriver> SegmentDriver for ShadowDriver<D> {
    async fn send(
        &self,
        target: &Segment,
        kind: MessageType,
        deadline: Instant,
    ) -> Result<ProbeReply, AttemptError> {
        if kind != MessageType::Probe {
            return Err(AttemptError::new(
                FailureKind::Local,
                format!("shadow mode sends no {kind}"),
            ));
        }
        self.inner.send(target, kind, deadline).await
    }

    fn failover_veto(&self, pair: &Pair) -> Option<String> {
        self.inner.failover_veto(pair)
    }

    fn probe_detail(&self, content: ContentId) -> Option<serde_json::Value> {
        self.inner.probe_detail(content)
    }

    fn restarting(&self, target: &Segment, last: &AttemptError) -> Option<Duration> {
        self.inner.restarting(target, last)
    }

    async fn survey(&self, pair: &Pair, deadline: Instant) -> Survey {
        // The survey only reads; the changes it asks for are dropped here.
        let found = self.inner.survey(pair, deadline).await;
        Survey {
            alarms: found.alarms,
            work: Vec::new(),
        }
    }

    async fn upkeep(
        &self,
        _pair: &Pair,
        _work: &Upkeep,
        _gate: AuthorityGate<'_>,
    ) -> Vec<DriverAlarm> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::FtsWireDriver;
    use crate::model::{Mode, Role, Status};
    use crate::wire::client::Credentials;

    #[tokio::test]
    async fn only_probe_leaves_the_shadow() {
        // A listener that counts connections: PROMOTE and SYNCREP_OFF must not even connect.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let d = ShadowDriver::new(FtsWireDriver {
            credentials: Credentials::new("gpadmin"),
        });
        let target = Segment {
            dbid: 2,
            content: 0,
            role: Role::Mirror,
            preferred_role: Role::Mirror,
            mode: Mode::InSync,
            status: Status::Up,
            port: port.into(),
            hostname: "localhost".into(),
            address: "127.0.0.1".into(),
            datadir: "/d".into(),
        };
        for kind in [MessageType::Promote, MessageType::SyncrepOff] {
            let e = d
                .send(&target, kind, Instant::now() + Duration::from_secs(5))
                .await
                .unwrap_err();
            assert_eq!(e.kind, FailureKind::Local);
        }
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "no connection was made");
    }
}
