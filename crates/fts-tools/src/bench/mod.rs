//! Benchmarks behind `fts-bench` (see docs/performance.md): a probe cycle against
//! `fts-segsim` next to a bare-protocol baseline, leader takeover after kill -9, and the
//! failover of real PostgreSQL pairs (a segment pair, by one or several (quorum) instances;
//! the coordinator pair behind a VIP).
//! Figures come from running processes, never from timing assertions in tests.

pub mod baseline;
pub mod coordinator_failover;
pub mod measure;
pub mod pg_failover;
pub mod pg_quorum;
pub mod probe;
pub mod takeover;

/// A free loopback port for a daemon's API or metrics.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The tables every elected bench daemon ends its configuration with: the catalog at `url`,
/// etcd at `endpoints` with lease TTL `ttl`, the API and metrics on free loopback ports, and
/// the log at `level`.
pub fn elected_tables(
    url: &str,
    endpoints: &[String],
    ttl: std::time::Duration,
    level: &str,
) -> anyhow::Result<String> {
    let endpoints = endpoints
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(",");
    Ok(format!(
        r#"[catalog]
url = "{url}"
[etcd]
endpoints = [{endpoints}]
lease_ttl = "{ttl}"
act_margin = "500ms"
dial_timeout = "1s"
[api]
listen = "127.0.0.1:{api}"
metrics_listen = "127.0.0.1:{metrics}"
[log]
level = "{level}"
"#,
        ttl = humantime::format_duration(ttl),
        api = free_port()?,
        metrics = free_port()?,
    ))
}
