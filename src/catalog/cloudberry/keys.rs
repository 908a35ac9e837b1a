//! The etcd key layout of a Cloudberry external-FTS cluster: Cloudberry's own keys under
//! `/cbdb/fts/<namespace>/<account_id>/<cluster_id>/`, and ftsd's additions under `…/ftsd/`
//! (which neither `gpfts` nor the coordinator reads).

use super::conf::CbdbEtcdConf;

/// `FTS_METADATA_DIR_PREFIX`.
pub const PREFIX: &str = "/cbdb/fts";

/// Every key of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CbdbKeys {
    base: String,
}

impl CbdbKeys {
    pub fn new(conf: &CbdbEtcdConf) -> Self {
        CbdbKeys {
            base: format!(
                "{PREFIX}/{}/{}/{}",
                conf.namespace, conf.account_id, conf.cluster_id
            ),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// The segment configuration blob.
    pub fn blob(&self) -> String {
        self.key("fts_dump_file_key")
    }

    /// The name `gpfts` locks and ftsd campaigns on: both services create `<name>/<lease>`
    /// keys and grant the lowest create revision, so the two queue in one line.
    pub fn ha_lock(&self) -> String {
        self.key("fts_ha_lock")
    }

    /// The current leader's host name, a plain put without lease.
    pub fn ha_hostname(&self) -> String {
        self.key("fts_ha_hostname")
    }

    /// `1` when the coordinator says its standby may be promoted.
    pub fn standby_promote_ready(&self) -> String {
        self.key("fts_standby_promote_ready_key")
    }

    /// ftsd's recorded epoch (decimal), the fence every blob write compares.
    pub fn epoch(&self) -> String {
        self.key("ftsd/epoch")
    }

    /// Who recorded the epoch (instance id), for operators.
    pub fn epoch_holder(&self) -> String {
        self.key("ftsd/epoch_holder")
    }

    /// History rows: `…/ftsd/history/<time µs, 20 digits>-<dbid, 5 digits>` so key order is
    /// time order.
    pub fn history_prefix(&self) -> String {
        self.key("ftsd/history/")
    }

    pub fn history(&self, time_us: i64, dbid: i16) -> String {
        format!("{}{time_us:020}-{dbid:05}", self.history_prefix())
    }

    /// Evidence rows: `…/ftsd/evidence/<id, 20 digits>`.
    pub fn evidence_prefix(&self) -> String {
        self.key("ftsd/evidence/")
    }

    pub fn evidence(&self, id: i64) -> String {
        format!("{}{id:020}", self.evidence_prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = CbdbKeys::new(&CbdbEtcdConf {
            endpoints: vec!["localhost:2379".into()],
            account_id: "acc".into(),
            cluster_id: "cl".into(),
            namespace: "default".into(),
        });
        assert_eq!(k.blob(), "/cbdb/fts/default/acc/cl/fts_dump_file_key");
        assert_eq!(k.ha_lock(), "/cbdb/fts/default/acc/cl/fts_ha_lock");
        assert_eq!(
            k.history(12, 3),
            "/cbdb/fts/default/acc/cl/ftsd/history/00000000000000000012-00003"
        );
    }
}
