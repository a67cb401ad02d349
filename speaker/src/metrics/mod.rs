//! `/metrics`, `/healthz` and `/readyz`, as MetalLB's speaker serves them:
//! the families are built with `prometheus-client` ([`families`]) and served
//! by axum ([`server`]). Metric names follow MetalLB so its dashboards and
//! alerts keep working; `xdp_speaker_*` are ours. docs/metrics.md lists them.

pub mod access;
pub mod families;
pub mod server;
pub mod tls;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock, RwLock,
    },
    time::Duration,
};

use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use tracing::warn;

pub use self::families::registry;
pub use self::server::serve;

use crate::{
    announce::Announcer,
    cluster::{config::Staleness, ServiceKey},
    daemon::heartbeat::{Health, STALL_LIMIT},
    dataplane::{DataplaneMaps, PinDir, Repair, SharedOwnership},
    error::{Error, ErrorKind},
    interfaces,
    membership::{Gossip, GossipStats},
};

/// MetalLB's `metallb_k8s_client_*` family: what the cluster source did with
/// the updates it received. Cheap to clone; every clone counts into the same
/// series.
#[derive(Clone, Debug)]
pub struct ClientStats {
    /// Object updates (watch events, re-read files) processed.
    pub updates: Counter,
    /// Updates that failed: watch errors, objects refused as invalid, files
    /// that could not be read or parsed.
    pub update_errors: Counter,
    /// 1 once a complete configuration has been applied.
    pub config_loaded: Gauge,
    /// 1 while running on the last good configuration because a newer one
    /// was refused or could not be read; set through `stale`.
    pub config_stale: Gauge,
    /// Why the configuration is stale; drives `config_stale`.
    pub stale: Staleness,
}

impl Default for ClientStats {
    fn default() -> Self {
        let config_stale = Gauge::default();
        ClientStats {
            updates: Counter::default(),
            update_errors: Counter::default(),
            config_loaded: Gauge::default(),
            stale: Staleness::new(config_stale.clone()),
            config_stale,
        }
    }
}

/// `xdp_speaker_errors_total{kind}`: every error the daemon logged, by
/// [`ErrorKind`].
pub type ErrorCounts = Family<[(&'static str, &'static str); 1], Counter>;

/// Something that keeps the speaker from being ready, reported by `/readyz`
/// until cleared: a task being restarted, maps that could not be updated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub kind: ErrorKind,
    pub message: String,
}

/// The daemon's own account of its errors: counted by kind, and the standing
/// ones kept as [`Condition`]s for `/readyz`.
#[derive(Clone, Debug)]
pub struct Diagnostics {
    pub errors: ErrorCounts,
    /// Keyed by what failed (`"dataplane maps"`, a task's name).
    conditions: Arc<RwLock<BTreeMap<&'static str, Condition>>>,
}

impl Default for Diagnostics {
    fn default() -> Self {
        let errors = ErrorCounts::default();
        // Every kind from 0, so that rate() and alerts see the series before
        // the first error.
        for kind in ErrorKind::ALL {
            drop(errors.get_or_create(&[("kind", kind.name())]));
        }
        Diagnostics {
            errors,
            conditions: Default::default(),
        }
    }
}

impl Diagnostics {
    /// Counts one error of this kind.
    pub fn count(&self, error: &Error) {
        self.errors
            .get_or_create(&[("kind", error.kind().name())])
            .inc();
    }

    /// `what` stands failed with `error` until [`Self::clear`]ed.
    pub fn raise(&self, what: &'static str, error: &Error) {
        if let Ok(mut conditions) = self.conditions.write() {
            conditions.insert(
                what,
                Condition {
                    kind: error.kind(),
                    message: error.to_string(),
                },
            );
        }
    }

    pub fn clear(&self, what: &'static str) {
        if let Ok(mut conditions) = self.conditions.write() {
            conditions.remove(what);
        }
    }

    pub fn conditions(&self) -> Vec<(&'static str, Condition)> {
        self.conditions
            .read()
            .map(|c| c.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default()
    }
}

/// What the daemon shares with the HTTP server.
#[derive(Clone)]
pub struct MetricsState {
    pub node: String,
    pub pins: PinDir,
    pub announcer: Announcer,
    /// (service, ip) pairs this node announces, replaced after every sync.
    pub announced: Arc<RwLock<Vec<(ServiceKey, IpAddr)>>>,
    /// True once the first complete cluster description has been applied.
    pub ready: Arc<AtomicBool>,
    /// Gossip, once started.
    pub gossip: Arc<OnceLock<Gossip>>,
    /// The daemon's hold on the data path (absent in tests and tools).
    pub ownership: Arc<OnceLock<SharedOwnership>>,
    pub client: ClientStats,
    pub diagnostics: Diagnostics,
    /// The daemon loop's liveness, as the heartbeat thread sees it.
    pub health: Health,
}

impl MetricsState {
    pub fn new(node: impl Into<String>, pins: PinDir, announcer: Announcer) -> Self {
        MetricsState {
            node: node.into(),
            pins,
            announcer,
            announced: Default::default(),
            ready: Default::default(),
            gossip: Default::default(),
            ownership: Default::default(),
            client: ClientStats::default(),
            diagnostics: Diagnostics::default(),
            health: Health::new(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The daemon loop is not stuck in one piece of work past the stall
    /// limit (nor gone): what `/healthz` answers.
    pub fn is_alive(&self) -> bool {
        self.health.alive(STALL_LIMIT)
    }

    /// Interfaces the daemon holds a link on where the kernel does not run
    /// the program; blocking (one netlink dump). `Err` when the links
    /// cannot be listed.
    pub fn unattached_interfaces(&self) -> Result<Vec<String>, String> {
        let Some(ownership) = self.ownership.get() else {
            return Ok(Vec::new());
        };
        let held = ownership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .interfaces();
        if held.is_empty() {
            return Ok(held);
        }
        let links = interfaces::discovery::links().map_err(|e| e.to_string())?;
        Ok(held
            .into_iter()
            .filter(|name| {
                links
                    .iter()
                    .find(|l| &l.name == name)
                    .is_none_or(|l| l.xdp.name() == "none")
            })
            .collect())
    }
}

/// The per-scrape numbers that live outside this process (BPF maps, links)
/// or in other components, read once per scrape.
#[derive(Debug, Default, PartialEq)]
pub struct Sample {
    pub node: String,
    pub announced: Vec<(ServiceKey, IpAddr)>,
    /// Requests for the VIP answered by the XDP program, per IP (summed
    /// over interfaces).
    pub responses: BTreeMap<IpAddr, u64>,
    /// Requests for the VIP the XDP program received (answered or refused
    /// after the lookup), per IP.
    pub requests: BTreeMap<IpAddr, u64>,
    pub gratuitous: BTreeMap<IpAddr, u64>,
    /// Frames from other hosts claiming the VIP, per IP (summed over
    /// interfaces), from the program's `VIP_CONFLICTS`.
    pub conflicts: BTreeMap<IpAddr, u64>,
    pub gratuitous_failures: BTreeMap<IpAddr, u64>,
    /// Every verdict reason of the data plane with its count.
    pub verdicts: Vec<(&'static str, u64)>,
    pub heartbeat_stale: bool,
    /// Age of the heartbeat the XDP program checks; `None`: never written.
    pub heartbeat_age: Option<Duration>,
    /// Interfaces with a pinned link, and how the kernel runs their program.
    pub xdp_modes: Vec<(String, &'static str)>,
    /// `None` when membership is disabled.
    pub gossip: Option<GossipStats>,
    /// Data path repairs by kind; empty without a daemon.
    pub repairs: Vec<(Repair, u64)>,
}

impl MetricsState {
    /// Reads everything a scrape reports; blocking (BPF syscalls, netlink).
    pub fn sample(&self) -> Sample {
        let mut sample = Sample {
            node: self.node.clone(),
            announced: self.announced.read().map(|a| a.clone()).unwrap_or_default(),
            gratuitous: self.announcer.sent(),
            gratuitous_failures: self.announcer.failures(),
            gossip: self.gossip.get().map(Gossip::stats),
            ..Sample::default()
        };
        // Read straight from the pins: the same numbers `speaker maps` shows.
        match DataplaneMaps::from_pins(&self.pins) {
            Ok(maps) => {
                for vip in maps.vips().unwrap_or_default() {
                    *sample.responses.entry(vip.address).or_default() += vip.answered;
                    *sample.requests.entry(vip.address).or_default() += vip.requests;
                    *sample.conflicts.entry(vip.address).or_default() += vip.conflicts;
                }
                sample.verdicts = maps
                    .reasons()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(reason, count)| (reason.name(), count))
                    .collect();
                if let Ok(watchdog) = maps.watchdog() {
                    sample.heartbeat_stale = watchdog.stale();
                    sample.heartbeat_age = watchdog.heartbeat_age;
                }
            }
            Err(e) => warn!(error = %e, "metrics: reading the maps: {e}"),
        }
        // The interfaces the daemon holds links on count even when their pin
        // is gone: the metric reports what the kernel runs.
        let mut linked = self.pins.linked_interfaces();
        if let Some(ownership) = self.ownership.get() {
            let ownership = ownership.lock().unwrap_or_else(|p| p.into_inner());
            sample.repairs = ownership.repairs().snapshot();
            linked.extend(ownership.interfaces());
            linked.sort();
            linked.dedup();
        }
        if !linked.is_empty() {
            match interfaces::discovery::links() {
                Ok(links) => {
                    sample.xdp_modes = linked
                        .into_iter()
                        .map(|name| {
                            let mode = links
                                .iter()
                                .find(|l| l.name == name)
                                .map_or("none", |l| l.xdp.name());
                            (name, mode)
                        })
                        .collect();
                }
                Err(e) => warn!(error = %e, "metrics: listing links: {e}"),
            }
        }
        sample
    }
}
