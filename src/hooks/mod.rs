//! Operator hooks: commands run on each catalog transition and on each change of leadership
//! (`[hooks]` in the configuration; arguments and environment in docs/api.md).
//!
//! Hooks run one at a time, in event order, on their own task fed by a bounded queue: the
//! probe cycle only enqueues, so a slow or failing hook can never delay a failover. Each run is
//! bounded by `hooks.timeout` (the process is killed then), and every failure is logged and
//! counted, nothing more.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;

use crate::election::OfficeEvent;
use crate::engine::runner::CycleObserver;
use crate::engine::CycleReport;
use crate::metrics::Metrics;

/// What the hooks need from the configuration.
#[derive(Debug, Clone, Default)]
pub struct HookSettings {
    /// argv of the transition hook; empty: none.
    pub on_transition: Vec<String>,
    /// argv of the leadership hook; empty: none.
    pub on_leader_change: Vec<String>,
    pub timeout: Duration,
    pub cluster: String,
    pub instance_id: String,
}

/// One hook invocation: the extra arguments and environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCall {
    pub event: &'static str,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

const QUEUE: usize = 1024;

/// One queued run: the hook's argv, the call, and the timeout in force when it was queued.
type Job = (Vec<String>, HookCall, Duration);

/// Enqueues hook calls; cheap to clone (clones share the settings and the queue).
#[derive(Clone)]
pub struct Hooks(Arc<Shared>);

struct Shared {
    /// Replaced by a configuration reload; each call reads the settings of its moment.
    settings: RwLock<Arc<HookSettings>>,
    /// The runner's queue; started with the first configured hook.
    runner: Mutex<Option<mpsc::Sender<Job>>>,
    metrics: Arc<Metrics>,
}

impl Hooks {
    /// Starts the runner task (only if a hook is configured: a reload that configures the
    /// first hook starts it then).
    pub fn start(settings: HookSettings, metrics: Arc<Metrics>) -> Hooks {
        let hooks = Hooks(Arc::new(Shared {
            settings: RwLock::new(Arc::new(settings)),
            runner: Mutex::new(None),
            metrics,
        }));
        hooks.start_runner_if_needed();
        hooks
    }

    /// Takes the hook commands and timeout of a reloaded configuration; calls already queued
    /// run with the settings they were queued with.
    pub fn reconfigure(
        &self,
        on_transition: Vec<String>,
        on_leader_change: Vec<String>,
        timeout: Duration,
    ) {
        {
            let mut settings = self.0.settings.write().unwrap_or_else(|e| e.into_inner());
            *settings = Arc::new(HookSettings {
                on_transition,
                on_leader_change,
                timeout,
                ..(**settings).clone()
            });
        }
        self.start_runner_if_needed();
    }

    fn settings(&self) -> Arc<HookSettings> {
        self.0
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn start_runner_if_needed(&self) {
        let settings = self.settings();
        if settings.on_transition.is_empty() && settings.on_leader_change.is_empty() {
            return;
        }
        let mut runner = self.0.runner.lock().unwrap_or_else(|e| e.into_inner());
        if runner.is_some() {
            return;
        }
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        let metrics = self.0.metrics.clone();
        tokio::spawn(async move {
            while let Some((argv, call, timeout)) = rx.recv().await {
                let result = run(&argv, &call, timeout).await;
                metrics.hook_ran(call.event, result);
            }
        });
        *runner = Some(tx);
    }

    fn enqueue(&self, argv: &[String], call: HookCall) {
        if argv.is_empty() {
            return;
        }
        let runner = self.0.runner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = &*runner else { return };
        let timeout = self.settings().timeout;
        if let Err(e) = tx.try_send((argv.to_vec(), call, timeout)) {
            tracing::warn!(error = %e, "hook queue full or closed; hook call dropped");
        }
    }

    fn base_env(&self, event: &str) -> Vec<(String, String)> {
        vec![
            ("FTSD_HOOK_EVENT".into(), event.into()),
            ("FTSD_CLUSTER".into(), self.settings().cluster.clone()),
            (
                "FTSD_INSTANCE_ID".into(),
                self.settings().instance_id.clone(),
            ),
        ]
    }

    /// The call for one changed catalog row.
    pub fn transition_call(
        &self,
        u: &crate::core::RowUpdate,
        epoch: Option<i64>,
        reason: &str,
    ) -> HookCall {
        let epoch = epoch.map(|e| e.to_string()).unwrap_or_default();
        let mut env = self.base_env("transition");
        let state = |s: &crate::model::SegmentState| format!("{}/{}/{}", s.role, s.status, s.mode);
        env.extend([
            ("FTSD_CONTENT".into(), u.content.to_string()),
            ("FTSD_DBID".into(), u.dbid.to_string()),
            ("FTSD_OLD_ROLE".into(), u.from.role.to_string()),
            ("FTSD_OLD_STATUS".into(), u.from.status.to_string()),
            ("FTSD_OLD_MODE".into(), u.from.mode.to_string()),
            ("FTSD_NEW_ROLE".into(), u.to.role.to_string()),
            ("FTSD_NEW_STATUS".into(), u.to.status.to_string()),
            ("FTSD_NEW_MODE".into(), u.to.mode.to_string()),
            ("FTSD_EPOCH".into(), epoch.clone()),
            ("FTSD_REASON".into(), reason.into()),
        ]);
        HookCall {
            event: "transition",
            args: vec![
                "transition".into(),
                u.content.to_string(),
                u.dbid.to_string(),
                state(&u.from),
                state(&u.to),
                epoch,
                reason.into(),
            ],
            env,
        }
    }

    /// The call for an alarm on a content: a refusal episode began (event = the rule:
    /// `prober_fault`, `failover_unconfirmed`, `double_fault`, `role_conflict`), so an operator
    /// learns that ftsd is not acting and why. Sent to the transition hook with no row change.
    pub fn refusal_call(&self, p: &crate::engine::PairReport) -> HookCall {
        let event = p.rule.as_str();
        let reason = p.refusal.clone().unwrap_or_default();
        let mut env = self.base_env(event);
        env.extend([
            ("FTSD_CONTENT".into(), p.content.to_string()),
            ("FTSD_DBID".into(), p.primary_dbid.to_string()),
            ("FTSD_MIRROR_DBID".into(), p.mirror_dbid.to_string()),
            ("FTSD_REASON".into(), reason.clone()),
        ]);
        HookCall {
            event,
            args: vec![
                event.into(),
                p.content.to_string(),
                p.primary_dbid.to_string(),
                reason,
            ],
            env,
        }
    }

    /// The call for the brake engaging (event `brake_engaged`, once per engagement): content
    /// -1 and dbid 0 (it concerns the cluster), the reason names the hosts and the limit.
    pub fn brake_call(&self, b: &crate::engine::BrakeSummary, held: usize) -> HookCall {
        let reason = format!(
            "brake engaged: {} hosts in window > limit {} ({}); {held} failovers held until `ftsctl brake release`",
            b.hosts.len(),
            b.limit.unwrap_or(0),
            b.hosts.join(", ")
        );
        let mut env = self.base_env("brake_engaged");
        env.extend([
            ("FTSD_CONTENT".into(), "-1".into()),
            ("FTSD_DBID".into(), "0".into()),
            ("FTSD_HOSTS".into(), b.hosts.join(",")),
            ("FTSD_REASON".into(), reason.clone()),
        ]);
        HookCall {
            event: "brake_engaged",
            args: vec!["brake_engaged".into(), "-1".into(), "0".into(), reason],
            env,
        }
    }

    /// The call for a change of office.
    pub fn leader_change_call(&self, ev: &OfficeEvent) -> HookCall {
        let (role, epoch) = match (ev.epoch, ev.previous) {
            (Some(e), _) => ("leader", e.0.to_string()),
            (None, Some(p)) => ("follower", p.0.to_string()),
            (None, None) => ("follower", String::new()),
        };
        let mut env = self.base_env("leader_change");
        env.extend([
            ("FTSD_ROLE".into(), role.into()),
            ("FTSD_EPOCH".into(), epoch.clone()),
            ("FTSD_REASON".into(), ev.reason.clone()),
        ]);
        HookCall {
            event: "leader_change",
            args: vec![
                "leader_change".into(),
                role.into(),
                epoch,
                ev.reason.clone(),
            ],
            env,
        }
    }

    /// The call for a driver alarm (a fence, a misconfigured standby ...).
    pub fn alarm_call(&self, a: &crate::driver::DriverAlarm) -> HookCall {
        let mut env = self.base_env("alarm");
        env.extend([
            ("FTSD_ALARM".into(), a.kind.as_str().into()),
            ("FTSD_CONTENT".into(), a.content.to_string()),
            ("FTSD_DBID".into(), a.dbid.to_string()),
            ("FTSD_REASON".into(), a.message.clone()),
        ]);
        HookCall {
            event: "alarm",
            args: vec![
                "alarm".into(),
                a.kind.as_str().into(),
                a.content.to_string(),
                a.dbid.to_string(),
                a.message.clone(),
            ],
            env,
        }
    }

    /// An alarm on the coordinator pair (content -1, dbid 0: ftsd knows it by address),
    /// delivered like a driver alarm (event `alarm`) to the transition hook.
    pub fn coordinator_alarm(&self, kind: &str, message: &str) {
        let mut env = self.base_env("alarm");
        env.extend([
            ("FTSD_ALARM".into(), kind.into()),
            ("FTSD_CONTENT".into(), "-1".into()),
            ("FTSD_DBID".into(), "0".into()),
            ("FTSD_REASON".into(), message.into()),
        ]);
        let call = HookCall {
            event: "alarm",
            args: vec![
                "alarm".into(),
                kind.into(),
                "-1".into(),
                "0".into(),
                message.into(),
            ],
            env,
        };
        self.enqueue(&self.settings().on_transition, call);
    }

    pub fn leader_changed(&self, ev: &OfficeEvent) {
        self.enqueue(
            &self.settings().on_leader_change,
            self.leader_change_call(ev),
        );
    }

    /// Follows the authority's office changes until the sender is dropped.
    pub fn follow_office(&self, mut events: tokio::sync::watch::Receiver<OfficeEvent>) {
        let hooks = self.clone();
        tokio::spawn(async move {
            while events.changed().await.is_ok() {
                let ev = events.borrow_and_update().clone();
                hooks.leader_changed(&ev);
            }
        });
    }
}

impl CycleObserver for Hooks {
    fn cycle_finished(&self, report: &CycleReport) {
        let settings = self.settings();
        if settings.on_transition.is_empty() {
            return;
        }
        if let Some(b) = report.brake.as_ref().filter(|b| b.newly_engaged) {
            self.enqueue(&settings.on_transition, self.brake_call(b, b.held));
        }
        for p in &report.reports {
            if p.episode_began {
                self.enqueue(&settings.on_transition, self.refusal_call(p));
            }
            for u in &p.updates {
                let call = self.transition_call(u, p.epoch, p.rule.as_str());
                self.enqueue(&settings.on_transition, call);
            }
            // Alarms go to the transition hook too (event `alarm`): whoever is paged for a
            // failover wants to hear of a fence.
            for a in &p.alarms {
                self.enqueue(&settings.on_transition, self.alarm_call(a));
            }
        }
    }
}

/// Runs one hook to completion or timeout; returns `ok`, `failed` or `timeout`.
async fn run(argv: &[String], call: &HookCall, timeout: Duration) -> &'static str {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .args(&call.args)
        .envs(call.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(hook = %argv[0], event = call.event, error = %e, "hook could not be started");
            return "failed";
        }
    };
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let tail = |b: &[u8]| {
                let s = String::from_utf8_lossy(b);
                let s = s.trim();
                s.chars()
                    .rev()
                    .take(500)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<String>()
            };
            if out.status.success() {
                tracing::info!(hook = %argv[0], event = call.event, args = ?call.args, "hook ran");
                "ok"
            } else {
                tracing::warn!(
                    hook = %argv[0],
                    event = call.event,
                    status = %out.status,
                    stderr = %tail(&out.stderr),
                    "hook failed"
                );
                "failed"
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(hook = %argv[0], event = call.event, error = %e, "hook failed");
            "failed"
        }
        Err(_) => {
            // Dropping the future drops the child, which kill_on_drop kills.
            tracing::warn!(hook = %argv[0], event = call.event, ?timeout, "hook timed out and was killed");
            "timeout"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::RowUpdate;
    use crate::model::{Epoch, Mode, Role, SegmentState, Status};

    fn hooks() -> Hooks {
        Hooks::start(
            HookSettings {
                cluster: "gp1".into(),
                instance_id: "fts-a".into(),
                ..HookSettings::default()
            },
            Arc::new(Metrics::default()),
        )
    }

    fn env<'a>(call: &'a HookCall, key: &str) -> &'a str {
        call.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{key} not set"))
    }

    #[test]
    fn transition_arguments_and_environment() {
        let u = RowUpdate {
            dbid: 4,
            content: 0,
            from: SegmentState {
                role: Role::Mirror,
                status: Status::Up,
                mode: Mode::InSync,
            },
            to: SegmentState {
                role: Role::Primary,
                status: Status::Up,
                mode: Mode::NotInSync,
            },
        };
        let call = hooks().transition_call(&u, Some(7), "failover");
        assert_eq!(
            call.args,
            ["transition", "0", "4", "m/u/s", "p/u/n", "7", "failover"]
        );
        assert_eq!(env(&call, "FTSD_HOOK_EVENT"), "transition");
        assert_eq!(env(&call, "FTSD_CLUSTER"), "gp1");
        assert_eq!(env(&call, "FTSD_INSTANCE_ID"), "fts-a");
        assert_eq!(env(&call, "FTSD_OLD_ROLE"), "m");
        assert_eq!(env(&call, "FTSD_NEW_MODE"), "n");
        assert_eq!(env(&call, "FTSD_EPOCH"), "7");
    }

    #[test]
    fn alarm_arguments_and_environment() {
        let call = hooks().alarm_call(&crate::driver::DriverAlarm {
            kind: crate::driver::AlarmKind::Fenced,
            content: 1,
            dbid: 3,
            message: "fenced dbid 3".into(),
        });
        assert_eq!(call.args, ["alarm", "fenced", "1", "3", "fenced dbid 3"]);
        assert_eq!(env(&call, "FTSD_HOOK_EVENT"), "alarm");
        assert_eq!(env(&call, "FTSD_ALARM"), "fenced");
        assert_eq!(env(&call, "FTSD_DBID"), "3");
        assert_eq!(env(&call, "FTSD_REASON"), "fenced dbid 3");
    }

    #[test]
    fn leaving_office_names_the_epoch_given_up_and_why() {
        let call = hooks().leader_change_call(&OfficeEvent {
            epoch: None,
            previous: Some(Epoch(9)),
            reason: "lease_lost".into(),
        });
        assert_eq!(call.args, ["leader_change", "follower", "9", "lease_lost"]);
        assert_eq!(env(&call, "FTSD_ROLE"), "follower");
        assert_eq!(env(&call, "FTSD_REASON"), "lease_lost");
    }
}
