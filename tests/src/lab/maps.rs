//! Reading `speaker maps --json` documents.

use serde_json::Value;

use super::neighbour::same_ip;

/// The `answered` counter of `address` in a `speaker maps --json` document.
pub fn vip_answered(maps: &Value, address: &str) -> Option<u64> {
    maps["vips"]
        .as_array()?
        .iter()
        .find(|v| v["address"].as_str().is_some_and(|a| same_ip(a, address)))?["answered"]
        .as_u64()
}

/// The count of verdict reason `reason`.
pub fn reason_count(maps: &Value, reason: &str) -> Option<u64> {
    maps["reasons"]
        .as_array()?
        .iter()
        .find(|r| r["reason"] == reason)?["count"]
        .as_u64()
}

/// The interfaces listed under `links`.
pub fn linked_interfaces(maps: &Value) -> Vec<String> {
    maps["links"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect()
}

/// The VIP addresses (one per VIP, even when it is on several interfaces).
pub fn vip_addresses(maps: &Value) -> Vec<String> {
    let mut out: Vec<String> = maps["vips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["address"].as_str().map(str::to_owned))
        .collect();
    out.dedup();
    out
}

/// The addresses of the VIP rows on `interface`.
pub fn vips_on(maps: &Value, interface: &str) -> Vec<String> {
    maps["vips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["interface"] == interface)
        .filter_map(|v| v["address"].as_str().map(str::to_owned))
        .collect()
}

/// Parses the stdout of `speaker maps --json`; panics with the command's
/// output when it failed or printed something else.
pub fn parse_maps(out: &super::CmdOutput, host: &str) -> Value {
    assert!(
        out.success(),
        "speaker maps --json failed in {host}:\n{out}"
    );
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!("speaker maps --json printed invalid JSON in {host} ({e}):\n{out}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_maps_json() {
        let maps: Value = serde_json::from_str(
            r#"{"pin_dir":"/x","links":["xn1_0"],
                "vips":[{"address":"2001:db8::100","family":"ipv6","interface":"xn1_0","ifindex":2,
                         "mac":"6a:0b:1c:2d:3e:4f","answered":7},
                        {"address":"2001:db8::100","family":"ipv6","interface":"eth1","ifindex":3,
                         "mac":"6a:0b:1c:2d:3e:4f","answered":0}],
                "reasons":[{"reason":"not_owned","count":3}],
                "watchdog":{"max_age_seconds":null,"heartbeat_age_seconds":null,"stale":false}}"#,
        )
        .unwrap();
        assert_eq!(vip_answered(&maps, "2001:0db8::0100"), Some(7));
        assert_eq!(vip_answered(&maps, "192.0.2.100"), None);
        assert_eq!(reason_count(&maps, "not_owned"), Some(3));
        assert_eq!(linked_interfaces(&maps), ["xn1_0"]);
        assert_eq!(vip_addresses(&maps), ["2001:db8::100"]);
        assert_eq!(vips_on(&maps, "eth1"), ["2001:db8::100"]);
        assert!(vips_on(&maps, "eth0").is_empty());
    }
}
