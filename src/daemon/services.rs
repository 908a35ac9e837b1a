//! What the daemon serves besides the probe loop: the pause-key watch, the gRPC API, the
//! metrics endpoint and the hooks. Started before the first cycle; returns the observers the
//! probe loop reports to.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{watch, Notify};

use crate::api::{ApiState, Mode};
use crate::catalog::any::AnyCatalog;
use crate::config::Config;
use crate::engine::runner::CycleObserver;
use crate::hooks::{HookSettings, Hooks};
use crate::metrics::Metrics;

/// Starts the services; fails (before any probing) when a listen address cannot be bound.
pub async fn start(
    cfg: &Config,
    instance_id: &str,
    catalog: AnyCatalog,
    mode: Mode,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Vec<Arc<dyn CycleObserver>>> {
    let (pause_tx, pause_rx) = watch::channel(None);
    let metrics = Arc::new(Metrics::default());
    let hooks = Hooks::start(
        HookSettings {
            on_transition: cfg.hooks.on_transition.clone(),
            on_leader_change: cfg.hooks.on_leader_change.clone(),
            timeout: cfg.hooks.timeout,
            cluster: cfg.cluster.clone(),
            instance_id: instance_id.to_string(),
        },
        metrics.clone(),
    );
    if let Mode::Elected {
        authority,
        etcd,
        prefix,
        ..
    } = &mode
    {
        hooks.follow_office(authority.office_events());
        tokio::spawn(crate::election::pause::follow(
            (**etcd).clone(),
            crate::election::keys::pause(prefix, &cfg.cluster),
            authority.clone(),
            pause_tx,
            shutdown.clone(),
        ));
    }
    let state = ApiState::new(
        cfg.cluster.clone(),
        instance_id.to_string(),
        crate::api::advertised_address(cfg.api.listen),
        catalog,
        mode,
        wake,
        pause_rx,
    );
    let security = crate::api::Security::from_config(&cfg.api)?;
    if !security.policy.has_credentials() && !cfg.api.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %cfg.api.listen,
            "the API has no credentials configured (api.token_file, api.client_ca_file): \
             mutating calls are accepted from loopback only"
        );
    }
    if security.tls.is_none() && cfg.api.token.is_some() && !cfg.api.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %cfg.api.listen,
            "the API token travels in plaintext: set api.tls_cert_file and api.tls_key_file"
        );
    }
    crate::api::serve(cfg.api.listen, state.clone(), &security, shutdown.clone())
        .await
        .with_context(|| format!("binding the API address {} (api.listen)", cfg.api.listen))?;
    let live_state = state.clone();
    let metrics_security = crate::metrics::server::MetricsSecurity {
        tls: match &security.tls {
            Some(tls) => Some(tls.rustls().map_err(anyhow::Error::msg)?),
            None => None,
        },
        token: cfg.api.metrics_token.clone(),
    };
    crate::metrics::server::serve(
        cfg.api.metrics_listen,
        metrics.clone(),
        metrics_security,
        Arc::new(move || live_state.live()),
        shutdown,
    )
    .await
    .with_context(|| {
        format!(
            "binding the metrics address {} (api.metrics_listen)",
            cfg.api.metrics_listen
        )
    })?;
    Ok(vec![metrics, Arc::new(hooks), state])
}
