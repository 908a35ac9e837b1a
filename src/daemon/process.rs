//! Process-level set-up shared by the `ftsd` and `gpfts` entry points: logging and the
//! shutdown signals.

use std::path::Path;

use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber: `log.level` and `log.format`, to stderr or appended to
/// `file` (`gpfts -d`).
pub fn init_tracing(cfg: &Config, file: Option<&Path>) -> std::io::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
    Ok(())
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
