//! Memberlist key rotation end to end: three node namespaces (iris1..3,
//! 192.0.2.11–13) and a client (192.0.2.10) on one bridge, each node running
//! `speaker run --cluster-state FILE` with gossip on (default `lan` profile)
//! and its own keyring directory laid out as the chart mounts the memberlist
//! Secret: `secretkey` (the primary, `--memberlist-key-file`) and
//! `secretkey-*` (accepted, `--memberlist-keyring-dir`). One LoadBalancer
//! Service (192.0.2.100) with `externalTrafficPolicy: Cluster`; its owner is
//! the dry run's choice among the three (`speaker election --members`).
//!
//! `rotation_through_every_step_never_splits`: starting from key A alone,
//! the three documented steps — (1) primary A, B accepted; (2) primary B, A
//! accepted; (3) B alone — each applied to one speaker after the other, by
//! writing that node's keyring and restarting its speaker (kill -9, then a
//! new process that adopts the pins: no gossip leave, so ownership does not
//! move while it restarts). A prober on the client broadcasts an ARP request
//! for the VIP every 100 ms through the whole rotation. After every single
//! restart: each speaker counts 3 members (no split) and logs the keyring it
//! was given (by fingerprint). After every step: every speaker's
//! `xdp_speaker_gossip_auth_failures` is still 0 (no datagram was ever
//! refused: nobody was ever one key short), 2 s of requests are each
//! answered once by the owner alone, and a sealed gossip datagram captured on
//! iris2's interface and sent to iris2 again from the client three times is
//! counted by iris2 as `xdp_speaker_gossip_replayed` (+3) and not as an
//! authentication failure. Over the whole rotation no request was answered
//! by two MACs or by anyone but the owner.
//!
//! `skipping_the_overlap_splits_and_reread_keyrings_heal_it`: the control
//! that these checks see a split. iris1 restarts with B alone while the
//! others have A alone: iris1 stays alone in its member set and iris2 counts
//! authentication failures from it. Then, without any restart, iris2 and
//! iris3 get "A primary, B accepted" and iris1 "B primary, A accepted" on
//! disk: the speakers read their keyring files again (every 10 s), log
//! `keyring replaced`, and the three meet again.
//!
//! The tests take a lock and run one after the other.
//!
//! `KEYRING_LAB_LOGS=1` prints every speaker's log at the end.
//!
//! Needs root and iproute2; fails, not skips, without them. Run:
//! `cargo test -p speaker-tests --test keyring_lab`.

use std::{
    collections::BTreeSet,
    fs, io,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::{AsFd, AsRawFd},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use nix::{
    net::if_::if_nametoindex,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::socket::{recv, MsgFlags},
};
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, UdpPacket};
use speaker::membership::{fingerprint, Key};
use speaker_tests::lab::{
    probe::ArpProbe,
    trio::{Trio, TrioSpec, NODES, PROBER as CLIENT, SETTLE_LIMIT, VIP_V4 as VIP},
    Speaker, HOST_IF,
};

const GOSSIP_PORT: u16 = 7946;
const ETH_P_IP: u16 = 0x0800;
/// The first byte of a datagram sealed in format 2.
const SEALED_V2: u8 = 0x02;

const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Replays sent per step.
const REPLAYS: u32 = 3;
/// The speaker reads its keyring files every 10 s; a changed file is in
/// use within that, plus a gossip round or two to meet again.
const REREAD_LIMIT: Duration = Duration::from_secs(25);

// ---------------------------------------------------------------- keys

/// A random key as 64 hex digits, and the key it is.
fn new_key() -> (String, Key) {
    let hex = speaker_tests::lab::random_hex_key().expect("reading /dev/urandom");
    let key = Key::parse(hex.as_bytes()).expect("64 hex digits are a key");
    (hex, key)
}

/// One node's keyring as files: `secretkey` and `secretkey-<name>`.
struct KeyringStep {
    label: &'static str,
    primary: usize,
    accepted: Vec<(&'static str, usize)>,
}

// ---------------------------------------------------------------- the lab

/// The trio lab (one Service, three speakers with gossip) with a keyring
/// directory per node, laid out as the chart mounts the memberlist Secret.
struct Lab {
    trio: Trio,
    keys: Vec<(String, Key)>,
}

impl Lab {
    fn start() -> Lab {
        let trio = Trio::start(TrioSpec {
            started: Vec::new(),
            logs_env: "KEYRING_LAB_LOGS",
            ..TrioSpec::default()
        });
        let lab = Lab {
            trio,
            keys: vec![new_key(), new_key()],
        };
        let only_a = KeyringStep {
            label: "start: A alone",
            primary: 0,
            accepted: vec![],
        };
        for node in NODES {
            lab.write_keyring(node, &only_a);
            lab.start_speaker(node);
        }
        lab
    }

    fn keyring_dir(&self, node: &str) -> PathBuf {
        self.trio.fabric.run_dir.join("keyrings").join(node)
    }

    /// Replaces `node`'s keyring directory with `step`'s files.
    fn write_keyring(&self, node: &str, step: &KeyringStep) {
        let dir = self.keyring_dir(node);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creating a keyring directory");
        fs::write(dir.join("secretkey"), &self.keys[step.primary].0).expect("writing a key");
        for (name, key) in &step.accepted {
            fs::write(dir.join(format!("secretkey-{name}")), &self.keys[*key].0)
                .expect("writing a key");
        }
    }

    /// What the speaker logs for `step`'s keyring.
    fn expected_keyring_log(&self, step: &KeyringStep) -> String {
        let mut text = format!("primary {}", fingerprint(&self.keys[step.primary].1));
        // The directory is read in name order.
        let mut accepted = step.accepted.clone();
        accepted.sort();
        for (_, key) in accepted {
            text.push_str(&format!(", accepted {}", fingerprint(&self.keys[key].1)));
        }
        text
    }

    fn start_speaker(&self, node: &str) -> Speaker {
        let dir = self.keyring_dir(node);
        let dir_arg = dir.display().to_string();
        let speaker = self.trio.start_speaker_keyed(
            node,
            &dir.join("secretkey"),
            &["--memberlist-keyring-dir", &dir_arg],
        );
        self.trio.wait_started(node);
        speaker
    }

    /// kill -9, `step`'s keyring on disk, and a new speaker: no leave, so
    /// the others keep the node as a member and nothing moves.
    fn restart(&self, node: &str, step: &KeyringStep) {
        self.trio.kill(node);
        self.write_keyring(node, step);
        let speaker = self.start_speaker(node);
        // The whole message: step 3's keyring is a prefix of step 2's.
        let want = format!("gossip: keyring {}\"", self.expected_keyring_log(step));
        assert!(
            speaker.wait_log(&want, SETTLE_LIMIT).is_some(),
            "{node} ({}) should log its keyring as {want:?}:\n{}",
            step.label,
            speaker.log()
        );
        assert!(
            speaker
                .wait_log("membership settled", SETTLE_LIMIT)
                .is_some(),
            "{node} did not settle after its restart ({}):\n{}",
            step.label,
            self.trio.fabric.all_logs()
        );
    }

    fn owner(&self) -> String {
        self.trio.elected(&NODES)
    }

    fn metric(&self, node: &str, name: &str) -> f64 {
        self.trio
            .fabric
            .metric(node, name)
            .unwrap_or_else(|| panic!("{node} does not export {name}"))
    }

    fn assert_no_auth_failures(&self, when: &str) {
        for node in NODES {
            assert_eq!(
                self.metric(node, "xdp_speaker_gossip_auth_failures"),
                0.0,
                "{when}: {node} refused a datagram, so some speaker lacked a key:\n{}",
                self.trio.fabric.all_logs()
            );
        }
    }

    /// 2 s of requests, each answered once by `owner` alone.
    fn assert_only_owner_answers(&self, owner: &str, when: &str) {
        let mac = self.trio.fabric.host(owner).mac.clone();
        let t0 = Instant::now();
        let probes = self
            .trio
            .fabric
            .arp_prober(CLIENT, VIP.parse().expect("an IPv4 VIP"))
            .series(20, PROBE_INTERVAL)
            .expect("the ARP prober");
        let bad = probes
            .iter()
            .filter(|p| p.macs() != BTreeSet::from([mac.clone()]) || p.answers.len() != 1)
            .count();
        assert_eq!(
            bad,
            0,
            "{when}: every request must be answered once, by {owner} ({mac}) alone:\n{}\n{}",
            self.trio.fabric.probe_timeline(&probes, t0),
            self.trio.fabric.all_logs()
        );
    }

    /// Captures one sealed gossip datagram arriving at `node`, sends it to
    /// `node` again `REPLAYS` times from the client, and checks that each
    /// copy was counted as a replay, not as an authentication failure.
    fn assert_replay_refused(&self, node: &str, when: &str) {
        let (from, datagram) = self
            .trio
            .fabric
            .in_host(node, || capture_sealed_datagram(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{when}: capturing gossip on {node}: {e}"));
        let target = SocketAddrV4::new(
            self.trio.fabric.host(node).v4.expect("an IPv4 node"),
            GOSSIP_PORT,
        );
        let before = self.metric(node, "xdp_speaker_gossip_replayed");
        let failures_before = self.metric(node, "xdp_speaker_gossip_auth_failures");
        self.trio
            .fabric
            .in_host(CLIENT, || -> io::Result<()> {
                let socket = UdpSocket::bind("0.0.0.0:0")?;
                for _ in 0..REPLAYS {
                    socket.send_to(&datagram, target)?;
                }
                Ok(())
            })
            .expect("resending the datagram from the client");
        let deadline = Instant::now() + Duration::from_secs(5);
        let counted = loop {
            let counted = self.metric(node, "xdp_speaker_gossip_replayed") - before;
            if counted >= f64::from(REPLAYS) || Instant::now() >= deadline {
                break counted;
            }
            thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(
            counted,
            f64::from(REPLAYS),
            "{when}: {node} should count the {REPLAYS} copies of a {}-byte datagram from {from} \
             as replays:\n{}",
            datagram.len(),
            self.trio.speaker(node).log()
        );
        assert_eq!(
            self.metric(node, "xdp_speaker_gossip_auth_failures"),
            failures_before,
            "{when}: a replay is not an authentication failure"
        );
        eprintln!("{when}: {REPLAYS} replays of a datagram from {from} to {node} refused");
    }
}

/// In the calling thread's namespace: the first IPv4 UDP datagram to the
/// gossip port on [`HOST_IF`] whose payload is sealed in format 2, with its
/// source. The frames are read off an AF_PACKET socket, so the speaker gets
/// the datagram as well.
fn capture_sealed_datagram(limit: Duration) -> io::Result<(Ipv4Addr, Vec<u8>)> {
    let ifindex = if_nametoindex(HOST_IF)?;
    let socket = speaker::announce::listen::open_packet_socket(ifindex, ETH_P_IP, false)?;
    let deadline = Instant::now() + limit;
    let mut frame = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no sealed gossip datagram within {limit:?}"),
            ));
        }
        let timeout = PollTimeout::from(left.as_millis().min(1000) as u16);
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, timeout)? == 0 {
            continue;
        }
        let len = recv(socket.as_raw_fd(), &mut frame, MsgFlags::empty())?;
        if let Some(found) = sealed_gossip(&frame[..len]) {
            return Ok(found);
        }
    }
}

/// The source and UDP payload of `frame` if it is gossip sealed in format 2.
fn sealed_gossip(frame: &[u8]) -> Option<(Ipv4Addr, Vec<u8>)> {
    let ethernet = EthernetFrame::new_checked(frame).ok()?;
    if ethernet.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(ethernet.payload()).ok()?;
    if ip.next_header() != IpProtocol::Udp {
        return None;
    }
    let udp = UdpPacket::new_checked(ip.payload()).ok()?;
    let payload = udp.payload();
    (udp.dst_port() == GOSSIP_PORT && payload.first() == Some(&SEALED_V2))
        .then(|| (ip.src_addr(), payload.to_vec()))
}

// ---------------------------------------------------------------- tests

#[test]
fn rotation_through_every_step_never_splits() {
    let lab = Lab::start();
    let owner = lab.owner();
    lab.trio.fabric.wait_gossip_members(&NODES, 3, SETTLE_LIMIT);
    lab.trio
        .fabric
        .wait_owner(&NODES, &owner, &[VIP], SETTLE_LIMIT);
    lab.assert_only_owner_answers(&owner, "before the rotation");
    lab.assert_replay_refused("iris2", "before the rotation");
    eprintln!("owner by hash: {owner}");

    let steps = [
        KeyringStep {
            label: "step 1: A primary, B accepted",
            primary: 0,
            accepted: vec![("next", 1)],
        },
        KeyringStep {
            label: "step 2: B primary, A accepted",
            primary: 1,
            accepted: vec![("previous", 0)],
        },
        KeyringStep {
            label: "step 3: B alone",
            primary: 1,
            accepted: vec![],
        },
    ];
    let prober = lab
        .trio
        .fabric
        .arp_prober(CLIENT, VIP.parse().expect("an IPv4 VIP"))
        .spawn(PROBE_INTERVAL);
    let t0 = Instant::now();
    for step in &steps {
        for node in NODES {
            lab.restart(node, step);
            // No split: everyone still counts everyone.
            lab.trio.fabric.wait_gossip_members(&NODES, 3, SETTLE_LIMIT);
            eprintln!("{}: {node} restarted, 3 members everywhere", step.label);
        }
        lab.trio
            .fabric
            .wait_owner(&NODES, &owner, &[VIP], SETTLE_LIMIT);
        lab.assert_no_auth_failures(step.label);
        lab.assert_only_owner_answers(&owner, step.label);
        lab.assert_replay_refused("iris2", step.label);
    }
    let series = prober.stop();

    // Over the whole rotation: never two MACs, never anyone but the owner.
    let owner_mac = lab.trio.fabric.host(&owner).mac.clone();
    let double: Vec<&ArpProbe> = series
        .probes
        .iter()
        .filter(|p| p.macs().len() > 1)
        .collect();
    let foreign: Vec<&ArpProbe> = series
        .probes
        .iter()
        .filter(|p| p.macs().iter().any(|mac| *mac != owner_mac))
        .collect();
    let unanswered = speaker_tests::lab::probe::unanswered(&series.probes);
    eprintln!(
        "rotation: {} requests, {} answered by two MACs, {} by another node, {} unanswered",
        series.probes.len(),
        double.len(),
        foreign.len(),
        unanswered.len()
    );
    assert!(
        series.probes.len() > 50,
        "the prober sent only {} requests",
        series.probes.len()
    );
    assert!(
        double.is_empty() && foreign.is_empty(),
        "during the rotation the VIP must be answered by {owner} ({owner_mac}) alone:\n{}\n{}",
        lab.trio.fabric.probe_timeline(&series.probes, t0),
        lab.trio.fabric.all_logs()
    );
    // The old key is gone everywhere: what is sent now opens with the primary.
    for node in NODES {
        let log = lab.trio.speaker(node).log();
        assert!(
            !log.contains("keyring replaced"),
            "{node}: the keyring changed without a restart (the files were written only \
             before restarts):\n{log}"
        );
    }
}

#[test]
fn skipping_the_overlap_splits_and_reread_keyrings_heal_it() {
    let lab = Lab::start();
    lab.trio.fabric.wait_gossip_members(&NODES, 3, SETTLE_LIMIT);
    let only_b = KeyringStep {
        label: "iris1 skips to B alone",
        primary: 1,
        accepted: vec![],
    };
    lab.trio.speaker("iris1").kill();
    lab.write_keyring("iris1", &only_b);
    let iris1 = lab.start_speaker("iris1");
    // Alone: for 5 s it never counts the others.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(5) {
        let members = lab
            .trio
            .fabric
            .metric("iris1", "xdp_speaker_gossip_members");
        assert!(
            members.is_none_or(|m| m < 2.0),
            "iris1 with B alone counts {members:?} members:\n{}",
            lab.trio.fabric.all_logs()
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        lab.metric("iris2", "xdp_speaker_gossip_auth_failures") > 0.0,
        "iris2 refused nothing from iris1:\n{}",
        lab.trio.fabric.all_logs()
    );

    // Heal by files alone: the overlap the rotation should have had.
    let overlap_old = KeyringStep {
        label: "A primary, B accepted",
        primary: 0,
        accepted: vec![("next", 1)],
    };
    let overlap_new = KeyringStep {
        label: "B primary, A accepted",
        primary: 1,
        accepted: vec![("previous", 0)],
    };
    lab.write_keyring("iris2", &overlap_old);
    lab.write_keyring("iris3", &overlap_old);
    lab.write_keyring("iris1", &overlap_new);
    let healed = lab.trio.fabric.wait_gossip_members(&NODES, 3, REREAD_LIMIT);
    eprintln!("re-read keyrings: 3 members everywhere after {healed:?}");
    for node in NODES {
        let step = if node == "iris1" {
            &overlap_new
        } else {
            &overlap_old
        };
        let want = format!(
            "gossip: keyring replaced: {}\"",
            lab.expected_keyring_log(step)
        );
        assert!(
            lab.trio
                .speaker(node)
                .wait_log(&want, Duration::ZERO)
                .is_some(),
            "{node} should log {want:?}:\n{}",
            lab.trio.speaker(node).log()
        );
    }
    assert_eq!(iris1.pid(), lab.trio.speaker("iris1").pid(), "no restart");
}
