//! Making the coordinator see a blob ftsd wrote: a call of
//! `pg_catalog.gp_rewrite_segments_info(<blob>)` on the active coordinator, which stores the
//! blob and refreshes the coordinator's configuration cache.
//!
//! The fence lives in etcd, not here: the blob is already in etcd by a fenced transaction when
//! this runs, and the call re-submits the very same text, so the coordinator's unconditional
//! put can only rewrite what is there (see `docs/cloudberry.md` for the one window left). As
//! `gpfts` does, a coordinator that refuses connections because it is a just-promoted standby
//! still in recovery is not an error: the blob in etcd is what it reads once it is up.

use std::time::Duration;

use crate::model::{Role, Segment, Status};

/// How ftsd reaches the coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// `gpfts -U`: the database user (the login user by default).
    pub user: String,
    pub connect_timeout: Duration,
    /// `catalog.sslmode` and its files.
    pub tls: crate::tls::postgres::PgTls,
}

/// What the notification came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notified {
    /// The coordinator accepted the blob.
    Accepted,
    /// No coordinator row is up in the configuration: etcd alone holds it (as `gpfts`).
    NoLiveCoordinator,
    /// The coordinator is a promoted standby still recovering (`gpfts`'s direct-put case).
    InRecovery,
    /// The call failed; the blob is in etcd, the coordinator's cache may lag.
    Failed(String),
}

/// The active coordinator of `rows`: content -1, acting primary, up.
pub fn active(rows: &[Segment]) -> Option<&Segment> {
    rows.iter()
        .find(|s| s.content == -1 && s.role == Role::Primary && s.status == Status::Up)
}

/// `gpfts` treats exactly this pair of messages as "standby just promoted".
fn in_recovery(message: &str) -> bool {
    message.contains("the database system is in recovery mode")
        && message.contains("waiting for distributed transaction recovery to complete")
}

/// Calls `gp_rewrite_segments_info(blob)` on `coordinator`.
pub async fn rewrite_segments_info(
    settings: &CoordinatorSettings,
    coordinator: &Segment,
    blob: &str,
) -> Notified {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&coordinator.address)
        .port(coordinator.port as u16)
        .user(&settings.user)
        .dbname("postgres")
        .application_name("ftsd")
        .connect_timeout(settings.connect_timeout);
    settings.tls.apply(&mut cfg);
    let call = async {
        let (client, conn) = cfg.connect(settings.tls.connector()).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
            .execute(
                "SELECT pg_catalog.gp_rewrite_segments_info($1::text)",
                &[&blob],
            )
            .await
    };
    match tokio::time::timeout(settings.connect_timeout * 2, call).await {
        Ok(Ok(_)) => Notified::Accepted,
        Ok(Err(e)) => {
            let message = e
                .as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_else(|| e.to_string());
            if in_recovery(&message) {
                Notified::InRecovery
            } else {
                Notified::Failed(message)
            }
        }
        Err(_) => Notified::Failed(format!(
            "no answer within {:?}",
            settings.connect_timeout * 2
        )),
    }
}
