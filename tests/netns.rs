//! Hosts of their own on one machine: each in a network namespace of its
//! own, joined to the others only by a bridge, as machines on a LAN are.
//! A process in such a namespace has a private loopback: it cannot reach
//! another host's loopback listeners, nor the services `scripts/test.sh`
//! started on this machine's loopback, except through the addresses this
//! module exposes on the bridge ([`Network::expose`]).
//!
//! Needs root (CAP_NET_ADMIN) and iproute2's `ip`. `scripts/test.sh` sets
//! `SECURENET_TEST_NETNS=require` when it runs as root; without it a test
//! may fall back to loopback ([`Network::new`] says why).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use crate::support::Proxy;

pub struct Network {
    id: u32,
    bridge: String,
    subnet: [u8; 3],
    namespaces: Vec<String>,
    /// Loopback service → its address on the bridge.
    exposed: BTreeMap<SocketAddr, Proxy>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Network {
    /// A bridge with the gateway address `10.a.b.1/24` (a and b from this
    /// process's id, so that concurrent test runs do not collide).
    /// `None` when namespaces cannot be made here and the caller may run
    /// on loopback instead; panics if they cannot be made although
    /// `SECURENET_TEST_NETNS=require`.
    pub fn new() -> Option<Self> {
        let id = std::process::id();
        let net = Self {
            id,
            bridge: format!("snb{}", id % 100_000),
            subnet: [10, 100 + (id / 250 % 100) as u8, (id % 250) as u8],
            namespaces: Vec::new(),
            exposed: BTreeMap::new(),
        };
        let gateway = format!("{}/24", net.gateway());
        let made = ip(&["link", "add", &net.bridge, "type", "bridge"])
            .and_then(|()| ip(&["addr", "add", &gateway, "dev", &net.bridge]))
            .and_then(|()| ip(&["link", "set", &net.bridge, "up"]));
        match made {
            Ok(()) => Some(net),
            Err(why) => {
                assert!(
                    std::env::var("SECURENET_TEST_NETNS").as_deref() != Ok("require"),
                    "network namespaces are required here but cannot be made: {why}"
                );
                eprintln!("network namespaces unavailable ({why}): hosts share loopback");
                None
            }
        }
    }

    /// This machine's address on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// A new namespace joined to the bridge by a veth pair; returns its
    /// name and address. Its loopback is up but its own.
    pub fn host(&mut self) -> (String, Ipv4Addr) {
        let n = self.namespaces.len();
        let name = format!("sn{}h{n}", self.id);
        let outside = format!("snv{}h{n}", self.id % 100_000);
        let [a, b, c] = self.subnet;
        let address = Ipv4Addr::new(a, b, c, 10 + n as u8);
        let cidr = format!("{address}/24");
        ip(&["netns", "add", &name]).expect("ip netns add");
        self.namespaces.push(name.clone());
        for args in [
            &[
                "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &name,
            ][..],
            &["link", "set", &outside, "master", &self.bridge, "up"],
            &["-n", &name, "addr", "add", &cidr, "dev", "eth0"],
            &["-n", &name, "link", "set", "eth0", "up"],
            &["-n", &name, "link", "set", "lo", "up"],
        ] {
            ip(args).expect("setting up a namespace");
        }
        (name, address)
    }

    /// The address on the bridge at which every namespace reaches
    /// `target`, a service on this machine's loopback (one forwarder per
    /// service, shared by all hosts).
    pub fn expose(&mut self, target: SocketAddr) -> SocketAddr {
        let gateway = self.gateway();
        self.exposed
            .entry(target)
            .or_insert_with(|| Proxy::start_at((gateway, 0).into(), target))
            .addr
    }

    /// `value` with every `127.0.0.1:port` / `localhost:port` in it
    /// replaced by the exposed address of that service.
    pub fn reroute(&mut self, value: &str) -> String {
        let mut out = String::new();
        let mut rest = value;
        while let Some(at) = ["127.0.0.1:", "localhost:"]
            .iter()
            .filter_map(|host| rest.find(host).map(|i| (i, host.len())))
            .min()
        {
            let (i, host_len) = at;
            let digits = rest[i + host_len..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            out.push_str(&rest[..i]);
            match rest[i + host_len..i + host_len + digits].parse::<u16>() {
                Ok(port) => {
                    let exposed = self.expose((Ipv4Addr::LOCALHOST, port).into());
                    out.push_str(&exposed.to_string());
                }
                Err(_) => out.push_str(&rest[i..i + host_len + digits]),
            }
            rest = &rest[i + host_len + digits..];
        }
        out.push_str(rest);
        out
    }
}

/// Whether a TCP connection from inside namespace `ns` to `addr` opens.
pub fn connects_from(ns: &str, addr: SocketAddr) -> bool {
    let probe = format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port());
    Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "5", "bash", "-c", &probe])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and with it the pair.
        for name in &self.namespaces {
            let _ = ip(&["netns", "del", name]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

#[test]
fn reroute_replaces_each_loopback_address_once() {
    // No namespaces needed: only the forwarders, on 127.0.0.1 here.
    let mut net = Network {
        id: 0,
        bridge: String::new(),
        subnet: [127, 0, 0],
        namespaces: Vec::new(),
        exposed: BTreeMap::new(),
    };
    let a = net.reroute("postgres://u:p@127.0.0.1:5432/db?x=localhost:1");
    let via = net.expose((Ipv4Addr::LOCALHOST, 5432).into());
    let via_1 = net.expose((Ipv4Addr::LOCALHOST, 1).into());
    assert_eq!(a, format!("postgres://u:p@{via}/db?x={via_1}"));
    assert_eq!(net.reroute("kafka:9092"), "kafka:9092");
    assert_eq!(net.reroute("127.0.0.1:"), "127.0.0.1:");
}
