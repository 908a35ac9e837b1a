//! A throwaway LAN of network namespaces: "hosts" on one Ethernet segment with this process's
//! namespace, for tests and benchmarks that need real addresses moving between hosts (the
//! coordinator's virtual IP).
//!
//! ```no_run
//! # fn demo() -> anyhow::Result<()> {
//! use fts_testkit::netns::Lan;
//! let lan = Lan::create(&["a", "b"])?; // two host namespaces, 10.x.y.10 and 10.x.y.11
//! let gw = lan.gateway(); // our own address on the LAN, 10.x.y.1
//! # Ok(()) }
//! ```
//!
//! Layout (`ip netns`, needs root):
//!
//! * a *switch* namespace holding a bridge. The bridge lives there rather than here because a
//!   Docker host filters bridged traffic through its own `FORWARD` chain (policy `DROP`,
//!   `bridge-nf-call-iptables = 1`); a fresh namespace has no rules;
//! * one veth pair per host: `eth0` inside the host's namespace (address `.10`, `.11`, …),
//!   the other end on the bridge;
//! * one veth pair to this process's namespace, with the gateway address `.1`, so servers
//!   here (etcd, the daemons) and the hosts reach each other.
//!
//! The /24 is taken from 10.100.0.0–10.149.255.0 and checked against this namespace's
//! addresses and routes. Names carry this process's id: [`Drop`] deletes the namespaces (the
//! veth pairs go with them), also when a test panics, and [`Lan::create`] first deletes
//! those left by processes that no longer exist (a test killed with SIGKILL runs no `Drop`).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// The prefix of every namespace a [`Lan`] creates; followed by the owner's process id.
const PREFIX: &str = "ftslan";
/// The interface name inside each host namespace.
pub const HOST_IF: &str = "eth0";

/// A LAN of host namespaces; see the module documentation.
#[derive(Debug)]
pub struct Lan {
    switch: String,
    hosts: Vec<String>,
    root_if: String,
    net: [u8; 3],
}

/// Runs `ip ARGS`; the error names the command and its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Lan {
    /// Creates a switch, one host namespace per name in `hosts` (at most 100) and the link
    /// to this namespace. Needs root.
    pub fn create(hosts: &[&str]) -> Result<Lan> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("a namespace LAN needs root (ip netns add, veth pairs)");
        }
        if hosts.len() > 100 {
            bail!("at most 100 hosts on a namespace LAN");
        }
        delete_stale();
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let base = format!("{PREFIX}{pid}-{seq}");
        let net = free_net(pid.wrapping_mul(7).wrapping_add(seq))?;
        let mut lan = Lan {
            switch: format!("{base}-sw"),
            hosts: Vec::new(),
            // Interface names have at most 15 bytes.
            root_if: format!("fl{}", (pid % 1_000_000) * 100 + seq % 100),
            net,
        };
        // From here on, Drop undoes whatever was made.
        ip(&["netns", "add", &lan.switch])?;
        let sw = lan.switch.clone();
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;

        let root_peer = format!("{}s", lan.root_if);
        ip(&[
            "link",
            "add",
            &lan.root_if,
            "type",
            "veth",
            "peer",
            "name",
            &root_peer,
        ])?;
        ip(&["link", "set", &root_peer, "netns", &sw])?;
        ip(&["-n", &sw, "link", "set", &root_peer, "master", "br0", "up"])?;
        let gw = format!("{}/24", lan.gateway());
        ip(&["addr", "add", &gw, "dev", &lan.root_if])?;
        ip(&["link", "set", &lan.root_if, "up"])?;

        for (i, name) in hosts.iter().enumerate() {
            let ns = format!("{base}-{name}");
            ip(&["netns", "add", &ns])?;
            lan.hosts.push(ns.clone());
            let port = format!("h{i}");
            let peer = format!("h{i}p");
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", &peer,
            ])?;
            ip(&["-n", &sw, "link", "set", &peer, "netns", &ns])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &ns, "link", "set", &peer, "name", HOST_IF])?;
            let addr = format!("{}/24", lan.host_ip(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", HOST_IF])?;
            ip(&["-n", &ns, "link", "set", HOST_IF, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(lan)
    }

    /// `10.x.y.N` on this LAN.
    pub fn address(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.net[0], self.net[1], self.net[2], n)
    }

    /// This process's address on the LAN (`.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        self.address(1)
    }

    /// The address of host `i` (`.10 + i`) on its `eth0`.
    pub fn host_ip(&self, i: usize) -> Ipv4Addr {
        self.address(10 + i as u8)
    }

    /// The namespace name of host `i` (for `ip netns exec` / `ip -n`).
    pub fn host_ns(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// `10.x.y.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/24", self.address(0))
    }

    /// Whether host `i`'s `eth0` carries `addr` now.
    pub fn host_has(&self, i: usize, addr: Ipv4Addr) -> Result<bool> {
        let out = ip(&[
            "-n",
            &self.hosts[i],
            "-o",
            "-4",
            "addr",
            "show",
            "dev",
            HOST_IF,
        ])?;
        Ok(out.contains(&format!(" {addr}/")))
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // First: it would go with its peer in the switch namespace, but only once the
        // kernel's asynchronous namespace clean-up has run.
        let _ = Command::new("ip")
            .args(["link", "del", &self.root_if])
            .output();
        for ns in self.hosts.iter().chain([&self.switch]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A /24 in 10.100–149.x.0 that this namespace neither has an address in nor routes.
fn free_net(seed: u32) -> Result<[u8; 3]> {
    let taken = format!(
        "{}\n{}",
        ip(&["-o", "-4", "addr", "show"])?,
        ip(&["-4", "route", "show", "table", "all"])?
    );
    for k in 0..12_800u32 {
        let n = (seed + k) % 12_800;
        let net = [10u8, 100 + (n / 256) as u8, (n % 256) as u8];
        let needle = format!("{}.{}.{}.", net[0], net[1], net[2]);
        if !taken.contains(&needle) {
            return Ok(net);
        }
    }
    bail!("no free /24 in 10.100.0.0/10 for a namespace LAN")
}

/// Deletes the namespaces of LANs whose process is gone.
fn delete_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}
