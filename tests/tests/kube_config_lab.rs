//! MetalLB's stale configuration through the Kubernetes source: `speaker
//! run --node-name iris1` against the stand-in API server preloaded with
//! the iris example (pool and advertisement `lab`, Service default/web on
//! 192.0.2.100 announced by iris1). Deleting the IPAddressPool, then the
//! L2Advertisement, keeps the VIP in the map and answered, sets
//! `metallb_k8s_client_config_stale_bool` to 1 with an error line naming the
//! service; recreating the object clears it.
//!
//! Needs root (namespaces, bpffs, XDP) and fails, not skips, without it.
//! Run: `cargo test -p speaker-tests --test kube_config_lab`.

use std::{
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use speaker_tests::lab::{
    http,
    kube::{iris_example, KubeLab, METALLB, METALLB_NAMESPACE, NODE},
    wait_for,
};

const VIP: &str = "192.0.2.100";
const STALE: &str = "metallb_k8s_client_config_stale_bool";
const REACT: Duration = Duration::from_secs(15);

fn stale(k: &KubeLab) -> Option<f64> {
    http::metrics_in(&k.lab.node_ns)
        .ok()
        .and_then(|text| http::metric_value(&text, STALE))
}

fn wait_stale(k: &KubeLab, value: f64) {
    assert!(
        wait_for(REACT, || (stale(k) == Some(value)).then_some(())).is_some(),
        "{STALE} did not become {value} (now {:?})\n{}",
        stale(k),
        k.diagnostics()
    );
}

fn assert_answered(k: &KubeLab) {
    let (out, report) = k.arping(VIP, 1, 2);
    assert!(
        out.success() && report.replies.iter().any(|r| r.mac == k.lab.node_mac),
        "arping {VIP} was not answered by the node:\n{out}\n{}",
        k.diagnostics()
    );
}

/// The VIP stays in the map for a second (sampled every 100 ms).
fn assert_vip_kept(k: &KubeLab) {
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let vips = k.vips();
        assert!(
            vips.iter().any(|v| v == VIP),
            "{VIP} left the map: {vips:?}\n{}",
            k.diagnostics()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn pool() -> Value {
    json!({
        "apiVersion": METALLB,
        "kind": "IPAddressPool",
        "metadata": {"name": "lab", "namespace": METALLB_NAMESPACE},
        "spec": {"addresses": ["192.0.2.100-192.0.2.110", "2001:db8::100/124"]},
    })
}

fn advertisement() -> Value {
    json!({
        "apiVersion": METALLB,
        "kind": "L2Advertisement",
        "metadata": {"name": "lab", "namespace": METALLB_NAMESPACE},
    })
}

#[test]
fn deleting_the_pool_or_advertisement_of_an_announced_ip_keeps_it() {
    let mut k = KubeLab::new(&[iris_example()]);
    k.start_speaker(NODE, &[]);
    assert!(
        k.wait_vip(VIP, true, REACT),
        "{VIP} never programmed\n{}",
        k.diagnostics()
    );
    wait_stale(&k, 0.0);
    assert_answered(&k);

    for (kind, object) in [
        ("IPAddressPool", pool()),
        ("L2Advertisement", advertisement()),
    ] {
        let mark = k.speaker().log_len();
        k.kube()
            .delete(METALLB, kind, Some(METALLB_NAMESPACE), "lab");
        let line = k
            .speaker()
            .wait_log_line(mark, REACT, |l| {
                l.contains("\"level\":\"error\"") && l.contains("configStale")
            })
            .unwrap_or_else(|| panic!("no configStale line\n{}", k.diagnostics()));
        assert!(line.contains("default/web announces 192.0.2.100"), "{line}");
        wait_stale(&k, 1.0);
        assert_vip_kept(&k);
        assert_answered(&k);

        let mark = k.speaker().log_len();
        k.kube().create(object);
        assert!(
            k.speaker()
                .wait_log_from(mark, "configRecovered", REACT)
                .is_some(),
            "{kind} recreated: no recovery\n{}",
            k.diagnostics()
        );
        wait_stale(&k, 0.0);
        assert_vip_kept(&k);
        assert_answered(&k);
    }
    let withdrawn = k.speaker().log_lines_with("withdrawn");
    assert!(withdrawn.is_empty(), "withdrawn: {withdrawn:?}");
}
