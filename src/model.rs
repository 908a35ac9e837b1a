//! The segment configuration as Greenplum stores it in `gp_segment_configuration`, and the
//! vocabulary the rest of the crate speaks about it.
//!
//! Role, mode and status are single ASCII characters in the catalog (`"char"` columns); the enums
//! here keep that mapping in one place so no other module compares raw bytes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// `gp_segment_configuration.role` / `preferred_role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    #[serde(rename = "p")]
    Primary,
    #[serde(rename = "m")]
    Mirror,
}

/// `gp_segment_configuration.mode`: whether the pair replicates synchronously.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    #[serde(rename = "s")]
    InSync,
    #[serde(rename = "n")]
    NotInSync,
}

/// `gp_segment_configuration.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    #[serde(rename = "u")]
    Up,
    #[serde(rename = "d")]
    Down,
}

/// A catalog character that is not one of the values a column may hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {column} value {value:?} (expected one of {expected})")]
pub struct BadCatalogChar {
    pub column: &'static str,
    pub value: char,
    pub expected: &'static str,
}

macro_rules! catalog_char {
    ($ty:ident, $column:literal, $expected:literal, $($variant:ident = $ch:literal),+) => {
        impl $ty {
            pub fn as_char(self) -> char {
                match self { $($ty::$variant => $ch),+ }
            }
            pub fn from_char(c: char) -> Result<Self, BadCatalogChar> {
                match c {
                    $($ch => Ok($ty::$variant),)+
                    other => Err(BadCatalogChar { column: $column, value: other, expected: $expected }),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.as_char())
            }
        }
    };
}

catalog_char!(Role, "role", "p, m", Primary = 'p', Mirror = 'm');
catalog_char!(Mode, "mode", "s, n", InSync = 's', NotInSync = 'n');
catalog_char!(Status, "status", "u, d", Up = 'u', Down = 'd');

impl Mode {
    pub fn from_in_sync(in_sync: bool) -> Self {
        if in_sync {
            Mode::InSync
        } else {
            Mode::NotInSync
        }
    }
}

impl Status {
    pub fn from_alive(alive: bool) -> Self {
        if alive {
            Status::Up
        } else {
            Status::Down
        }
    }
}

// The ids are defined with the wire types, which spell them in every FTS message.
pub use fts_wire::{ContentId, Dbid};

/// One row of `gp_segment_configuration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub dbid: Dbid,
    pub content: ContentId,
    pub role: Role,
    pub preferred_role: Role,
    pub mode: Mode,
    pub status: Status,
    pub port: i32,
    pub hostname: String,
    pub address: String,
    pub datadir: String,
}

impl Segment {
    pub fn is_up(&self) -> bool {
        self.status == Status::Up
    }
    pub fn in_sync(&self) -> bool {
        self.mode == Mode::InSync
    }
    /// (role, status, mode) as a tuple, handy in comparisons.
    pub fn state_tuple(&self) -> (Role, Status, Mode) {
        (self.role, self.status, self.mode)
    }

    /// The state triple FTS changes; everything else in the row is owned by the management tools.
    pub fn state(&self) -> SegmentState {
        SegmentState {
            role: self.role,
            status: self.status,
            mode: self.mode,
        }
    }
}

/// The three columns FTS writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SegmentState {
    pub role: Role,
    pub status: Status,
    pub mode: Mode,
}

impl fmt::Display for SegmentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.role, self.status, self.mode)
    }
}

/// A content's acting primary and its peer, as FTS probes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub primary: Segment,
    pub mirror: Segment,
}

impl Pair {
    pub fn content(&self) -> ContentId {
        self.primary.content
    }
}

/// A catalog row that could not be read (a role/mode/status outside the known characters, a
/// NULL text column): its content is refused, the others are read normally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadableRow {
    pub dbid: Dbid,
    pub content: ContentId,
    pub error: String,
}

/// A content left out of the probe pairs because its rows cannot form a pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadContent {
    pub content: ContentId,
    pub reason: String,
}

/// The pairs to probe, and the contents refused for their shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairSet {
    pub pairs: Vec<Pair>,
    pub refused: Vec<BadContent>,
    /// Contents whose only row is a primary (no mirror). The in-core FTS does not probe them;
    /// `gpfts` does, and marks them down when they do not answer (`core::decide_lone_primary`).
    pub lone_primaries: Vec<Segment>,
}

/// The whole configuration as read in one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentConfig {
    pub segments: Vec<Segment>,
    /// Rows skipped because they could not be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<UnreadableRow>,
}

impl SegmentConfig {
    pub fn new(mut segments: Vec<Segment>) -> Self {
        segments.sort_by_key(|s| (s.content, s.dbid));
        SegmentConfig {
            segments,
            unreadable: Vec::new(),
        }
    }

    /// Like `new`, keeping the rows that could not be read so their contents are refused.
    pub fn with_unreadable(segments: Vec<Segment>, unreadable: Vec<UnreadableRow>) -> Self {
        SegmentConfig {
            unreadable,
            ..SegmentConfig::new(segments)
        }
    }

    pub fn by_dbid(&self, dbid: Dbid) -> Option<&Segment> {
        self.segments.iter().find(|s| s.dbid == dbid)
    }

    /// The pairs the in-core FTS probes: every acting primary with content >= 0 that has a peer.
    /// Contents without a mirror, and the coordinator/standby (content -1), are left out as the
    /// in-core FTS leaves them out (`docs/decisions.md`, "Which pairs are decided"); a content
    /// whose one row is a primary is listed in `lone_primaries`, for the `gpfts` profile.
    ///
    /// The in-core FTS trusts the catalog's shape (its writers are all inside the cluster); we
    /// do not: a content with an unreadable row, more than two rows, or two primaries is
    /// refused as a whole, because any pair picked from it would be a guess (two pair tasks
    /// for one content, or an arbitrary peer promoted).
    pub fn probe_pairs(&self) -> PairSet {
        let mut set = PairSet::default();
        let mut contents: Vec<ContentId> = self
            .segments
            .iter()
            .map(|s| s.content)
            .chain(self.unreadable.iter().map(|u| u.content))
            .filter(|c| *c >= 0)
            .collect();
        contents.sort_unstable();
        contents.dedup();
        for content in contents {
            let rows: Vec<&Segment> = self
                .segments
                .iter()
                .filter(|s| s.content == content)
                .collect();
            let unreadable: Vec<&UnreadableRow> = self
                .unreadable
                .iter()
                .filter(|u| u.content == content)
                .collect();
            let primaries: Vec<&Segment> = rows
                .iter()
                .copied()
                .filter(|s| s.role == Role::Primary)
                .collect();
            let reason = if let Some(u) = unreadable.first() {
                Some(format!(
                    "content {content}: row dbid {} is unreadable ({}); the content is left alone",
                    u.dbid, u.error
                ))
            } else if rows.len() > 2 {
                Some(format!(
                    "content {content} has {} rows (dbids {}); expected a primary and one mirror",
                    rows.len(),
                    dbids(&rows)
                ))
            } else if primaries.len() > 1 {
                Some(format!(
                    "content {content} has {} primaries (dbids {}); expected one",
                    primaries.len(),
                    dbids(&primaries)
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                set.refused.push(BadContent { content, reason });
                continue;
            }
            let (Some(primary), Some(mirror)) = (
                primaries.first(),
                rows.iter().find(|s| s.role != Role::Primary),
            ) else {
                if let ([only], [primary]) = (rows.as_slice(), primaries.as_slice()) {
                    debug_assert_eq!(only.dbid, primary.dbid);
                    set.lone_primaries.push((*primary).clone());
                }
                continue;
            };
            set.pairs.push(Pair {
                primary: (*primary).clone(),
                mirror: (*mirror).clone(),
            });
        }
        set
    }
}

fn dbids(rows: &[&Segment]) -> String {
    rows.iter()
        .map(|s| s.dbid.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A fencing token: the leader's etcd key create revision, or a fixed value in single-instance
/// mode. Catalog writes carry it and are rejected when a higher one has been recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Epoch(pub i64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(dbid: Dbid, content: ContentId, role: Role) -> Segment {
        Segment {
            dbid,
            content,
            role,
            preferred_role: role,
            mode: Mode::InSync,
            status: Status::Up,
            port: 6000 + dbid as i32,
            hostname: "h".into(),
            address: "127.0.0.1".into(),
            datadir: "/d".into(),
        }
    }

    #[test]
    fn chars_round_trip_and_reject_unknown() {
        for r in [Role::Primary, Role::Mirror] {
            assert_eq!(Role::from_char(r.as_char()).unwrap(), r);
        }
        let err = Mode::from_char('c').unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid mode value 'c' (expected one of s, n)"
        );
    }

    #[test]
    fn pairs_skip_coordinator_and_mirrorless_contents() {
        let cfg = SegmentConfig::new(vec![
            seg(1, -1, Role::Primary),
            seg(6, -1, Role::Mirror),
            seg(2, 0, Role::Primary),
            seg(4, 0, Role::Mirror),
            seg(3, 1, Role::Primary),
            // content 2's acting primary is the preferred mirror
            seg(5, 2, Role::Mirror),
            seg(7, 2, Role::Primary),
        ]);
        let set = cfg.probe_pairs();
        assert!(set.refused.is_empty());
        let lone: Vec<_> = set.lone_primaries.iter().map(|s| s.dbid).collect();
        assert_eq!(lone, vec![3], "content 1's primary has no mirror");
        let got: Vec<_> = set
            .pairs
            .iter()
            .map(|p| (p.content(), p.primary.dbid, p.mirror.dbid))
            .collect();
        assert_eq!(got, vec![(0, 2, 4), (2, 7, 5)]);
    }

    #[test]
    fn a_content_whose_only_row_is_a_mirror_is_not_a_lone_primary() {
        let cfg = SegmentConfig::new(vec![seg(3, 1, Role::Mirror), seg(1, -1, Role::Primary)]);
        let set = cfg.probe_pairs();
        assert!(set.pairs.is_empty() && set.refused.is_empty());
        assert!(set.lone_primaries.is_empty(), "{:?}", set.lone_primaries);
    }

    #[test]
    fn contents_that_cannot_form_a_pair_are_refused_and_the_others_kept() {
        let mut twin = seg(9, 1, Role::Primary);
        twin.hostname = "other".into();
        let cfg = SegmentConfig::with_unreadable(
            vec![
                seg(2, 0, Role::Primary),
                seg(5, 0, Role::Mirror),
                // content 1: two primaries
                seg(3, 1, Role::Primary),
                twin,
                // content 2: three rows
                seg(4, 2, Role::Primary),
                seg(6, 2, Role::Mirror),
                seg(8, 2, Role::Mirror),
                // content 3: the mirror row could not be read
                seg(7, 3, Role::Primary),
            ],
            vec![UnreadableRow {
                dbid: 10,
                content: 3,
                error: "invalid mode value 'c' (expected one of s, n)".into(),
            }],
        );
        let set = cfg.probe_pairs();
        let pairs: Vec<_> = set
            .pairs
            .iter()
            .map(|p| (p.content(), p.primary.dbid, p.mirror.dbid))
            .collect();
        assert_eq!(pairs, vec![(0, 2, 5)]);
        let refused: Vec<_> = set.refused.iter().map(|b| b.content).collect();
        assert_eq!(refused, vec![1, 2, 3]);
        assert!(
            set.refused[0].reason.contains("2 primaries (dbids 3, 9)"),
            "{:?}",
            set.refused
        );
        assert!(
            set.refused[1].reason.contains("3 rows"),
            "{:?}",
            set.refused
        );
        assert!(
            set.refused[2].reason.contains("dbid 10 is unreadable"),
            "{:?}",
            set.refused
        );
    }
}
