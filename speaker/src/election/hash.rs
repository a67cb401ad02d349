//! The election order: `sha256(nodeName + "#" + ip)`, compared byte-wise,
//! smallest first. Every speaker computes it alone, so the text must be
//! exactly the one MetalLB hashes or mixed clusters would pick two owners.

use std::net::IpAddr;

use sha2::{Digest, Sha256};

/// The IP as Go's `net.IP.String()` prints it: IPv4 dotted; IPv6 lower-case
/// with the leftmost longest run of two or more zero groups as `::`; an
/// IPv4-mapped IPv6 address as dotted IPv4. Rust's `Ipv6Addr` display follows
/// the same RFC 5952 rules; only the mapped case needs `to_canonical`.
pub fn go_ip_text(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}

/// `sha256(node + "#" + ip_text)`.
pub fn election_hash(node: &str, ip_text: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(node.as_bytes());
    hasher.update(b"#");
    hasher.update(ip_text.as_bytes());
    hasher.finalize().into()
}
