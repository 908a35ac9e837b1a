//! `…/fts_ha_hostname`: `gpfts`'s leader writes its host name there when it takes the lock,
//! and operators' scripts read it. ftsd's Cloudberry leader does the same on each office it
//! takes, fenced on its leader key so a deposed leader cannot overwrite its successor's name.

use std::sync::Arc;

use tokio::sync::watch;

use crate::catalog::any::AnyCatalog;
use crate::election::{ElectedAuthority, OfficeEvent};

/// Announces every office this instance takes until the elector is gone.
pub async fn follow_office(
    catalog: Arc<AnyCatalog>,
    mut events: watch::Receiver<OfficeEvent>,
    authority: Arc<ElectedAuthority>,
) {
    let AnyCatalog::Cloudberry(cb) = &*catalog else {
        return;
    };
    let host = crate::config::hostname();
    loop {
        let won = events.borrow_and_update().epoch;
        if let (Some(_), Some(office)) = (won, authority.office()) {
            match cb
                .announce_leader(office.key.clone(), office.revision, &host)
                .await
            {
                Ok(true) => tracing::info!(%host, "fts_ha_hostname written"),
                Ok(false) => tracing::info!("office ended before fts_ha_hostname was written"),
                Err(e) => tracing::warn!(error = %e, "cannot write fts_ha_hostname"),
            }
        }
        if events.changed().await.is_err() {
            return;
        }
    }
}
