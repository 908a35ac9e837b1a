//! PROBE on a plain PostgreSQL primary: read its recovery state, its replication rows and
//! `synchronous_standby_names`, and reduce them to the five fields of an FTS reply.
//!
//! The mapping follows what a Greenplum primary computes for itself (`docs/protocol.md`, the
//! five booleans):
//! `is_mirror_up` when the standby's walsender is `streaming` or `catchup`; `is_in_sync` when
//! it is `streaming`, synchronous (`sync`/`quorum`) and its replay lag is at most
//! `postgres.max_lag`; `is_syncrep_enabled` when `synchronous_standby_names` is set;
//! `is_role_mirror` when the server is in recovery.

use serde::Serialize;
use tokio_postgres::Client;

use super::connect::classify;
use crate::wire::failure::AttemptError;
use crate::wire::ProbeReply;

/// One physical walsender as `pg_stat_replication` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StandbyRow {
    pub application_name: String,
    /// NULL when the probe role may not see it (needs `pg_monitor` / `pg_read_all_stats`).
    pub state: Option<String>,
    pub sync_state: Option<String>,
    /// `pg_current_wal_lsn() - replay_lsn` in bytes; NULL before the standby reported.
    pub replay_lag: Option<i64>,
}

/// What one probe read from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observed {
    pub in_recovery: bool,
    pub synchronous_standby_names: String,
    /// The server's `synchronous_commit` as the probe role's session sees it (the server
    /// default, unless the role or database overrides it).
    pub synchronous_commit: String,
    /// `default_transaction_read_only`: on after ftsd fenced the server.
    pub read_only: bool,
    pub standbys: Vec<StandbyRow>,
}

/// Physical walsenders only: `backup` ones are `pg_basebackup` runs, and a walsender attached
/// to a database is a logical one. Neither is the pair's standby.
const REPLICATION: &str = "SELECT coalesce(r.application_name, ''), r.state, r.sync_state, \
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint \
  FROM pg_stat_replication r \
 WHERE r.state IS DISTINCT FROM 'backup' \
   AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.pid AND a.datid IS NOT NULL) \
 ORDER BY r.pid";

pub(super) async fn observe(client: &Client) -> Result<Observed, AttemptError> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names'), \
                    current_setting('synchronous_commit'), \
                    current_setting('default_transaction_read_only') = 'on'",
            &[],
        )
        .await
        .map_err(|e| classify(&e, false))?;
    let in_recovery: bool = row.get(0);
    let synchronous_standby_names: String = row.get(1);
    let synchronous_commit: String = row.get(2);
    let read_only: bool = row.get(3);
    let standbys = if in_recovery {
        Vec::new()
    } else {
        client
            .query(REPLICATION, &[])
            .await
            .map_err(|e| classify(&e, false))?
            .iter()
            .map(|r| StandbyRow {
                application_name: r.get(0),
                state: r.get(1),
                sync_state: r.get(2),
                replay_lag: r.get(3),
            })
            .collect()
    };
    Ok(Observed {
        in_recovery,
        synchronous_standby_names,
        synchronous_commit,
        read_only,
        standbys,
    })
}

/// The probe reduced to the FTS reply (without `request_retry`, which needs the driver's
/// memory) plus the reasons, for logs and evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assessment {
    pub reply: ProbeReply,
    /// Why the standby does or does not count as in sync.
    pub why: String,
    /// The standby whose row was judged, if exactly one was connected.
    pub standby: Option<StandbyRow>,
    /// The rows could not be read (missing privileges): the reply must not lead to any action.
    pub blind: bool,
    /// `synchronous_standby_names` should be switched back on: the one standby is streaming
    /// while synchronous replication is off (after a SYNCREP_OFF).
    pub restore_syncrep: bool,
}

const UP_STATES: [&str; 2] = ["streaming", "catchup"];
const SYNC_STATES: [&str; 2] = ["sync", "quorum"];

/// `synchronous_commit` values under which an acknowledged commit is on the standby's disk
/// (`on`: flushed; `remote_apply`: flushed and applied). `remote_write` acknowledges once the
/// standby's OS has the WAL, not its disk: losing the standby host's power in between loses an
/// acknowledged commit, and ftsd could not tell. `local` and `off` do not wait for the
/// standby at all. Only the first two make "in sync" mean "no acknowledged commit is lost by
/// promoting it".
pub const DURABLE_COMMIT: [&str; 2] = ["on", "remote_apply"];

/// Whether the standby streams, is not a synchronous one, and synchronous replication is on:
/// `synchronous_standby_names` does not name it (a wrong `postgres.sync_standby_names`), so
/// commits wait for a standby that never comes.
pub fn streaming_but_not_named(a: &Assessment) -> bool {
    a.reply.is_syncrep_enabled
        && a.standby.as_ref().is_some_and(|r| {
            r.state.as_deref() == Some("streaming")
                && !r
                    .sync_state
                    .as_deref()
                    .is_some_and(|s| SYNC_STATES.contains(&s))
        })
}

pub fn assess(obs: &Observed, max_lag: u64) -> Assessment {
    if obs.in_recovery {
        // A standby reports only its role: syncrep and mirror fields describe a primary's
        // walsenders, and a standby's inherited synchronous_standby_names must not read as
        // "syncrep on, mirror gone" (decision row 2 would send it SYNCREP_OFF).
        return Assessment {
            reply: ProbeReply {
                is_role_mirror: true,
                ..ProbeReply::default()
            },
            why: "server is in recovery (a standby)".into(),
            standby: None,
            blind: false,
            restore_syncrep: false,
        };
    }
    let syncrep = !obs.synchronous_standby_names.trim().is_empty();
    let mut a = Assessment {
        reply: ProbeReply {
            is_syncrep_enabled: syncrep,
            ..ProbeReply::default()
        },
        why: String::new(),
        standby: None,
        blind: false,
        restore_syncrep: false,
    };
    match obs.standbys.as_slice() {
        [] => a.why = "no standby connected".into(),
        [row] => {
            a.standby = Some(row.clone());
            let Some(state) = row.state.as_deref() else {
                a.blind = true;
                a.why =
                    "pg_stat_replication columns are hidden: grant pg_monitor to the probe role"
                        .into();
                return a;
            };
            let up = UP_STATES.contains(&state);
            let sync = row
                .sync_state
                .as_deref()
                .is_some_and(|s| SYNC_STATES.contains(&s));
            let lag_ok = row
                .replay_lag
                .is_some_and(|lag| lag <= i64::try_from(max_lag).unwrap_or(i64::MAX));
            let durable = DURABLE_COMMIT.contains(&obs.synchronous_commit.as_str());
            a.reply.is_mirror_up = up;
            a.reply.is_in_sync = up && state == "streaming" && syncrep && sync && lag_ok && durable;
            a.restore_syncrep = state == "streaming" && !syncrep;
            a.why = if a.reply.is_in_sync {
                format!(
                    "standby streaming, synchronous and caught up (synchronous_commit = {})",
                    obs.synchronous_commit
                )
            } else if !up {
                format!("standby walsender is {state}")
            } else if !syncrep {
                "synchronous_standby_names is empty".into()
            } else if state != "streaming" {
                format!("standby is {state}")
            } else if !sync {
                format!(
                    "standby is {} (not named in synchronous_standby_names)",
                    row.sync_state.as_deref().unwrap_or("of unknown sync state")
                )
            } else if !durable {
                format!(
                    "synchronous_commit = {} does not wait for the standby's disk (on or \
                     remote_apply needed): acknowledged commits may be missing on it",
                    obs.synchronous_commit
                )
            } else {
                match row.replay_lag {
                    Some(lag) => {
                        format!("replay lag {lag} bytes exceeds postgres.max_lag {max_lag}")
                    }
                    None => "replay position not reported yet".into(),
                }
            };
        }
        rows => {
            // Which row is the catalog's mirror cannot be told from the primary alone; calling
            // any of them "in sync" could promote the wrong standby. Report not in sync.
            a.reply.is_mirror_up = rows
                .iter()
                .any(|r| r.state.as_deref().is_some_and(|s| UP_STATES.contains(&s)));
            a.why = format!(
                "{} physical standbys connected; the postgres driver supports one per primary",
                rows.len()
            );
        }
    }
    a
}

/// What to set `synchronous_standby_names` to when switching it back on: the configured value,
/// else the standby's application_name as a quoted identifier.
pub fn sync_names_for(configured: &str, standby: &StandbyRow) -> String {
    if !configured.trim().is_empty() {
        return configured.to_string();
    }
    format!("\"{}\"", standby.application_name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: &str, sync: &str, lag: Option<i64>) -> StandbyRow {
        StandbyRow {
            application_name: "s1".into(),
            state: Some(state.into()),
            sync_state: Some(sync.into()),
            replay_lag: lag,
        }
    }

    fn obs(names: &str, standbys: Vec<StandbyRow>) -> Observed {
        Observed {
            in_recovery: false,
            synchronous_standby_names: names.into(),
            synchronous_commit: "on".into(),
            read_only: false,
            standbys,
        }
    }

    #[test]
    fn only_a_commit_that_waits_for_the_standbys_disk_counts_as_in_sync() {
        for (setting, in_sync) in [
            ("on", true),
            ("remote_apply", true),
            ("remote_write", false),
            ("local", false),
            ("off", false),
        ] {
            let mut o = obs("s1", vec![row("streaming", "sync", Some(0))]);
            o.synchronous_commit = setting.into();
            let a = assess(&o, 0);
            assert_eq!(a.reply.is_in_sync, in_sync, "{setting}: {}", a.why);
            assert!(a.reply.is_mirror_up, "{setting}");
            assert!(a.why.contains(setting), "{setting}: {}", a.why);
        }
    }

    #[test]
    fn a_streaming_standby_not_named_is_detected() {
        let named = assess(&obs("s1", vec![row("streaming", "sync", Some(0))]), 0);
        assert!(!streaming_but_not_named(&named));
        let wrong = assess(&obs("typo", vec![row("streaming", "async", Some(0))]), 0);
        assert!(streaming_but_not_named(&wrong));
        let off = assess(&obs("", vec![row("streaming", "async", Some(0))]), 0);
        assert!(!streaming_but_not_named(&off), "syncrep off blocks nothing");
        let catchup = assess(&obs("typo", vec![row("catchup", "async", Some(0))]), 0);
        assert!(!streaming_but_not_named(&catchup));
    }

    #[test]
    fn streaming_sync_caught_up_is_in_sync() {
        let a = assess(&obs("\"s1\"", vec![row("streaming", "sync", Some(0))]), 0);
        assert!(a.reply.is_mirror_up && a.reply.is_in_sync && a.reply.is_syncrep_enabled);
        assert!(!a.reply.is_role_mirror && !a.restore_syncrep && !a.blind);
        let q = assess(
            &obs("ANY 1 (s1)", vec![row("streaming", "quorum", Some(10))]),
            10,
        );
        assert!(q.reply.is_in_sync);
    }

    #[test]
    fn lag_async_catchup_and_missing_rows_are_not_in_sync() {
        let lagging = assess(&obs("s1", vec![row("streaming", "sync", Some(11))]), 10);
        assert!(lagging.reply.is_mirror_up && !lagging.reply.is_in_sync);
        assert!(lagging.why.contains("replay lag 11"), "{}", lagging.why);
        let unknown_lag = assess(&obs("s1", vec![row("streaming", "sync", None)]), 10);
        assert!(!unknown_lag.reply.is_in_sync);
        let asynchronous = assess(&obs("other", vec![row("streaming", "async", Some(0))]), 10);
        assert!(asynchronous.reply.is_mirror_up && !asynchronous.reply.is_in_sync);
        let catchup = assess(&obs("s1", vec![row("catchup", "sync", Some(0))]), 10);
        assert!(catchup.reply.is_mirror_up && !catchup.reply.is_in_sync);
        let startup = assess(&obs("s1", vec![row("startup", "sync", Some(0))]), 10);
        assert!(!startup.reply.is_mirror_up && !startup.reply.is_in_sync);
        let gone = assess(&obs("s1", vec![]), 10);
        assert!(gone.reply.is_syncrep_enabled && !gone.reply.is_mirror_up);
    }

    #[test]
    fn syncrep_off_with_a_streaming_standby_asks_to_restore() {
        let a = assess(&obs("", vec![row("streaming", "async", Some(0))]), 10);
        assert!(a.restore_syncrep && a.reply.is_mirror_up && !a.reply.is_in_sync);
        assert!(!a.reply.is_syncrep_enabled);
        let catchup = assess(&obs("", vec![row("catchup", "async", Some(0))]), 10);
        assert!(!catchup.restore_syncrep);
    }

    #[test]
    fn standby_reports_only_its_role() {
        let mut o = obs("s1", vec![]);
        o.in_recovery = true;
        let a = assess(&o, 10);
        assert_eq!(
            a.reply,
            ProbeReply {
                is_role_mirror: true,
                ..ProbeReply::default()
            }
        );
    }

    #[test]
    fn two_standbys_or_hidden_rows_are_never_in_sync() {
        let two = assess(
            &obs(
                "*",
                vec![
                    row("streaming", "sync", Some(0)),
                    row("streaming", "potential", Some(0)),
                ],
            ),
            10,
        );
        assert!(two.reply.is_mirror_up && !two.reply.is_in_sync && !two.restore_syncrep);
        let hidden = StandbyRow {
            application_name: "s1".into(),
            state: None,
            sync_state: None,
            replay_lag: None,
        };
        let blind = assess(&obs("s1", vec![hidden]), 10);
        assert!(blind.blind && !blind.reply.is_in_sync);
    }

    #[test]
    fn restored_names_quote_the_application_name() {
        let r = StandbyRow {
            application_name: "we\"ird".into(),
            state: None,
            sync_state: None,
            replay_lag: None,
        };
        assert_eq!(sync_names_for("", &r), "\"we\"\"ird\"");
        assert_eq!(sync_names_for("FIRST 1 (a, b)", &r), "FIRST 1 (a, b)");
    }
}
