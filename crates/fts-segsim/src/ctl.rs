//! Client side of the control API, used by `fts-segsim ctl` (blocking; no runtime needed) and
//! usable from tests that prefer HTTP over the in-process API.

use serde::de::DeserializeOwned;
use std::time::Duration;

use super::instances::SegmentView;
use super::state::{Fault, GarbageVariant, Phase};
use ftsd::model::{Dbid, Role};

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach control API at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("control API answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("unexpected answer from control API: {0}")]
    Decode(String),
}

/// A control API endpoint.
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    /// `control` is `host:port` or an `http://` URL.
    pub fn new(control: &str) -> Self {
        let base = if control.contains("://") {
            control.trim_end_matches('/').to_string()
        } else {
            format!("http://{control}")
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        Client {
            base,
            agent: config.into(),
        }
    }

    fn call<T: DeserializeOwned>(
        &self,
        post: Option<Option<&Fault>>,
        path: &str,
    ) -> Result<T, CtlError> {
        let url = format!("{}{}", self.base, path);
        let sent = match post {
            None => self.agent.get(&url).call(),
            Some(Some(body)) => self.agent.post(&url).send_json(body),
            Some(None) => self.agent.post(&url).send_empty(),
        };
        let mut resp = sent.map_err(|e| CtlError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp
            .body_mut()
            .read_json()
            .map_err(|e| CtlError::Decode(e.to_string()))?;
        if !(200..300).contains(&status) {
            let message = body
                .get("error")
                .and_then(|v| v.as_str())
                .unwrap_or("no error message")
                .to_string();
            return Err(CtlError::Api { status, message });
        }
        serde_json::from_value(body).map_err(|e| CtlError::Decode(e.to_string()))
    }

    pub fn health(&self) -> Result<serde_json::Value, CtlError> {
        self.call(None, "/health")
    }

    pub fn list(&self) -> Result<Vec<SegmentView>, CtlError> {
        self.call(None, "/segments")
    }

    pub fn show(&self, dbid: Dbid) -> Result<SegmentView, CtlError> {
        self.call(None, &format!("/segments/{dbid}"))
    }

    pub fn fault(&self, dbid: Dbid, fault: &Fault) -> Result<SegmentView, CtlError> {
        self.call(Some(Some(fault)), &format!("/segments/{dbid}/fault"))
    }

    pub fn clear(&self, dbid: Dbid) -> Result<SegmentView, CtlError> {
        self.call(Some(None), &format!("/segments/{dbid}/clear"))
    }

    pub fn recover(&self, dbid: Dbid) -> Result<SegmentView, CtlError> {
        self.call(Some(None), &format!("/segments/{dbid}/recover"))
    }

    pub fn reset_counters(&self) -> Result<serde_json::Value, CtlError> {
        self.call(Some(None), "/reset-counters")
    }

    pub fn clear_all(&self) -> Result<serde_json::Value, CtlError> {
        self.call(Some(None), "/clear-all")
    }

    /// Sets the Cloudberry standby promote-ready key (simulators started with `--cbdb-conf`).
    pub fn promote_ready(&self, ready: bool) -> Result<serde_json::Value, CtlError> {
        self.call(Some(None), &format!("/promote-ready/{}", u8::from(ready)))
    }

    /// Blocks (or unblocks) the connections from source address `ip`.
    pub fn block_client(
        &self,
        ip: std::net::IpAddr,
        block: bool,
    ) -> Result<serde_json::Value, CtlError> {
        let verb = if block { "block" } else { "unblock" };
        self.call(Some(None), &format!("/clients/{ip}/{verb}"))
    }
}

/// Builds a fault from command-line words: `slow 2s`, `crash-restart 5s`, `garbage two_rows`, ...
pub fn parse_fault(
    kind: &str,
    arg: Option<&str>,
    recovery_for: Option<Duration>,
) -> Result<Fault, String> {
    let duration = |what: &str| -> Result<Duration, String> {
        let raw = arg.ok_or_else(|| format!("{kind} needs a {what}, e.g. `{kind} 2s`"))?;
        humantime::parse_duration(raw).map_err(|e| format!("invalid {what} {raw:?}: {e}"))
    };
    let no_arg = |f: Fault| match arg {
        Some(extra) => Err(format!("{kind} takes no argument (got {extra:?})")),
        None => Ok(f),
    };
    match kind.replace('_', "-").as_str() {
        "down" => no_arg(Fault::Down),
        "hang" => no_arg(Fault::Hang),
        "slow" => Ok(Fault::Slow {
            delay: duration("delay")?,
        }),
        "crash-restart" => Ok(Fault::CrashRestart {
            down_for: duration("down time")?,
            recovery_for,
        }),
        "recovery-progress" => no_arg(Fault::RecoveryProgress),
        "recovery-stuck" => no_arg(Fault::RecoveryStuck),
        "starting-up" => no_arg(Fault::StartingUp),
        "resetting" => no_arg(Fault::Resetting),
        "mirror-disconnected" => no_arg(Fault::MirrorDisconnected),
        "lagging" => no_arg(Fault::Lagging),
        "disk-error" => no_arg(Fault::DiskError),
        "garbage" => {
            let names = GarbageVariant::ALL.map(GarbageVariant::as_str).join(", ");
            let raw = arg.ok_or_else(|| format!("garbage needs a variant: {names}"))?;
            let variant = GarbageVariant::parse(raw)
                .ok_or_else(|| format!("unknown garbage variant {raw:?}; one of {names}"))?;
            Ok(Fault::Garbage { variant })
        }
        other => Err(format!("unknown fault {other:?}")),
    }
}

fn state_word(v: &SegmentView) -> &'static str {
    match (v.phase, &v.fault) {
        (Phase::Crashed, _) => "crashed",
        (Phase::Recovering, _) => "recovering",
        (_, Some(Fault::Down)) => "down",
        (_, Some(Fault::Hang)) => "hung",
        _ if v.promoting => "promoting",
        _ => "up",
    }
}

fn mirror_word(v: &SegmentView) -> &'static str {
    match (v.mirror_up, v.in_sync) {
        (Some(true), Some(true)) => "sync",
        (Some(true), _) => "up-nosync",
        (Some(false), _) => "down",
        _ => "-",
    }
}

fn role_word(r: Role) -> &'static str {
    match r {
        Role::Primary => "p",
        Role::Mirror => "m",
    }
}

/// Aligned table, one row per instance.
pub fn format_table(views: &[SegmentView]) -> String {
    let header = [
        "DBID",
        "CONTENT",
        "ROLE",
        "PREF",
        "ADDRESS",
        "STATE",
        "SYNCREP",
        "MIRROR",
        "CONN",
        "PROBE",
        "SYNCREP_OFF",
        "PROMOTE",
        "FAULT",
    ];
    let rows: Vec<[String; 13]> = views
        .iter()
        .map(|v| {
            [
                v.dbid.to_string(),
                v.content.to_string(),
                role_word(v.role).to_string(),
                role_word(v.preferred_role).to_string(),
                format!("{}:{}", v.host, v.port),
                state_word(v).to_string(),
                if v.role == Role::Primary {
                    if v.syncrep {
                        "on"
                    } else {
                        "off"
                    }
                } else {
                    "-"
                }
                .to_string(),
                mirror_word(v).to_string(),
                v.counters.connections.to_string(),
                v.counters.probe.to_string(),
                v.counters.syncrep_off.to_string(),
                v.counters.promote.to_string(),
                v.fault
                    .as_ref()
                    .map(Fault::describe)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_words_to_faults() {
        assert_eq!(
            parse_fault("slow", Some("2s"), None),
            Ok(Fault::Slow {
                delay: Duration::from_secs(2)
            })
        );
        assert_eq!(
            parse_fault("garbage", Some("two-rows"), None),
            Ok(Fault::Garbage {
                variant: GarbageVariant::TwoRows
            })
        );
        assert!(parse_fault("slow", None, None).is_err());
        assert!(parse_fault("down", Some("x"), None).is_err());
        assert!(parse_fault("garbage", Some("nope"), None).is_err());
        assert!(parse_fault("explode", None, None).is_err());
    }
}
