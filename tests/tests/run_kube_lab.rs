//! `speaker run` end to end against the Kubernetes API (the kube emulator),
//! with real ARP traffic between network namespaces.
//!
//! Setup (see `speaker_tests::lab::kube`): the emulator runs inside the lab's
//! node namespace, preloaded with `docs/examples/iris-regression.yaml`, so
//! that `speaker run --node-name iris1` (started there with `ip netns exec`)
//! reaches it on that namespace's loopback; the test drives it over HTTP from
//! a thread that joined the same namespace. A client namespace on the other
//! end of the node's veth runs arping. The second test has the client claim
//! the VIP (`arping -U`) and checks the `IPConflict` Event.
//!
//! Needs root (namespaces, bpffs, XDP) and fails, not skips, without it.
//! Run: `cargo test -p speaker-tests --test run_kube_lab`.

use std::{
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use speaker_tests::{
    kube_emulator::Part,
    lab::{
        kube::{iris_example, KubeLab, EVENTS, METALLB, METALLB_NAMESPACE, NODE, OTHER_NODE},
        linked_interfaces, require_root, speaker_bin, vip_answered, vips_on, wait_for, Arping,
        ArpingRun, Side,
    },
};

/// The iris example's Service and its address.
const WEB: &str = "web";
const WEB_VIP: &str = "192.0.2.100";
/// The Service this test creates over HTTP.
const WEB2: &str = "web2";
const WEB2_VIP: &str = "192.0.2.101";
/// Where web moves after the compaction.
const WEB_NEW_VIP: &str = "192.0.2.102";

/// Limit for anything the speaker does in reaction to an API change.
const REACT: Duration = Duration::from_secs(15);

/// Prints how long each phase took (visible with `--nocapture`, and in the
/// output of a failing test).
struct Phases {
    started: Instant,
    last: Instant,
}

impl Phases {
    fn new() -> Self {
        let now = Instant::now();
        Phases {
            started: now,
            last: now,
        }
    }

    fn done(&mut self, what: &str) {
        let now = Instant::now();
        eprintln!(
            "[{:>6.2} s] {what} ({:.2} s)",
            (now - self.started).as_secs_f64(),
            (now - self.last).as_secs_f64()
        );
        self.last = now;
    }
}

fn assert_vip(k: &KubeLab, ip: &str, present: bool) {
    assert!(
        k.wait_vip(ip, present, REACT),
        "{ip} {} the node's map within {REACT:?}; maps: {:?}\n{}",
        if present {
            "did not appear in"
        } else {
            "did not leave"
        },
        k.vips(),
        k.diagnostics()
    );
}

/// One ARP request (arping gives up after 2 s) must be answered, only by the
/// node's MAC.
fn assert_answered(k: &KubeLab, ip: &str) {
    let (out, report) = k.arping(ip, 1, 2);
    assert!(
        out.success() && !report.replies.is_empty(),
        "arping {ip} was not answered:\n{out}\n{}",
        k.diagnostics()
    );
    for reply in &report.replies {
        assert_eq!(
            reply.mac, k.lab.node_mac,
            "a reply not from the node:\n{out}"
        );
        assert_eq!(reply.ip, ip, "a reply for another address:\n{out}");
    }
}

/// Two ARP requests (2 s) must go unanswered.
fn assert_unanswered(k: &KubeLab, ip: &str) {
    let (out, report) = k.arping(ip, 2, 2);
    assert!(
        report.replies.is_empty(),
        "arping {ip} was answered:\n{out}\n{}",
        k.diagnostics()
    );
    assert_eq!(report.received, Some(0), "{out}");
}

fn wait_api<T>(k: &KubeLab, what: &str, probe: impl FnMut() -> Option<T>) -> T {
    k.wait_api(what, REACT, probe)
}

/// Waits for exactly one ServiceL2Status of `service` by this node, checks
/// it and returns it.
fn wait_status(k: &KubeLab, service: &str) -> Value {
    let status = wait_api(k, &format!("ServiceL2Status of default/{service}"), || {
        let found = k.statuses_of(service, NODE);
        (found.len() == 1).then(|| found[0].clone())
    });
    assert_eq!(status["kind"], "ServiceL2Status", "{status:#}");
    assert_eq!(status["metadata"]["namespace"], METALLB_NAMESPACE);
    let name = status["metadata"]["name"].as_str().unwrap_or_default();
    assert!(
        name.starts_with("l2-"),
        "named from generateName l2-: {status:#}"
    );
    assert_eq!(status["status"]["node"], NODE, "{status:#}");
    assert_eq!(status["status"]["serviceName"], service, "{status:#}");
    assert_eq!(
        status["status"]["serviceNamespace"], "default",
        "{status:#}"
    );
    // None listed means all; if listed, only the lab's one announce interface.
    if let Some(interfaces) = status["status"]["interfaces"].as_array() {
        let names: Vec<&str> = interfaces
            .iter()
            .filter_map(|i| i["name"].as_str())
            .collect();
        assert_eq!(names, [k.lab.node_if.as_str()], "{status:#}");
    }
    status
}

fn wait_status_gone(k: &KubeLab, service: &str) {
    wait_api(
        k,
        &format!("deletion of iris1's ServiceL2Status of default/{service}"),
        || k.statuses_of(service, NODE).is_empty().then_some(()),
    );
}

/// What MetalLB's controller does when it allocates: the status subresource.
fn set_ingress(k: &KubeLab, service: &str, ip: &str) {
    k.kube().patch(
        Part::Status,
        "v1",
        "Service",
        Some("default"),
        service,
        json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}),
    );
}

fn set_endpoint_node(k: &KubeLab, slice: &str, node: &str) {
    k.kube().patch(
        Part::Object,
        "discovery.k8s.io/v1",
        "EndpointSlice",
        Some("default"),
        slice,
        json!({"endpoints": [
            {"addresses": ["10.244.1.8"], "nodeName": node, "conditions": {"ready": true}}
        ]}),
    );
}

/// The `withdrawn` lines of the speaker log from byte `from` on (a
/// [`speaker_tests::lab::Speaker::log_len`] mark).
fn withdrawals_since(k: &KubeLab, from: usize) -> Vec<String> {
    k.speaker()
        .log_lines_since(from)
        .into_iter()
        .filter(|l| l.contains("withdrawn"))
        .collect()
}

#[test]
fn speaker_run_against_the_kubernetes_api() {
    require_root();
    let mut phases = Phases::new();
    // Built (or found up to date) once per process; timed apart from the lab.
    speaker_bin();
    phases.done("speaker binary up to date");
    let mut k = KubeLab::new(&[iris_example()]);
    phases.done(&format!(
        "lab {} / {} and emulator at {} in the node namespace",
        k.lab.node_ns,
        k.lab.client_ns,
        k.kube().url()
    ));

    // ---- Start: iris1 owns 192.0.2.100 (web, ETP Local, endpoint on iris1).
    k.start_speaker(NODE, &[]);
    assert_vip(&k, WEB_VIP, true);
    assert_answered(&k, WEB_VIP);
    let maps = k.lab.maps_json();
    assert_eq!(
        linked_interfaces(&maps),
        [k.lab.node_if.clone()],
        "the responder is linked on the node's veth only: {maps:#}"
    );
    let attachment = k.lab.xdp_attachment(Side::Node);
    assert_eq!(
        attachment.as_ref().map(|(mode, _)| mode.as_str()),
        Some("xdp"),
        "native XDP on the node's veth"
    );
    let event = wait_api(&k, "nodeAssigned Event for default/web", || {
        let events = k.kube().list(EVENTS, "Event", Some("default"));
        events
            .into_iter()
            .find(|e| e["reason"] == "nodeAssigned" && e["regarding"]["name"] == WEB)
    });
    assert_eq!(event["type"], "Normal", "{event:#}");
    assert_eq!(
        event["note"], "announcing from node \"iris1\" with protocol \"layer2\"",
        "{event:#}"
    );
    assert_eq!(event["regarding"]["kind"], "Service", "{event:#}");
    assert_eq!(event["regarding"]["namespace"], "default", "{event:#}");
    let web_status = wait_status(&k, WEB);
    phases.done("start: VIP in the map, answered, Event and ServiceL2Status");

    // ---- A second Service created over HTTP, its endpoint on iris1.
    k.kube().create(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": WEB2, "namespace": "default"},
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",
            "selector": {"app": WEB2},
            "ports": [{"port": 80, "targetPort": 8080}],
        },
    }));
    k.kube().create(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web2-xyz12",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": WEB2},
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.244.1.8"], "nodeName": NODE, "conditions": {"ready": true}}
        ],
        "ports": [{"port": 8080}],
    }));
    set_ingress(&k, WEB2, WEB2_VIP);
    assert_vip(&k, WEB2_VIP, true);
    assert_answered(&k, WEB2_VIP);
    wait_status(&k, WEB2);
    // Gratuitous ARP on gaining the address (the announcer logs each burst).
    let gained = format!("announcing {WEB2_VIP} on {}", k.lab.node_if);
    assert!(
        k.speaker()
            .wait_log_line(0, REACT, |l| l.contains(&gained))
            .is_some(),
        "no announcement burst for {WEB2_VIP} logged\n{}",
        k.diagnostics()
    );
    phases.done("web2 created: 192.0.2.101 in the map, answered, ServiceL2Status");

    // ---- Its endpoint moves to iris2: ETP Local makes iris2 the owner.
    set_endpoint_node(&k, "web2-xyz12", OTHER_NODE);
    assert_vip(&k, WEB2_VIP, false);
    assert_unanswered(&k, WEB2_VIP);
    wait_status_gone(&k, WEB2);
    assert_vip(&k, WEB_VIP, true);
    phases.done("web2's endpoint on iris2: withdrawn, unanswered, status deleted");

    // ---- Back on iris1, then the Service is deleted.
    set_endpoint_node(&k, "web2-xyz12", NODE);
    assert_vip(&k, WEB2_VIP, true);
    wait_status(&k, WEB2);
    k.kube().delete("v1", "Service", Some("default"), WEB2);
    assert_vip(&k, WEB2_VIP, false);
    assert_unanswered(&k, WEB2_VIP);
    wait_status_gone(&k, WEB2);
    assert!(
        k.speaker()
            .wait_log_line(0, REACT, |l| l.contains("default/web2: withdrawn"))
            .is_some(),
        "no withdrawal of web2 logged\n{}",
        k.diagnostics()
    );
    phases.done("web2 back on iris1, then deleted: withdrawn, unanswered, status deleted");

    // ---- Compaction: watches get 410 Gone twice while a client keeps asking.
    let log_mark = k.speaker().log_len();
    let answered_before = vip_answered(&k.lab.maps_json(), WEB_VIP).expect("web's VIP counter");
    const REQUESTS: u32 = 40;
    let arping = Arping::new(WEB_VIP, &k.lab.client_if, REQUESTS)
        .interval(0.1)
        .deadline(REQUESTS / 10 + 3);
    let run = k.lab.arping_background(&arping);
    let started = Instant::now();
    let mut samples = 0;
    let mut missing = Vec::new();
    let mut compactions = 0;
    let expected = Duration::from_millis(100) * REQUESTS + Duration::from_millis(500);
    loop {
        let finished = match &run {
            ArpingRun::Series(handle) => handle.is_finished(),
            ArpingRun::Process(..) => started.elapsed() >= expected,
        };
        if finished {
            break;
        }
        let at = started.elapsed();
        if (compactions == 0 && at >= Duration::from_millis(500))
            || (compactions == 1 && at >= Duration::from_millis(1500))
        {
            k.kube().compact();
            compactions += 1;
        }
        let vips = vips_on(&k.lab.maps_json(), &k.lab.node_if);
        samples += 1;
        if !vips.iter().any(|v| v == WEB_VIP) {
            missing.push((at, vips));
        }
        thread::sleep(Duration::from_millis(50));
    }
    let (out, report) = run.wait();
    let elapsed = started.elapsed();
    assert_eq!(compactions, 2, "the arping ended before both compactions");
    assert!(
        missing.is_empty(),
        "{WEB_VIP} left the map during compaction (at, map): {missing:?}\n{}",
        k.diagnostics()
    );
    assert!(samples >= 10, "only {samples} map samples");
    assert_eq!(
        (report.sent, report.received, report.replies.len()),
        (Some(REQUESTS), Some(REQUESTS), REQUESTS as usize),
        "every request must be answered:\n{out}\n{}",
        k.diagnostics()
    );
    assert!(
        report.replies.iter().all(|r| r.mac == k.lab.node_mac),
        "a reply not from the node:\n{out}"
    );
    let answered_after = vip_answered(&k.lab.maps_json(), WEB_VIP).expect("web's VIP counter");
    assert!(
        answered_after >= answered_before + u64::from(REQUESTS),
        "the VIP's counter went from {answered_before} to {answered_after}: re-added?"
    );
    // Every one of the five watches got (at least) one 410 and re-listed.
    for kind in [
        "Node",
        "Service",
        "EndpointSlice",
        "IPAddressPool",
        "L2Advertisement",
    ] {
        let expired = format!("{kind} watch expired");
        assert!(
            k.speaker()
                .wait_log_line(log_mark, REACT, |l| l.contains(&expired))
                .is_some(),
            "the {kind} watch never saw a 410 after the compaction\n{}",
            k.diagnostics()
        );
    }
    let expiries = k
        .speaker()
        .log_lines_since(log_mark)
        .iter()
        .filter(|l| l.contains("watch expired"))
        .count();
    phases.done(&format!(
        "compaction x2 during {REQUESTS} arpings over {:.1} s: all answered, {samples} map \
         samples all with the VIP, {expiries} watch expiries logged",
        elapsed.as_secs_f64()
    ));

    // ---- A change after the compaction is applied (the watches resumed).
    set_ingress(&k, WEB, WEB_NEW_VIP);
    assert_vip(&k, WEB_NEW_VIP, true);
    assert_vip(&k, WEB_VIP, false);
    assert_answered(&k, WEB_NEW_VIP);
    assert_unanswered(&k, WEB_VIP);
    // Nothing was withdrawn from the compaction until here (an address
    // change is not a withdrawal: web stays announced).
    let withdrawn = withdrawals_since(&k, log_mark);
    assert!(
        withdrawn.is_empty(),
        "withdrawals after the compaction: {withdrawn:?}\n{}",
        k.diagnostics()
    );
    let status = wait_status(&k, WEB);
    assert_eq!(
        status["metadata"]["name"], web_status["metadata"]["name"],
        "web keeps its ServiceL2Status"
    );
    phases.done("web's ingress moved to 192.0.2.102 after compaction: applied");

    // ---- An unusable pool disturbs nothing.
    let log_mark = k.speaker().log_len();
    k.kube().create(json!({
        "apiVersion": METALLB,
        "kind": "IPAddressPool",
        "metadata": {"name": "broken", "namespace": METALLB_NAMESPACE},
        "spec": {"addresses": ["192.0.2.300/33"]},
    }));
    let error = k
        .speaker()
        .wait_log_line(log_mark, REACT, |l| {
            l.contains("\"level\":\"error\"") && l.contains("broken")
        })
        .unwrap_or_else(|| panic!("no error naming the pool\n{}", k.diagnostics()));
    eprintln!("speaker: {error}");
    // Let whatever the pool triggers settle, watching the map meanwhile.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let vips = k.vips();
        assert!(
            vips.iter().any(|v| v == WEB_NEW_VIP),
            "{WEB_NEW_VIP} left the map after the broken pool: {vips:?}\n{}",
            k.diagnostics()
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_answered(&k, WEB_NEW_VIP);
    let withdrawn = withdrawals_since(&k, log_mark);
    assert!(
        withdrawn.is_empty(),
        "withdrawals after the broken pool: {withdrawn:?}"
    );
    assert_eq!(k.statuses_of(WEB, NODE).len(), 1);
    phases.done("pool with an invalid CIDR: logged, VIP kept and answered");

    // ---- SIGTERM: the daemon exits, the pins stay.
    let (status, in_time) = k.speaker().terminate_or_kill(Duration::from_secs(10));
    assert!(
        in_time && status.success(),
        "speaker did not exit cleanly on SIGTERM ({status}, in time: {in_time})\n{}",
        k.diagnostics()
    );
    assert!(
        k.speaker().log().contains("pinned maps and links stay"),
        "{}",
        k.diagnostics()
    );
    let maps = k.lab.maps_json();
    assert_eq!(
        vips_on(&maps, &k.lab.node_if),
        [WEB_NEW_VIP],
        "the pinned maps after exit: {maps:#}"
    );
    assert_eq!(
        linked_interfaces(&maps),
        [k.lab.node_if.clone()],
        "{maps:#}"
    );
    assert_answered(&k, WEB_NEW_VIP);
    phases.done("SIGTERM: exited 0, pins persist and still answer");
    // Shown with --nocapture: the whole story from the speaker's side.
    eprintln!("{}", k.diagnostics());
    drop(k);
    phases.done("torn down");
}

/// RFC 5227 §2.4 made visible in Kubernetes: the client takes web's VIP as
/// an address of its own and announces it (`arping -U`, a gratuitous ARP
/// request with the VIP as sender). The node's responder counts the claim
/// for the VIP with the client's MAC, and the daemon raises one `IPConflict`
/// Warning Event on default/web naming that MAC and the node's interface. A
/// second claim soon after is logged but raises no second Event (one per
/// burst).
#[test]
fn a_host_claiming_the_vip_raises_an_ip_conflict_event_once_per_burst() {
    require_root();
    let mut k = KubeLab::new(&[iris_example()]);
    k.start_speaker(NODE, &[]);
    assert_vip(&k, WEB_VIP, true);
    let client_if = k.lab.client_if.clone();
    k.lab
        .exec(
            Side::Client,
            "ip",
            &["addr", "add", &format!("{WEB_VIP}/32"), "dev", &client_if],
        )
        .assert_success();
    let claim = || {
        // iputils-arping (tools.toml): -U sends the VIP as sender and
        // target, from the client's MAC, and expects no reply.
        k.lab
            .exec(
                Side::Client,
                "arping",
                &["-U", "-c", "1", "-w", "1", "-I", &client_if, WEB_VIP],
            )
            .assert_success();
    };
    let conflict_events = || -> Vec<Value> {
        k.kube()
            .list(EVENTS, "Event", Some("default"))
            .into_iter()
            .filter(|e| e["reason"] == "IPConflict" && e["regarding"]["name"] == WEB)
            .collect()
    };
    assert!(
        conflict_events().is_empty(),
        "an IPConflict before any claim"
    );

    claim();
    let event = wait_api(&k, "IPConflict Event for default/web", || {
        conflict_events().into_iter().next()
    });
    assert_eq!(event["type"], "Warning", "{event:#}");
    assert_eq!(event["regarding"]["kind"], "Service", "{event:#}");
    let note = event["note"].as_str().unwrap_or_default();
    let expected = format!(
        "IP {WEB_VIP} is also claimed by {} on {} (",
        k.lab.client_mac, k.lab.node_if
    );
    assert!(
        note.starts_with(&expected),
        "note {note:?} should start with {expected:?}"
    );
    let maps = k.lab.maps_json();
    assert!(
        maps.to_string().contains(&k.lab.client_mac),
        "speaker maps does not name the claiming MAC {}: {maps:#}",
        k.lab.client_mac
    );

    // The same burst: logged again, no second Event.
    let logged = |k: &KubeLab| k.speaker().log_lines_with("\"event\":\"IPConflict\"").len();
    let logged_before = logged(&k);
    claim();
    assert!(
        wait_for(REACT, || (logged(&k) > logged_before).then_some(())).is_some(),
        "the second claim was not logged:\n{}",
        k.diagnostics()
    );
    // The event writer is asynchronous: give a second Event time to show.
    thread::sleep(Duration::from_secs(2));
    let events = conflict_events();
    assert_eq!(
        events.len(),
        1,
        "one IPConflict Event per burst, got: {events:#?}"
    );
}
