//! HTTP/JSON control API: how tests, the demo and `fts-segsim ctl` inject faults and read state.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/health` | | `{"status":"ok","instances":n}` |
//! | GET | `/segments` | | `[SegmentView]` |
//! | GET | `/segments/{dbid}` | | `SegmentView` |
//! | POST | `/segments/{dbid}/fault` | `Fault`, e.g. `{"fault":"slow","delay":"2s"}` | `SegmentView` |
//! | POST | `/segments/{dbid}/clear` | | `SegmentView` |
//! | POST | `/segments/{dbid}/recover` | | `SegmentView` |
//! | POST | `/reset-counters` | | `{"status":"ok"}` |
//! | POST | `/clear-all` | | `{"status":"ok"}` |
//! | POST | `/promote-ready/{0,1}` | | `{"status":"ok"}` (409 without `--cbdb-conf`) |
//! | GET | `/clients` | | `{"blocked":["127.0.0.2"]}` |
//! | POST | `/clients/{ip}/block` | | `{"blocked":[...]}`: connections from that source address hang, to every instance |
//! | POST | `/clients/{ip}/unblock` | | `{"blocked":[...]}` |
//!
//! Errors are `{"error": "..."}` with 400 (bad dbid or body), 404 (unknown dbid or path),
//! 409 (recover impossible) or 500.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

use super::instances::{SegmentView, SimCore};
use super::{Fault, SimError};
use ftsd::model::Dbid;

/// An error answer.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<SimError> for ApiError {
    fn from(e: SimError) -> Self {
        let status = match e {
            SimError::UnknownDbid(_) => StatusCode::NOT_FOUND,
            SimError::Conflict(_) => StatusCode::CONFLICT,
            SimError::Config(_) => StatusCode::BAD_REQUEST,
            SimError::Timeout(_) | SimError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;
type Core = State<Arc<SimCore>>;

pub fn router(core: Arc<SimCore>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/segments", get(list))
        .route("/segments/{dbid}", get(show))
        .route("/segments/{dbid}/fault", post(fault))
        .route("/segments/{dbid}/clear", post(clear))
        .route("/segments/{dbid}/recover", post(recover))
        .route("/reset-counters", post(reset_counters))
        .route("/clear-all", post(clear_all))
        .route("/promote-ready/{value}", post(promote_ready))
        .route("/clients", get(clients))
        .route("/clients/{ip}/block", post(block_client))
        .route("/clients/{ip}/unblock", post(unblock_client))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .with_state(core)
}

/// Binds `addr` and serves the API until the simulator shuts down; returns the bound address.
pub async fn spawn(core: Arc<SimCore>, addr: SocketAddr) -> Result<SocketAddr, SimError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| SimError::Io {
            context: format!("cannot listen on control address {addr}"),
            error,
        })?;
    let bound = listener.local_addr().map_err(|error| SimError::Io {
        context: "control listener address".into(),
        error,
    })?;
    let mut shutdown = core.shutdown.subscribe();
    let app = router(core);
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "control server failed");
        }
    });
    Ok(bound)
}

fn parse_dbid(raw: &str) -> Result<Dbid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("invalid dbid {raw:?}")))
}

async fn health(State(core): Core) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "instances": core.instance_count(),
        "pairs": core.config().pairs,
    }))
}

async fn list(State(core): Core) -> Json<Vec<SegmentView>> {
    Json(core.views())
}

async fn show(State(core): Core, Path(dbid): Path<String>) -> ApiResult<SegmentView> {
    Ok(Json(core.view(parse_dbid(&dbid)?)?))
}

async fn fault(State(core): Core, Path(dbid): Path<String>, body: Bytes) -> ApiResult<SegmentView> {
    let dbid = parse_dbid(&dbid)?;
    let fault: Fault = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid fault: {e}")))?;
    Ok(Json(core.set_fault(dbid, fault).await?))
}

async fn clear(State(core): Core, Path(dbid): Path<String>) -> ApiResult<SegmentView> {
    Ok(Json(core.clear(parse_dbid(&dbid)?).await?))
}

async fn recover(State(core): Core, Path(dbid): Path<String>) -> ApiResult<SegmentView> {
    Ok(Json(core.recover(parse_dbid(&dbid)?).await?))
}

async fn reset_counters(State(core): Core) -> Json<serde_json::Value> {
    core.reset_counters();
    Json(json!({ "status": "ok" }))
}

async fn clear_all(State(core): Core) -> ApiResult<serde_json::Value> {
    core.clear_all().await?;
    Ok(Json(json!({ "status": "ok" })))
}

fn parse_ip(raw: &str) -> Result<std::net::IpAddr, ApiError> {
    raw.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid IP address {raw:?}"),
        )
    })
}

async fn clients(State(core): Core) -> Json<serde_json::Value> {
    Json(json!({ "blocked": core.blocked_clients() }))
}

async fn block_client(State(core): Core, Path(ip): Path<String>) -> ApiResult<serde_json::Value> {
    core.block_client(parse_ip(&ip)?);
    Ok(clients(State(core)).await)
}

async fn unblock_client(State(core): Core, Path(ip): Path<String>) -> ApiResult<serde_json::Value> {
    core.unblock_client(parse_ip(&ip)?);
    Ok(clients(State(core)).await)
}

async fn promote_ready(
    State(core): Core,
    Path(value): Path<String>,
) -> ApiResult<serde_json::Value> {
    let ready = match value.as_str() {
        "1" => true,
        "0" => false,
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("promote-ready takes 0 or 1, not {other:?}"),
            ))
        }
    };
    core.set_promote_ready(ready).await?;
    Ok(Json(json!({ "status": "ok" })))
}
