//! Which server acts when etcd records nothing about the pair: the first round of a new
//! cluster, or the first after etcd was rebuilt from nothing. The configured addresses say
//! only how the pair was first set up; after a failover the configured primary is the
//! former coordinator, so trusting the configuration would point the VIP (and every later
//! decision) at a standby or at a dead server. What the servers answer decides instead, and
//! only when it is unambiguous: exactly one of them accepts writes.
//!
//! The acting leader records what this returns (one fenced etcd transaction on the absent
//! state, so two leaders cannot both adopt); until then no VIP agent holds the address and
//! no failover is decided.

use serde::{Deserialize, Serialize};

/// How one server of the pair answered this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerAnswer {
    /// Out of recovery and not read-only.
    Writable,
    /// In recovery: a standby.
    InRecovery,
    /// Out of recovery but read-only: a former coordinator a switchover stopped.
    ReadOnly,
    Unreachable,
    /// Nothing is known: the probe failed on this prober's side, or the server is starting
    /// up (it may accept writes in a moment).
    Unknown,
}

/// The outcome of [`adopt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Adoption {
    /// Record this: `configured_primary` says which configured server acts; `rebuild` that
    /// the other one may be a former coordinator and must be rebuilt as a standby before it
    /// runs again.
    Record {
        configured_primary: bool,
        rebuild: bool,
    },
    /// Nothing can be recorded this round: not exactly one server accepts writes.
    Wait(WaitReason),
}

/// Why [`adopt`] records nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// Both accept writes: the dual-writable alarm, never a guess.
    BothWritable,
    /// Neither accepts writes (both down, in recovery, or read-only).
    NoneWritable,
    /// A server's state is unknown: it may accept writes too.
    Unknown,
}

/// Which configured server acts, from this round's answers.
pub fn adopt(configured_primary: ServerAnswer, configured_standby: ServerAnswer) -> Adoption {
    use ServerAnswer::*;
    match (configured_primary, configured_standby) {
        (Unknown, _) | (_, Unknown) => Adoption::Wait(WaitReason::Unknown),
        (Writable, Writable) => Adoption::Wait(WaitReason::BothWritable),
        // The configured standby is not a former coordinator whatever state it is in.
        (Writable, _) => Adoption::Record {
            configured_primary: true,
            rebuild: false,
        },
        // The configured primary answers as a standby: it was rebuilt after a failover.
        (InRecovery, Writable) => Adoption::Record {
            configured_primary: false,
            rebuild: false,
        },
        // Gone or stopped read-only: a former coordinator nobody rebuilt; it must never be
        // started as it is.
        (ReadOnly | Unreachable, Writable) => Adoption::Record {
            configured_primary: false,
            rebuild: true,
        },
        (_, _) => Adoption::Wait(WaitReason::NoneWritable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServerAnswer::*;

    const ALL: [ServerAnswer; 5] = [Writable, InRecovery, ReadOnly, Unreachable, Unknown];

    #[test]
    fn table() {
        let rec = |configured_primary, rebuild| Adoption::Record {
            configured_primary,
            rebuild,
        };
        let cases = [
            (Writable, Writable, Adoption::Wait(WaitReason::BothWritable)),
            (Writable, InRecovery, rec(true, false)),
            (Writable, ReadOnly, rec(true, false)),
            (Writable, Unreachable, rec(true, false)),
            (InRecovery, Writable, rec(false, false)),
            (ReadOnly, Writable, rec(false, true)),
            (Unreachable, Writable, rec(false, true)),
            (Unknown, Writable, Adoption::Wait(WaitReason::Unknown)),
            (Writable, Unknown, Adoption::Wait(WaitReason::Unknown)),
        ];
        for (p, s, want) in cases {
            assert_eq!(adopt(p, s), want, "{p:?} / {s:?}");
        }
    }

    #[test]
    fn records_exactly_the_one_writable_server() {
        for p in ALL {
            for s in ALL {
                let writable = [p, s].iter().filter(|a| **a == Writable).count();
                match adopt(p, s) {
                    Adoption::Record {
                        configured_primary, ..
                    } => {
                        assert_eq!(writable, 1, "{p:?} / {s:?}");
                        let acting = if configured_primary { p } else { s };
                        assert_eq!(acting, Writable, "{p:?} / {s:?}");
                    }
                    Adoption::Wait(WaitReason::Unknown) => {
                        assert!(p == Unknown || s == Unknown, "{p:?} / {s:?}")
                    }
                    Adoption::Wait(_) => assert_ne!(writable, 1, "{p:?} / {s:?}"),
                }
            }
        }
    }
}
