//! `cargo xtask bench failover [--json] [--trials N] [--profile lan|fast]
//! [--restart-stop-mode restart|keep|handover|default]`: what a client on
//! the segment sees when speakers die, stop, stall, lose packets or are
//! restarted one by one (issue 10), per gossip profile.
//!
//! The lab is [`speaker_tests::lab::trio`]: three speakers with gossip, a
//! probing client sending a broadcast ARP request for the VIP every 50 ms
//! (every reply matched to its request) and an idle client that resolved the
//! VIP once and sends nothing. Each profile gets its own lab; both run at
//! once (they share nothing but the cores), `--profile` runs one.
//!
//! Scenarios, `--trials N` (default 20) each, every trial ending with the
//! owner by hash answering alone again and 3 members everywhere:
//!
//! - kill -9 of the owner: failover (signal to the first reply from another
//!   MAC), lost requests; the owner is started again.
//! - graceful stop (SIGTERM, `--on-stop handover`): failover, how long two
//!   MACs answered; the owner is started again.
//! - owner SIGSTOP 1 s, non-owner SIGSTOP 2 s: ownership changes (the
//!   answering MAC changed) during the stall and a watch after it (probe
//!   period + suspicion + round trip + 1 s: past any declaration the stall
//!   could cause).
//! - 10 % random loss on the bridge (nftables), one 30 s window per trial,
//!   back to back in one lab: ownership changes (the watch after the loss
//!   ends counts in the last window).
//! - rolling restart of every speaker in turn (stop, start, settle):
//!   ownership changes and lost requests. The stop mode is a parameter
//!   (`--restart-stop-mode`), by default `--on-stop restart`: in file mode
//!   that is how a restart is declared (in Kubernetes `--on-stop auto` asks
//!   the API server; `restart_lab` covers that decision); the speakers (started with `--on-stop
//!   handover` for the graceful stops) are restarted once with it,
//!   unmeasured, before the first trial.
//!
//! After every trial the idle client's neighbour entry must hold the MAC
//! that answers (within 3 s: a gratuitous round may land inside the entry's
//! 1 s locktime and be ignored; the next one is not); when it does not, the
//! trial counts as "idle client left behind" and the entry is renewed.
//!
//! Also printed: gossip bandwidth at rest (the speakers' counters over 10 s,
//! and the in-process simulation for 3 and 100 speakers).
//!
//! Targets (issue 10), `lan`: kill -9 median ≤ 2.0 s and p95 ≤ 3.0 s;
//! graceful median ≤ 0.2 s with ≤ 100 ms of double answers in every trial;
//! no ownership change under the stalls, the loss and the rolling restart.
//! `fast`: kill -9 median ≤ 1.0 s. Needs root, iproute2, arping, ndisc6,
//! ping, nft. About 100 s per `lan` trial round.

use std::{
    collections::BTreeMap,
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use speaker::membership::simulate_bandwidth;
use speaker_tests::lab::{
    http::metric_value,
    probe::ArpProbing,
    trio::{others, Outcome, Profile, Trio, TrioSpec, IDLE, NODES, SETTLE_LIMIT, VIP_V4},
    HOST_IF,
};

const PROBE_INTERVAL: Duration = Duration::from_millis(50);
const DEFAULT_TRIALS: usize = 20;
const LOSS_PERCENT: u32 = 10;
const LOSS_WINDOW: Duration = Duration::from_secs(30);
const OWNER_STALL: Duration = Duration::from_secs(1);
const BYSTANDER_STALL: Duration = Duration::from_secs(2);
/// After a graceful stop: how long double answers and losses are watched.
const GRACEFUL_WATCH: Duration = Duration::from_secs(2);
/// After the successor's first reply to a kill: the dead owner's responder
/// may answer until its dead-man limit; watched this much longer.
const KILL_WATCH: Duration = Duration::from_millis(1500);
/// The idle client's entry follows within this (see the module docs).
const IDLE_LIMIT: Duration = Duration::from_secs(3);
const BANDWIDTH_WINDOW: Duration = Duration::from_secs(10);
const SIMULATED_SECONDS: u64 = 60;

const LAN_KILL_MEDIAN: f64 = 2.0;
const LAN_KILL_P95: f64 = 3.0;
const LAN_GRACEFUL_MEDIAN: f64 = 0.2;
const DOUBLE_ANSWER_LIMIT_MS: f64 = 100.0;
const FAST_KILL_MEDIAN: f64 = 1.0;

/// How a rolling restart stops each speaker (`--on-stop`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopMode {
    /// No flag: the speaker's default.
    Default,
    Handover,
    Keep,
    Restart,
}

impl StopMode {
    fn parse(text: &str) -> Result<StopMode> {
        Ok(match text {
            "default" => StopMode::Default,
            "handover" => StopMode::Handover,
            "keep" => StopMode::Keep,
            "restart" => StopMode::Restart,
            other => bail!(
                "--restart-stop-mode: unknown mode {other:?} (restart, keep, handover or default)"
            ),
        })
    }

    fn args(self) -> Vec<&'static str> {
        match self {
            StopMode::Default => vec![],
            StopMode::Handover => vec!["--on-stop", "handover"],
            StopMode::Keep => vec!["--on-stop", "keep"],
            StopMode::Restart => vec!["--on-stop", "restart"],
        }
    }

    fn label(self) -> &'static str {
        match self {
            StopMode::Default => "the default --on-stop",
            StopMode::Handover => "--on-stop handover",
            StopMode::Keep => "--on-stop keep",
            StopMode::Restart => "--on-stop restart",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    Kill,
    Graceful,
    OwnerStall,
    BystanderStall,
    Loss,
    RollingRestart,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::Kill,
        Scenario::Graceful,
        Scenario::OwnerStall,
        Scenario::BystanderStall,
        Scenario::Loss,
        Scenario::RollingRestart,
    ];

    fn key(self) -> &'static str {
        match self {
            Scenario::Kill => "kill",
            Scenario::Graceful => "graceful_stop",
            Scenario::OwnerStall => "owner_sigstop_1s",
            Scenario::BystanderStall => "non_owner_sigstop_2s",
            Scenario::Loss => "loss_10_percent_30s",
            Scenario::RollingRestart => "rolling_restart",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Scenario::Kill => "kill -9 of the owner",
            Scenario::Graceful => "graceful stop (SIGTERM)",
            Scenario::OwnerStall => "owner SIGSTOP 1 s",
            Scenario::BystanderStall => "non-owner SIGSTOP 2 s",
            Scenario::Loss => "10 % loss for 30 s",
            Scenario::RollingRestart => "rolling restart",
        }
    }
}

/// One trial: what the probing client saw, and whether the idle client was
/// left on a MAC that no longer answers.
#[derive(Clone, Debug)]
struct Trial {
    outcome: Outcome,
    idle_left_behind: bool,
}

/// One profile's run.
struct ProfileRun {
    profile: Profile,
    owner: String,
    trials: BTreeMap<Scenario, Vec<Trial>>,
    /// Gossip bytes per node per second at rest: sent, received.
    bandwidth: (f64, f64),
    /// Simulated bytes sent per node per second with 3 and 100 speakers.
    simulated: (f64, f64),
    elapsed: Duration,
}

struct Bench<'a> {
    lab: &'a Trio,
    profile: Profile,
    owner: String,
    log: &'a (dyn Fn(String) + Sync),
}

impl Bench<'_> {
    fn say(&self, text: String) {
        (self.log)(format!("[{}] {text}", self.profile.flag()));
    }

    /// How long after a disturbance ownership could still move because of
    /// it: a probe that failed during it, the suspicion, a round trip, and a
    /// second of slack.
    fn watch(&self) -> Duration {
        let t = self.profile.timers();
        t.probe_period + t.suspect_to_down + t.probe_rtt + Duration::from_secs(1)
    }

    fn probing(&self) -> ArpProbing {
        let probing = self.lab.probing(PROBE_INTERVAL);
        thread::sleep(PROBE_INTERVAL * 6);
        probing
    }

    /// 3 members everywhere, the owner's maps alone hold the VIPs and the
    /// owner alone answered 5 consecutive requests sent after `since`.
    fn settled(&self, probing: &ArpProbing, since: Instant) -> Result<()> {
        self.lab.wait_members(&NODES, 3, SETTLE_LIMIT);
        self.lab.wait_owner(&self.owner, &NODES, SETTLE_LIMIT);
        let owner_mac = self.lab.mac(&self.owner);
        let deadline = Instant::now() + SETTLE_LIMIT;
        loop {
            let series = probing.snapshot();
            let done = series.probes.len().saturating_sub(1);
            let tail: Vec<_> = series.probes[..done]
                .iter()
                .filter(|p| p.sent >= since)
                .rev()
                .take(5)
                .collect();
            if tail.len() == 5
                && tail
                    .iter()
                    .all(|p| p.answers.len() == 1 && p.answered_by(&owner_mac).is_some())
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} does not answer alone {SETTLE_LIMIT:?} after the trial:\n{}",
                    self.owner,
                    self.lab.fabric.all_logs()
                );
            }
            thread::sleep(PROBE_INTERVAL);
        }
    }

    /// Whether the idle client's entry fails to reach the owner's MAC; if
    /// so the entry is renewed (flushed, one ping) for the next trial.
    fn idle_left_behind(&self) -> bool {
        let owner_mac = self.lab.mac(&self.owner);
        if self.lab.idle_reaches(&owner_mac, IDLE_LIMIT) {
            return false;
        }
        let holds = self.lab.idle_entry();
        self.say(format!(
            "idle client left on {:?}, not on the owner {}",
            holds.map(|m| self.lab.fabric.name_of_mac(&m)),
            self.owner
        ));
        self.lab.fabric.exec(
            IDLE,
            "ip",
            &["neigh", "flush", "to", VIP_V4, "dev", HOST_IF],
        );
        self.lab.idle_resolves(&self.owner);
        true
    }

    /// Ends a trial: waits for the steady state, checks the idle client.
    fn finish(&self, probing: ArpProbing, outcome: Outcome, since: Instant) -> Result<Trial> {
        self.settled(&probing, since)?;
        probing.stop();
        Ok(Trial {
            outcome,
            idle_left_behind: self.idle_left_behind(),
        })
    }

    fn crash_or_stop(&self, scenario: Scenario) -> Result<Trial> {
        let successor = self.lab.successor_of(&self.owner);
        let successor_mac = self.lab.mac(&successor);
        let probing = self.probing();
        let t0 = Instant::now();
        let limit = self.profile.timers().max_detection_for(NODES.len()) + Duration::from_secs(5);
        let watch_until = if scenario == Scenario::Kill {
            self.lab.kill(&self.owner);
            let (_, at) = probing
                .wait_answer_from(&successor_mac, t0, limit)
                .ok_or_else(|| {
                    anyhow!(
                        "{successor} never answered within {limit:?} of kill -9:\n{}",
                        self.lab.fabric.all_logs()
                    )
                })?;
            at + KILL_WATCH
        } else {
            self.lab.stop(&self.owner);
            t0 + GRACEFUL_WATCH
        };
        if let Some(wait) = watch_until.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let outcome = Outcome::of(
            &probing.snapshot().probes,
            t0,
            Instant::now(),
            PROBE_INTERVAL,
        );
        let restarted = Instant::now();
        self.lab.restart(&self.owner, &[]);
        self.finish(probing, outcome, restarted)
    }

    fn stall(&self, node: &str, duration: Duration) -> Result<Trial> {
        let probing = self.probing();
        let t0 = Instant::now();
        self.lab.stall(node, duration);
        thread::sleep(self.watch());
        let outcome = Outcome::of(
            &probing.snapshot().probes,
            t0,
            Instant::now(),
            PROBE_INTERVAL,
        );
        let end = Instant::now();
        self.finish(probing, outcome, end)
    }

    /// `trials` back-to-back windows of one loss period; the watch after
    /// the loss ends belongs to the last window.
    fn loss(&self, trials: usize) -> Result<Vec<Trial>> {
        let mut done = Vec::new();
        let mut loss = Some(self.lab.loss(LOSS_PERCENT));
        for i in 0..trials {
            let probing = self.probing();
            let t0 = Instant::now();
            thread::sleep(LOSS_WINDOW);
            let last = i + 1 == trials;
            if last {
                let dropped = loss.take().and_then(|l| l.dropped());
                self.say(format!("the loss rule dropped {dropped:?} frames in all"));
                if dropped.is_none_or(|n| n == 0) {
                    bail!("the loss rule dropped nothing");
                }
                thread::sleep(self.watch());
            }
            let end = Instant::now();
            let outcome = Outcome::of(&probing.snapshot().probes, t0, end, PROBE_INTERVAL);
            let trial = if last {
                self.finish(probing, outcome, end)?
            } else {
                probing.stop();
                Trial {
                    outcome,
                    idle_left_behind: false,
                }
            };
            self.report_trial(Scenario::Loss, i, &trial.outcome, trial.idle_left_behind);
            done.push(trial);
        }
        Ok(done)
    }

    fn rolling_restart(&self) -> Result<Trial> {
        let probing = self.probing();
        let t0 = Instant::now();
        for node in NODES {
            self.lab.stop(node);
            self.lab.restart(node, &[]);
            self.lab.wait_members(&NODES, 3, SETTLE_LIMIT);
        }
        thread::sleep(self.watch());
        let outcome = Outcome::of(
            &probing.snapshot().probes,
            t0,
            Instant::now(),
            PROBE_INTERVAL,
        );
        let end = Instant::now();
        self.finish(probing, outcome, end)
    }

    fn report_trial(&self, scenario: Scenario, i: usize, o: &Outcome, idle_left_behind: bool) {
        self.say(format!(
            "{} #{}: failover {}, {} lost, {} double-answered ({:.0} ms), {} ownership change(s){}",
            scenario.label(),
            i + 1,
            o.failover
                .map(|d| format!("{:.3} s", d.as_secs_f64()))
                .unwrap_or_else(|| "–".to_owned()),
            o.lost,
            o.double_answered,
            o.double_answer_time.as_secs_f64() * 1e3,
            o.ownership_changes,
            if idle_left_behind {
                ", idle client left behind"
            } else {
                ""
            }
        ));
    }

    fn bandwidth(&self) -> Result<(f64, f64)> {
        let read = || -> Result<Vec<(f64, f64)>> {
            NODES
                .iter()
                .map(|n| {
                    let text = self
                        .lab
                        .fabric
                        .metrics(n)
                        .with_context(|| format!("/metrics of {n}"))?;
                    let value = |name| {
                        metric_value(&text, name)
                            .ok_or_else(|| anyhow!("{n} does not export {name}"))
                    };
                    Ok((
                        value("xdp_speaker_gossip_bytes_sent")?,
                        value("xdp_speaker_gossip_bytes_received")?,
                    ))
                })
                .collect()
        };
        let before = read()?;
        let started = Instant::now();
        thread::sleep(BANDWIDTH_WINDOW);
        let after = read()?;
        let seconds = started.elapsed().as_secs_f64() * NODES.len() as f64;
        let sum = |f: fn(&(f64, f64)) -> f64| {
            before
                .iter()
                .zip(&after)
                .map(|(b, a)| f(a) - f(b))
                .sum::<f64>()
                / seconds
        };
        Ok((sum(|c| c.0), sum(|c| c.1)))
    }
}

/// Runs every scenario on one profile's lab.
fn run_profile(
    profile: Profile,
    trials: usize,
    stop_mode: StopMode,
    scenarios: &[Scenario],
    log: &(dyn Fn(String) + Sync),
) -> Result<ProfileRun> {
    let started = Instant::now();
    // The graceful stop is the handover, whatever the speaker's default.
    let lab = Trio::start(TrioSpec {
        exclusive: false,
        logs_env: "BENCH_FAILOVER_LOGS",
        ..TrioSpec::default()
            .profile(profile)
            .args(&StopMode::Handover.args())
    });
    let owner = lab.settled_owner();
    lab.idle_resolves(&owner);
    let mut bench = Bench {
        lab: &lab,
        profile,
        owner,
        log,
    };
    bench.say(format!(
        "lab up in {:.1} s, owner {}",
        started.elapsed().as_secs_f64(),
        bench.owner
    ));
    let bandwidth = bench.bandwidth()?;
    let mut results: BTreeMap<Scenario, Vec<Trial>> = BTreeMap::new();
    let bystander = others(&bench.owner)[0];
    for scenario in Scenario::ALL {
        if !scenarios.contains(&scenario) {
            continue;
        }
        if scenario == Scenario::Loss {
            results.insert(scenario, bench.loss(trials)?);
            continue;
        }
        if scenario == Scenario::RollingRestart && stop_mode != StopMode::Handover {
            lab.set_speaker_args(&stop_mode.args());
            for node in NODES {
                lab.stop(node);
                lab.restart(node, &[]);
                lab.wait_members(&NODES, 3, SETTLE_LIMIT);
            }
            bench.owner = lab.settled_owner();
        }
        for i in 0..trials {
            let trial = match scenario {
                Scenario::Kill | Scenario::Graceful => bench.crash_or_stop(scenario)?,
                Scenario::OwnerStall => bench.stall(&bench.owner, OWNER_STALL)?,
                Scenario::BystanderStall => bench.stall(bystander, BYSTANDER_STALL)?,
                Scenario::RollingRestart => bench.rolling_restart()?,
                Scenario::Loss => unreachable!("handled above"),
            };
            bench.report_trial(scenario, i, &trial.outcome, trial.idle_left_behind);
            results.entry(scenario).or_default().push(trial);
        }
    }
    Ok(ProfileRun {
        profile,
        owner: bench.owner.clone(),
        trials: results,
        bandwidth,
        simulated: (
            simulate_bandwidth(3, SIMULATED_SECONDS, &profile.timers()),
            simulate_bandwidth(100, SIMULATED_SECONDS, &profile.timers()),
        ),
        elapsed: started.elapsed(),
    })
}

/// Median (mean of the middle two for an even count) and nearest-rank p95.
fn median_p95(samples: &[f64]) -> Option<(f64, f64, f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    let rank = ((0.95 * n as f64).ceil() as usize).clamp(1, n);
    Some((median, sorted[rank - 1], sorted[0], sorted[n - 1]))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One row of a profile's table.
struct Row {
    scenario: Scenario,
    trials: usize,
    failover: Option<(f64, f64, f64, f64)>,
    /// Trials whose failover never happened (no other MAC answered).
    no_failover: usize,
    lost: usize,
    double_answered: usize,
    double_answer_max_ms: f64,
    ownership_changes: usize,
    idle_left_behind: usize,
    target: &'static str,
    met: Option<bool>,
}

fn rows(run: &ProfileRun) -> Vec<Row> {
    Scenario::ALL
        .iter()
        .filter(|scenario| run.trials.contains_key(scenario))
        .map(|&scenario| {
            let trials = run.trials.get(&scenario).map(Vec::as_slice).unwrap_or(&[]);
            let outcomes = || trials.iter().map(|t| &t.outcome);
            let failovers: Vec<f64> = outcomes()
                .filter_map(|o| o.failover.map(|d| d.as_secs_f64()))
                .collect();
            let failover = matches!(scenario, Scenario::Kill | Scenario::Graceful)
                .then(|| median_p95(&failovers))
                .flatten();
            let no_failover = if matches!(scenario, Scenario::Kill | Scenario::Graceful) {
                trials.len() - failovers.len()
            } else {
                0
            };
            let double_answer_max_ms = outcomes()
                .map(|o| o.double_answer_time.as_secs_f64() * 1e3)
                .fold(0.0, f64::max);
            let ownership_changes = outcomes().map(|o| o.ownership_changes).sum();
            let (target, met) = match (run.profile, scenario) {
                (Profile::Lan, Scenario::Kill) => (
                    "median ≤ 2.0 s, p95 ≤ 3.0 s",
                    Some(failover.is_some_and(|(m, p, _, _)| {
                        no_failover == 0 && m <= LAN_KILL_MEDIAN && p <= LAN_KILL_P95
                    })),
                ),
                (Profile::Lan, Scenario::Graceful) => (
                    "median ≤ 0.2 s, doubles ≤ 100 ms",
                    Some(failover.is_some_and(|(m, _, _, _)| {
                        no_failover == 0
                            && m <= LAN_GRACEFUL_MEDIAN
                            && double_answer_max_ms <= DOUBLE_ANSWER_LIMIT_MS
                    })),
                ),
                (Profile::Lan, _) => ("no ownership change", Some(ownership_changes == 0)),
                (Profile::Fast, Scenario::Kill) => (
                    "median ≤ 1.0 s",
                    Some(
                        failover
                            .is_some_and(|(m, _, _, _)| no_failover == 0 && m <= FAST_KILL_MEDIAN),
                    ),
                ),
                (Profile::Fast, _) => ("–", None),
            };
            Row {
                scenario,
                trials: trials.len(),
                failover,
                no_failover,
                lost: outcomes().map(|o| o.lost).sum(),
                double_answered: outcomes().map(|o| o.double_answered).sum(),
                double_answer_max_ms,
                ownership_changes,
                idle_left_behind: trials.iter().filter(|t| t.idle_left_behind).count(),
                target,
                met: met.filter(|_| !trials.is_empty()),
            }
        })
        .collect()
}

fn row_json(row: &Row, trials: &[Trial]) -> Value {
    json!({
        "scenario": row.scenario.key(),
        "label": row.scenario.label(),
        "trials": row.trials,
        "failover_s": row.failover.map(|(median, p95, min, max)| json!({
            "median": round3(median), "p95": round3(p95), "min": round3(min), "max": round3(max),
        })),
        "trials_without_failover": row.no_failover,
        "lost_probes": row.lost,
        "double_answered_probes": row.double_answered,
        "double_answer_max_ms": row.double_answer_max_ms.round(),
        "ownership_changes": row.ownership_changes,
        "idle_client_left_behind": row.idle_left_behind,
        "target": row.target,
        "met": row.met,
        "per_trial": trials.iter().map(|t| json!({
            "failover_s": t.outcome.failover.map(|d| round3(d.as_secs_f64())),
            "lost_probes": t.outcome.lost,
            "double_answered_probes": t.outcome.double_answered,
            "double_answer_ms": (t.outcome.double_answer_time.as_secs_f64() * 1e3).round(),
            "ownership_changes": t.outcome.ownership_changes,
            "idle_client_left_behind": t.idle_left_behind,
        })).collect::<Vec<_>>(),
    })
}

fn print_table(run: &ProfileRun, rows: &[Row], trials: usize, stop_mode: StopMode) {
    println!(
        "profile {}: {trials} trial(s) per scenario, owner {}, a broadcast ARP request every {} ms; \
         rolling restarts with {}; {:.0} s",
        run.profile.flag(),
        run.owner,
        PROBE_INTERVAL.as_millis(),
        stop_mode.label(),
        run.elapsed.as_secs_f64()
    );
    println!(
        "{:<24} {:>21} {:>5} {:>15} {:>6} {:>6}  {:<32} met",
        "scenario", "failover med/p95/max", "lost", "double (max ms)", "moves", "idle", "target",
    );
    for row in rows {
        let failover = match row.failover {
            Some((m, p, _, max)) => format!("{m:.2}/{p:.2}/{max:.2} s"),
            None if row.no_failover > 0 => "none".to_owned(),
            None => "–".to_owned(),
        };
        let verdict = match row.met {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "",
        };
        println!(
            "{:<24} {:>21} {:>5} {:>15} {:>6} {:>6}  {:<32} {}",
            row.scenario.label(),
            failover,
            row.lost,
            format!("{} ({:.0})", row.double_answered, row.double_answer_max_ms),
            row.ownership_changes,
            format!("{}/{}", row.idle_left_behind, row.trials),
            row.target,
            verdict
        );
    }
    println!(
        "gossip at rest: {:.0} B/s sent, {:.0} B/s received per speaker (lab, {} s); simulated: \
         {:.0} B/s sent per speaker with 3, {:.0} with 100",
        run.bandwidth.0,
        run.bandwidth.1,
        BANDWIDTH_WINDOW.as_secs(),
        run.simulated.0,
        run.simulated.1
    );
    println!(
        "(lost: unanswered requests, all trials; double: requests answered by two MACs, and the \
         longest span in one trial; moves: ownership changes, all trials; idle: trials that left \
         the idle client on a MAC that no longer answers)"
    );
    println!();
}

struct Options {
    json: bool,
    trials: usize,
    profiles: Vec<Profile>,
    stop_mode: Option<StopMode>,
    /// `--scenario KEY`, repeatable: only these (all by default).
    scenarios: Vec<Scenario>,
}

fn options() -> Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        json: false,
        trials: DEFAULT_TRIALS,
        profiles: vec![Profile::Lan, Profile::Fast],
        stop_mode: None,
        scenarios: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| anyhow!("{name} takes a value"));
        match arg.as_str() {
            "--json" => options.json = true,
            "--trials" => {
                options.trials = value("--trials")?
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| anyhow!("--trials takes a positive number"))?
            }
            "--profile" => {
                let profile = value("--profile")?;
                options.profiles = vec![profile
                    .parse()
                    .map_err(|e: String| anyhow!("--profile: {e}"))?];
            }
            "--restart-stop-mode" => {
                options.stop_mode = Some(StopMode::parse(&value("--restart-stop-mode")?)?)
            }
            "--scenario" => {
                let key = value("--scenario")?;
                let scenario = Scenario::ALL
                    .into_iter()
                    .find(|s| s.key() == key)
                    .ok_or_else(|| {
                        let keys: Vec<_> = Scenario::ALL.iter().map(|s| s.key()).collect();
                        anyhow!("--scenario: unknown {key:?} ({})", keys.join(", "))
                    })?;
                options.scenarios.push(scenario);
            }
            other => bail!(
                "unknown argument {other:?} (--json, --trials N, --profile lan|fast, \
                 --restart-stop-mode restart|keep|handover|default, --scenario KEY)"
            ),
        }
    }
    Ok(options)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failover: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let options = options()?;
    let started = Instant::now();
    speaker_tests::lab::require_root();
    let stop_mode = options.stop_mode.unwrap_or(StopMode::Restart);
    let scenarios = if options.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        options.scenarios.clone()
    };
    let json_output = options.json;
    let log = move |text: String| {
        if !json_output {
            eprintln!("{text}");
        }
    };
    // Each profile's lab on a thread of its own (its speakers die with the
    // thread that spawned them, which is the one that uses them).
    let runs: Vec<Result<ProfileRun>> = thread::scope(|scope| {
        let handles: Vec<_> = options
            .profiles
            .iter()
            .map(|&profile| {
                let log = &log;
                let scenarios = &scenarios;
                scope.spawn(move || run_profile(profile, options.trials, stop_mode, scenarios, log))
            })
            .collect();
        handles
            .into_iter()
            .zip(&options.profiles)
            .map(|(handle, profile)| {
                handle.join().unwrap_or_else(|panic| {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Err(anyhow!("the {} lab failed: {message}", profile.flag()))
                })
            })
            .collect()
    });
    let runs: Vec<ProfileRun> = runs.into_iter().collect::<Result<_>>()?;

    let mut all_met = true;
    let mut profiles_json = Vec::new();
    for run in &runs {
        let rows = rows(run);
        all_met &= rows.iter().all(|r| r.met != Some(false));
        if !json_output {
            print_table(run, &rows, options.trials, stop_mode);
        }
        profiles_json.push(json!({
            "profile": run.profile.flag(),
            "owner": run.owner,
            "elapsed_s": run.elapsed.as_secs(),
            "scenarios": rows
                .iter()
                .map(|row| row_json(row, run.trials.get(&row.scenario).map(Vec::as_slice).unwrap_or(&[])))
                .collect::<Vec<_>>(),
            "gossip_bytes_per_speaker_per_s": {
                "lab_sent": run.bandwidth.0.round(),
                "lab_received": run.bandwidth.1.round(),
                "simulated_3_sent": run.simulated.0.round(),
                "simulated_100_sent": run.simulated.1.round(),
            },
        }));
    }
    if json_output {
        let report = json!({
            "probe_interval_ms": PROBE_INTERVAL.as_millis() as u64,
            "trials": options.trials,
            "rolling_restart_stop_mode": stop_mode.label(),
            "profiles": profiles_json,
            "all_targets_met": all_met,
            "elapsed_s": started.elapsed().as_secs(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "all targets met: {}; total wall time {:.0} s",
            if all_met { "yes" } else { "NO" },
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
