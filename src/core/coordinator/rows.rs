//! The coordinator pair's rows (content -1) of a segment configuration, without I/O: which
//! rows are the pair's servers (ftsd knows the pair by address, the configuration by dbid),
//! and the changes that record a promotion in them. Both backends use it: the Cloudberry
//! blob in the very transaction that records the outcome, the SQL catalog later, from the
//! update the outcome leaves pending in etcd (`src/coordinator/catalog_rows.rs`).

use crate::core::transition::RowUpdate;
use crate::model::{Mode, Role, Segment, SegmentState, Status};

/// Whether `row` is the server at `host:port` (its row's address or host name).
pub fn is_server(row: &Segment, host: &str, port: u16) -> bool {
    row.content == -1
        && i32::from(port) == row.port
        && (row.address == host || row.hostname == host)
}

/// The content -1 row of the server at `host:port`.
pub fn find_server<'a>(rows: &'a [Segment], host: &str, port: u16) -> Option<&'a Segment> {
    rows.iter().find(|r| is_server(r, host, port))
}

/// The changes that record `to` as the acting coordinator in place of `from`: `to`
/// `p`/`u`/`n` (it has no standby now), `from` `m`/`d`/`n` when its row is still there (the
/// new coordinator's `activateStandby` drops it). Rows already so are left alone; no change
/// at all is an empty list. Err: the configuration has no row for `to`.
pub fn failover_updates(
    rows: &[Segment],
    from: (&str, u16),
    to: (&str, u16),
) -> Result<Vec<RowUpdate>, String> {
    let new = find_server(rows, to.0, to.1).ok_or_else(|| {
        format!(
            "no content -1 row for {}:{} in the segment configuration",
            to.0, to.1
        )
    })?;
    let mut updates = Vec::new();
    let acting = SegmentState {
        role: Role::Primary,
        status: Status::Up,
        mode: Mode::NotInSync,
    };
    if new.state() != acting {
        updates.push(RowUpdate::new(new, acting));
    }
    if let Some(old) = find_server(rows, from.0, from.1) {
        let down = SegmentState {
            role: Role::Mirror,
            status: Status::Down,
            mode: Mode::NotInSync,
        };
        if old.state() != down {
            updates.push(RowUpdate::new(old, down));
        }
    }
    Ok(updates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(dbid: i16, role: Role, preferred: Role, mode: Mode, port: i32) -> Segment {
        Segment {
            dbid,
            content: -1,
            role,
            preferred_role: preferred,
            mode,
            status: Status::Up,
            port,
            hostname: "cdw".into(),
            address: "10.0.0.1".into(),
            datadir: "/data/coordinator/gpseg-1".into(),
        }
    }

    fn pair() -> Vec<Segment> {
        vec![
            row(1, Role::Primary, Role::Primary, Mode::InSync, 5432),
            row(4, Role::Mirror, Role::Mirror, Mode::InSync, 5433),
        ]
    }

    #[test]
    fn the_old_coordinator_goes_down_and_the_standby_acts() {
        let u = failover_updates(&pair(), ("10.0.0.1", 5432), ("cdw", 5433)).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(
            (u[0].dbid, u[0].to.role, u[0].to.status),
            (4, Role::Primary, Status::Up)
        );
        assert_eq!(u[0].to.mode, Mode::NotInSync);
        assert_eq!(
            (u[1].dbid, u[1].to.role, u[1].to.status),
            (1, Role::Mirror, Status::Down)
        );
    }

    #[test]
    fn after_activate_standby_only_what_differs_changes() {
        // activateStandby dropped the old line and made the standby p/p (mode kept).
        let mut rows = vec![row(4, Role::Primary, Role::Primary, Mode::InSync, 5433)];
        let u = failover_updates(&rows, ("10.0.0.1", 5432), ("10.0.0.1", 5433)).unwrap();
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].to.mode, Mode::NotInSync);
        rows[0].mode = Mode::NotInSync;
        assert!(
            failover_updates(&rows, ("10.0.0.1", 5432), ("10.0.0.1", 5433))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_standby_missing_from_the_rows_is_an_error() {
        let e = failover_updates(&pair(), ("10.0.0.1", 5432), ("10.0.0.2", 5433)).unwrap_err();
        assert!(e.contains("10.0.0.2:5433"), "{e}");
        // A segment on the same address and port is not the coordinator's row.
        let mut rows = pair();
        rows[1].content = 0;
        assert!(failover_updates(&rows, ("10.0.0.1", 5432), ("10.0.0.1", 5433)).is_err());
    }
}
