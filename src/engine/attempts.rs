//! One message exchange with its attempts: `retries + 1` tries, each bounded by the timeout,
//! with the configured delay in between, as the in-core prober's retry loop does. Before each
//! attempt a gate says whether it may start and by when it must end (for PROMOTE and
//! SYNCREP_OFF: authority still held, and the act-by deadline).

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

use super::{ProbeSettings, SegmentDriver};
use crate::core::reply_wants_retry;
use crate::model::Segment;
use crate::wire::failure::AttemptError;
use crate::wire::{MessageType, ProbeReply};

/// One attempt as recorded in evidence.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    /// Offset from the start of the exchange.
    pub started_ms: u64,
    pub elapsed_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<ProbeReply>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<AttemptError>,
}

/// The result of an exchange: the last reply, or the errors of every attempt.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub kind: MessageType,
    pub result: Result<ProbeReply, Vec<AttemptError>>,
    pub attempts: Vec<AttemptRecord>,
    pub elapsed: Duration,
}

impl Exchange {
    /// Latency of the last attempt that got a reply.
    pub fn reply_latency(&self) -> Option<Duration> {
        self.attempts
            .iter()
            .rev()
            .find(|a| a.reply.is_some())
            .map(|a| Duration::from_micros(a.elapsed_us))
    }
}

/// Asked before every attempt: `Some(deadline)` lets the attempt start and bounds it (never
/// later than `now + timeout`), `None` ends the exchange early.
pub type Gate<'a> = &'a (dyn Fn() -> Option<Instant> + Send + Sync);

/// Sends `kind` to `target` with retries. For PROBE, `mirror` is the catalog row of the
/// target's peer: a reply with `request_retry` while the catalog still has that mirror up is
/// retried too and consumes the same budget (decision rows 1/1c).
/// `gate` is asked before each attempt (after the retry delay and after waiting for a
/// permit); when it says no, the exchange ends and returns None.
pub async fn exchange<D: SegmentDriver>(
    driver: &D,
    permits: &Semaphore,
    settings: &ProbeSettings,
    target: &Segment,
    kind: MessageType,
    mirror: Option<&Segment>,
    gate: Gate<'_>,
) -> Option<Exchange> {
    let start = Instant::now();
    let mut attempts = Vec::with_capacity(1);
    let mut errors = Vec::new();
    for attempt in 0..=settings.retries {
        if attempt > 0 {
            tokio::time::sleep(settings.retry_delay).await;
        }
        let result = {
            // A closed semaphore would mean shutdown; treat as stop.
            let Ok(_permit) = permits.acquire().await else {
                return None;
            };
            // Asked with the permit in hand: waiting for one can take a whole timeout.
            let limit = gate()?;
            super::faults::pause_before_send(kind).await;
            let t0 = Instant::now();
            let deadline = limit.min(t0 + settings.timeout);
            let r = driver.send(target, kind, deadline).await;
            (r, t0.elapsed())
        };
        let started_ms = (start.elapsed() - result.1).as_millis() as u64;
        let (result, elapsed) = result;
        let last = attempt == settings.retries;
        match result {
            Ok(reply) => {
                attempts.push(AttemptRecord {
                    attempt: attempt + 1,
                    started_ms,
                    elapsed_us: elapsed.as_micros() as u64,
                    reply: Some(reply),
                    error: None,
                });
                let retry = mirror.is_some_and(|m| reply_wants_retry(&reply, m));
                if retry && !last {
                    tracing::debug!(attempt = attempt + 1, "segment requested a retry");
                    continue;
                }
                return Some(Exchange {
                    kind,
                    result: Ok(reply),
                    attempts,
                    elapsed: start.elapsed(),
                });
            }
            Err(err) => {
                tracing::debug!(attempt = attempt + 1, error = %err, "attempt failed");
                attempts.push(AttemptRecord {
                    attempt: attempt + 1,
                    started_ms,
                    elapsed_us: elapsed.as_micros() as u64,
                    reply: None,
                    error: Some(err.clone()),
                });
                errors.push(err);
            }
        }
    }
    Some(Exchange {
        kind,
        result: Err(errors),
        attempts,
        elapsed: start.elapsed(),
    })
}
