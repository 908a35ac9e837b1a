//! The etcd key layout, in one place.

/// `<prefix>/<cluster>/leader`: the election name; Campaign creates `<name>/<lease-hex>` under it.
pub fn election(prefix: &str, cluster: &str) -> String {
    format!("{}/{}/leader", prefix.trim_end_matches('/'), cluster)
}

/// `<prefix>/<cluster>/members/`: one key per live instance, bound to its lease.
pub fn members_prefix(prefix: &str, cluster: &str) -> String {
    format!("{}/{}/members/", prefix.trim_end_matches('/'), cluster)
}

pub fn member(prefix: &str, cluster: &str, instance_id: &str) -> String {
    format!("{}{}", members_prefix(prefix, cluster), instance_id)
}

/// `<prefix>/<cluster>/pause`: maintenance mode, honoured by every leader.
pub fn pause(prefix: &str, cluster: &str) -> String {
    format!("{}/{}/pause", prefix.trim_end_matches('/'), cluster)
}

/// `<prefix>/<cluster>/brake`: the brake on correlated failures (admitted failovers, an
/// engagement, the last release), written only by the leader in fenced transactions.
pub fn brake(prefix: &str, cluster: &str) -> String {
    format!("{}/{}/brake", prefix.trim_end_matches('/'), cluster)
}

/// `<prefix>/<cluster>/coordinator/`: the coordinator pair's state (which server acts, a
/// pending failover intent) and its history, written only by the leader in fenced
/// transactions, read by the VIP agents.
pub fn coordinator_prefix(prefix: &str, cluster: &str) -> String {
    format!("{}/{}/coordinator/", prefix.trim_end_matches('/'), cluster)
}

#[cfg(test)]
mod tests {
    #[test]
    fn layout() {
        assert_eq!(super::election("/ftsd/", "gp1"), "/ftsd/gp1/leader");
        assert_eq!(
            super::member("/ftsd", "gp1", "fts-a"),
            "/ftsd/gp1/members/fts-a"
        );
    }
}
