//! Process-level set-up shared by the `ftsd` and `gpfts` entry points: logging and the
//! shutdown signals.

use std::path::Path;

use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{Config, LogFormat};

/// The global subscriber's level filter, which a configuration reload replaces.
pub struct LogFilter(reload::Handle<EnvFilter, Registry>);

impl LogFilter {
    /// Replaces the filter with `level` (`log.level` syntax); the old one stays on error.
    pub fn set(&self, level: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

/// Installs the global subscriber: `log.level` and `log.format`, to stderr or appended to
/// `file` (`gpfts -d`). Returns the handle that changes the level later.
pub fn init_tracing(cfg: &Config, file: Option<&Path>) -> std::io::Result<LogFilter> {
    let filter = EnvFilter::try_new(&cfg.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let writer = match file {
        None => BoxMakeWriter::new(std::io::stderr),
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            BoxMakeWriter::new(std::sync::Mutex::new(f))
        }
    };
    let output = tracing_subscriber::fmt::layer().with_writer(writer);
    let output = match cfg.log.format {
        LogFormat::Json => output.json().flatten_event(true).boxed(),
        LogFormat::Text => output.with_ansi(false).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .init();
    Ok(LogFilter(handle))
}

/// Completes on SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; stopping"),
        _ = int.recv() => tracing::info!("SIGINT received; stopping"),
    }
}

/// A multi-threaded runtime with every driver enabled.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
