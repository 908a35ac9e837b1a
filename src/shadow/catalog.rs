//! The read-only catalog of a shadow instance: reads the configuration, hands each read to the
//! [`ShadowBook`] (which compares it with the previous one) and decides on the book's view.

use std::sync::Arc;

use super::ShadowBook;
use crate::catalog::{Catalog, CatalogError, EtcdRevision, Transition};
use crate::model::{Epoch, SegmentConfig};

/// What a shadow may do with a catalog: read it.
pub trait ConfigReader: Send + Sync + 'static {
    fn read(&self)
        -> impl std::future::Future<Output = Result<SegmentConfig, CatalogError>> + Send;
}

impl<C: Catalog> ConfigReader for Arc<C> {
    fn read(
        &self,
    ) -> impl std::future::Future<Output = Result<SegmentConfig, CatalogError>> + Send {
        self.load()
    }
}

/// A catalog that reads and never writes.
pub struct ShadowCatalog<R> {
    reader: R,
    book: Arc<ShadowBook>,
}

impl<R: ConfigReader> ShadowCatalog<R> {
    pub fn new(reader: R, book: Arc<ShadowBook>) -> Self {
        ShadowCatalog { reader, book }
    }
}

fn refused() -> CatalogError {
    CatalogError::Shadow("shadow mode writes nothing".into())
}

impl<R: ConfigReader> Catalog for ShadowCatalog<R> {
    async fn load(&self) -> Result<SegmentConfig, CatalogError> {
        let config = self.reader.read().await?;
        Ok(self.book.observed(&config))
    }

    async fn claim_epoch<E: EtcdRevision>(
        &self,
        _revision: i64,
        _instance_id: &str,
        _etcd: E,
    ) -> Result<Epoch, CatalogError> {
        Err(refused())
    }

    async fn apply(&self, _t: &Transition) -> Result<(), CatalogError> {
        Err(refused())
    }
}
