//! What a configuration reload (SIGHUP) may change in a running daemon, decided by one pure
//! function: [`diff`] compares the running configuration with the newly loaded one and says
//! which changed keys take effect and which need a restart.
//!
//! Only settings the daemon reads afresh at the start of each probe cycle (or per event) are
//! reloadable: the probe timings and concurrency, the decision profile, the hooks and the log
//! level. Everything else was used once to build a connection, a listener, a driver or an
//! etcd session (the etcd settings, the API/metrics addresses and TLS, the cluster name, the
//! instance id, the catalog, the probe driver and its credentials, the coordinator watch):
//! changing it in place would leave parts built from the old value beside parts built from the
//! new one, so those keys keep their running value until a restart.

use super::keys::KEYS;
use super::Config;

/// Keys a reload applies at the next probe cycle (hooks and the log level: at once).
pub const RELOADABLE: &[&str] = &[
    "probe.interval",
    "probe.timeout",
    "probe.retries",
    "probe.retry_delay",
    "probe.concurrency",
    "probe.decision_profile",
    "hooks.on_transition",
    "hooks.on_leader_change",
    "hooks.timeout",
    "log.level",
];

/// What a reload does.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadPlan {
    /// The configuration to run with from now on: the running one with every reloadable key
    /// taken from the new file. Its keys that need a restart are the running values, so it is
    /// exactly what this process is running once the plan is applied.
    pub apply: Config,
    /// Reloadable keys whose value changed (in key order).
    pub applied_keys: Vec<&'static str>,
    /// Changed keys that need a restart and keep their running value (in key order).
    pub refused_keys: Vec<&'static str>,
}

impl ReloadPlan {
    /// The `result` label of `ftsd_config_reloads_total` for a valid file: `refused` when
    /// any change was refused (the rest still applies), else `applied` (also when nothing
    /// changed).
    pub fn result(&self) -> &'static str {
        if self.refused_keys.is_empty() {
            "applied"
        } else {
            "refused"
        }
    }
}

/// Compares the running configuration `old` with a newly loaded, validated `new`.
///
/// The merged configuration is valid whenever both inputs are: the only relation between
/// reloadable keys and others is `probe.timeout < probe.interval`, and both of those are
/// reloadable, so they always come from the same file.
pub fn diff(old: &Config, new: &Config) -> ReloadPlan {
    let mut applied_keys = Vec::new();
    let mut refused_keys = Vec::new();
    for name in changed_keys(old, new) {
        if RELOADABLE.contains(&name) {
            applied_keys.push(name);
        } else {
            refused_keys.push(name);
        }
    }
    let mut apply = old.clone();
    apply.probe.interval = new.probe.interval;
    apply.probe.timeout = new.probe.timeout;
    apply.probe.retries = new.probe.retries;
    apply.probe.retry_delay = new.probe.retry_delay;
    apply.probe.concurrency = new.probe.concurrency;
    apply.probe.decision_profile = new.probe.decision_profile;
    apply.hooks = new.hooks.clone();
    apply.log.level = new.log.level.clone();
    ReloadPlan {
        apply,
        applied_keys,
        refused_keys,
    }
}

/// Every key whose value differs, in key order. Values are compared unmasked: a password
/// changed inside `catalog.url`, or in a file named by a `*password_file` / `*token_file` key
/// (read at load time), counts as a change of that key.
fn changed_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    let secret_changed = |name: &str| match name {
        "catalog.url" => old.catalog.url.expose() != new.catalog.url.expose(),
        "probe.password_file" => old.probe.password != new.probe.password,
        "catalog.password_file" => old.catalog.password != new.catalog.password,
        "coordinator.password_file" => old.coordinator.password != new.coordinator.password,
        "etcd.password_file" => old.etcd.password != new.etcd.password,
        "api.token_file" => old.api.token != new.api.token,
        "api.metrics_token_file" => old.api.metrics_token != new.api.metrics_token,
        _ => false,
    };
    KEYS.iter()
        .filter(|k| (k.get)(old) != (k.get)(new) || secret_changed(k.name))
        .map(|k| k.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{DecisionProfile, Overrides};

    fn load(toml: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ftsd.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load(&path, Vec::<(String, String)>::new(), &Overrides::default()).unwrap()
    }

    /// The base file as (table, line); "" is the top level.
    const BASE: &[(&str, &str)] = &[
        ("", "cluster = \"gp1\""),
        (
            "catalog",
            "url = \"postgresql://fts:one@127.0.0.1:5432/postgres\"",
        ),
        ("etcd", "endpoints = [\"http://10.0.0.1:2379\"]"),
    ];

    /// The base file changed by `extra`: `table.key = value` (or top-level `key = value`)
    /// lines, each replacing the base line of the same key or added to its table.
    fn with(extra: &str) -> Config {
        let mut lines: Vec<(String, String)> = BASE
            .iter()
            .map(|(t, l)| (t.to_string(), l.to_string()))
            .collect();
        for line in extra.lines().filter(|l| !l.trim().is_empty()) {
            let (key, value) = line.split_once('=').unwrap();
            let (table, leaf) = key.trim().split_once('.').unwrap_or(("", key.trim()));
            let entry = format!("{leaf} ={value}");
            let same = |(t, l): &(String, String)| {
                t == table && l.split_once('=').unwrap().0.trim() == leaf
            };
            match lines.iter().position(same) {
                Some(i) => lines[i].1 = entry,
                None => lines.push((table.to_string(), entry)),
            }
        }
        let mut tables: Vec<&str> = Vec::new();
        for (t, _) in &lines {
            if !tables.contains(&t.as_str()) {
                tables.push(t);
            }
        }
        tables.sort_by_key(|t| !t.is_empty());
        let mut text = String::new();
        for t in tables {
            if !t.is_empty() {
                text.push_str(&format!("[{t}]\n"));
            }
            for (_, l) in lines.iter().filter(|(lt, _)| lt == t) {
                text.push_str(l);
                text.push('\n');
            }
        }
        load(&text)
    }

    #[test]
    fn table_of_changes() {
        // (change, applied keys, refused keys)
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("", &[], &[]),
            ("probe.interval = \"30s\"", &["probe.interval"], &[]),
            (
                "probe.interval = \"30s\"\nprobe.timeout = \"10s\"\nprobe.retries = 3\nprobe.retry_delay = \"2s\"",
                &["probe.interval", "probe.timeout", "probe.retries", "probe.retry_delay"],
                &[],
            ),
            ("probe.concurrency = 16", &["probe.concurrency"], &[]),
            ("probe.decision_profile = \"gpfts\"", &["probe.decision_profile"], &[]),
            (
                "hooks.on_transition = [\"/bin/true\"]\nhooks.timeout = \"3s\"",
                &["hooks.on_transition", "hooks.timeout"],
                &[],
            ),
            ("hooks.on_leader_change = [\"/bin/true\"]", &["hooks.on_leader_change"], &[]),
            ("log.level = \"debug\"", &["log.level"], &[]),
            ("log.format = \"json\"", &[], &["log.format"]),
            ("etcd.endpoints = [\"http://10.0.0.2:2379\"]", &[], &["etcd.endpoints"]),
            ("etcd.prefix = \"/other\"", &[], &["etcd.prefix"]),
            ("etcd.lease_ttl = \"20s\"", &[], &["etcd.lease_ttl"]),
            ("api.listen = \"127.0.0.1:9000\"", &[], &["api.listen"]),
            ("api.metrics_listen = \"127.0.0.1:9001\"", &[], &["api.metrics_listen"]),
            ("cluster = \"gp2\"", &[], &["cluster"]),
            ("instance_id = \"fts-a\"", &[], &["instance_id"]),
            ("catalog.backend = \"cloudberry\"", &[], &["catalog.backend"]),
            (
                "catalog.url = \"postgresql://fts:one@127.0.0.2:5432/postgres\"",
                &[],
                &["catalog.url"],
            ),
            // Only the password differs: the masked printout hides it, the diff must not.
            (
                "catalog.url = \"postgresql://fts:two@127.0.0.1:5432/postgres\"",
                &[],
                &["catalog.url"],
            ),
            ("probe.driver = \"postgres\"", &[], &["probe.driver"]),
            ("probe.user = \"fts\"", &[], &["probe.user"]),
            ("probe.mirror_down_grace = \"1m\"", &[], &["probe.mirror_down_grace"]),
            (
                "probe.interval = \"30s\"\netcd.endpoints = [\"http://10.0.0.2:2379\"]\napi.listen = \"127.0.0.1:9000\"",
                &["probe.interval"],
                &["etcd.endpoints", "api.listen"],
            ),
        ];
        let old = with("");
        for (change, applied, refused) in cases {
            let new = with(change);
            let plan = diff(&old, &new);
            assert_eq!(plan.applied_keys, *applied, "applied for {change:?}");
            assert_eq!(plan.refused_keys, *refused, "refused for {change:?}");
            let result = if refused.is_empty() {
                "applied"
            } else {
                "refused"
            };
            assert_eq!(plan.result(), result, "{change:?}");
        }
    }

    #[test]
    fn the_plan_takes_reloadable_values_and_keeps_the_rest() {
        let old = with("");
        let new = with(
            "probe.interval = \"30s\"\nprobe.timeout = \"10s\"\nprobe.decision_profile = \"gpfts\"\n\
             hooks.on_transition = [\"/bin/true\"]\nlog.level = \"debug\"\n\
             etcd.endpoints = [\"http://10.0.0.2:2379\"]\ncluster = \"gp2\"\nlog.format = \"json\"",
        );
        let plan = diff(&old, &new);
        let a = &plan.apply;
        assert_eq!(a.probe.interval, Duration::from_secs(30));
        assert_eq!(a.probe.timeout, Duration::from_secs(10));
        assert_eq!(a.probe.decision_profile, DecisionProfile::Gpfts);
        assert_eq!(a.hooks.on_transition, vec!["/bin/true".to_string()]);
        assert_eq!(a.log.level, "debug");
        // refused: the running values stay
        assert_eq!(a.etcd.endpoints, old.etcd.endpoints);
        assert_eq!(a.cluster, "gp1");
        assert_eq!(a.log.format, old.log.format);
        // applying the plan again from its own result changes nothing more, and reloading
        // the same file again refuses the same keys (the running values did not move)
        let again = diff(a, &new);
        assert!(again.applied_keys.is_empty(), "{again:?}");
        assert_eq!(again.refused_keys, plan.refused_keys);
    }

    #[test]
    fn every_reloadable_key_exists() {
        for name in RELOADABLE {
            assert!(KEYS.iter().any(|k| k.name == *name), "{name}");
        }
    }
}
