//! Finding an ftsd instance and talking to it.

use std::future::Future;
use std::time::Duration;

use tonic::{Code, Response, Status};

use super::cli::Cli;
use super::{error_chain, CtlError};
use crate::api::client::{ApiClient, Credentials};
use crate::api::LEADER_ADDRESS_KEY;
use crate::config::Secret;
use crate::election::{keys, members};
use crate::tls::pem;

/// The default API address (the daemons' default `api.listen`).
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7470";

/// A connected instance.
pub struct Connected {
    pub address: String,
    pub client: ApiClient,
    /// Limit for connecting (also to a leader after a redirect).
    timeout: Duration,
    /// Limit for each call; `probe` raises it to cover the cycle.
    pub call_timeout: Duration,
    /// Presented again to the leader after a redirect.
    credentials: Credentials,
}

/// `--cacert`, `--cert`/`--key` and `--token-file`, read once. An unreadable or malformed
/// file is a usage error naming the flag.
pub fn credentials(cli: &Cli) -> Result<Credentials, CtlError> {
    let usage = |flag: &str, e: pem::PemError| CtlError {
        code: super::exit::USAGE,
        message: format!("--{flag}: {e}"),
    };
    let ca_pem = match &cli.cacert {
        Some(p) => Some(pem::read_certificates(p).map_err(|e| usage("cacert", e))?),
        None => None,
    };
    let identity = match (&cli.cert, &cli.key) {
        (Some(cert), Some(key)) => {
            if ca_pem.is_none() {
                return Err(CtlError {
                    code: super::exit::USAGE,
                    message: "--cert needs --cacert (a client certificate is only sent over \
                              TLS)"
                        .into(),
                });
            }
            Some((
                pem::read_certificates(cert).map_err(|e| usage("cert", e))?,
                pem::read_private_key(key).map_err(|e| usage("key", e))?,
            ))
        }
        _ => None,
    };
    let token = match &cli.token_file {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    Ok(Credentials {
        ca_pem,
        identity,
        token,
    })
}

fn read_token(path: &std::path::Path) -> Result<Secret, CtlError> {
    let usage = |problem: String| CtlError {
        code: super::exit::USAGE,
        message: format!("--token-file {}: {problem}", path.display()),
    };
    let text = std::fs::read_to_string(path).map_err(|e| usage(e.to_string()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(usage("is empty".into()));
    }
    Ok(Secret::new(token))
}

/// Whether a transport error is the TLS layer refusing credentials (an untrusted client
/// certificate, or a server certificate ours does not trust): exit code 5 rather than 3.
fn is_tls_refusal(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("certificate") || t.contains("unknownca") || t.contains("unknown ca")
}

/// Connects to one address.
pub async fn connect(
    address: &str,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<Connected, String> {
    let client = credentials.connect(address, timeout).await?;
    Ok(Connected {
        address: address.to_string(),
        client,
        timeout,
        call_timeout: timeout,
        credentials: credentials.clone(),
    })
}

/// The candidate addresses: `--endpoint` as given, or the members registry in etcd (leader
/// first), or the default.
pub async fn candidates(cli: &Cli) -> Result<Vec<String>, CtlError> {
    if !cli.endpoint.is_empty() {
        return Ok(cli.endpoint.clone());
    }
    if cli.etcd.is_empty() {
        return Ok(vec![DEFAULT_ENDPOINT.to_string()]);
    }
    let Some(cluster) = &cli.cluster else {
        return Err(CtlError {
            code: super::exit::USAGE,
            message: "--etcd needs --cluster (the daemons' cluster name)".into(),
        });
    };
    let options = etcd_options(cli)?;
    let etcd = cli.etcd.join(",");
    let mut client = tokio::time::timeout(
        cli.timeout,
        etcd_client::Client::connect(cli.etcd.clone(), Some(options)),
    )
    .await
    .map_err(|_| CtlError::unreachable(format!("etcd {etcd}: timed out")))?
    .map_err(|e| CtlError::unreachable(format!("etcd {etcd}: {}", error_chain(&e))))?;
    let prefix = keys::members_prefix(&cli.etcd_prefix, cluster);
    let mut list = tokio::time::timeout(cli.timeout, members::list(&mut client, &prefix))
        .await
        .map_err(|_| CtlError::unreachable(format!("etcd {etcd}: timed out")))?
        .map_err(|e| CtlError::unreachable(format!("etcd {etcd}: {}", error_chain(&e))))?;
    if list.is_empty() {
        return Err(CtlError::unreachable(format!(
            "no ftsd instance of cluster {cluster:?} is registered in etcd under {prefix}"
        )));
    }
    list.sort_by_key(|m| m.role != "leader");
    Ok(list.into_iter().map(|m| m.api_address).collect())
}

/// How `--etcd` connects: TLS with `--etcd-cacert` (and a client certificate with
/// `--etcd-cert`/`--etcd-key`), as the daemons' `etcd.ca_file`, `etcd.cert_file` and
/// `etcd.key_file`.
fn etcd_options(cli: &Cli) -> Result<etcd_client::ConnectOptions, CtlError> {
    let usage = |flag: &str, e: pem::PemError| CtlError {
        code: super::exit::USAGE,
        message: format!("--{flag}: {e}"),
    };
    let mut options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(cli.timeout)
        .with_timeout(cli.timeout);
    let ca = match &cli.etcd_cacert {
        Some(p) => Some(pem::read_certificates(p).map_err(|e| usage("etcd-cacert", e))?),
        None => None,
    };
    let identity = match (&cli.etcd_cert, &cli.etcd_key) {
        (Some(cert), Some(key)) => Some((
            pem::read_certificates(cert).map_err(|e| usage("etcd-cert", e))?,
            pem::read_private_key(key).map_err(|e| usage("etcd-key", e))?,
        )),
        _ => None,
    };
    let https = cli.etcd.iter().any(|e| e.starts_with("https://"));
    if https && ca.is_none() {
        return Err(CtlError {
            code: super::exit::USAGE,
            message: "https:// etcd endpoints need --etcd-cacert (the CA of etcd's certificates)"
                .into(),
        });
    }
    if ca.is_some() || identity.is_some() {
        let mut tls = etcd_client::TlsOptions::new();
        if let Some(ca) = &ca {
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &identity {
            tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
        }
        options = options.with_tls(tls);
    }
    Ok(options)
}

/// Connects to the first candidate that answers.
pub async fn connect_any(cli: &Cli) -> Result<Connected, CtlError> {
    let credentials = credentials(cli)?;
    let mut errors = Vec::new();
    for address in candidates(cli).await? {
        match connect(&address, &credentials, cli.timeout).await {
            Ok(c) => return Ok(c),
            Err(e) => errors.push(e),
        }
    }
    let all = errors.join("; ");
    if is_tls_refusal(&all) {
        return Err(CtlError::auth(format!(
            "TLS refused by or for ftsd (check --cacert, --cert, --key): {all}"
        )));
    }
    Err(CtlError::unreachable(format!("cannot reach ftsd: {all}")))
}

/// A refused or failed call as a one-line error.
pub fn status_error(address: &str, s: &Status) -> CtlError {
    if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied) {
        return CtlError::auth(format!("{address}: {}", s.message().trim()));
    }
    let what = match s.code() {
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "timed out",
        Code::FailedPrecondition => "refused",
        Code::InvalidArgument => "invalid argument",
        Code::Unimplemented => "not supported by this ftsd version",
        _ => "failed",
    };
    let msg = s.message().trim();
    // A connection the server's TLS layer cut (an untrusted client certificate is only
    // refused after the client finished its side of the handshake) has its cause in the
    // source chain, not the message.
    let chain = error_chain(s);
    if is_tls_refusal(&chain) {
        return CtlError::auth(format!("{address}: TLS refused: {chain}"));
    }
    // A connection that dies mid-call surfaces as a transport status without a server message.
    // Plaintext HTTP/2 spoken to a TLS listener.
    if msg.contains("h2 protocol error") {
        return CtlError::unreachable(format!(
            "{address}: {msg} (if the API uses TLS, pass --cacert)"
        ));
    }
    if msg.is_empty() || (s.code() == Code::Unknown && msg.contains("transport")) {
        return CtlError::unreachable(format!("{address}: {what} ({:?})", s.code()));
    }
    CtlError::failed(format!("{address}: {what}: {msg}"))
}

impl Connected {
    /// Runs one call within `call_timeout`.
    async fn bounded<T>(
        &self,
        fut: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Result<T, Status>, CtlError> {
        match tokio::time::timeout(self.call_timeout, fut).await {
            Ok(r) => Ok(r.map(Response::into_inner)),
            Err(_) => Err(CtlError::unreachable(format!(
                "{}: no answer within {}",
                self.address,
                humantime::format_duration(self.call_timeout)
            ))),
        }
    }

    /// A read call.
    pub async fn read<T, F, Fut>(&mut self, call: F) -> Result<T, CtlError>
    where
        F: FnOnce(ApiClient) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        match self.bounded(call(self.client.clone())).await? {
            Ok(r) => Ok(r),
            Err(s) => Err(self.error(&s).await),
        }
    }

    /// The error for a failed call; a connection cut without a reason while a client
    /// certificate was presented is checked for a refused certificate (exit code 5).
    async fn error(&self, s: &Status) -> CtlError {
        let e = status_error(&self.address, s);
        if e.code == super::exit::AUTH || self.credentials.identity.is_none() {
            return e;
        }
        match crate::api::client::refused_certificate(&self.credentials, &self.address).await {
            Some(why) => CtlError::auth(format!(
                "{}: the server refused the client certificate (--cert; is it signed by the \
                 CA in the server's api.client_ca_file?): {why}",
                self.address
            )),
            None => e,
        }
    }

    /// A mutating call: a follower's refusal names the leader, which is tried next (twice at
    /// most, in case leadership moves meanwhile).
    pub async fn mutate<T, F, Fut>(&mut self, call: F) -> Result<T, CtlError>
    where
        F: Fn(ApiClient) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        for _ in 0..3 {
            match self.bounded(call(self.client.clone())).await? {
                Ok(r) => return Ok(r),
                Err(s) if s.code() == Code::FailedPrecondition => {
                    let Some(leader) = s
                        .metadata()
                        .get(LEADER_ADDRESS_KEY)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                    else {
                        return Err(self.error(&s).await);
                    };
                    eprintln!(
                        "ftsctl: {} is a follower; sending the request to the leader at {leader}",
                        self.address
                    );
                    *self = connect(&leader, &self.credentials, self.timeout)
                        .await
                        .map_err(|e| {
                            CtlError::unreachable(format!("cannot reach the leader: {e}"))
                        })?;
                }
                Err(s) => return Err(self.error(&s).await),
            }
        }
        Err(CtlError::failed(
            "leadership kept moving; try again".to_string(),
        ))
    }
}
