//! `cbdb_etcd.conf`, the file `gpstart` copies to `/tmp/cbdb_etcd.conf` on every FTS host: one
//! `key='value'` per line, value in single quotes, no spaces, lines of at most 127 bytes (the
//! C reader's 128-byte buffer). We accept exactly what `gpfts` accepts, and refuse the rest
//! with the file and line named, so an operator's file works unchanged and a typo is not
//! silently read differently by the two.

use std::path::Path;

/// Longest line `gpfts` reads whole (its buffer is 128 bytes including the terminator).
pub const MAX_LINE: usize = 127;
/// `GP_ETCD_ENDPOINTS_NUM`.
pub const MAX_ENDPOINTS: usize = 32;

/// The four settings of `cbdb_etcd.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CbdbEtcdConf {
    /// `host:port`, as written (no scheme).
    pub endpoints: Vec<String>,
    pub account_id: String,
    pub cluster_id: String,
    pub namespace: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("{file}: {error}")]
    Io { file: String, error: std::io::Error },
    #[error("{file}:{line}: {reason}")]
    Line {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("{file}: {key} is missing")]
    Missing { file: String, key: &'static str },
}

impl CbdbEtcdConf {
    pub fn read(path: &Path) -> Result<Self, ConfError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfError::Io {
            file: file.clone(),
            error,
        })?;
        Self::parse(&file, &text)
    }

    /// Parses the file's text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfError> {
        let bad = |line: usize, reason: String| ConfError::Line {
            file: file.to_owned(),
            line,
            reason,
        };
        let (mut endpoints, mut account, mut cluster, mut namespace) = (None, None, None, None);
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            if raw.len() > MAX_LINE {
                return Err(bad(
                    n,
                    format!("line is {} bytes, longer than {MAX_LINE}", raw.len()),
                ));
            }
            // gpfts skips blank lines and `#` comments; anything else must be a setting.
            if raw.trim().is_empty() || raw.starts_with('#') {
                continue;
            }
            let (key, value) = raw
                .split_once('=')
                .ok_or_else(|| bad(n, format!("expected key='value', found {raw:?}")))?;
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .filter(|v| !v.contains('\''))
                .ok_or_else(|| bad(n, format!("{key}: the value must be in single quotes")))?;
            if key.contains(char::is_whitespace) || value.contains(char::is_whitespace) {
                return Err(bad(n, format!("{key}: spaces are not allowed")));
            }
            let slot = match key {
                "gp_etcd_endpoints" => &mut endpoints,
                "gp_etcd_account_id" => &mut account,
                "gp_etcd_cluster_id" => &mut cluster,
                "gp_etcd_namespace" => &mut namespace,
                other => return Err(bad(n, format!("unknown key {other:?}"))),
            };
            if slot.is_some() {
                return Err(bad(n, format!("{key} is set twice")));
            }
            if value.is_empty() {
                return Err(bad(n, format!("{key} is empty")));
            }
            *slot = Some((n, value.to_owned()));
        }
        let missing = |key| ConfError::Missing {
            file: file.to_owned(),
            key,
        };
        let (line, endpoints) = endpoints.ok_or_else(|| missing("gp_etcd_endpoints"))?;
        let endpoints: Vec<String> = endpoints.split(',').map(str::to_owned).collect();
        if endpoints.len() > MAX_ENDPOINTS {
            return Err(bad(line, format!("more than {MAX_ENDPOINTS} endpoints")));
        }
        if let Some(e) = endpoints.iter().find(|e| e.is_empty()) {
            return Err(bad(
                line,
                format!("empty endpoint in gp_etcd_endpoints {e:?}"),
            ));
        }
        Ok(CbdbEtcdConf {
            endpoints,
            account_id: account.ok_or_else(|| missing("gp_etcd_account_id"))?.1,
            cluster_id: cluster.ok_or_else(|| missing("gp_etcd_cluster_id"))?.1,
            namespace: namespace.ok_or_else(|| missing("gp_etcd_namespace"))?.1,
        })
    }

    /// The endpoints as URLs for the gRPC client (`gpfts` speaks plain HTTP only).
    pub fn endpoint_urls(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("http://{e}")
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = "gp_etcd_endpoints='localhost:2379'\n\
        gp_etcd_account_id='00000000-0000-0000-0000-000000000000'\n\
        gp_etcd_cluster_id='00000000-0000-0000-0000-000000000000'\n\
        gp_etcd_namespace='default'\n";

    #[test]
    fn reads_the_default_file() {
        let c = CbdbEtcdConf::parse("f", DEFAULT).unwrap();
        assert_eq!(c.endpoints, ["localhost:2379"]);
        assert_eq!(c.namespace, "default");
        assert_eq!(c.endpoint_urls(), ["http://localhost:2379"]);
    }

    #[test]
    fn refuses_what_gpfts_refuses() {
        let cases = [
            (
                "gp_etcd_namespace=default\n",
                "f:1: gp_etcd_namespace: the value must be in single quotes",
            ),
            (
                "gp_etcd_namespace = 'x'\n",
                "f:1: gp_etcd_namespace : the value must be in single quotes",
            ),
            (
                "gp_etcd_namespace='a b'\n",
                "f:1: gp_etcd_namespace: spaces are not allowed",
            ),
            (
                "gp_etcd_nmespace='x'\n",
                "f:1: unknown key \"gp_etcd_nmespace\"",
            ),
            (
                "gp_etcd_namespace='x'\ngp_etcd_namespace='y'\n",
                "f:2: gp_etcd_namespace is set twice",
            ),
            ("gp_etcd_namespace='x'\n", "f: gp_etcd_endpoints is missing"),
        ];
        for (text, want) in cases {
            let got = CbdbEtcdConf::parse("f", text).unwrap_err().to_string();
            assert_eq!(got, want, "{text:?}");
        }
        let long = format!("gp_etcd_namespace='{}'\n", "x".repeat(120));
        let got = CbdbEtcdConf::parse("f", &long).unwrap_err().to_string();
        assert!(got.starts_with("f:1: line is 140 bytes"), "{got}");
    }
}
