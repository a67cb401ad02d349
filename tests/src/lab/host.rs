//! The hosts of a [`super::Fabric`]: what to create ([`HostSpec`], with
//! documentation addresses only) and what was created ([`Host`]).

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use super::mac;

/// A host to create: its name (also the Kubernetes node name speakers get),
/// its addresses (prefixes /24 and /64) and optionally its MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSpec {
    pub name: String,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// `None`: the kernel picks a random one.
    pub mac: Option<String>,
}

impl HostSpec {
    /// A host without addresses.
    pub fn new(name: &str) -> Self {
        HostSpec {
            name: name.to_owned(),
            v4: None,
            v6: None,
            mac: None,
        }
    }

    /// A host with `192.0.2.<n>` and `2001:db8::<n>` (the same digits, so
    /// `11` gives 192.0.2.11 and 2001:db8::11).
    pub fn numbered(name: &str, n: u8) -> Self {
        assert!((1..=254).contains(&n), "host number {n} is not in 1..=254");
        HostSpec::new(name)
            .v4(&format!("192.0.2.{n}"))
            .v6(&format!("2001:db8::{n}"))
    }

    /// The multi-node labs' hosts: `nodes` numbered from 11 (192.0.2.11,
    /// .12, …, as in [`super::cluster::lab_cluster_yaml`]), then `extra`,
    /// then `client` as number 10.
    pub fn nodes_and_client(nodes: &[&str], extra: &[HostSpec], client: &str) -> Vec<Self> {
        let mut specs: Vec<HostSpec> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| HostSpec::numbered(n, 11 + i as u8))
            .collect();
        specs.extend(extra.iter().cloned());
        specs.push(HostSpec::numbered(client, 10));
        specs
    }

    /// Sets the IPv4 address; it must be in 192.0.2.0/24.
    pub fn v4(mut self, address: &str) -> Self {
        let ip: Ipv4Addr = address
            .parse()
            .unwrap_or_else(|_| panic!("{address:?} is not an IPv4 address"));
        let [a, b, c, d] = ip.octets();
        assert!(
            [a, b, c] == [192, 0, 2] && d != 0 && d != 255,
            "{ip} is not a host address of 192.0.2.0/24 (the lab uses documentation addresses only)"
        );
        self.v4 = Some(ip);
        self
    }

    /// Sets the IPv6 address; it must be in 2001:db8::/64.
    pub fn v6(mut self, address: &str) -> Self {
        let ip: Ipv6Addr = address
            .parse()
            .unwrap_or_else(|_| panic!("{address:?} is not an IPv6 address"));
        assert!(
            ip.segments()[..4] == [0x2001, 0xdb8, 0, 0],
            "{ip} is not in 2001:db8::/64 (the lab uses documentation addresses only)"
        );
        self.v6 = Some(ip);
        self
    }

    /// Sets the MAC of the host's interface.
    pub fn mac(mut self, mac: &str) -> Self {
        self.mac = Some(mac::normalize(mac));
        self
    }
}

/// A created host.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    /// Its network namespace.
    pub ns: String,
    /// Its interface on the segment: always [`super::HOST_IF`].
    pub interface: String,
    /// The bridge port its `eth0` is the peer of (in the switch namespace).
    pub port: String,
    /// `eth0`'s MAC, lower case.
    pub mac: String,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// The `--pin-dir` of its speaker commands (inside the lab's bpffs).
    pub pin_dir: PathBuf,
}
