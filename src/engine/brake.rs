//! The shell around the brake on correlated failures (`core::brake`): where its record lives
//! (etcd under election, this process with `--no-election`), and the per-cycle gate every
//! pair passes after its decision and before its commit.
//!
//! The gate needs the whole cycle: a failover waits until every pair of the cycle has been
//! decided (each pair either proposes a failover or lets the gate know it has none), then the
//! brake judges all proposals at once, records the admitted ones *before* any commits (a
//! commit that then fails still counts: the brake errs on the side of holding) and every
//! waiting pair goes on with the verdict. A cycle without failovers never waits.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::core::brake::{self, BrakeRecord, HostLimit, Limits, Proposed, Verdict, Writer};
use crate::core::{Decision, Refusal, Rule};
use crate::model::{Epoch, Pair, Role, SegmentConfig};

/// `[brake]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrakeSettings {
    pub max_hosts: HostLimit,
    pub window: Duration,
}

impl Default for BrakeSettings {
    fn default() -> Self {
        BrakeSettings {
            max_hosts: HostLimit::Auto,
            window: Duration::from_secs(600),
        }
    }
}

/// Where the record lives.
enum Book {
    /// `--no-election` (and tools that run cycles in process): the record lives and dies with
    /// this process; a restart forgets an engagement (there is no second instance to forget
    /// it differently).
    Memory(Box<Mutex<(BrakeRecord, i64)>>),
    Etcd(Box<crate::election::brake::EtcdBook>),
}

/// The brake: its settings, its record, and what this instance last saw of it.
pub struct Brake {
    pub settings: BrakeSettings,
    book: Book,
    seen: watch::Sender<Option<BrakeRecord>>,
}

impl Default for Brake {
    fn default() -> Self {
        Brake::in_process(BrakeSettings::default())
    }
}

/// Why a release did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseFailure {
    #[error(transparent)]
    Refused(#[from] brake::ReleaseError),
    #[error("{0}")]
    Unavailable(String),
}

impl Brake {
    pub fn in_process(settings: BrakeSettings) -> Self {
        Brake {
            settings,
            book: Book::Memory(Box::new(Mutex::new((BrakeRecord::default(), 0)))),
            seen: watch::channel(None).0,
        }
    }

    pub fn in_etcd(settings: BrakeSettings, book: crate::election::brake::EtcdBook) -> Self {
        Brake {
            settings,
            book: Book::Etcd(Box::new(book)),
            seen: watch::channel(None).0,
        }
    }

    /// Whether the record lives in etcd (false: in this process).
    pub fn in_etcd_mode(&self) -> bool {
        matches!(self.book, Book::Etcd(_))
    }

    /// The record as this instance last read or wrote it (None: not yet).
    pub fn seen(&self) -> Option<BrakeRecord> {
        self.seen.borrow().clone()
    }

    async fn read(&self) -> Result<(BrakeRecord, i64), String> {
        let read = match &self.book {
            Book::Memory(m) => Ok(m.lock().unwrap_or_else(|e| e.into_inner()).clone()),
            Book::Etcd(book) => book.read().await,
        }?;
        self.seen.send_replace(Some(read.0.clone()));
        Ok(read)
    }

    async fn write(&self, record: &BrakeRecord, version: i64, epoch: Epoch) -> Result<(), String> {
        match &self.book {
            Book::Memory(m) => {
                let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
                if g.1 != version {
                    return Err("the brake record changed since it was read".into());
                }
                *g = (record.clone(), version + 1);
            }
            Book::Etcd(book) => book.write(record, version, epoch).await?,
        }
        self.seen.send_replace(Some(record.clone()));
        Ok(())
    }

    /// The record now (read afresh).
    pub async fn status(&self) -> Result<BrakeRecord, String> {
        self.read().await.map(|r| r.0)
    }

    /// An operator's release, written by the acting leader with `epoch` (fenced like its
    /// other writes).
    pub async fn release(
        &self,
        by: &str,
        reason: &str,
        epoch: Epoch,
    ) -> Result<BrakeRecord, ReleaseFailure> {
        let (record, version) = self.read().await.map_err(ReleaseFailure::Unavailable)?;
        let next = brake::release(&record, by, reason, SystemTime::now())?;
        self.write(&next, version, epoch)
            .await
            .map_err(ReleaseFailure::Unavailable)?;
        Ok(next)
    }

    /// Judges one cycle's failovers as the acting leader with `epoch`; the record is read
    /// afresh and written (fenced) when it changes. A record that cannot be read or written
    /// holds the failovers: the brake fails closed.
    async fn judge(
        &self,
        proposed: &[Proposed],
        primary_hosts: usize,
        epoch: Epoch,
        instance_id: &str,
    ) -> Result<Verdict, String> {
        let limits = Limits {
            max_hosts: self.settings.max_hosts.resolve(primary_hosts),
            window: self.settings.window,
        };
        let (record, version) = self.read().await?;
        let writer = Writer {
            epoch: epoch.0,
            instance_id: instance_id.to_owned(),
        };
        let (verdict, next) = brake::judge(&record, proposed, limits, SystemTime::now(), &writer);
        if next != record {
            self.write(&next, version, epoch).await?;
        }
        Ok(verdict)
    }
}

/// What the brake did in one cycle (the report, metrics, hooks, API).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BrakeSummary {
    /// Engaged at the end of the cycle, as far as this instance knows.
    pub engaged: bool,
    /// This cycle engaged it: the alarm is raised (log, hook, metric) once.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub newly_engaged: bool,
    /// The limit in force this cycle (None: off).
    pub limit: Option<usize>,
    /// The hosts counted when it engaged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Failovers held this cycle.
    pub held: usize,
    /// The record could not be read or written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The gate's verdict for a waiting failover.
#[derive(Debug, Clone)]
enum Gate {
    Proceed,
    Hold(Refusal),
}

/// One pair's pass through the gate; dropping it without proposing tells the gate this pair
/// has no failover this cycle.
pub struct Ticket {
    tx: Option<mpsc::UnboundedSender<Proposed>>,
    verdict: watch::Receiver<Option<Gate>>,
}

/// The host a failover gives up: the primary's host name as the catalog records it (its
/// address when the name is empty). Interfaces of one host share the name.
pub fn host_of(pair: &Pair) -> String {
    let p = &pair.primary;
    if p.hostname.is_empty() {
        p.address.clone()
    } else {
        p.hostname.clone()
    }
}

/// How many hosts carry the acting primaries of the segments (content >= 0).
pub fn primary_hosts(config: &SegmentConfig) -> usize {
    config
        .segments
        .iter()
        .filter(|s| s.content >= 0 && s.role == Role::Primary)
        .map(|s| {
            if s.hostname.is_empty() {
                s.address.as_str()
            } else {
                s.hostname.as_str()
            }
        })
        .collect::<BTreeSet<_>>()
        .len()
}

impl Ticket {
    /// Lets a decision through the brake: anything but a failover passes at once; a failover
    /// waits for the cycle's verdict and comes back held (`Rule::BrakeHeld`) or unchanged.
    pub async fn pass(mut self, pair: &Pair, decision: Decision) -> Decision {
        let Some(tx) = self.tx.take() else {
            return decision;
        };
        if decision.rule != Rule::Failover || decision.refusal.is_some() || decision.is_noop() {
            return decision;
        }
        let proposal = Proposed {
            content: pair.content(),
            host: host_of(pair),
        };
        if tx.send(proposal).is_err() {
            return decision;
        }
        drop(tx);
        let verdict = match self.verdict.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            // The gate is gone (the cycle is being torn down): hold.
            Err(_) => Some(Gate::Hold(Refusal::BrakeUnrecorded {
                error: "the cycle ended before the brake judged".into(),
            })),
        };
        match verdict {
            Some(Gate::Hold(why)) => Decision::held_by_brake(pair.content(), why),
            _ => decision,
        }
    }
}

/// The cycle's gate: hands out one ticket per pair, then (`run`) waits for every pair's
/// proposal or dropped ticket and judges them together.
pub struct CycleGate {
    rx: mpsc::UnboundedReceiver<Proposed>,
    verdict: watch::Sender<Option<Gate>>,
    tx: mpsc::UnboundedSender<Proposed>,
    enabled: bool,
}

impl CycleGate {
    /// A gate for one cycle; with the brake off its tickets let everything through at once.
    pub fn new(brake: &Brake) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        CycleGate {
            rx,
            verdict: watch::channel(None).0,
            tx,
            enabled: brake.settings.max_hosts != HostLimit::Off,
        }
    }

    pub fn ticket(&self) -> Ticket {
        Ticket {
            tx: self.enabled.then(|| self.tx.clone()),
            verdict: self.verdict.subscribe(),
        }
    }

    /// Waits for every ticket, judges, releases the waiting failovers. `epoch`: the acting
    /// leader's epoch, read once all pairs are decided (None: not acting; the failovers pass
    /// on to `act`, which does not act on them either).
    pub async fn run(
        mut self,
        brake: &Brake,
        primary_hosts: usize,
        epoch: impl FnOnce() -> Option<Epoch>,
        instance_id: &str,
    ) -> BrakeSummary {
        drop(self.tx);
        let mut proposed = Vec::new();
        while let Some(p) = self.rx.recv().await {
            proposed.push(p);
        }
        let limit = brake.settings.max_hosts.resolve(primary_hosts);
        let mut summary = BrakeSummary {
            limit,
            ..Default::default()
        };
        let epoch = if limit.is_some() { epoch() } else { None };
        let gate = match epoch {
            None => Gate::Proceed,
            Some(_) if proposed.is_empty() => {
                // Refresh what this instance knows (status, metrics) once per cycle.
                if let Err(e) = brake.read().await {
                    tracing::debug!(error = %e, "brake record not read");
                }
                Gate::Proceed
            }
            Some(epoch) => match brake
                .judge(&proposed, primary_hosts, epoch, instance_id)
                .await
            {
                Ok(Verdict::Proceed) => Gate::Proceed,
                Ok(Verdict::Hold(held)) => {
                    summary.held = proposed.len();
                    summary.newly_engaged = held.newly;
                    if held.newly {
                        tracing::error!(
                            hosts = ?held.hosts,
                            limit = held.limit,
                            window = %humantime::format_duration(brake.settings.window),
                            held = proposed.len(),
                            "brake engaged: failovers on too many hosts at once; holding every failover until an operator runs `ftsctl brake release`"
                        );
                    } else {
                        tracing::warn!(held = proposed.len(), "brake engaged: failovers held");
                    }
                    Gate::Hold(Refusal::BrakeEngaged { held })
                }
                Err(error) => {
                    tracing::error!(%error, held = proposed.len(), "brake record unavailable: holding this cycle's failovers");
                    summary.held = proposed.len();
                    summary.error = Some(error.clone());
                    Gate::Hold(Refusal::BrakeUnrecorded { error })
                }
            },
        };
        self.verdict.send_replace(Some(gate));
        if let Some(e) = brake.seen().and_then(|r| r.engaged) {
            summary.engaged = true;
            summary.hosts = e.hosts.into_iter().collect();
        }
        summary
    }
}
