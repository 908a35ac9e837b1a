//! The HTTP endpoint: `GET /metrics` (Prometheus text) and `GET /healthz`, over TLS when
//! `api.tls_cert_file` is set; `/metrics` needs `Authorization: Bearer <token>` when
//! `api.metrics_token_file` is set. `/healthz` stays open: it says only "ok".

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use super::{Live, Metrics};
use crate::config::Secret;

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// TLS and the scrape token.
#[derive(Clone, Default)]
pub struct MetricsSecurity {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub token: Option<Secret>,
}

/// Whether `headers` carry the token (always true when none is configured).
fn authorized(token: Option<&Secret>, headers: &HeaderMap) -> bool {
    let Some(token) = token else {
        return true;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|given| bool::from(token.expose().as_bytes().ct_eq(given.trim_ascii())))
}

/// Binds `addr` (errors are returned, so a taken port fails start-up clearly) and serves until
/// `shutdown` turns true.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    security: MetricsSecurity,
    live: Arc<dyn Fn() -> Live + Send + Sync>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let token = security.token.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let ok = authorized(token.as_ref(), &headers);
                let text = ok.then(|| metrics.render(&live()));
                async move {
                    match text {
                        Some(text) => {
                            ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
                        }
                        None => (
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, "Bearer")],
                            "metrics require Authorization: Bearer <api.metrics_token_file>\n",
                        )
                            .into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    tracing::info!(
        %addr,
        tls = security.tls.is_some(),
        token = security.token.is_some(),
        "metrics endpoint listening"
    );
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    Ok(match security.tls {
        Some(config) => {
            let listener = crate::tls::listener::TlsListener::new(
                listener,
                config,
                crate::api::tls::HANDSHAKE_TIMEOUT,
            )?;
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
                {
                    tracing::error!(error = %e, "metrics endpoint failed");
                }
            })
        }
        None => tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        }),
    })
}
