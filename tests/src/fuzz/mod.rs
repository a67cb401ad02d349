//! Differential fuzzing of the XDP responder (`cargo xtask fuzz dataplane`):
//! generated and mutated frames ([`generator`]) run through the real
//! `xdp_speaker` program with `BPF_PROG_TEST_RUN`, each compared with the
//! reference model ([`model`]) on its verdict and output bytes at once,
//! and on the counters (the `REASONS` delta, per-VIP answered / refused,
//! the conflict count and last MAC) per batch: counters are read as
//! deltas (never reset), and a batch whose deltas differ from the model's
//! sum is run again in halves, bisecting down to the frames that differ. The dead-man switch changes state
//! between batches (disabled, alive, stale).

pub mod fixture;
pub mod generator;
pub mod model;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::programs::{TestRun, TestRunOptions};
use speaker::dataplane::{DataplaneMaps, Object, RESPONDER};
use speaker_common::Reason;

use self::{
    fixture::{VipKey, INGRESS_IFINDEX},
    generator::Generator,
    model::{Model, Outcome, VipEffect, XDP_PASS, XDP_TX},
};
use crate::frames::{hex, Mac};

/// Frames between two counter reads.
const BATCH: usize = 256;
/// More than a coarse-clock tick at any CONFIG_HZ (≥ 100).
const STALE_WAIT: Duration = Duration::from_millis(25);
/// Disagreements printed in full; the rest are counted.
const PRINTED: usize = 20;

#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub frames: u64,
    pub seed: u64,
}

/// The dead-man switch's state during a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watchdog {
    Disabled,
    Alive,
    Stale,
}

impl Watchdog {
    /// Returns the time spent waiting for a stale heartbeat to age.
    fn apply(self, maps: &mut DataplaneMaps) -> Result<Duration> {
        let max_age = match self {
            Watchdog::Disabled => Duration::ZERO,
            Watchdog::Alive => Duration::from_secs(3600),
            Watchdog::Stale => Duration::from_nanos(1),
        };
        maps.heartbeat(Some(max_age))
            .context("writing the dead-man switch")?;
        if self == Watchdog::Stale {
            // The program reads bpf_ktime_get_coarse_ns, which lags the
            // monotonic clock the heartbeat is stamped with by up to one
            // tick (4 ms at HZ=250, 10 ms at HZ=100): until then the
            // heartbeat is "in the future" and not stale. Sleeping is a
            // lower bound on elapsed time, so load cannot shorten it.
            std::thread::sleep(STALE_WAIT);
            return Ok(STALE_WAIT);
        }
        Ok(Duration::ZERO)
    }
}

/// The program's counters, summed over CPUs.
/// Frames per reason, indexed by the reason's number.
type PerReason = [u64; Reason::COUNT as usize];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counters {
    reasons: PerReason,
    vips: BTreeMap<VipKey, VipCounters>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct VipCounters {
    answered: u64,
    refused: u64,
    conflicts: u64,
    last_conflict_mac: Option<Mac>,
}

impl Counters {
    fn read(maps: &DataplaneMaps) -> Result<Self> {
        let mut reasons = PerReason::default();
        for (reason, n) in maps.reasons()? {
            reasons[reason as usize] = n;
        }
        let vips = maps
            .vips()?
            .into_iter()
            .map(|v| {
                (
                    VipKey::of_record(&v),
                    VipCounters {
                        answered: v.answered,
                        refused: v.requests - v.answered,
                        conflicts: v.conflicts,
                        last_conflict_mac: v.last_conflict.map(|c| c.mac),
                    },
                )
            })
            .collect();
        Ok(Counters { reasons, vips })
    }

    /// What moved from `before` to `self`: counts as differences, the last
    /// conflict MAC where the conflict count moved.
    fn delta(&self, before: &Counters) -> Counters {
        let mut reasons = PerReason::default();
        for (i, n) in reasons.iter_mut().enumerate() {
            *n = self.reasons[i] - before.reasons[i];
        }
        let vips = self
            .vips
            .iter()
            .map(|(k, now)| {
                let then = before.vips.get(k).copied().unwrap_or_default();
                let conflicts = now.conflicts - then.conflicts;
                (
                    *k,
                    VipCounters {
                        answered: now.answered - then.answered,
                        refused: now.refused - then.refused,
                        conflicts,
                        last_conflict_mac: (conflicts != 0)
                            .then_some(now.last_conflict_mac)
                            .flatten(),
                    },
                )
            })
            .filter(|(_, c)| *c != VipCounters::default())
            .collect();
        Counters { reasons, vips }
    }

    /// Adds the counters the model says `outcome` moves.
    fn expect(&mut self, model: &Model, outcome: &Outcome) {
        if let Some(reason) = outcome.reason {
            self.reasons[reason as usize] += 1;
        }
        if let Some((vip, effect)) = outcome.vip {
            let counters = self.vips.entry(model.vips()[vip].key()).or_default();
            match effect {
                VipEffect::Answered => counters.answered += 1,
                VipEffect::Refused => counters.refused += 1,
                VipEffect::Conflict(mac) => {
                    counters.conflicts += 1;
                    counters.last_conflict_mac = Some(mac);
                }
            }
        }
    }

    /// The reasons that moved, by name.
    fn reasons_text(&self) -> String {
        let moved: Vec<&str> = Reason::ALL
            .iter()
            .zip(self.reasons)
            .filter(|(_, n)| *n != 0)
            .map(|(r, _)| r.name())
            .collect();
        if moved.is_empty() {
            "no reason".into()
        } else {
            moved.join("+")
        }
    }

    fn describe(&self) -> String {
        let mut out = String::new();
        for (r, n) in Reason::ALL.iter().zip(self.reasons) {
            if n != 0 {
                let _ = write!(out, "{}+{n} ", r.name());
            }
        }
        for (k, c) in &self.vips {
            let _ = write!(
                out,
                "{}@{}: answered+{} refused+{} conflicts+{}{} ",
                k.address,
                k.ifindex,
                c.answered,
                c.refused,
                c.conflicts,
                c.last_conflict_mac
                    .map(|m| format!(" (last {})", mac_text(m)))
                    .unwrap_or_default()
            );
        }
        if out.is_empty() {
            "nothing".into()
        } else {
            out.trim_end().into()
        }
    }
}

fn mac_text(mac: Mac) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

fn action_name(action: u32) -> String {
    match action {
        XDP_PASS => "XDP_PASS".into(),
        XDP_TX => "XDP_TX".into(),
        other => format!("action {other}"),
    }
}

/// What a run found.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub frames: u64,
    pub elapsed: Duration,
    /// Frames on which the program and the model disagree.
    pub disagreements: u64,
    /// Frames per counted reason (the model's, which the program matched
    /// wherever there was no disagreement).
    pub reasons: PerReason,
    /// Frames no reason counter may count (neither ARP nor ICMPv6).
    pub uncounted: u64,
    pub answered: u64,
    /// Answers to requests that came with VLAN tags.
    pub answered_tagged: u64,
    /// Time spent waiting for stale heartbeats to age (part of `elapsed`).
    pub stale_wait: Duration,
    /// Frames per generator label (arp, ns, na, other, random).
    pub kinds: BTreeMap<&'static str, u64>,
    /// The first disagreements, printed in full.
    pub details: Vec<String>,
    /// Every disagreement by the model's deciding rule and what the
    /// program did instead.
    pub by_rule: BTreeMap<String, u64>,
}

impl Report {
    pub fn frames_per_second(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Reasons no frame ended in.
    pub fn unhit(&self) -> Vec<Reason> {
        Reason::ALL
            .into_iter()
            .filter(|r| self.reasons[*r as usize] == 0)
            .collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "seed": self.seed,
            "frames": self.frames,
            "seconds": self.elapsed.as_secs_f64(),
            "frames_per_second": self.frames_per_second(),
            "disagreements": self.disagreements,
            "answered": self.answered,
            "answered_tagged": self.answered_tagged,
            "stale_wait_seconds": self.stale_wait.as_secs_f64(),
            "uncounted": self.uncounted,
            "reasons": Reason::ALL
                .iter()
                .map(|r| (r.name().to_owned(), self.reasons[*r as usize].into()))
                .collect::<serde_json::Map<_, _>>(),
            "unhit_reasons": self.unhit().iter().map(|r| r.name()).collect::<Vec<_>>(),
            "kinds": self.kinds,
            "disagreements_by_rule": self.by_rule,
            "disagreement_details": self.details,
        })
    }
}

/// Why a reason may stay unhit under `BPF_PROG_TEST_RUN`.
pub fn unreachable_under_test_run(reason: Reason) -> Option<&'static str> {
    match reason {
        Reason::ResizeFailed => Some(
            "BPF_PROG_TEST_RUN always leaves tailroom for the 8-byte growth; \
             covered by no frame here",
        ),
        // Tagged requests are answered on their VLAN since VLAN support;
        // the number stays so that counters keep their meaning.
        Reason::VlanTagged => Some("retired: tagged frames get the reasons of untagged ones"),
        _ => None,
    }
}

struct Harness {
    object: Object,
    maps: DataplaneMaps,
    out: Vec<u8>,
}

impl Harness {
    fn new(vips: &[fixture::Vip]) -> Result<Self> {
        let mut object = Object::load(None)
            .context("loading the eBPF object (root and `cargo xtask build-ebpf` needed)")?;
        object
            .program(RESPONDER)
            .context("verifying the responder")?;
        let mut maps = object.take_maps()?;
        for vip in vips {
            vip.install(&mut maps)?;
        }
        Ok(Harness {
            object,
            maps,
            out: vec![0u8; 4096],
        })
    }

    /// One run of the program: its action and output frame.
    fn run(&mut self, frame: &[u8]) -> Result<(u32, &[u8])> {
        let program = self.object.program(RESPONDER)?;
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut self.out),
                ..Default::default()
            })
            .with_context(|| format!("BPF_PROG_TEST_RUN on a {}-byte frame", frame.len()))?;
        Ok((
            result.return_value,
            &self.out[..result.data_size_out as usize],
        ))
    }
}

fn disagreement(index: u64, frame: &[u8], outcome: &Outcome, program: &str, what: &str) -> String {
    format!(
        "frame #{index} ({} bytes): {what}\n  model:   {} reason {} (rule: {})\n  program: {program}\n{}",
        frame.len(),
        action_name(outcome.action),
        outcome.reason.map_or("none", |r| r.name()),
        outcome.rule,
        indent(&hex(frame)),
    )
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the fuzzer; disagreements go to stderr as they are found (the
/// first [`PRINTED`] in full) and into the report.
pub fn run(config: Config) -> Result<Report> {
    let vips = fixture::vips();
    let mut harness = Harness::new(&vips)?;
    let mut model = Model::new(vips, INGRESS_IFINDEX);
    let mut generator = Generator::new(config.seed);
    let mut report = Report {
        seed: config.seed,
        frames: 0,
        elapsed: Duration::ZERO,
        disagreements: 0,
        reasons: PerReason::default(),
        uncounted: 0,
        answered: 0,
        answered_tagged: 0,
        stale_wait: Duration::ZERO,
        kinds: BTreeMap::new(),
        details: Vec::new(),
        by_rule: BTreeMap::new(),
    };
    let started = Instant::now();
    // A frame can disagree on its verdict and on its counters: count it once.
    let mut disagreeing = std::collections::BTreeSet::new();
    let mut note = |report: &mut Report, frame: Option<u64>, group: String, text: String| {
        if frame.is_none_or(|i| disagreeing.insert(i)) {
            report.disagreements += 1;
        }
        *report.by_rule.entry(group).or_default() += 1;
        if report.details.len() < PRINTED {
            eprintln!("disagreement: {text}\n");
            report.details.push(text);
        }
    };
    let mut batch: Vec<(Vec<u8>, Outcome)> = Vec::with_capacity(BATCH);
    let mut done = 0u64;
    let mut batch_index = 0u64;
    while done < config.frames {
        let watchdog = match generator.watchdog_draw() {
            0 => Watchdog::Stale,
            1 => Watchdog::Alive,
            _ => Watchdog::Disabled,
        };
        report.stale_wait += watchdog.apply(&mut harness.maps)?;
        model.set_control_plane_alive(watchdog != Watchdog::Stale);
        let before = Counters::read(&harness.maps)?;
        let mut expected = Counters::default();
        batch.clear();
        let size = (config.frames - done).min(BATCH as u64);
        for i in 0..size {
            let index = done + i;
            let (frame, kind) = generator.frame();
            *report.kinds.entry(kind).or_default() += 1;
            let outcome = model.decide(&frame);
            let (action, output) = harness.run(&frame)?;
            if action != outcome.action || output != outcome.output.as_slice() {
                let program = format!(
                    "{}, output {}",
                    action_name(action),
                    if output == frame.as_slice() {
                        "unchanged".to_owned()
                    } else {
                        format!("\n{}", indent(&hex(output)))
                    }
                );
                let what = if action != outcome.action {
                    "verdicts differ".to_owned()
                } else {
                    format!(
                        "output bytes differ ({})\n  model output:\n{}",
                        crate::frames::diff(&outcome.output, output),
                        indent(&hex(&outcome.output))
                    )
                };
                note(
                    &mut report,
                    Some(index),
                    format!(
                        "{} -> program {}",
                        outcome.rule,
                        if action != outcome.action {
                            action_name(action)
                        } else {
                            "other bytes".into()
                        }
                    ),
                    disagreement(index, &frame, &outcome, &program, &what),
                );
            }
            match outcome.reason {
                Some(reason) => report.reasons[reason as usize] += 1,
                None => report.uncounted += 1,
            }
            if outcome.action == XDP_TX {
                report.answered += 1;
                if matches!(frame[12..14], [0x81, 0x00] | [0x88, 0xa8]) {
                    report.answered_tagged += 1;
                }
            }
            expected.expect(&model, &outcome);
            batch.push((frame, outcome));
        }
        let moved = Counters::read(&harness.maps)?.delta(&before);
        if moved != expected {
            // Name the frames: run halves of the batch again until the
            // ranges whose counters differ are single frames.
            let mut culprits = Vec::new();
            bisect(&mut harness, &model, &batch, 0, &mut culprits)?;
            let named = !culprits.is_empty();
            for (i, moved) in culprits {
                let (frame, outcome) = &batch[i];
                let mut one = Counters::default();
                one.expect(&model, outcome);
                note(
                    &mut report,
                    Some(done + i as u64),
                    format!("{} -> program {}", outcome.rule, moved.reasons_text()),
                    disagreement(
                        done + i as u64,
                        frame,
                        outcome,
                        &format!("counters moved: {}", moved.describe()),
                        &format!("counters differ; model: {}", one.describe()),
                    ),
                );
            }
            if !named {
                note(
                    &mut report,
                    None,
                    "counters of a batch".into(),
                    format!(
                        "batch {batch_index} (frames {done}..{}): counters moved {}, the model \
                         expected {}, but no single frame differs when run again",
                        done + size,
                        moved.describe(),
                        expected.describe()
                    ),
                );
            }
        }
        done += size;
        batch_index += 1;
    }
    report.frames = done;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Runs each half of `frames` again, reading the counters around it, and
/// goes down into the halves whose counters differ from the model's sum;
/// pushes the single frames found (index from `first`, what moved).
fn bisect(
    harness: &mut Harness,
    model: &Model,
    frames: &[(Vec<u8>, Outcome)],
    first: usize,
    culprits: &mut Vec<(usize, Counters)>,
) -> Result<()> {
    let middle = frames.len().div_ceil(2);
    for (offset, half) in [(0, &frames[..middle]), (middle, &frames[middle..])] {
        if half.is_empty() {
            continue;
        }
        let before = Counters::read(&harness.maps)?;
        let mut expected = Counters::default();
        for (frame, outcome) in half {
            harness.run(frame)?;
            expected.expect(model, outcome);
        }
        let moved = Counters::read(&harness.maps)?.delta(&before);
        if moved == expected {
            continue;
        }
        if half.len() == 1 {
            culprits.push((first + offset, moved));
        } else {
            bisect(harness, model, half, first + offset, culprits)?;
        }
    }
    Ok(())
}

/// The report as text for people.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fuzz dataplane: {} frames (seed {}) in {:.1} s ({:.1} s of it waiting for stale heartbeats to age): {:.0} frames/s, {} disagreement(s)",
        report.frames,
        report.seed,
        report.elapsed.as_secs_f64(),
        report.stale_wait.as_secs_f64(),
        report.frames_per_second(),
        report.disagreements
    );
    let _ = writeln!(
        out,
        "  answered {} ({} of them tagged), uncounted (neither ARP nor ICMPv6) {}",
        report.answered, report.answered_tagged, report.uncounted
    );
    let _ = writeln!(out, "  frames per reason:");
    for reason in Reason::ALL {
        let n = report.reasons[reason as usize];
        let _ = writeln!(
            out,
            "    {:<22} {n:>10}{}",
            reason.name(),
            match (n, unreachable_under_test_run(reason)) {
                (0, Some(why)) => format!("  (not reachable here: {why})"),
                (0, None) => "  NOT HIT".to_owned(),
                _ => String::new(),
            }
        );
    }
    if !report.by_rule.is_empty() {
        let _ = writeln!(out, "  disagreements by the model's rule (a frame can show under its verdict and its counters):");
        for (rule, n) in &report.by_rule {
            let _ = writeln!(out, "    {n:>8}  {rule}");
        }
    }
    let kinds: Vec<String> = report
        .kinds
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = writeln!(out, "  generated: {}", kinds.join(", "));
    out
}

/// Fails when the run found disagreements.
pub fn verdict(report: &Report) -> Result<()> {
    if report.disagreements > 0 {
        bail!(
            "{} disagreement(s) between the program and the model (seed {})",
            report.disagreements,
            report.seed
        );
    }
    Ok(())
}
