//! `speaker maps`: what the pinned maps hold, for people (a table) and for
//! scripts (JSON, schema in docs/maps-json.md).

use serde::Serialize;
use speaker_common::VlanPath;

use crate::{
    dataplane::{DataplaneMaps, PinDir, VipRecord, WatchdogState},
    error::Result,
    interfaces::{format_mac, name_of},
};

#[derive(Debug, Serialize)]
pub struct MapsReport {
    pub pin_dir: String,
    /// Interfaces with a pinned XDP link.
    pub links: Vec<String>,
    pub vips: Vec<VipRow>,
    /// Every verdict reason, in the stable order, with its count.
    pub reasons: Vec<ReasonRow>,
    pub watchdog: WatchdogRow,
}

#[derive(Debug, Serialize)]
pub struct VipRow {
    pub address: String,
    pub family: &'static str,
    /// `null` when the index does not exist in this network namespace.
    pub interface: Option<String>,
    pub ifindex: u32,
    /// The tags requests must carry; `null`: untagged.
    pub vlan: Option<VlanRow>,
    pub mac: String,
    pub answered: u64,
    /// Valid requests for the VIP on this interface, answered or refused
    /// (`metallb_layer2_requests_received`).
    pub requests: u64,
    /// Frames from other hosts claiming the VIP (RFC 5227 §2.4; NAs for IPv6).
    pub conflicts: u64,
    /// The MAC of the last claim; `null` when there was none.
    pub last_conflict_mac: Option<String>,
    /// Seconds since the last claim; `null` when there was none.
    pub last_conflict_age_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct VlanRow {
    /// Outermost first: one VID, or two (QinQ).
    pub vids: Vec<u16>,
    /// The outer tag's protocol, `802.1q` or `802.1ad`; an inner tag is
    /// always 802.1Q.
    pub outer_protocol: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ReasonRow {
    pub reason: &'static str,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct WatchdogRow {
    /// `null`: the switch is disabled.
    pub max_age_seconds: Option<f64>,
    /// `null`: no heartbeat was ever written.
    pub heartbeat_age_seconds: Option<f64>,
    /// True when the responder has stopped answering because of it.
    pub stale: bool,
}

impl MapsReport {
    pub fn read(pins: &PinDir, maps: &DataplaneMaps) -> Result<Self> {
        let vips = maps.vips()?.into_iter().map(vip_row).collect();
        let reasons = maps
            .reasons()?
            .into_iter()
            .map(|(reason, count)| ReasonRow {
                reason: reason.name(),
                count,
            })
            .collect();
        Ok(MapsReport {
            pin_dir: pins.root().display().to_string(),
            links: pins.linked_interfaces(),
            vips,
            reasons,
            watchdog: watchdog_row(maps.watchdog()?),
        })
    }

    pub fn to_table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("pin dir: {}\n", self.pin_dir));
        let links = if self.links.is_empty() {
            "(none)".to_owned()
        } else {
            self.links.join(", ")
        };
        out.push_str(&format!("attached: {links}\n\n"));
        out.push_str(&format!(
            "{:<40} {:<16} {:<17} {:<17} {:>12} {:>9}  {}\n",
            "VIP", "INTERFACE", "VLAN", "MAC", "ANSWERED", "CONFLICTS", "LAST CONFLICT"
        ));
        for vip in &self.vips {
            let interface = vip
                .interface
                .clone()
                .unwrap_or_else(|| format!("(ifindex {})", vip.ifindex));
            let last_conflict = match (&vip.last_conflict_mac, vip.last_conflict_age_seconds) {
                (Some(mac), Some(age)) => format!("{mac} {age:.1} s ago"),
                _ => "-".to_owned(),
            };
            let vlan = vip.vlan.as_ref().map_or("-".to_owned(), VlanRow::text);
            out.push_str(&format!(
                "{:<40} {:<16} {:<17} {:<17} {:>12} {:>9}  {}\n",
                vip.address, interface, vlan, vip.mac, vip.answered, vip.conflicts, last_conflict
            ));
        }
        if self.vips.is_empty() {
            out.push_str("(no VIPs)\n");
        }
        out.push_str("\nREASON                      COUNT\n");
        for row in &self.reasons {
            out.push_str(&format!("{:<24} {:>9}\n", row.reason, row.count));
        }
        let w = &self.watchdog;
        let heartbeat = match (w.max_age_seconds, w.heartbeat_age_seconds) {
            (None, _) => "dead-man switch disabled".to_owned(),
            (Some(max), None) => format!("no heartbeat yet (limit {max:.3} s): NOT answering"),
            (Some(max), Some(age)) => format!(
                "heartbeat {age:.3} s ago (limit {max:.3} s){}",
                if w.stale {
                    ": STALE, NOT answering"
                } else {
                    ""
                }
            ),
        };
        out.push_str(&format!("\nwatchdog: {heartbeat}\n"));
        out
    }
}

impl VlanRow {
    fn from_path(vlan: VlanPath) -> Option<VlanRow> {
        if vlan.is_untagged() {
            return None;
        }
        let vid = |tag: u16| tag & VlanPath::VID_MASK;
        let mut vids = vec![vid(vlan.outer)];
        if vlan.inner != 0 {
            vids.push(vid(vlan.inner));
        }
        Some(VlanRow {
            vids,
            outer_protocol: if vlan.outer & VlanPath::AD != 0 {
                "802.1ad"
            } else {
                "802.1q"
            },
        })
    }

    /// As `--vlan` takes it: `100`, `300.30`, with ` 802.1ad` for a
    /// service tag outside.
    fn text(&self) -> String {
        let vids: Vec<String> = self.vids.iter().map(u16::to_string).collect();
        let mut text = vids.join(".");
        if self.outer_protocol == "802.1ad" {
            text.push_str(" 802.1ad");
        }
        text
    }
}

/// The `speaker maps` notation of a VLAN path; `None` when untagged.
pub fn vlan_text(vlan: VlanPath) -> Option<String> {
    VlanRow::from_path(vlan).map(|row| row.text())
}

fn vip_row(record: VipRecord) -> VipRow {
    VipRow {
        address: record.address.to_string(),
        family: if record.address.is_ipv4() {
            "ipv4"
        } else {
            "ipv6"
        },
        interface: name_of(record.ifindex),
        ifindex: record.ifindex,
        vlan: VlanRow::from_path(record.vlan),
        mac: format_mac(&record.mac),
        answered: record.answered,
        requests: record.requests,
        conflicts: record.conflicts,
        last_conflict_mac: record.last_conflict.map(|c| format_mac(&c.mac)),
        last_conflict_age_seconds: record.last_conflict.map(|c| c.age.as_secs_f64()),
    }
}

fn watchdog_row(state: WatchdogState) -> WatchdogRow {
    WatchdogRow {
        max_age_seconds: state.max_age.map(|d| d.as_secs_f64()),
        heartbeat_age_seconds: state.heartbeat_age.map(|d| d.as_secs_f64()),
        stale: state.stale(),
    }
}

#[cfg(test)]
mod vlan_tests {
    use super::*;

    #[test]
    fn vlan_paths_print_as_the_cli_takes_them() {
        assert_eq!(vlan_text(VlanPath::UNTAGGED), None);
        assert_eq!(vlan_text(VlanPath::single(100, false)).unwrap(), "100");
        assert_eq!(
            vlan_text(VlanPath::single(200, true)).unwrap(),
            "200 802.1ad"
        );
        assert_eq!(
            vlan_text(VlanPath::stacked(300, true, 30)).unwrap(),
            "300.30 802.1ad"
        );
        let row = VlanRow::from_path(VlanPath::stacked(301, false, 31)).unwrap();
        assert_eq!(row.vids, [301, 31]);
        assert_eq!(row.outer_protocol, "802.1q");
        assert_eq!(
            serde_json::to_value(&row).unwrap(),
            serde_json::json!({"vids": [301, 31], "outer_protocol": "802.1q"})
        );
    }
}
