//! Which interfaces to announce on, by MetalLB's rules
//! (`metallb/metallb`, `internal/layer2/announcer.go`, `updateInterfaces`):
//!
//! 1. a name matching the exclude list is never used — MetalLB checks it
//!    first, before anything else, and leaves such interfaces out of the list
//!    an L2Advertisement's `interfaces` are matched against;
//! 2. the interface is administratively up (`IFF_UP`; carrier is not checked);
//! 3. it is not a port of a bond or bridge (MetalLB: `/sys/class/net/IF/master`
//!    exists; here: the link has `IFLA_MASTER`, the same fact read over
//!    netlink, which answers for the caller's network namespace) — the bond or
//!    bridge itself is used;
//! 4. ARP is not disabled on it (`IFF_NOARP`);
//! 5. it can broadcast (`IFF_BROADCAST`; MetalLB creates its ARP responder only
//!    then);
//! 6. it has a non-zero Ethernet MAC, which every answer carries.
//!
//! MetalLB creates its NDP responder only on interfaces that also have an IPv6
//! link-local address; the XDP responder answers both families wherever it is
//! attached, so that distinction is not made here.

use std::{collections::BTreeSet, fmt};

use regex::RegexSet;
use tracing::debug;

pub use super::netlink::{Link, VlanTag, XdpAttachment};
use super::{netlink, Interface};
use crate::error::{Error, Result};

/// MetalLB's default `announcedInterfacesToExclude` (the Helm chart's
/// `excludel2.yaml`): container, virtual and tunnel devices.
pub const METALLB_EXCLUDED: [&str; 14] = [
    "^docker.*",
    "^cbr.*",
    "^dummy.*",
    "^virbr.*",
    "^lxcbr.*",
    "^veth.*",
    "^lo$",
    "^cali.*",
    "^tunl.*",
    "^flannel.*",
    "^kube-ipvs.*",
    "^cni.*",
    "^nodelocaldns.*",
    "^lxc.*",
];

/// Interface names never announced on. A name is excluded when any pattern
/// matches anywhere in it (unanchored, like MetalLB's Go `regexp` joined as
/// `(p1)|(p2)|…`): anchor patterns with `^`/`$` to match whole names.
#[derive(Clone, Debug)]
pub struct ExcludeList {
    patterns: RegexSet,
}

/// A pattern of the exclude list that is not a valid regular expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid regular expression {pattern:?}: {reason}")]
pub struct ExcludeError {
    pub pattern: String,
    pub reason: String,
}

/// regex's syntax errors span several lines (the pattern, a caret under the
/// fault, then `error: ...`); errors here are one line, so keep the reason
/// and the caret's column.
fn one_line_reason(error: &regex::Error) -> String {
    let text = error.to_string();
    let reason = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .unwrap_or_else(|| text.lines().last().unwrap_or_default().trim());
    let column = text
        .lines()
        .find(|line| line.trim() == "^" || line.trim_start().starts_with('^'))
        .and_then(|caret| caret.find('^'))
        .map(|at| at.saturating_sub(4) + 1);
    match column {
        Some(column) => format!("{reason} (at character {column})"),
        None => reason.to_owned(),
    }
}

impl ExcludeList {
    /// [`METALLB_EXCLUDED`].
    pub fn metallb_default() -> Self {
        Self::new(METALLB_EXCLUDED).expect("the MetalLB default patterns are valid")
    }

    pub fn new<I, S>(patterns: I) -> Result<Self, ExcludeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let patterns: Vec<String> = patterns
            .into_iter()
            .map(|p| p.as_ref().to_owned())
            .collect();
        RegexSet::new(&patterns)
            .map(|patterns| ExcludeList { patterns })
            .map_err(|error| {
                // The set does not say which pattern failed; one alone does.
                let pattern = patterns
                    .iter()
                    .find(|p| regex::Regex::new(p).is_err())
                    .cloned()
                    .unwrap_or_else(|| patterns.join(" "));
                ExcludeError {
                    pattern,
                    reason: one_line_reason(&error),
                }
            })
    }

    /// Excludes nothing.
    pub fn none() -> Self {
        ExcludeList {
            patterns: RegexSet::empty(),
        }
    }

    pub fn excludes(&self, name: &str) -> bool {
        self.patterns.is_match(name)
    }

    pub fn patterns(&self) -> &[String] {
        self.patterns.patterns()
    }
}

/// Why a link is not announced on, in the order the rules are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    Excluded,
    Down,
    /// A port of a bond or bridge (the master is announced on instead).
    Enslaved,
    NoArp,
    NoBroadcast,
    NoMac,
}

impl Skipped {
    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::Excluded => "excluded",
            Skipped::Down => "down",
            Skipped::Enslaved => "enslaved",
            Skipped::NoArp => "noarp",
            Skipped::NoBroadcast => "no_broadcast",
            Skipped::NoMac => "no_mac",
        }
    }
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const IFF_UP: u32 = libc::IFF_UP as u32;
const IFF_BROADCAST: u32 = libc::IFF_BROADCAST as u32;
const IFF_NOARP: u32 = libc::IFF_NOARP as u32;

/// The interface to announce on for `link`, or the first rule it fails.
pub fn classify(link: &Link, exclude: &ExcludeList) -> Result<Interface, Skipped> {
    if exclude.excludes(&link.name) {
        return Err(Skipped::Excluded);
    }
    if link.flags & IFF_UP == 0 {
        return Err(Skipped::Down);
    }
    if link.master.is_some() {
        return Err(Skipped::Enslaved);
    }
    if link.flags & IFF_NOARP != 0 {
        return Err(Skipped::NoArp);
    }
    if link.flags & IFF_BROADCAST == 0 {
        return Err(Skipped::NoBroadcast);
    }
    match link.mac {
        Some(mac) if mac != [0; 6] => Ok(Interface {
            name: link.name.clone(),
            index: link.index,
            mac,
        }),
        _ => Err(Skipped::NoMac),
    }
}

/// Every link of the calling thread's network namespace.
pub fn links() -> Result<Vec<Link>> {
    netlink::dump_links().map_err(|e| Error::io("listing interfaces over netlink", e))
}

/// The interfaces to announce on, in index order (see the module comment).
pub fn announce_interfaces(exclude: &ExcludeList) -> Result<Vec<Interface>> {
    Ok(announce_interfaces_of(&links()?, exclude))
}

/// [`announce_interfaces`] of an already made list of links.
pub fn announce_interfaces_of(links: &[Link], exclude: &ExcludeList) -> Vec<Interface> {
    let mut announced = Vec::new();
    for link in links {
        match classify(link, exclude) {
            Ok(interface) => announced.push(interface),
            Err(reason) => debug!("not announcing on {}: {reason}", link.name),
        }
    }
    announced
}

/// Narrows `interfaces` (the announce list) to an L2Advertisement's
/// `interfaces`: `None` (no list) keeps all, `Some(names)` keeps those present.
///
/// As in MetalLB, naming an interface does not bypass the other rules: a
/// listed name that is excluded, down, enslaved, NOARP or absent is simply not
/// in `interfaces`, so nothing is announced on it. An empty result is
/// MetalLB's `announceFailed` case ("the interfaces specified … don't
/// exist"); MetalLB raises it only when no listed name exists unexcluded,
/// whatever its state, while an empty result here also covers listed
/// interfaces that are down.
pub fn select(interfaces: &[Interface], named: Option<&BTreeSet<String>>) -> Vec<Interface> {
    match named {
        None => interfaces.to_vec(),
        Some(names) => interfaces
            .iter()
            .filter(|interface| names.contains(&interface.name))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP_BROADCAST: u32 = IFF_UP | IFF_BROADCAST;
    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

    fn link(name: &str, flags: u32) -> Link {
        Link {
            index: 7,
            name: name.into(),
            flags,
            mac: Some(MAC),
            ..Link::default()
        }
    }

    fn interface(name: &str, index: u32) -> Interface {
        Interface {
            name: name.into(),
            index,
            mac: MAC,
        }
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn metallb_default_excludes_container_and_virtual_devices() {
        let exclude = ExcludeList::metallb_default();
        for name in [
            "docker0",
            "cbr0",
            "dummy0",
            "virbr0",
            "lxcbr0",
            "veth1a2b3c",
            "lo",
            "cali12345",
            "tunl0",
            "flannel.1",
            "kube-ipvs0",
            "cni0",
            "nodelocaldns",
            "lxc_health",
        ] {
            assert!(exclude.excludes(name), "{name} should be excluded");
        }
        for name in [
            "eth0", "ens3", "bond0", "br0", "lo0", "mydocker", "eno1.100",
        ] {
            assert!(!exclude.excludes(name), "{name} should not be excluded");
        }
        assert_eq!(exclude.patterns().len(), METALLB_EXCLUDED.len());
    }

    #[test]
    fn patterns_are_unanchored_like_metallb() {
        let exclude = ExcludeList::new(["eth"]).unwrap();
        assert!(exclude.excludes("eth0"));
        assert!(exclude.excludes("veth0"));
        let anchored = ExcludeList::new(["^eth0$"]).unwrap();
        assert!(anchored.excludes("eth0"));
        assert!(!anchored.excludes("eth01"));
    }

    #[test]
    fn none_excludes_nothing() {
        let exclude = ExcludeList::none();
        assert!(!exclude.excludes("lo"));
        assert!(!exclude.excludes(""));
        assert!(exclude.patterns().is_empty());
    }

    #[test]
    fn rejects_an_invalid_pattern() {
        let error = ExcludeList::new(["^ok$", "(unclosed"]).unwrap_err();
        assert_eq!(error.pattern, "(unclosed");
        let text = error.to_string();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("unclosed group"), "{text}");
    }

    #[test]
    fn classifies_by_metallb_rules_in_order() {
        let exclude = ExcludeList::metallb_default();
        let enslaved = Link {
            master: Some(3),
            ..link("eth1", UP_BROADCAST)
        };
        let no_mac = Link {
            mac: None,
            ..link("wg0", UP_BROADCAST)
        };
        let zero_mac = Link {
            mac: Some([0; 6]),
            ..link("eth2", UP_BROADCAST)
        };
        let cases: [(Link, Result<Interface, Skipped>); 9] = [
            (link("eth0", UP_BROADCAST), Ok(interface("eth0", 7))),
            (
                link("br0", UP_BROADCAST | libc::IFF_MULTICAST as u32),
                Ok(interface("br0", 7)),
            ),
            // Excluded comes first, even for a link that is down.
            (link("veth0", 0), Err(Skipped::Excluded)),
            (link("eth0", IFF_BROADCAST), Err(Skipped::Down)),
            (enslaved, Err(Skipped::Enslaved)),
            (link("eth0", UP_BROADCAST | IFF_NOARP), Err(Skipped::NoArp)),
            (link("ppp0", IFF_UP), Err(Skipped::NoBroadcast)),
            (no_mac, Err(Skipped::NoMac)),
            (zero_mac, Err(Skipped::NoMac)),
        ];
        for (link, expected) in cases {
            assert_eq!(classify(&link, &exclude), expected, "{link:?}");
        }
    }

    #[test]
    fn select_without_a_list_keeps_all() {
        let all = [interface("eth0", 2), interface("eth1", 3)];
        assert_eq!(select(&all, None), all);
        assert!(select(&[], None).is_empty());
    }

    #[test]
    fn select_keeps_listed_names_that_are_present() {
        let all = [
            interface("eth0", 2),
            interface("eth1", 3),
            interface("bond0", 4),
        ];
        assert_eq!(
            select(&all, Some(&names(&["bond0", "eth0"]))),
            [interface("eth0", 2), interface("bond0", 4)]
        );
        // Absent names (also excluded ones, which never reach the announce
        // list) select nothing: MetalLB's announceFailed.
        assert!(select(&all, Some(&names(&["eth9", "veth0"]))).is_empty());
        assert!(select(&all, Some(&names(&[]))).is_empty());
    }

    #[test]
    fn an_excluded_name_stays_excluded_when_listed() {
        let exclude = ExcludeList::metallb_default();
        let announced: Vec<Interface> = [link("eth0", UP_BROADCAST), link("veth0", UP_BROADCAST)]
            .iter()
            .filter_map(|l| classify(l, &exclude).ok())
            .collect();
        assert_eq!(
            select(&announced, Some(&names(&["veth0", "eth0"]))),
            [interface("eth0", 7)]
        );
    }

    #[test]
    fn reasons_have_stable_names() {
        assert_eq!(Skipped::NoBroadcast.to_string(), "no_broadcast");
        assert_eq!(Skipped::Enslaved.as_str(), "enslaved");
    }
}
