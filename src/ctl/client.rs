//! Finding an ftsd instance and talking to it.

use std::future::Future;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Response, Status};

use super::cli::Cli;
use super::{error_chain, CtlError};
use crate::api::proto::fts_client::FtsClient;
use crate::api::LEADER_ADDRESS_KEY;
use crate::election::{keys, members};

/// The default API address (the daemons' default `api.listen`).
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7470";

/// A connected instance.
pub struct Connected {
    pub address: String,
    pub client: FtsClient<Channel>,
    /// Limit for connecting (also to a leader after a redirect).
    timeout: Duration,
    /// Limit for each call; `probe` raises it to cover the cycle.
    pub call_timeout: Duration,
}

fn url(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

/// Connects to one address.
pub async fn connect(address: &str, timeout: Duration) -> Result<Connected, String> {
    let endpoint = Endpoint::from_shared(url(address))
        .map_err(|e| format!("invalid endpoint {address:?}: {}", error_chain(&e)))?
        .connect_timeout(timeout);
    match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(Connected {
            address: address.to_string(),
            client: FtsClient::new(channel),
            timeout,
            call_timeout: timeout,
        }),
        Ok(Err(e)) => Err(format!("{address}: {}", error_chain(&e))),
        Err(_) => Err(format!("{address}: timed out after {timeout:?}")),
    }
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
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(cli.timeout)
        .with_timeout(cli.timeout);
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

/// Connects to the first candidate that answers.
pub async fn connect_any(cli: &Cli) -> Result<Connected, CtlError> {
    let mut errors = Vec::new();
    for address in candidates(cli).await? {
        match connect(&address, cli.timeout).await {
            Ok(c) => return Ok(c),
            Err(e) => errors.push(e),
        }
    }
    Err(CtlError::unreachable(format!(
        "cannot reach ftsd: {}",
        errors.join("; ")
    )))
}

/// A refused or failed call as a one-line error.
pub fn status_error(address: &str, s: &Status) -> CtlError {
    let what = match s.code() {
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "timed out",
        Code::FailedPrecondition => "refused",
        Code::InvalidArgument => "invalid argument",
        Code::Unimplemented => "not supported by this ftsd version",
        _ => "failed",
    };
    let msg = s.message().trim();
    // A connection that dies mid-call surfaces as a transport status without a server message.
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
        F: FnOnce(FtsClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.bounded(call(self.client.clone()))
            .await?
            .map_err(|s| status_error(&self.address, &s))
    }

    /// A mutating call: a follower's refusal names the leader, which is tried next (twice at
    /// most, in case leadership moves meanwhile).
    pub async fn mutate<T, F, Fut>(&mut self, call: F) -> Result<T, CtlError>
    where
        F: Fn(FtsClient<Channel>) -> Fut,
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
                        return Err(status_error(&self.address, &s));
                    };
                    eprintln!(
                        "ftsctl: {} is a follower; sending the request to the leader at {leader}",
                        self.address
                    );
                    *self = connect(&leader, self.timeout).await.map_err(|e| {
                        CtlError::unreachable(format!("cannot reach the leader: {e}"))
                    })?;
                }
                Err(s) => return Err(status_error(&self.address, &s)),
            }
        }
        Err(CtlError::failed(
            "leadership kept moving; try again".to_string(),
        ))
    }
}
