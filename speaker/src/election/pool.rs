//! IPAddressPools: which addresses a pool owns. The election only needs "which
//! pool holds this service's IPs", to find the L2Advertisements attached to it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::selector::Labels;

/// One entry of `spec.addresses`: a CIDR or an inclusive `first-last` range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressRange {
    /// `network` has its host bits cleared (`192.0.2.7/24` parses to
    /// `192.0.2.0/24`, as Go's `net.ParseCIDR` does).
    Cidr {
        network: IpAddr,
        prefix_len: u8,
    },
    Range {
        first: IpAddr,
        last: IpAddr,
    },
}

/// Why an address or pool was refused. The texts follow MetalLB's
/// (`internal/config`) so operators recognise them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("invalid CIDR {0:?}: expected ADDRESS/PREFIX such as 192.0.2.0/24 or 2001:db8::/64, or a FIRST-LAST range")]
    InvalidCidr(String),
    #[error("invalid CIDR {text:?}: prefix length {prefix_len} is longer than {max}")]
    PrefixTooLong {
        text: String,
        prefix_len: u32,
        max: u8,
    },
    #[error("invalid IP range {text:?}: invalid start IP {start:?}")]
    InvalidRangeStart { text: String, start: String },
    #[error("invalid IP range {text:?}: invalid end IP {end:?}")]
    InvalidRangeEnd { text: String, end: String },
    #[error("invalid IP range {text:?}: start IP {start} is after the end IP {end}")]
    RangeReversed {
        text: String,
        start: IpAddr,
        end: IpAddr,
    },
    #[error(
        "invalid IP range {text:?}: start IP {start} and end IP {end} are not of the same family"
    )]
    MixedFamilies {
        text: String,
        start: IpAddr,
        end: IpAddr,
    },
    #[error("pool {0:?} has no addresses")]
    NoAddresses(String),
    #[error("pool {pool:?}: {source}")]
    InPool {
        pool: String,
        #[source]
        source: Box<PoolError>,
    },
}

impl AddressRange {
    /// Parses `ADDRESS/PREFIX` or `FIRST-LAST` (spaces around either end of
    /// a range are allowed, as in MetalLB), IPv4 or IPv6.
    pub fn parse(text: &str) -> Result<Self, PoolError> {
        match text.split_once('-') {
            None => parse_cidr(text),
            Some((start, end)) => parse_range(text, start, end),
        }
    }

    pub fn first(&self) -> IpAddr {
        match *self {
            Self::Cidr { network, .. } => network,
            Self::Range { first, .. } => first,
        }
    }

    pub fn last(&self) -> IpAddr {
        match *self {
            Self::Cidr {
                network,
                prefix_len,
            } => {
                let host_bits = 128 - u32::from(prefix_len);
                let host_mask = 1u128.checked_shl(host_bits).map_or(u128::MAX, |b| b - 1);
                from_bits(network, to_bits(network) | host_mask)
            }
            Self::Range { last, .. } => last,
        }
    }

    /// IPv4-mapped IPv6 addresses count as IPv4, like Go's `IPNet.Contains`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let first = self.first();
        first.is_ipv4() == ip.is_ipv4()
            && (to_bits(first)..=to_bits(self.last())).contains(&to_bits(ip))
    }
}

impl FromStr for AddressRange {
    type Err = PoolError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cidr {
                network,
                prefix_len,
            } => write!(f, "{network}/{prefix_len}"),
            Self::Range { first, last } => write!(f, "{first}-{last}"),
        }
    }
}

fn parse_cidr(text: &str) -> Result<AddressRange, PoolError> {
    let invalid = || PoolError::InvalidCidr(text.to_owned());
    let (address, prefix) = text.split_once('/').ok_or_else(invalid)?;
    let address: IpAddr = address.parse().map_err(|_| invalid())?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let prefix_len: u32 = prefix.parse().map_err(|_| invalid())?;
    let max = max_prefix(address);
    if prefix_len > u32::from(max) {
        return Err(PoolError::PrefixTooLong {
            text: text.to_owned(),
            prefix_len,
            max,
        });
    }
    let prefix_len = prefix_len as u8;
    // Go reads ::ffff:a.b.c.d/N (N >= 96) as the IPv4 network a.b.c.d/(N-96).
    let (address, prefix_len) = match address {
        IpAddr::V6(v6) if prefix_len >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), prefix_len - 96),
            None => (address, prefix_len),
        },
        _ => (address, prefix_len),
    };
    let host_bits = 128 - u32::from(prefix_len);
    let network_mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
    let network = from_bits(address, to_bits(address) & network_mask);
    Ok(AddressRange::Cidr {
        network,
        prefix_len,
    })
}

fn parse_range(text: &str, start: &str, end: &str) -> Result<AddressRange, PoolError> {
    let first = start
        .trim()
        .parse::<IpAddr>()
        .map_err(|_| PoolError::InvalidRangeStart {
            text: text.to_owned(),
            start: start.to_owned(),
        })?;
    let last = end
        .trim()
        .parse::<IpAddr>()
        .map_err(|_| PoolError::InvalidRangeEnd {
            text: text.to_owned(),
            end: end.to_owned(),
        })?;
    let (first, last) = (first.to_canonical(), last.to_canonical());
    if first.is_ipv4() != last.is_ipv4() {
        return Err(PoolError::MixedFamilies {
            text: text.to_owned(),
            start: first,
            end: last,
        });
    }
    if to_bits(first) > to_bits(last) {
        return Err(PoolError::RangeReversed {
            text: text.to_owned(),
            start: first,
            end: last,
        });
    }
    Ok(AddressRange::Range { first, last })
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// IPv4 sits in the top 32 bits, so a prefix of length N covers the top N bits
/// in both families and one mask expression serves both.
fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_bits(family: IpAddr, bits: u128) -> IpAddr {
    match family {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from((bits >> 96) as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

/// An IPAddressPool. Only the fields the election reads; allocation settings
/// (`autoAssign`, `avoidBuggyIPs`, `serviceAllocation`) belong to the
/// controller that assigns IPs, not to the speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpAddressPool {
    pub name: String,
    pub namespace: String,
    pub labels: Labels,
    pub addresses: Vec<AddressRange>,
}

impl IpAddressPool {
    /// Parses `spec.addresses`; an empty list is refused as in MetalLB.
    pub fn new<S: AsRef<str>>(
        name: &str,
        namespace: &str,
        labels: Labels,
        addresses: &[S],
    ) -> Result<Self, PoolError> {
        let in_pool = |source| PoolError::InPool {
            pool: name.to_owned(),
            source: Box::new(source),
        };
        if addresses.is_empty() {
            return Err(in_pool(PoolError::NoAddresses(name.to_owned())));
        }
        let addresses = addresses
            .iter()
            .map(|a| AddressRange::parse(a.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(in_pool)?;
        Ok(Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            labels,
            addresses,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.addresses.iter().any(|r| r.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn parses_cidrs_and_ranges() {
        #[rustfmt::skip]
        let table: &[(&str, &str, &str, &str)] = &[
            // input, first, last, display
            ("192.0.2.0/24", "192.0.2.0", "192.0.2.255", "192.0.2.0/24"),
            ("192.0.2.77/24", "192.0.2.0", "192.0.2.255", "192.0.2.0/24"),
            ("192.0.2.1/32", "192.0.2.1", "192.0.2.1", "192.0.2.1/32"),
            ("0.0.0.0/0", "0.0.0.0", "255.255.255.255", "0.0.0.0/0"),
            ("2001:db8::/64", "2001:db8::", "2001:db8::ffff:ffff:ffff:ffff", "2001:db8::/64"),
            ("2001:DB8::1/128", "2001:db8::1", "2001:db8::1", "2001:db8::1/128"),
            ("::/0", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::/0"),
            ("::ffff:192.0.2.0/120", "192.0.2.0", "192.0.2.255", "192.0.2.0/24"),
            ("192.0.2.10-192.0.2.20", "192.0.2.10", "192.0.2.20", "192.0.2.10-192.0.2.20"),
            ("192.0.2.10 - 192.0.2.10", "192.0.2.10", "192.0.2.10", "192.0.2.10-192.0.2.10"),
            ("2001:db8::1-2001:db8::1:0", "2001:db8::1", "2001:db8::1:0", "2001:db8::1-2001:db8::1:0"),
        ];
        for (input, first, last, display) in table {
            let range = AddressRange::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(range.first(), ip(first), "{input}");
            assert_eq!(range.last(), ip(last), "{input}");
            assert_eq!(range.to_string(), *display, "{input}");
        }
    }

    #[test]
    fn refuses_bad_addresses_with_clear_errors() {
        #[rustfmt::skip]
        let table: &[(&str, &str)] = &[
            ("", "invalid CIDR \"\": expected ADDRESS/PREFIX"),
            ("192.0.2.0", "invalid CIDR \"192.0.2.0\""),
            ("192.0.2.0/", "invalid CIDR \"192.0.2.0/\""),
            ("192.0.2.0/+8", "invalid CIDR \"192.0.2.0/+8\""),
            ("192.0.2.0/33", "invalid CIDR \"192.0.2.0/33\": prefix length 33 is longer than 32"),
            ("2001:db8::/129", "prefix length 129 is longer than 128"),
            ("192.0.2/24", "invalid CIDR \"192.0.2/24\""),
            ("fe80::1%eth0/64", "invalid CIDR"),
            ("192.0.2.x-192.0.2.9", "invalid IP range \"192.0.2.x-192.0.2.9\": invalid start IP \"192.0.2.x\""),
            ("192.0.2.1-", "invalid end IP \"\""),
            ("192.0.2.9-192.0.2.1", "start IP 192.0.2.9 is after the end IP 192.0.2.1"),
            ("192.0.2.1-2001:db8::1", "are not of the same family"),
        ];
        for (input, message) in table {
            let err = AddressRange::parse(input).expect_err(input).to_string();
            assert!(
                err.contains(message),
                "{input}: got {err:?}, want it to contain {message:?}"
            );
        }
    }

    #[test]
    fn contains_respects_family_and_bounds() {
        let v4 = AddressRange::parse("192.0.2.10-192.0.2.20").unwrap();
        assert!(v4.contains(ip("192.0.2.10")));
        assert!(v4.contains(ip("192.0.2.20")));
        assert!(!v4.contains(ip("192.0.2.21")));
        assert!(
            v4.contains(ip("::ffff:192.0.2.15")),
            "mapped addresses are IPv4"
        );
        let v6 = AddressRange::parse("::/0").unwrap();
        assert!(!v6.contains(ip("192.0.2.15")));
        assert!(!v6.contains(ip("::ffff:192.0.2.15")));
        assert!(v6.contains(ip("2001:db8::1")));
        let all_v4 = AddressRange::parse("0.0.0.0/0").unwrap();
        assert!(all_v4.contains(ip("255.255.255.255")));
        assert!(!all_v4.contains(ip("::1")));
    }

    #[test]
    fn pools_wrap_errors_with_their_name() {
        let err = IpAddressPool::new(
            "blue",
            "metallb-system",
            Labels::new(),
            &["10.0.0.0/8", "nope"],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pool \"blue\": invalid CIDR \"nope\": expected ADDRESS/PREFIX such as 192.0.2.0/24 \
             or 2001:db8::/64, or a FIRST-LAST range"
        );
        let empty: &[&str] = &[];
        assert!(matches!(
            IpAddressPool::new("blue", "metallb-system", Labels::new(), empty),
            Err(PoolError::InPool { source, .. }) if *source == PoolError::NoAddresses("blue".into())
        ));
        let pool = IpAddressPool::new(
            "blue",
            "metallb-system",
            Labels::new(),
            &["10.0.0.0/8", "2001:db8::/64"],
        )
        .unwrap();
        assert!(pool.contains(ip("10.1.2.3")));
        assert!(pool.contains(ip("2001:db8::5")));
        assert!(!pool.contains(ip("192.0.2.1")));
    }
}
