//! The running daemon's hold on its data path.
//!
//! Pins make the data path outlive the process, but they are ordinary files
//! an operator (or a clean-up script) can delete: once nothing refers to an
//! XDP link any more the kernel detaches the program, and a map whose pin is
//! gone is invisible to `speaker maps` and to the next speaker, which would
//! create a fresh, empty one. So the daemon keeps its own references — the
//! maps through a loaded [`Object`] and every XDP link's descriptor — for its
//! whole life, and [`Ownership::check`] puts back what was taken away: a
//! missing or foreign pin is re-pinned from the held descriptor, a link the
//! kernel no longer runs (detached with `bpftool link detach`, interface
//! re-created) is attached anew. Each repair is logged and counted.

use std::{
    collections::BTreeMap,
    fs,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use aya::programs::links::{FdLink, PinnedLink};
use speaker_common::map_names;
use tracing::{info, warn};

use super::{
    attach_from, clear_foreign,
    conflicts::{ConflictWatch, NewConflict},
    pins::is_transient_link_error,
    AttachMode, DataplaneMaps, Object, PinDir, PinKind, RESPONDER,
};
use crate::{
    error::{Error, Result},
    interfaces,
};

/// What [`Ownership::check`] had to put back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Repair {
    /// A map's pin was removed or replaced: re-pinned from the held map.
    MapPin,
    /// A link's pin was removed or replaced: re-pinned from the held link.
    LinkPin,
    /// The kernel no longer ran the program on the interface: attached anew.
    Link,
}

impl Repair {
    pub const ALL: [Repair; 3] = [Repair::MapPin, Repair::LinkPin, Repair::Link];

    /// The `what` label of `xdp_speaker_dataplane_repairs_total`.
    pub fn name(self) -> &'static str {
        match self {
            Repair::MapPin => "map_pin",
            Repair::LinkPin => "link_pin",
            Repair::Link => "link",
        }
    }
}

/// Repairs so far, by kind; shared with `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct RepairCounters(Arc<Mutex<BTreeMap<Repair, u64>>>);

impl RepairCounters {
    pub fn count(&self, repair: Repair) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(repair)
            .or_default() += 1;
    }

    /// Every kind, zero included, so the series exist from the start.
    pub fn snapshot(&self) -> Vec<(Repair, u64)> {
        let counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Repair::ALL
            .iter()
            .map(|r| (*r, counts.get(r).copied().unwrap_or(0)))
            .collect()
    }
}

struct HeldLink {
    link: FdLink,
    /// The kernel's id of the link, to tell our pin from another one.
    id: u32,
    /// The mode it was attached in, to attach it again the same way.
    mode: AttachMode,
}

/// [`Ownership`] shared by the daemon, its check task and `/metrics`.
pub type SharedOwnership = Arc<Mutex<Ownership>>;

/// How often [`spawn_checks`] looks at the pins and links.
pub const CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs [`Ownership::check`] every `every`, off the async threads.
pub fn spawn_checks(ownership: SharedOwnership, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let ownership = ownership.clone();
            let checked = tokio::task::spawn_blocking(move || {
                ownership.lock().unwrap_or_else(|p| p.into_inner()).check()
            })
            .await;
            if let Err(e) = checked {
                warn!("data path check: {e}");
            }
        }
    });
}

/// The maps and links this process keeps open; see the module comment.
pub struct Ownership {
    pins: PinDir,
    mode: AttachMode,
    object: Object,
    links: BTreeMap<String, HeldLink>,
    repairs: RepairCounters,
    /// What the last check failed at: the same failures again (descriptors
    /// exhausted for minutes) are not logged every second.
    last_failures: Vec<String>,
    conflicts: ConflictWatch,
    /// Where the first conflict of each burst goes (the daemon raises the
    /// Kubernetes event); `None`: logged only.
    conflict_bursts: Option<tokio::sync::mpsc::UnboundedSender<NewConflict>>,
}

impl Ownership {
    /// Loads (adopting the pinned maps) and holds the object.
    pub fn new(pins: PinDir, mode: AttachMode, repairs: RepairCounters) -> Result<Self> {
        let mut object = Object::load(Some(&pins))?;
        object.forward_logs();
        // Loaded before the unpinned maps are closed: the verified program
        // keeps its own references to them (.rodata), and every attach and
        // repair uses this one program instead of loading another copy.
        object.program(RESPONDER)?;
        object.close_unpinned_maps();
        Ok(Ownership {
            pins,
            mode,
            object,
            links: BTreeMap::new(),
            repairs,
            last_failures: Vec::new(),
            conflicts: ConflictWatch::default(),
            conflict_bursts: None,
        })
    }

    /// Loads the object and shares it.
    pub fn shared(pins: PinDir, mode: AttachMode) -> Result<SharedOwnership> {
        Ok(Arc::new(Mutex::new(Ownership::new(
            pins,
            mode,
            RepairCounters::default(),
        )?)))
    }

    pub fn repairs(&self) -> &RepairCounters {
        &self.repairs
    }

    /// Sends the first conflict of each burst to `bursts` from now on.
    pub fn report_conflict_bursts(
        &mut self,
        bursts: tokio::sync::mpsc::UnboundedSender<NewConflict>,
    ) {
        self.conflict_bursts = Some(bursts);
    }

    /// Claims of `address` by others are expected until `until` (this node
    /// hands it over or just released it): not reported.
    pub fn expect_claims(&mut self, address: IpAddr, until: Instant) {
        self.conflicts.quiet(address, until);
    }

    /// Whether this process holds a link on `interface`.
    pub fn holds(&self, interface: &str) -> bool {
        self.links.contains_key(interface)
    }

    /// Interfaces this process holds a link on.
    pub fn interfaces(&self) -> Vec<String> {
        self.links.keys().cloned().collect()
    }

    /// Attaches the responder to `interface` (replacing the program of a
    /// pinned link, if any) and holds the link.
    pub fn attach(&mut self, interface: &str) -> Result<()> {
        self.attach_in(interface, self.mode)
    }

    /// [`Self::attach`] in `mode` rather than the configured one: a VLAN
    /// device offers generic mode only (`interfaces::vlan`).
    pub fn attach_in(&mut self, interface: &str, mode: AttachMode) -> Result<()> {
        let (_, link) = attach_from(&mut self.object, &self.pins, interface, mode, RESPONDER)?;
        let id = link_id(&link, interface)?;
        self.links
            .insert(interface.to_owned(), HeldLink { link, id, mode });
        Ok(())
    }

    /// Puts back every pin and link that went missing since the last check;
    /// returns what was repaired. Cheap when nothing changed: a stat per
    /// pin, one netlink dump.
    pub fn check(&mut self) -> Vec<(Repair, String)> {
        let mut repaired = Vec::new();
        let mut failures = Vec::new();
        // Maps first: attaching anew loads the object from the pins, which
        // would create fresh maps where a pin is missing.
        for name in map_names::ALL {
            match self.repin_map(name) {
                Ok(false) => {}
                Ok(true) => repaired.push((Repair::MapPin, (*name).to_owned())),
                Err(e) => failures.push(format!("re-pinning map {name}: {e}")),
            }
        }
        let running = match interfaces::discovery::links() {
            Ok(links) => links,
            Err(e) => {
                failures.push(format!("listing links: {e}"));
                self.report(&repaired, failures);
                return repaired;
            }
        };
        for interface in self.interfaces() {
            let attached = running
                .iter()
                .find(|l| l.name == interface)
                .map(|l| l.xdp.name() != "none");
            match attached {
                // Gone: the link died with it; attached again when it comes back.
                None => {
                    self.links.remove(&interface);
                    info!("data path: {interface} is gone; its XDP link went with it");
                }
                Some(false) => {
                    warn!(
                        event = "dataplaneRepaired",
                        what = Repair::Link.name(),
                        interface,
                        "data path: the XDP program is no longer attached to {interface}; \
                         attaching it again"
                    );
                    let mode = self.links.remove(&interface).map_or(self.mode, |h| h.mode);
                    if let Err(e) = fs::remove_file(self.pins.link(&interface)) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            warn!("data path: removing the stale pin of {interface}: {e}");
                        }
                    }
                    match self.attach_in(&interface, mode) {
                        Ok(()) => repaired.push((Repair::Link, interface)),
                        Err(e) => failures.push(format!("attaching to {interface}: {e}")),
                    }
                }
                Some(true) => match self.repin_link(&interface) {
                    Ok(false) => {}
                    Ok(true) => repaired.push((Repair::LinkPin, interface)),
                    Err(e) => failures.push(format!("re-pinning link {interface}: {e}")),
                },
            }
        }
        match DataplaneMaps::from_pins(&self.pins).and_then(|maps| maps.vips()) {
            Ok(records) => {
                let due = self.conflicts.log(&records, Instant::now());
                if let Some(bursts) = &self.conflict_bursts {
                    for conflict in due.into_iter().filter(|c| c.new_burst) {
                        // The receiver is gone only while the process stops.
                        let _ = bursts.send(conflict);
                    }
                }
            }
            Err(e) => failures.push(format!("reading VIP conflicts: {e}")),
        }
        self.report(&repaired, failures);
        repaired
    }

    fn report(&mut self, repaired: &[(Repair, String)], failures: Vec<String>) {
        for (repair, _) in repaired {
            self.repairs.count(*repair);
        }
        if failures != self.last_failures {
            for failure in &failures {
                warn!("data path: {failure}");
            }
        }
        self.last_failures = failures;
    }

    fn repin_map(&mut self, name: &str) -> Result<bool> {
        let path = self.pins.map(name);
        let replaced = clear_foreign(&path, PinKind::Map)?;
        if path.exists() {
            return Ok(false);
        }
        self.pins.create()?;
        let map = self.object.ebpf.map(name).ok_or_else(|| Error::Bpf {
            context: format!("re-pinning map {name}"),
            message: "the loaded object has no such map".into(),
        })?;
        map.pin(&path)
            .map_err(|e| Error::bpf(format!("pinning {}", path.display()), e))?;
        warn!(
            event = "dataplaneRepaired",
            what = Repair::MapPin.name(),
            map = name,
            "data path: the pin of map {name} was {}; pinned it again at {}",
            if replaced { "replaced" } else { "removed" },
            path.display()
        );
        Ok(true)
    }

    fn repin_link(&mut self, interface: &str) -> Result<bool> {
        let path = self.pins.link(interface);
        let Some(held) = self.links.get(interface) else {
            return Ok(false);
        };
        let pinned_id = PinnedLink::from_pin(&path).and_then(|p| FdLink::from(p).info());
        match pinned_id {
            Ok(info) if info.id() == held.id => return Ok(false),
            Err(e) if fs::symlink_metadata(&path).is_ok() && is_transient_link_error(&e) => {
                return Err(Error::bpf(format!("opening {}", path.display()), e));
            }
            // Missing, or something else in its place.
            _ => {}
        }
        let was_there = fs::symlink_metadata(&path).is_ok();
        if was_there {
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
        }
        self.pins.create()?;
        // Pinning consumes the link and gives it back pinned. Should it fail,
        // the descriptor is closed and the kernel detaches the program, so
        // attach anew at once.
        let Some(HeldLink { link, id, mode }) = self.links.remove(interface) else {
            return Ok(false);
        };
        let pinned = match link.pin(&path) {
            Ok(pinned) => pinned,
            Err(e) => {
                let failed = Error::bpf(format!("pinning {}", path.display()), e);
                warn!(error = %failed, "data path: {failed}; attaching {interface} anew");
                self.attach_in(interface, mode)?;
                return Err(failed);
            }
        };
        self.links.insert(
            interface.to_owned(),
            HeldLink {
                link: FdLink::from(pinned),
                id,
                mode,
            },
        );
        warn!(
            event = "dataplaneRepaired",
            what = Repair::LinkPin.name(),
            interface,
            "data path: the pin of the XDP link on {interface} was {}; the link stayed attached \
             (held by this process) and is pinned again at {}",
            if was_there { "replaced" } else { "removed" },
            path.display()
        );
        Ok(true)
    }
}

fn link_id(link: &FdLink, interface: &str) -> Result<u32> {
    link.info()
        .map(|info| info.id())
        .map_err(|e| Error::bpf(format!("reading the XDP link of {interface}"), e))
}
