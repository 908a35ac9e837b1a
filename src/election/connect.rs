//! etcd client construction.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

/// The keepalive interval used when none is configured (`EtcdOptions::default()` in tools and
/// tests): twice etcd's default `--grpc-keepalive-min-time`.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How to reach etcd.
#[derive(Clone, Default)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    pub dial_timeout: Duration,
    /// HTTP/2 keepalive ping interval (`etcd.keepalive_interval`); at least etcd's
    /// `--grpc-keepalive-min-time`, or etcd tears the connection down.
    pub keepalive_interval: Duration,
    pub username: Option<String>,
    pub password: Option<crate::secret::Secret>,
    /// PEM contents, not paths: read once at start so a rotated file cannot half-apply.
    pub ca_pem: Option<Vec<u8>>,
    pub cert_pem: Option<Vec<u8>>,
    pub key_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("tls", &self.ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl EtcdOptions {
    /// No request timeout is set on the channel: Campaign legitimately blocks until elected.
    /// Each unary call the daemon makes is wrapped in its own timeout instead. HTTP/2
    /// keepalive detects a dead connection under a blocked stream (Campaign, Observe, watches,
    /// lease keepalives).
    ///
    /// Pings go out only while a stream is open, never more often than the configured
    /// interval: etcd enforces `--grpc-keepalive-min-time` (default 5s) and, without an open
    /// stream, tolerates no pings at all (gRPC's `PermitWithoutStream = false`). A client that
    /// pings more eagerly is sent GOAWAY `too_many_pings`, which breaks every stream on the
    /// connection: the lease session, Campaign and the pause watch.
    pub fn connect_options(&self) -> ConnectOptions {
        let interval = if self.keepalive_interval.is_zero() {
            DEFAULT_KEEPALIVE_INTERVAL
        } else {
            self.keepalive_interval
        };
        let mut o = ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            .with_keep_alive(interval, self.dial_timeout)
            .with_keep_alive_while_idle(false)
            .with_require_leader(true);
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            o = o.with_user(u.clone(), p.expose());
        }
        if self.ca_pem.is_some() || self.cert_pem.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            if let (Some(cert), Some(key)) = (&self.cert_pem, &self.key_pem) {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            o = o.with_tls(tls);
        }
        o
    }

    pub async fn connect(&self) -> Result<Client, etcd_client::Error> {
        self.connect_to(self.endpoints.clone()).await
    }

    async fn connect_to(&self, endpoints: Vec<String>) -> Result<Client, etcd_client::Error> {
        let connect = Client::connect(endpoints, Some(self.connect_options()));
        match tokio::time::timeout(self.dial_timeout * 2, connect).await {
            Ok(r) => r,
            Err(_) => Err(etcd_client::Error::InvalidArgs(format!(
                "connecting to etcd {:?} timed out",
                self.endpoints
            ))),
        }
    }
}

/// A client on one endpoint at a time, moving to the next after each failure. The balanced
/// client picks the endpoint of every call at random, so while one member is cut off a caller
/// that must get through (the lease keeper, the campaign's leader reads) would keep landing on
/// it, each time for a whole call limit; this one loses one call to it.
pub struct Rotation {
    options: EtcdOptions,
    turn: usize,
    client: Option<Client>,
}

impl Rotation {
    /// Starts at the endpoint `start` picks (callers pass their lease id, so that instances
    /// spread over the members).
    pub fn new(options: EtcdOptions, start: i64) -> Rotation {
        Rotation {
            options,
            turn: start.unsigned_abs() as usize,
            client: None,
        }
    }

    /// The current endpoint's client, connecting first if needed; a failed connection moves on.
    pub async fn client(&mut self) -> Result<&mut Client, etcd_client::Error> {
        if self.client.is_none() {
            let endpoints = match self.options.endpoints.len() {
                0 => Vec::new(),
                n => vec![self.options.endpoints[self.turn % n].clone()],
            };
            match self.options.connect_to(endpoints).await {
                Ok(c) => self.client = Some(c),
                Err(e) => {
                    self.failed();
                    return Err(e);
                }
            }
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// The current endpoint failed a call: the next call goes to the next endpoint.
    pub fn failed(&mut self) {
        self.client = None;
        self.turn = self.turn.wrapping_add(1);
    }
}
