//! What `ndisc6` and `ip -j neigh` print.

use std::net::IpAddr;

use serde_json::Value;

use super::mac;

/// True when both are the same IP address (`2001:db8::1` and
/// `2001:0db8::0001`), or the same text when either is not an address.
pub fn same_ip(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Parses ndisc6's `Target link-layer address: AA:BB:...` lines (lower-cased).
pub fn parse_ndisc6(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Target link-layer address:"))
        .map(|text| mac::normalize(text.trim()))
        .filter(|text| mac::is_mac(text))
        .collect()
}

/// One entry of `ip -j neigh`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub dst: String,
    pub dev: Option<String>,
    /// Lower case; `None` for entries still resolving or failed.
    pub lladdr: Option<String>,
    /// E.g. `["REACHABLE"]`, `["INCOMPLETE"]`, `["FAILED"]`.
    pub state: Vec<String>,
}

impl Neighbour {
    pub fn is(&self, state: &str) -> bool {
        self.state.iter().any(|s| s == state)
    }
}

/// Parses `ip -j neigh show` output; `dev` fills entries that name none
/// (`ip neigh show dev X` leaves it out).
pub fn parse_neighbours(json: &str, dev: Option<&str>) -> Vec<Neighbour> {
    let value: Value = serde_json::from_str(json.trim()).unwrap_or(Value::Array(Vec::new()));
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| Neighbour {
            dst: entry["dst"].as_str().unwrap_or_default().to_owned(),
            dev: entry["dev"].as_str().or(dev).map(str::to_owned),
            lladdr: entry["lladdr"].as_str().map(mac::normalize),
            state: entry["state"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ndisc6() {
        let out = "Soliciting 2001:db8::100 (2001:db8::100) on xc1_0...\n\
                   Target link-layer address: 6A:0B:1C:2D:3E:4F\n from 2001:db8::100\n";
        assert_eq!(parse_ndisc6(out), ["6a:0b:1c:2d:3e:4f"]);
        assert!(parse_ndisc6("Soliciting 2001:db8::101\nTimed out.\nNo response.\n").is_empty());
    }

    #[test]
    fn parses_ip_neigh_json() {
        let json = r#"[{"dst":"192.0.2.100","lladdr":"6a:0b:1c:2d:3e:4f","state":["REACHABLE"]},
                       {"dst":"192.0.2.101","state":["INCOMPLETE"]},
                       {"dst":"2001:db8::101","dev":"xc1_0","state":["FAILED"]}]"#;
        let n = parse_neighbours(json, Some("eth0"));
        assert_eq!(n.len(), 3);
        assert_eq!(n[0].lladdr.as_deref(), Some("6a:0b:1c:2d:3e:4f"));
        assert_eq!(n[0].dev.as_deref(), Some("eth0"));
        assert!(n[0].is("REACHABLE"));
        assert_eq!(n[1].lladdr, None);
        assert!(n[2].is("FAILED"));
        assert_eq!(n[2].dev.as_deref(), Some("xc1_0"));
        assert!(parse_neighbours("", None).is_empty());
    }

    #[test]
    fn compares_addresses() {
        assert!(same_ip("2001:db8::1", "2001:0db8::0001"));
        assert!(!same_ip("192.0.2.1", "192.0.2.10"));
    }
}
