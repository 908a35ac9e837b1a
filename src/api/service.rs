//! The `ftsd.v1.Fts` calls.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::convert::{self, ms};
use super::limits;
use super::proto::{self, fts_server::Fts};
use super::state::{ApiState, LastCycle};
use crate::catalog::queries::HistoryFilter;
use crate::catalog::{Catalog, CatalogError};
use crate::election::pause::{self, PauseInfo};

pub struct FtsService {
    state: Arc<ApiState>,
}

impl FtsService {
    pub fn new(state: Arc<ApiState>) -> Self {
        FtsService { state }
    }

    /// Mutating calls: the leader goes ahead; a follower refuses with the leader's address. A
    /// shadow instance is its own "leader" for probe-now: its cycles cannot act.
    async fn require_leader(&self) -> Result<(), Status> {
        if self.state.is_leader() || self.state.shadow().is_some() {
            return Ok(());
        }
        let members = self.state.members().await.map_err(Status::unavailable)?;
        match members.iter().find(|m| m.role == "leader") {
            Some(l) => {
                let mut status = Status::failed_precondition(format!(
                    "not the leader; the leader is {} at {}",
                    l.instance_id, l.api_address
                ));
                if let Ok(v) = MetadataValue::try_from(l.api_address.as_str()) {
                    status.metadata_mut().insert(super::LEADER_ADDRESS_KEY, v);
                }
                Err(status)
            }
            None => Err(Status::unavailable("no leader is elected right now")),
        }
    }

    fn catalog_status(e: CatalogError) -> Status {
        Status::unavailable(format!("catalog: {e}"))
    }

    async fn set_pause(&self, info: Option<PauseInfo>) -> Result<proto::PauseState, Status> {
        let Some(key) = self.state.pause_key() else {
            return Err(Status::failed_precondition(
                "pause needs etcd: this instance runs in single-instance (--no-election) or shadow (--shadow) mode",
            ));
        };
        let mut client = self.state.etcd().await.map_err(Status::unavailable)?;
        let wrote = tokio::time::timeout(
            Duration::from_secs(5),
            pause::write(&mut client, &key, info.as_ref()),
        )
        .await;
        match wrote {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.state.forget_etcd().await;
                return Err(Status::unavailable(format!("writing the pause key: {e}")));
            }
            Err(_) => {
                self.state.forget_etcd().await;
                return Err(Status::unavailable("writing the pause key: timed out"));
            }
        }
        // Answer once this instance's own watch has seen the change, so a status read right
        // after reflects it.
        let mut rx = self.state.pause.clone();
        let want = pause::in_force(info, SystemTime::now()).is_some();
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|p| p.is_some() == want))
            .await;
        let current = self.state.pause.borrow().clone();
        Ok(convert::pause(current.as_ref()))
    }

    /// `ConfirmDown` about the coordinator: answered from this instance's own coordinator
    /// watch (every instance watches the pair), whatever `observe.mode` says.
    async fn confirm_coordinator_down(
        &self,
        r: proto::ConfirmDownRequest,
    ) -> Result<Response<proto::ConfirmDownResponse>, Status> {
        let address = limits::text("coordinator", &r.coordinator, limits::MAX_BY_CHARS)?;
        let Some(watch) = self.state.coordinator_watch() else {
            return Err(Status::failed_precondition(
                "this instance does not watch the coordinator pair ([coordinator] not configured)",
            ));
        };
        let timeout = limits::confirm_wait(r.timeout_ms)?;
        let window = limits::confirm_window(r.window_ms)?;
        let deadline = std::time::Instant::now() + timeout;
        let answer = watch
            .observations()
            .answer(&address, window, deadline)
            .await;
        tracing::debug!(coordinator = %address, from = %r.from_instance, ?answer, "answered ConfirmDown about the coordinator");
        Ok(Response::new(convert::confirm_down(
            &self.state.instance_id,
            &answer,
        )))
    }
}

fn dbid(raw: i32) -> Result<crate::model::Dbid, Status> {
    crate::model::Dbid::try_from(raw)
        .map_err(|_| Status::invalid_argument(format!("dbid {raw} is out of range")))
}

fn requester(by: &str, req_addr: Option<std::net::SocketAddr>) -> Result<String, Status> {
    let by = limits::text("by", by, limits::MAX_BY_CHARS)?;
    if !by.is_empty() {
        return Ok(by);
    }
    Ok(req_addr
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into()))
}

#[tonic::async_trait]
impl Fts for FtsService {
    async fn status(
        &self,
        _req: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let st = &self.state;
        // A status must still answer when etcd does not: it is what monitoring runs.
        let (members, etcd_error) = match st.members().await {
            Ok(m) => (m, String::new()),
            Err(e) => (vec![st.self_member()], e),
        };
        let leader = members.iter().find(|m| m.role == "leader");
        let pause = st.pause.borrow().clone();
        let mut resp = proto::StatusResponse {
            cluster: st.cluster.clone(),
            instance_id: st.instance_id.clone(),
            elected: matches!(st.mode, super::Mode::Elected { .. }),
            members: members.iter().map(convert::member).collect(),
            pause: Some(convert::pause(pause.as_ref())),
            etcd_error,
            ..Default::default()
        };
        if let Some(l) = leader {
            resp.leader_id = l.instance_id.clone();
            resp.leader_address = l.api_address.clone();
            resp.epoch = l.epoch.unwrap_or(0);
            resp.leader_since_ms = convert::opt_ms(l.leader_since);
            resp.last_cycle_at_ms = convert::opt_ms(l.last_cycle_at);
            resp.last_cycle_ms = l.last_cycle_ms.unwrap_or(0);
            resp.last_cycle_result = l.last_cycle_result.clone().unwrap_or_default();
        }
        // The answering leader knows its own last cycle better than the registry, which is
        // republished at most every 200 ms.
        if let Some(LastCycle::Finished(r)) = st.last_cycle() {
            resp.alarms = convert::alarms(&r);
        }
        if let Some(brake) = st.brake() {
            let primary_hosts = st.primary_hosts().await;
            let state = match brake.status().await {
                Ok(r) => convert::brake(&brake, Some(&r), primary_hosts, ""),
                Err(e) => convert::brake(&brake, None, primary_hosts, &e),
            };
            if state.engaged {
                resp.alarms.push(convert::brake_alarm(&state));
            }
            resp.brake = Some(state);
        }
        if let Some(c) = st.coordinator() {
            resp.coordinator = c.summary();
            resp.coordinator_pair = Some(convert::coordinator_pair(&c));
            resp.alarms.extend(
                c.alarms
                    .iter()
                    .map(|a| format!("coordinator (content -1): {a}")),
            );
        }
        if st.is_leader() {
            if let Some(last) = st.last_cycle() {
                resp.last_cycle_at_ms = ms(last.started_at());
                resp.last_cycle_result = last.result();
                if let LastCycle::Finished(r) = &last {
                    resp.last_cycle_ms = r.duration.as_millis() as u64;
                }
            }
        }
        match st.catalog.load().await {
            Ok(cfg) => {
                for s in &cfg.segments {
                    let row = convert::segment(s, &cfg.segments, None);
                    resp.segments_total += 1;
                    resp.segments_down += row.down as u32;
                    resp.segments_not_preferred += row.not_preferred_role as u32;
                    resp.segments_not_in_sync += row.not_in_sync as u32;
                }
            }
            Err(e) => resp.catalog_error = e.to_string(),
        }
        Ok(Response::new(resp))
    }

    async fn segments(
        &self,
        _req: Request<proto::SegmentsRequest>,
    ) -> Result<Response<proto::SegmentsResponse>, Status> {
        let cfg = self
            .state
            .catalog
            .load()
            .await
            .map_err(Self::catalog_status)?;
        let last = match self.state.last_cycle() {
            Some(LastCycle::Finished(r)) => Some(r),
            _ => None,
        };
        let segments = cfg
            .segments
            .iter()
            .map(|s| convert::segment(s, &cfg.segments, last.as_deref()))
            .collect();
        Ok(Response::new(proto::SegmentsResponse {
            segments,
            coordinator: self
                .state
                .coordinator()
                .map(|c| convert::coordinator_pair(&c)),
        }))
    }

    async fn history(
        &self,
        req: Request<proto::HistoryRequest>,
    ) -> Result<Response<proto::HistoryResponse>, Status> {
        let r = req.into_inner();
        let narrow = |v: Option<i32>, what: &str| -> Result<Option<i16>, Status> {
            v.map(|v| {
                i16::try_from(v)
                    .map_err(|_| Status::invalid_argument(format!("{what} {v} is out of range")))
            })
            .transpose()
        };
        let filter = HistoryFilter {
            content: narrow(r.content, "content")?,
            dbid: narrow(r.dbid, "dbid")?,
            since: (r.since_ms > 0).then(|| convert::from_ms(r.since_ms)),
            limit: limits::history_limit(r.limit)?.into(),
        };
        let rows = self
            .state
            .catalog
            .history(&filter)
            .await
            .map_err(Self::catalog_status)?;
        let mut entries: Vec<proto::HistoryEntry> = rows.iter().map(convert::history).collect();
        // The coordinator pair's own records live in etcd (content -1, no dbid).
        let wants_coordinator =
            filter.content.is_none_or(|c| c == -1) && filter.dbid.is_none_or(|d| d == 0);
        if let (true, Some(watch)) = (wants_coordinator, self.state.coordinator_watch()) {
            let limit = usize::try_from(filter.limit).unwrap_or(usize::MAX);
            match watch.records().history(limit).await {
                Ok(records) => {
                    let since_ms = r.since_ms;
                    entries.extend(
                        records
                            .iter()
                            .map(super::coordinator::history_entry)
                            .filter(|e| e.time_ms >= since_ms),
                    );
                    entries.sort_by_key(|e| std::cmp::Reverse(e.time_ms));
                    entries.truncate(limit);
                }
                Err(e) => tracing::debug!(error = %e, "cannot read the coordinator history"),
            }
        }
        Ok(Response::new(proto::HistoryResponse { entries }))
    }

    async fn probe_now(
        &self,
        req: Request<proto::ProbeNowRequest>,
    ) -> Result<Response<proto::CycleReport>, Status> {
        let timeout = limits::probe_wait(req.into_inner().timeout_ms)?;
        self.require_leader().await?;
        let asked = SystemTime::now();
        let mut cycles = self.state.subscribe_cycles();
        self.state.wake.notify_one();
        // The cycle that answers is the first one that started after the request: one already
        // running when it arrived read an older configuration.
        let ran = tokio::time::timeout(
            timeout,
            cycles.wait_for(|c| c.as_ref().is_some_and(|c| c.started_at() >= asked)),
        )
        .await;
        let last = match ran {
            Ok(Ok(c)) => c.clone(),
            Ok(Err(_)) => return Err(Status::unavailable("the probe loop has stopped")),
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "no cycle finished within {}",
                    humantime::format_duration(timeout)
                )))
            }
        };
        match last {
            Some(LastCycle::Finished(r)) => {
                Ok(Response::new(convert::cycle(&self.state.instance_id, &r)))
            }
            Some(LastCycle::Failed { error, .. }) => Err(Status::unavailable(format!(
                "the probe cycle could not run: {error}"
            ))),
            None => Err(Status::internal("no cycle recorded")),
        }
    }

    async fn pause(
        &self,
        req: Request<proto::PauseRequest>,
    ) -> Result<Response<proto::PauseState>, Status> {
        let peer = req.remote_addr();
        let r = req.into_inner();
        let reason = limits::text("reason", &r.reason, limits::MAX_REASON_CHARS)?;
        if reason.is_empty() {
            return Err(Status::invalid_argument("a reason is required"));
        }
        let duration = limits::pause_duration(r.duration_ms)?;
        let by = requester(&r.by, peer)?;
        self.require_leader().await?;
        let at = SystemTime::now();
        let info = PauseInfo {
            by,
            at,
            reason,
            until: duration.map(|d| at + d),
        };
        let until = info
            .until
            .map(|u| humantime::format_rfc3339_seconds(u).to_string())
            .unwrap_or_else(|| "resumed".into());
        tracing::warn!(by = %info.by, reason = %info.reason, %until, "pause requested through the API");
        Ok(Response::new(self.set_pause(Some(info)).await?))
    }

    async fn resume(
        &self,
        req: Request<proto::ResumeRequest>,
    ) -> Result<Response<proto::PauseState>, Status> {
        let peer = req.remote_addr();
        let by = requester(&req.into_inner().by, peer)?;
        self.require_leader().await?;
        tracing::info!(by = %by, "resume requested through the API");
        Ok(Response::new(self.set_pause(None).await?))
    }

    async fn explain(
        &self,
        req: Request<proto::ExplainRequest>,
    ) -> Result<Response<proto::ExplainResponse>, Status> {
        let content = req.into_inner().content;
        let c = i16::try_from(content)
            .map_err(|_| Status::invalid_argument(format!("content {content} is out of range")))?;
        if let (-1, Some(watch)) = (c, self.state.coordinator_watch()) {
            let newest =
                watch.records().history(1).await.map_err(|e| {
                    Status::unavailable(format!("coordinator history in etcd: {e}"))
                })?;
            return Ok(Response::new(super::coordinator::explain(newest.first())));
        }
        let ev = self
            .state
            .catalog
            .last_evidence(c)
            .await
            .map_err(Self::catalog_status)?;
        Ok(Response::new(convert::explain(content, ev.as_ref())))
    }

    async fn brake_status(
        &self,
        _req: Request<proto::BrakeStatusRequest>,
    ) -> Result<Response<proto::BrakeState>, Status> {
        let Some(brake) = self.state.brake() else {
            return Err(Status::failed_precondition(
                "this instance has no brake (shadow mode never acts)",
            ));
        };
        let primary_hosts = self.state.primary_hosts().await;
        let state = match brake.status().await {
            Ok(r) => convert::brake(&brake, Some(&r), primary_hosts, ""),
            Err(e) => convert::brake(&brake, None, primary_hosts, &e),
        };
        Ok(Response::new(state))
    }

    async fn brake_release(
        &self,
        req: Request<proto::BrakeReleaseRequest>,
    ) -> Result<Response<proto::BrakeState>, Status> {
        let peer = req.remote_addr();
        let r = req.into_inner();
        let reason = limits::text("reason", &r.reason, limits::MAX_REASON_CHARS)?;
        if reason.is_empty() {
            return Err(Status::invalid_argument("a reason is required"));
        }
        let by = requester(&r.by, peer)?;
        let Some(brake) = self.state.brake() else {
            return Err(Status::failed_precondition(
                "this instance has no brake (shadow mode never acts)",
            ));
        };
        self.require_leader().await?;
        let Some(epoch) = self.state.own_epoch() else {
            return Err(Status::unavailable("no longer the leader"));
        };
        let released = brake
            .release(&by, &reason, crate::model::Epoch(epoch))
            .await
            .map_err(|e| match e {
                crate::engine::brake::ReleaseFailure::Refused(e) => {
                    Status::failed_precondition(e.to_string())
                }
                crate::engine::brake::ReleaseFailure::Unavailable(e) => {
                    Status::unavailable(format!("releasing the brake: {e}"))
                }
            })?;
        tracing::warn!(%by, %reason, "brake released through the API: the held failovers are decided again at the next cycle");
        // The held failovers are decided again from fresh probes: start that cycle now.
        self.state.wake.notify_one();
        let primary_hosts = self.state.primary_hosts().await;
        Ok(Response::new(convert::brake(
            &brake,
            Some(&released),
            primary_hosts,
            "",
        )))
    }

    async fn switchover(
        &self,
        req: Request<proto::SwitchoverRequest>,
    ) -> Result<Response<proto::SwitchoverResponse>, Status> {
        let peer = req.remote_addr();
        let r = req.into_inner();
        let timeout = limits::switchover_wait(r.timeout_ms)?;
        let by = requester(&r.by, peer)?;
        let content = i16::try_from(r.content).map_err(|_| {
            Status::invalid_argument(format!("content {} is out of range", r.content))
        })?;
        if self.state.shadow().is_some() {
            return Err(Status::failed_precondition(
                "a shadow instance never acts: switch over through the incumbent",
            ));
        }
        self.require_leader().await?;
        tracing::warn!(content, by = %by, "switchover requested through the API");
        let request = crate::switchover::Request {
            content,
            by,
            timeout,
        };
        // On a task of its own: a client that gives up (or a dropped connection) must not
        // cancel a switchover between two steps — it runs to done, undone or stopped.
        let task = if content == -1 {
            match self.state.coordinator_watch() {
                Some(w) => tokio::spawn(async move { w.switchover(request).await }),
                None => {
                    return Err(Status::invalid_argument(
                        "the coordinator pair is not configured ([coordinator])",
                    ))
                }
            }
        } else {
            match self.state.switchover() {
                Some(s) => tokio::spawn(async move { s.switchover(request).await }),
                None => return Err(Status::unavailable("the probe loop is not running yet")),
            }
        };
        let result = task
            .await
            .map_err(|e| Status::internal(format!("the switchover task failed: {e}")))?;
        use crate::switchover::SwitchoverError as E;
        match result {
            Ok(report) => Ok(Response::new(convert::switchover(&report))),
            Err(e @ E::Refused(_)) => Err(Status::failed_precondition(e.to_string())),
            Err(e @ E::Unsupported(_)) => Err(Status::invalid_argument(e.to_string())),
            Err(e @ E::Busy) => Err(Status::aborted(e.to_string())),
            Err(e @ E::Unavailable(_)) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn shadow(
        &self,
        _req: Request<proto::ShadowRequest>,
    ) -> Result<Response<proto::ShadowResponse>, Status> {
        let Some(book) = self.state.shadow() else {
            return Err(Status::failed_precondition(
                "not a shadow instance (start one with `ftsd run --shadow`)",
            ));
        };
        Ok(Response::new(convert::shadow(
            &self.state.instance_id,
            &book.summary(),
        )))
    }

    async fn confirm_down(
        &self,
        req: Request<proto::ConfirmDownRequest>,
    ) -> Result<Response<proto::ConfirmDownResponse>, Status> {
        let r = req.into_inner();
        if !r.coordinator.is_empty() {
            return self.confirm_coordinator_down(r).await;
        }
        let dbid = dbid(r.dbid)?;
        let Some(observer) = self.state.observer() else {
            return Err(Status::failed_precondition(
                "this instance does not observe (observe.mode = \"off\", single-instance or shadow mode)",
            ));
        };
        let timeout = limits::confirm_wait(r.timeout_ms)?;
        let window = limits::confirm_window(r.window_ms)?;
        let deadline = std::time::Instant::now() + timeout;
        let answer = observer.confirm_down(dbid, window, deadline).await;
        tracing::debug!(dbid = r.dbid, from = %r.from_instance, ?answer, "answered ConfirmDown");
        Ok(Response::new(convert::confirm_down(
            &self.state.instance_id,
            &answer,
        )))
    }

    async fn report_down(
        &self,
        req: Request<proto::ReportDownRequest>,
    ) -> Result<Response<proto::ReportDownResponse>, Status> {
        let r = req.into_inner();
        let dbid = dbid(r.dbid)?;
        let Some(observer) = self.state.observer() else {
            return Ok(Response::new(proto::ReportDownResponse { accepted: false }));
        };
        let member = limits::text("instance_id", &r.instance_id, limits::MAX_BY_CHARS)?;
        let class = convert::failure_class(&r.class).ok_or_else(|| {
            Status::invalid_argument(format!("unknown failure class {:?}", r.class))
        })?;
        let observed_at = SystemTime::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(r.observed_at_ms).unwrap_or(0));
        let accepted = observer.report_down(&member, dbid, observed_at, class);
        Ok(Response::new(proto::ReportDownResponse { accepted }))
    }
}
