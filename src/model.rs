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

/// The whole configuration as read in one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentConfig {
    pub segments: Vec<Segment>,
}

impl SegmentConfig {
    pub fn new(mut segments: Vec<Segment>) -> Self {
        segments.sort_by_key(|s| (s.content, s.dbid));
        SegmentConfig { segments }
    }

    pub fn by_dbid(&self, dbid: Dbid) -> Option<&Segment> {
        self.segments.iter().find(|s| s.dbid == dbid)
    }

    /// The pairs the in-core FTS probes: every acting primary with content >= 0 that has a peer.
    /// Contents without a mirror, and the coordinator/standby (content -1), are left out exactly as
    /// the reference (2.1, step 4) describes.
    pub fn probe_pairs(&self) -> Vec<Pair> {
        let mut pairs = Vec::new();
        for primary in self
            .segments
            .iter()
            .filter(|s| s.content >= 0 && s.role == Role::Primary)
        {
            let peer = self
                .segments
                .iter()
                .find(|s| s.content == primary.content && s.dbid != primary.dbid);
            if let Some(mirror) = peer {
                pairs.push(Pair {
                    primary: primary.clone(),
                    mirror: mirror.clone(),
                });
            }
        }
        pairs
    }
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
        let pairs = cfg.probe_pairs();
        let got: Vec<_> = pairs
            .iter()
            .map(|p| (p.content(), p.primary.dbid, p.mirror.dbid))
            .collect();
        assert_eq!(got, vec![(0, 2, 4), (2, 7, 5)]);
    }
}
