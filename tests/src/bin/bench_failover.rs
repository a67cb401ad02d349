//! `cargo xtask bench failover [--json]`: how fast a client on the segment
//! sees a load-balancer IP move when its owner's speaker dies, with gossip
//! membership, and what the gossip costs.
//!
//! The lab ([`speaker_tests::lab::fabric`]): three node namespaces iris1..3
//! (InternalIPs 192.0.2.11–13) and a client on one bridge, each node running
//! `speaker run --cluster-state FILE` (memberlist on, one shared key, XDP in
//! native mode with pass-through programs on the bridge ports), one
//! LoadBalancer Service (192.0.2.100, `externalTrafficPolicy: Cluster`).
//! The owner and its successor come from the dry run (`speaker election
//! --members …`).
//!
//! The client sends a broadcast ARP request for 192.0.2.100 every 50 ms from
//! an AF_PACKET socket in its namespace
//! ([`speaker_tests::lab::probe::ArpProber`]; each reply is matched
//! to its request by a tag in the padding). A trial:
//!
//! 1. the owner's speaker gets SIGKILL (`kill -9`) or SIGTERM (graceful);
//! 2. measured: from the signal to the first ARP reply from the successor's
//!    MAC (the client's view; resolution 50 ms). Also counted, over 1.6 s
//!    after the signal: requests that nobody answered, and the last reply
//!    from the old owner (its responder answers until its dead-man switch
//!    expires, 1.2 s);
//! 3. the owner's speaker is started again; the next trial begins once every
//!    speaker counts 3 gossip members and 5 consecutive requests were
//!    answered by the owner alone.
//!
//! Targets: kill -9 median ≤ 2 s and p95 ≤ 3 s; graceful median ≤ 0.5 s.
//!
//! Gossip bandwidth: the speakers' `xdp_speaker_gossip_bytes_sent` and
//! `_bytes_received` (sealed UDP payload) over 12 s of steady state in the
//! lab, per node per second; and `speaker::membership::simulate_bandwidth`
//! (the same protocol code on a simulated lossless LAN, bytes sent per node
//! per second; on a lossless LAN every byte sent is received once, so sent +
//! received is twice that) for 3 and 100 nodes.
//!
//! Options: `--json`, `--trials N` (default 20 of each kind). Needs root,
//! iproute2, arping, ndisc6, ping (the lab checks). About 2–3 minutes.

use std::{
    collections::BTreeMap,
    fs,
    net::Ipv4Addr,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Value};
use speaker::membership::{simulate_bandwidth, Timers};
use speaker_tests::lab::{
    http::metric_value, probe::ArpProbing, random_hex_key, Fabric, HostSpec, Speaker, SpeakerMode,
    SpeakerOptions,
};

const NODES: [&str; 3] = ["iris1", "iris2", "iris3"];
const CLIENT: &str = "client";
const VIP: &str = "192.0.2.100";
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
const DEFAULT_TRIALS: usize = 20;
const SETTLE_LIMIT: Duration = Duration::from_secs(15);
const FAILOVER_LIMIT: Duration = Duration::from_secs(10);
const BANDWIDTH_WINDOW: Duration = Duration::from_secs(12);
const SIMULATED_SECONDS: u64 = 60;
/// How long after the signal requests are watched before the restart: past
/// the stopped speaker's dead-man limit (1.2 s with memberlist).
const WATCH: Duration = Duration::from_millis(1600);

const KILL_MEDIAN_TARGET: f64 = 2.0;
const KILL_P95_TARGET: f64 = 3.0;
const GRACEFUL_MEDIAN_TARGET: f64 = 0.5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Kill,
    Graceful,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Kill => "kill -9 of the owner",
            Kind::Graceful => "SIGTERM of the owner",
        }
    }
}

/// One trial's figures.
#[derive(Clone, Debug)]
struct Trial {
    /// Signal to the first reply from the successor.
    failover: Duration,
    /// Requests sent in the [`WATCH`] window after the signal that nobody
    /// answered.
    unanswered: usize,
    /// Signal to the last reply from the old owner's responder.
    old_owner_last: Option<Duration>,
    /// From the restart until the owner answered alone again.
    recovered: Duration,
}

struct Lab {
    fabric: Fabric,
    key: PathBuf,
    speakers: BTreeMap<String, Speaker>,
    owner: String,
    successor: String,
}

impl Lab {
    fn options(&self) -> SpeakerOptions {
        let mut options = SpeakerOptions::file(SpeakerMode::Native)
            .arg("--memberlist-key-file")
            .arg(&self.key.display().to_string())
            .arg("--memberlist-profile")
            .arg("fast");
        options.memberlist = Some(true);
        options
    }

    fn start(&mut self, node: &str) -> Result<()> {
        let speaker = self.fabric.start_speaker(node, &self.options());
        ensure!(
            speaker
                .wait_log("speaker running as node", SETTLE_LIMIT)
                .is_some(),
            "the speaker on {node} did not start:\n{}",
            speaker.log()
        );
        self.speakers.insert(node.to_owned(), speaker);
        Ok(())
    }

    fn elected(&self, members: &[&str]) -> Result<String> {
        let path = self.fabric.cluster_state_path().display().to_string();
        let members = members.join(",");
        let out = self.fabric.speaker_local(&[
            "election",
            "--cluster-state",
            &path,
            "--json",
            "--members",
            &members,
        ]);
        ensure!(out.success(), "speaker election failed:\n{out}");
        let report: Value = serde_json::from_str(&out.stdout)?;
        report["services"][0]["elected_node"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("the dry run elects nobody:\n{report}"))
    }

    fn mac(&self, node: &str) -> String {
        self.fabric.host(node).mac.clone()
    }

    fn probing(&self) -> ArpProbing {
        let target: Ipv4Addr = VIP.parse().expect("an IPv4 VIP");
        self.fabric.arp_prober(CLIENT, target).spawn(PROBE_INTERVAL)
    }

    fn counter(&self, node: &str, name: &str) -> Result<f64> {
        let text = self
            .fabric
            .metrics(node)
            .with_context(|| format!("/metrics of {node}"))?;
        metric_value(&text, name).ok_or_else(|| anyhow!("{node} does not export {name}"))
    }

    /// Every speaker counts 3 members and the owner alone answered 5
    /// consecutive requests sent after `since`.
    fn wait_settled(&self, probing: &ArpProbing, since: Instant) -> Result<()> {
        let deadline = Instant::now() + SETTLE_LIMIT;
        let owner_mac = self.mac(&self.owner);
        loop {
            let members_ok = NODES.iter().all(|n| {
                self.counter(n, "xdp_speaker_gossip_members")
                    .is_ok_and(|c| c == 3.0)
            });
            let series = probing.snapshot();
            // The newest request may still be waiting for its replies.
            let done = series.probes.len().saturating_sub(1);
            let tail: Vec<_> = series.probes[..done]
                .iter()
                .filter(|p| p.sent >= since)
                .rev()
                .take(5)
                .collect();
            let alone = tail.len() == 5
                && tail
                    .iter()
                    .all(|p| p.answers.len() == 1 && p.answers[0].0 == owner_mac);
            if members_ok && alone {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "not settled after {SETTLE_LIMIT:?} (members ok: {members_ok}, owner alone: \
                     {alone})\n{}",
                    self.fabric.all_logs()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn trial(&mut self, kind: Kind) -> Result<Trial> {
        let owner = self.owner.clone();
        let (owner_mac, successor_mac) = (self.mac(&owner), self.mac(&self.successor));
        let probing = self.probing();
        thread::sleep(PROBE_INTERVAL * 3);
        let speaker = self.speakers[&owner].clone();
        let t0 = Instant::now();
        match kind {
            Kind::Kill => {
                speaker.kill();
            }
            Kind::Graceful => {
                let status = speaker.terminate(Duration::from_secs(10));
                ensure!(
                    status.is_some_and(|s| s.success()),
                    "{owner} did not stop cleanly on SIGTERM ({status:?}):\n{}",
                    speaker.log()
                );
            }
        }
        let (_, at) = probing
            .wait_answer_from(&successor_mac, t0, FAILOVER_LIMIT)
            .ok_or_else(|| {
                anyhow!(
                    "{}: {} never answered within {FAILOVER_LIMIT:?}\n{}",
                    kind.label(),
                    self.successor,
                    self.fabric.all_logs()
                )
            })?;
        let failover = at - t0;
        // Watch the old owner's responder until its dead-man switch has
        // expired (1.2 s), before starting it again.
        let watch = t0 + WATCH;
        if let Some(wait) = watch.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let series = probing.snapshot();
        let unanswered = series
            .probes
            .iter()
            .filter(|p| p.sent >= t0 && p.sent + PROBE_INTERVAL <= watch.max(at))
            .filter(|p| p.answers.is_empty())
            .count();
        let old_owner_last = series
            .probes
            .iter()
            .filter(|p| p.sent >= t0)
            .filter_map(|p| p.answered_by(&owner_mac))
            .max()
            .map(|t| t - t0);

        let restarted = Instant::now();
        self.start(&owner)?;
        self.wait_settled(&probing, restarted)?;
        let recovered = restarted.elapsed();
        probing.stop();
        Ok(Trial {
            failover,
            unanswered,
            old_owner_last,
            recovered,
        })
    }
}

/// Median (mean of the middle two for an even count) and nearest-rank
/// percentiles of seconds.
struct Stats {
    median: f64,
    p95: f64,
    min: f64,
    max: f64,
}

fn stats(samples: &[f64]) -> Stats {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    let rank = ((0.95 * n as f64).ceil() as usize).clamp(1, n);
    Stats {
        median,
        p95: sorted[rank - 1],
        min: sorted[0],
        max: sorted[n - 1],
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json_output = args.iter().any(|a| a == "--json");
    let trials = match args.iter().position(|a| a == "--trials") {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow!("--trials takes a positive number"))?,
        None => DEFAULT_TRIALS,
    };
    let log = |text: String| {
        if !json_output {
            eprintln!("{text}");
        }
    };
    let started = Instant::now();

    // The lab.
    let fabric = Fabric::new(&HostSpec::nodes_and_client(&NODES, &[], CLIENT));
    fabric.attach_pass_through_ports();
    fabric.write_cluster_state(&speaker_tests::lab::cluster::lab_cluster_yaml(
        &NODES,
        &[VIP],
        "Cluster",
        "iris1",
    ));
    let keys = fabric.run_dir.join("keys");
    fs::create_dir_all(&keys)?;
    let key = keys.join("gossip.key");
    fs::write(&key, random_hex_key()?)?;
    let mut lab = Lab {
        fabric,
        key,
        speakers: BTreeMap::new(),
        owner: String::new(),
        successor: String::new(),
    };
    for node in NODES {
        lab.start(node)?;
    }
    lab.owner = lab.elected(&NODES)?;
    let survivors: Vec<&str> = NODES.iter().copied().filter(|n| *n != lab.owner).collect();
    lab.successor = lab.elected(&survivors)?;
    {
        let probing = lab.probing();
        lab.wait_settled(&probing, Instant::now())?;
    }
    log(format!(
        "lab up in {:?}: owner {} ({}), successor {} ({})",
        started.elapsed(),
        lab.owner,
        lab.mac(&lab.owner),
        lab.successor,
        lab.mac(&lab.successor)
    ));

    // Gossip bandwidth at rest, from the counters.
    let read = |lab: &Lab| -> Result<Vec<(f64, f64)>> {
        NODES
            .iter()
            .map(|n| {
                Ok((
                    lab.counter(n, "xdp_speaker_gossip_bytes_sent")?,
                    lab.counter(n, "xdp_speaker_gossip_bytes_received")?,
                ))
            })
            .collect()
    };
    let before = read(&lab)?;
    let window_start = Instant::now();
    thread::sleep(BANDWIDTH_WINDOW);
    let after = read(&lab)?;
    let window = window_start.elapsed().as_secs_f64();
    let per_node = |f: fn(&(f64, f64)) -> f64| {
        before
            .iter()
            .zip(&after)
            .map(|(b, a)| f(a) - f(b))
            .sum::<f64>()
            / NODES.len() as f64
            / window
    };
    let lab_sent = per_node(|c| c.0);
    let lab_received = per_node(|c| c.1);
    log(format!(
        "lab gossip over {window:.1} s: {lab_sent:.0} B/s sent, {lab_received:.0} B/s received per node"
    ));

    // The trials.
    let mut results: BTreeMap<&str, Vec<Trial>> = BTreeMap::new();
    for kind in [Kind::Kill, Kind::Graceful] {
        let key = match kind {
            Kind::Kill => "kill",
            Kind::Graceful => "graceful",
        };
        for i in 0..trials {
            let trial = lab.trial(kind)?;
            log(format!(
                "{} #{:>2}: {:>6.0} ms to the successor's first reply, {} unanswered, old owner's \
                 last reply {}, recovered in {:.2} s",
                kind.label(),
                i + 1,
                trial.failover.as_secs_f64() * 1e3,
                trial.unanswered,
                trial
                    .old_owner_last
                    .map(|d| format!("+{:.0} ms", d.as_secs_f64() * 1e3))
                    .unwrap_or_else(|| "none".to_owned()),
                trial.recovered.as_secs_f64()
            ));
            results.entry(key).or_default().push(trial);
        }
    }

    // Simulated bandwidth.
    let timers = Timers::fast_lan();
    let sim3 = simulate_bandwidth(3, SIMULATED_SECONDS, &timers);
    let sim100 = simulate_bandwidth(100, SIMULATED_SECONDS, &timers);

    // Report.
    let kill: Vec<f64> = results["kill"]
        .iter()
        .map(|t| t.failover.as_secs_f64())
        .collect();
    let graceful: Vec<f64> = results["graceful"]
        .iter()
        .map(|t| t.failover.as_secs_f64())
        .collect();
    let (k, g) = (stats(&kill), stats(&graceful));
    let kill_met = k.median <= KILL_MEDIAN_TARGET && k.p95 <= KILL_P95_TARGET;
    let graceful_met = g.median <= GRACEFUL_MEDIAN_TARGET;
    let case = |name: &str, s: &Stats, trials: &[Trial], targets: Value, met: bool| {
        json!({
            "case": name,
            "trials": trials.len(),
            "median_s": round3(s.median),
            "p95_s": round3(s.p95),
            "min_s": round3(s.min),
            "max_s": round3(s.max),
            "targets": targets,
            "meets_targets": met,
            "samples_s": trials.iter().map(|t| round3(t.failover.as_secs_f64())).collect::<Vec<_>>(),
            "unanswered_requests": trials.iter().map(|t| t.unanswered).collect::<Vec<_>>(),
            "old_owner_last_reply_s": trials
                .iter()
                .map(|t| t.old_owner_last.map(|d| round3(d.as_secs_f64())))
                .collect::<Vec<_>>(),
        })
    };
    let report = json!({
        "lab": {
            "nodes": NODES,
            "owner": lab.owner,
            "successor": lab.successor,
            "probe_interval_ms": PROBE_INTERVAL.as_millis() as u64,
            "timers": "fast_lan (probe 300 ms, rtt 150 ms, suspicion 600 ms)",
        },
        "failover": [
            case("kill", &k, &results["kill"], json!({"median_s": KILL_MEDIAN_TARGET, "p95_s": KILL_P95_TARGET}), kill_met),
            case("graceful", &g, &results["graceful"], json!({"median_s": GRACEFUL_MEDIAN_TARGET}), graceful_met),
        ],
        "gossip_bandwidth_bytes_per_node_per_s": {
            "lab_3_nodes": {
                "window_s": round3(window),
                "sent": lab_sent.round(),
                "received": lab_received.round(),
                "sent_plus_received": (lab_sent + lab_received).round(),
            },
            "simulated_3_nodes": { "seconds": SIMULATED_SECONDS, "sent": sim3.round(), "sent_plus_received": (2.0 * sim3).round() },
            "simulated_100_nodes": { "seconds": SIMULATED_SECONDS, "sent": sim100.round(), "sent_plus_received": (2.0 * sim100).round() },
        },
        "all_targets_met": kill_met && graceful_met,
        "elapsed_s": started.elapsed().as_secs(),
    });
    if json_output {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "failover: 3 nodes, owner {} -> successor {}, client ARP request every {} ms, {trials} \
         trials each (seconds from the signal to the successor's first reply)",
        lab.owner,
        lab.successor,
        PROBE_INTERVAL.as_millis()
    );
    println!(
        "{:<22} {:>8} {:>8} {:>8} {:>8}  {:<26} met",
        "case", "median", "p95", "min", "max", "target"
    );
    let yes = |b: bool| if b { "yes" } else { "NO" };
    println!(
        "{:<22} {:>8.3} {:>8.3} {:>8.3} {:>8.3}  {:<26} {}",
        Kind::Kill.label(),
        k.median,
        k.p95,
        k.min,
        k.max,
        "median ≤ 2 s, p95 ≤ 3 s",
        yes(kill_met)
    );
    println!(
        "{:<22} {:>8.3} {:>8.3} {:>8.3} {:>8.3}  {:<26} {}",
        Kind::Graceful.label(),
        g.median,
        g.p95,
        g.min,
        g.max,
        "median ≤ 0.5 s",
        yes(graceful_met)
    );
    let lost = |key: &str| results[key].iter().map(|t| t.unanswered).sum::<usize>();
    println!(
        "unanswered requests in the 1.6 s after the signal: kill -9 {} in total, SIGTERM {}",
        lost("kill"),
        lost("graceful")
    );
    println!();
    println!("gossip bandwidth per node (sealed UDP payload, bytes/s)");
    println!(
        "  lab, 3 nodes, {window:.1} s at rest (metrics): {lab_sent:.0} sent + {lab_received:.0} \
         received = {:.0}",
        lab_sent + lab_received
    );
    println!(
        "  simulated, 3 nodes ({SIMULATED_SECONDS} s):       {sim3:.0} sent (sent + received {:.0})",
        2.0 * sim3
    );
    println!(
        "  simulated, 100 nodes ({SIMULATED_SECONDS} s):     {sim100:.0} sent (sent + received {:.0})",
        2.0 * sim100
    );
    println!(
        "all targets met: {}  ({} s)",
        yes(kill_met && graceful_met),
        started.elapsed().as_secs()
    );
    Ok(())
}
