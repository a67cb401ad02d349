//! The kernel side of the speaker: loading the XDP object, attaching it to
//! interfaces, and the pinned maps that carry VIPs, counters and the
//! heartbeat. Everything that talks to the BPF syscall lives below here.

pub mod bond_slaves;
pub mod capabilities;
pub mod clock;
pub mod conflicts;
pub mod ebpf_log;
pub mod groups;
mod maps;
mod migrate;
pub mod operator;
pub mod ownership;
mod pins;
pub mod sync;
mod vip_index;

use std::fs;

use aya::{
    programs::{links::FdLink, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use speaker_common::map_names;
use tracing::{debug, warn};

pub use self::{
    maps::{Conflict, DataplaneMaps, HeartbeatWriter, VipRecord, WatchdogState},
    ownership::{Ownership, Repair, RepairCounters, SharedOwnership},
    pins::{clear_foreign, PinDir, PinKind, DEFAULT_PIN_DIR},
};
use crate::{
    error::{Error, Result},
    interfaces,
};

/// The object `cargo xtask build-ebpf` built; see `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/speaker-ebpf.o"));

pub use speaker_common::program_names::{PASS, RESPONDER};

/// How to attach: the operator's `--mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic with a logged reason.
    #[default]
    Auto,
    Native,
    Generic,
}

/// What `attach` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A new link, in this mode.
    New { native: bool },
    /// A link was already pinned for the interface: its program was replaced
    /// atomically (no frame goes unanswered) and its mode kept.
    Replaced,
}

/// A loaded copy of the eBPF object.
pub struct Object {
    ebpf: Ebpf,
}

impl Object {
    /// Loads the object. With `pins`, every map is opened from its pin when one
    /// exists (adopting the VIPs and counters of an earlier process) and
    /// created and pinned otherwise; pinned maps of another layout are
    /// migrated into maps of this object's, and the pinned links switched to
    /// its program (see [`migrate`]). Without `pins`, the maps are private
    /// to this object (tests, benchmarks).
    pub fn load(pins: Option<&PinDir>) -> Result<Self> {
        if OBJECT.is_empty() {
            return Err(Error::NoObject);
        }
        // Fixed for the program's life: the verifier prunes the disabled levels.
        let log_level = ebpf_log::level_in_force();
        let mut loader = EbpfLoader::new();
        loader.override_global(ebpf_log::LEVEL_GLOBAL, &log_level, true);
        let (paths, plan) = match pins {
            Some(pins) => {
                pins.create()?;
                // The log ring buffer is pinned too: every load (the held
                // object, each attach) then writes to the one buffer the
                // daemon reads.
                let names: Vec<&str> = map_names::ALL
                    .iter()
                    .copied()
                    .chain([ebpf_log::RING_BUFFER])
                    .collect();
                let paths: Vec<_> = names.iter().map(|name| (*name, pins.map(name))).collect();
                // aya pins a new map where the pinned one cannot be opened,
                // which fails with EEXIST on anything else in the way.
                for (_, path) in &paths {
                    clear_foreign(path, PinKind::Map)?;
                }
                let declared = migrate::declared_shapes(OBJECT)?;
                let plan = migrate::Plan::read(pins, &names, &declared)?;
                (paths, Some(plan))
            }
            None => (Vec::new(), None),
        };
        for (name, path) in &paths {
            // A pinned map of another shape is migrated into a fresh one.
            if plan.as_ref().is_none_or(|plan| plan.keeps_pin(name)) {
                loader.map_pin_path(name, path.as_path());
            }
        }
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|e| Error::bpf("loading the eBPF object", e))?;
        if let (Some(pins), Some(plan)) = (pins, plan) {
            if plan.migrates() {
                plan.apply(&mut ebpf, pins)?;
            } else {
                plan.note_adopted(pins);
            }
            migrate::record_version(pins)?;
            // VIPs pinned by a speaker without the filter must not be
            // skipped by this program. The index is derived from the VIPs
            // and made to agree with them here (maps from layout 3 come
            // without it: an empty slot sends the program to the hash maps).
            let mut maps = DataplaneMaps::from_pins(pins)?;
            maps.ensure_filter()?;
            maps.rebuild_index()?;
        }
        Ok(Object { ebpf })
    }

    /// The named XDP program, loaded into the kernel (verified) on first use.
    pub fn program(&mut self, name: &str) -> Result<&mut Xdp> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| Error::Bpf {
                context: "loading the eBPF object".into(),
                message: format!("it has no program {name}"),
            })?
            .try_into()
            .map_err(|e| Error::bpf(format!("program {name}"), e))?;
        if program.fd().is_err() {
            program
                .load()
                .map_err(|e| Error::bpf(format!("verifying program {name}"), e))?;
        }
        Ok(program)
    }

    /// Forwards the program's debug records to `tracing`; see [`ebpf_log`].
    pub fn forward_logs(&mut self) {
        ebpf_log::spawn_reader(&mut self.ebpf);
    }

    /// Closes the maps that are not pinned state: the log ring buffer (when
    /// nobody reads it here), the program's clock cache and the read-only
    /// data sections. A program
    /// loaded before keeps its own kernel references to them; each open one
    /// is a descriptor under the speaker's `RLIMIT_NOFILE`.
    pub fn close_unpinned_maps(&mut self) {
        let unpinned: Vec<String> = self
            .ebpf
            .maps()
            .map(|(name, _)| name.to_owned())
            .filter(|name| !map_names::ALL.contains(&name.as_str()))
            .collect();
        for name in unpinned {
            drop(self.ebpf.take_map(&name));
        }
    }

    /// Takes the maps out of the object, for reading and writing them.
    pub fn take_maps(&mut self) -> Result<DataplaneMaps> {
        DataplaneMaps::from_object(&mut self.ebpf)
    }
}

/// Attaches `program` to `interface` and pins the link under `pins`, so it
/// stays attached after this process exits. When a link is already pinned for
/// the interface, its program is replaced in place instead.
pub fn attach(pins: &PinDir, interface: &str, mode: AttachMode, program: &str) -> Result<Attached> {
    attach_link(pins, interface, mode, program).map(|(attached, _)| attached)
}

/// [`attach`], also returning the link itself: whoever holds it keeps the
/// program attached even if the pin is removed.
pub fn attach_link(
    pins: &PinDir,
    interface: &str,
    mode: AttachMode,
    program: &str,
) -> Result<(Attached, FdLink)> {
    // Named before loading, which would only say "permission denied".
    capabilities::require(&capabilities::XDP_ATTACH)?;
    let mut object = Object::load(Some(pins))?;
    attach_from(&mut object, pins, interface, mode, program)
}

/// [`attach_link`] with the program of an object already loaded: a daemon
/// that holds one attaches from it rather than loading a copy (each copy is a
/// descriptor per map, counted under `RLIMIT_NOFILE`). The capabilities were
/// checked by whoever loaded the object (`attach_link`, or the daemon's
/// start against `capabilities::DAEMON`, a superset of `XDP_ATTACH`).
pub fn attach_from(
    object: &mut Object,
    pins: &PinDir,
    interface: &str,
    mode: AttachMode,
    program: &str,
) -> Result<(Attached, FdLink)> {
    let ifindex = interfaces::index_of(interface)?;
    let xdp = object.program(program)?;
    let link_path = pins.link(interface);
    clear_foreign(&link_path, PinKind::Link)?;
    if link_path.exists() {
        match replace_pinned(xdp, &link_path) {
            Ok(link) => return Ok((Attached::Replaced, link)),
            Err(reason) => {
                // The interface it was attached to is gone (the link is
                // defunct) or the pin is not a link: start afresh.
                warn!(
                    "pinned link {} not reusable ({reason}); attaching anew",
                    link_path.display()
                );
                fs::remove_file(&link_path)
                    .map_err(|e| Error::io(format!("removing {}", link_path.display()), e))?;
            }
        }
    }
    let (link_id, native) = match mode {
        AttachMode::Native => (attach_in(xdp, ifindex, XdpMode::Driver)?, true),
        AttachMode::Generic => (attach_in(xdp, ifindex, XdpMode::Skb)?, false),
        AttachMode::Auto => match attach_in(xdp, ifindex, XdpMode::Driver) {
            Ok(id) => (id, true),
            Err(e) => {
                warn!("native XDP not available on {interface} ({e}); using generic mode");
                (attach_in(xdp, ifindex, XdpMode::Skb)?, false)
            }
        },
    };
    let link = xdp
        .take_link(link_id)
        .map_err(|e| Error::bpf("taking the XDP link", e))?;
    let link = FdLink::try_from(link).map_err(|e| Error::Bpf {
        context: format!("pinning the XDP link of {interface}"),
        message: format!(
            "the kernel attached it without bpf_link ({e}); XDP links need Linux 5.9+"
        ),
    })?;
    let link = link
        .pin(&link_path)
        .map_err(|e| Error::bpf(format!("pinning {}", link_path.display()), e))?;
    debug!(
        "attached {program} to {interface} ({} mode)",
        if native { "native" } else { "generic" }
    );
    Ok((Attached::New { native }, FdLink::from(link)))
}

fn attach_in(xdp: &mut Xdp, ifindex: u32, mode: XdpMode) -> Result<aya::programs::xdp::XdpLinkId> {
    xdp.attach_to_if_index(ifindex, mode)
        .map_err(|e| Error::bpf("attaching XDP", e))
}

fn replace_pinned(xdp: &mut Xdp, path: &std::path::Path) -> std::result::Result<FdLink, String> {
    let pinned = aya::programs::links::PinnedLink::from_pin(path).map_err(|e| e.to_string())?;
    let link =
        aya::programs::xdp::XdpLink::try_from(FdLink::from(pinned)).map_err(|e| e.to_string())?;
    let id = xdp.attach_to_link(link).map_err(|e| e.to_string())?;
    // Keep the link out of the program's care: dropping it there would detach
    // it. The pin already refers to this same link.
    let link = xdp.take_link(id).map_err(|e| e.to_string())?;
    FdLink::try_from(link).map_err(|e| e.to_string())
}

/// Removes the pinned link of `interface`, which detaches the program.
pub fn detach(pins: &PinDir, interface: &str) -> Result<()> {
    let path = pins.link(interface);
    if !path.exists() {
        return Err(Error::NoLink(
            interface.to_owned(),
            pins.root().to_path_buf(),
        ));
    }
    fs::remove_file(&path).map_err(|e| Error::io(format!("removing {}", path.display()), e))
}
