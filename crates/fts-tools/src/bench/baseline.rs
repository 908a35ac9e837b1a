//! The baseline a probe cycle is compared with: a bare connect + startup + one query per
//! primary, with the same concurrency, no retries, classification, decision or evidence.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use ftsd::model::Segment;
use ftsd::wire::{frame, MessageType, GPCONNTYPE_FTS, GPCONNTYPE_PARAM};

async fn one(seg: &Segment, user: &str) -> std::io::Result<()> {
    let mut s = TcpStream::connect((seg.address.as_str(), seg.port as u16)).await?;
    s.set_nodelay(true)?;
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", user), (GPCONNTYPE_PARAM, GPCONNTYPE_FTS)],
        &mut out,
    )?;
    s.write_all(&out).await?;
    let mut buf = BytesMut::new();
    let bad = |e: frame::FrameError| std::io::Error::other(e.to_string());
    while frame::read_tagged(&mut s, &mut buf).await.map_err(bad)?.0 != b'Z' {}
    out.clear();
    postgres_protocol::message::frontend::query(
        &MessageType::Probe.query(seg.dbid, seg.content),
        &mut out,
    )?;
    s.write_all(&out).await?;
    while frame::read_tagged(&mut s, &mut buf).await.map_err(bad)?.0 != b'Z' {}
    out.clear();
    postgres_protocol::message::frontend::terminate(&mut out);
    s.write_all(&out).await?;
    Ok(())
}

/// One baseline "cycle" over `primaries`; returns how many failed.
pub async fn cycle(primaries: Arc<Vec<Segment>>, concurrency: usize, timeout: Duration) -> usize {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..primaries.len() {
        let primaries = primaries.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _p = permits.acquire().await.ok()?;
            tokio::time::timeout(timeout, one(&primaries[i], "gpadmin"))
                .await
                .ok()?
                .ok()
        });
    }
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        if !matches!(r, Ok(Some(()))) {
            failed += 1;
        }
    }
    failed
}
