//! The configuration blob Cloudberry keeps at `…/fts_dump_file_key`: one line per instance,
//! `dbid content role preferred_role mode status port hostname address datadir`, fields
//! separated by one space, every line ended by `\n`.
//!
//! Parsing is strict and all-or-nothing: one bad line makes the whole blob unusable for the
//! cycle (the error names the line), because acting on a configuration with a row missing
//! could promote a mirror whose primary we simply did not read. Writing keeps the blob's line
//! order and rewrites only the state fields of the rows a transition changes, so a blob that
//! went through ftsd differs from the one `gpfts` or the coordinator wrote only where the
//! transition says.

use crate::model::{Mode, Role, Segment, SegmentState, Status};

/// Fields per line.
pub const FIELDS: usize = 10;

/// Why a blob cannot be read; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("the configuration blob is empty")]
    Empty,
    #[error("configuration blob line {line}: {reason}")]
    Line { line: usize, reason: String },
}

/// Parses the whole blob, rows in blob order.
pub fn parse(text: &str) -> Result<Vec<Segment>, BlobError> {
    if text.trim().is_empty() {
        return Err(BlobError::Empty);
    }
    if !text.ends_with('\n') {
        let line = text.split('\n').count();
        return Err(BlobError::Line {
            line,
            reason: "the last line is not ended by a newline (truncated write?)".into(),
        });
    }
    let mut rows: Vec<Segment> = Vec::new();
    for (i, raw) in text
        .strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .enumerate()
    {
        let line = i + 1;
        let bad = |reason: String| BlobError::Line { line, reason };
        let fields: Vec<&str> = raw.split(' ').collect();
        if fields.len() != FIELDS || fields.iter().any(|f| f.is_empty()) {
            return Err(bad(format!(
                "expected {FIELDS} fields separated by single spaces, found {raw:?}"
            )));
        }
        let int = |i: usize, name: &str| -> Result<i64, BlobError> {
            fields[i]
                .parse::<i64>()
                .map_err(|_| bad(format!("{name} {:?} is not a number", fields[i])))
        };
        let one = |i: usize, name: &str| -> Result<char, BlobError> {
            let mut c = fields[i].chars();
            match (c.next(), c.next()) {
                (Some(ch), None) => Ok(ch),
                _ => Err(bad(format!("{name} {:?} is not one character", fields[i]))),
            }
        };
        let dbid = i16::try_from(int(0, "dbid")?).map_err(|_| bad("dbid out of range".into()))?;
        let content =
            i16::try_from(int(1, "content")?).map_err(|_| bad("content out of range".into()))?;
        if dbid < 1 || content < -1 {
            return Err(bad(format!("dbid {dbid} / content {content} out of range")));
        }
        let port = i32::try_from(int(6, "port")?)
            .ok()
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| bad(format!("port {:?} out of range", fields[6])))?;
        let seg = Segment {
            dbid,
            content,
            role: Role::from_char(one(2, "role")?).map_err(|e| bad(e.to_string()))?,
            preferred_role: Role::from_char(one(3, "preferred_role")?)
                .map_err(|e| bad(e.to_string()))?,
            mode: Mode::from_char(one(4, "mode")?).map_err(|e| bad(e.to_string()))?,
            status: Status::from_char(one(5, "status")?).map_err(|e| bad(e.to_string()))?,
            port,
            hostname: fields[7].to_owned(),
            address: fields[8].to_owned(),
            datadir: fields[9].to_owned(),
        };
        if let Some(dup) = rows.iter().position(|r| r.dbid == dbid) {
            return Err(bad(format!("dbid {dbid} already on line {}", dup + 1)));
        }
        rows.push(seg);
    }
    Ok(rows)
}

/// One row as a blob line (with its newline).
pub fn line(s: &Segment) -> String {
    format!(
        "{} {} {} {} {} {} {} {} {} {}\n",
        s.dbid,
        s.content,
        s.role,
        s.preferred_role,
        s.mode,
        s.status,
        s.port,
        s.hostname,
        s.address,
        s.datadir
    )
}

/// The blob of `rows`, in their order.
pub fn render(rows: &[Segment]) -> String {
    rows.iter().map(line).collect()
}

/// Applies state changes to the rows read for the decision, keeping their order. Fails naming
/// the dbid when a changed row is absent or no longer holds `from`.
pub fn apply_states(
    rows: &mut [Segment],
    changes: &[(i16, SegmentState, SegmentState)],
) -> Result<(), (i16, SegmentState)> {
    for (dbid, from, to) in changes {
        let row = rows
            .iter_mut()
            .find(|r| r.dbid == *dbid)
            .filter(|r| r.state() == *from)
            .ok_or((*dbid, *from))?;
        row.role = to.role;
        row.status = to.status;
        row.mode = to.mode;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOB: &str = "1 -1 p p n u 5432 cdw cdw /data/coordinator/gpseg-1\n\
        2 0 p p s u 6000 sdw1 sdw1 /data/primary/gpseg0\n\
        4 0 m m s u 7000 sdw2 sdw2 /data/mirror/gpseg0\n\
        6 -1 m m s u 5432 scdw scdw /data/coordinator/gpseg-1\n";

    #[test]
    fn round_trips_byte_for_byte() {
        let rows = parse(BLOB).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1].datadir, "/data/primary/gpseg0");
        assert_eq!(render(&rows), BLOB);
    }

    #[test]
    fn a_transition_changes_only_its_fields() {
        let mut rows = parse(BLOB).unwrap();
        let s = |r, st, m| SegmentState {
            role: r,
            status: st,
            mode: m,
        };
        apply_states(
            &mut rows,
            &[
                (
                    2,
                    s(Role::Primary, Status::Up, Mode::InSync),
                    s(Role::Mirror, Status::Down, Mode::NotInSync),
                ),
                (
                    4,
                    s(Role::Mirror, Status::Up, Mode::InSync),
                    s(Role::Primary, Status::Up, Mode::NotInSync),
                ),
            ],
        )
        .unwrap();
        assert_eq!(
            render(&rows),
            "1 -1 p p n u 5432 cdw cdw /data/coordinator/gpseg-1\n\
             2 0 m p n d 6000 sdw1 sdw1 /data/primary/gpseg0\n\
             4 0 p m n u 7000 sdw2 sdw2 /data/mirror/gpseg0\n\
             6 -1 m m s u 5432 scdw scdw /data/coordinator/gpseg-1\n"
        );
        let stale = apply_states(
            &mut rows,
            &[(
                2,
                s(Role::Primary, Status::Up, Mode::InSync),
                s(Role::Mirror, Status::Down, Mode::NotInSync),
            )],
        );
        assert_eq!(stale.unwrap_err().0, 2);
    }

    #[test]
    fn malformed_blobs_name_the_line() {
        let cases = [
            ("", "the configuration blob is empty"),
            (
                "1 -1 p p n u 5432 h a /d",
                "line 1: the last line is not ended",
            ),
            (
                "1 -1 p p n u 5432 h a /d\n2 0 p p s u 6000 h a\n",
                "line 2: expected 10 fields",
            ),
            (
                "1 -1 p p n u 5432 h a /d\n2 0 x p s u 6000 h a /d\n",
                "line 2: invalid role value 'x'",
            ),
            ("1 -1 p p n u 5432 h  /d\n", "line 1: expected 10 fields"),
            (
                "1 -1 p p n u 99999 h a /d\n",
                "line 1: port \"99999\" out of range",
            ),
            (
                "1 -1 p p n u 5432 h a /d\n1 0 p p s u 6000 h a /d\n",
                "line 2: dbid 1 already on line 1",
            ),
            (
                "1 -1 p p n u 5432 h a /d\nx 0 p p s u 6000 h a /d\n",
                "line 2: dbid \"x\" is not a number",
            ),
        ];
        for (text, want) in cases {
            let got = parse(text).unwrap_err().to_string();
            assert!(got.contains(want), "{text:?}: {got}");
        }
    }
}
