//! Pinned maps of another layout, migrated on start (docs/dataplane.md,
//! "Upgrades"). A speaker upgraded in place finds the maps and links of its
//! predecessor on bpffs, still answering; it must take them over without a
//! request going unanswered for a VIP that stays owned:
//!
//! 1. [`Plan::read`]: every pin's shape (type, key and value size,
//!    `max_entries`) against the one this object declares, and the pinned
//!    layout version ([`LAYOUT_VERSION`]).
//! 2. The object is loaded with the differing maps left unpinned: fresh maps
//!    of the new shape ([`Plan::keeps_pin`]).
//! 3. [`Plan::apply`]: what answering needs (VIPs with their slots, the
//!    dead-man switch, bond slaves, the filter bits) is copied into them;
//!    every pinned link running a program of this object's name is switched
//!    to this object's program with `bpf_link_update` (atomic: the old
//!    program answers until the new one does); the counters, final once
//!    no program writes the old maps, are added into the new ones; the new
//!    maps are pinned under a temporary name and renamed over the old pins
//!    (`rename(2)` replaces a pin atomically on bpffs).
//!
//! Maps whose contents cannot be carried over (another type, a value layout
//! this speaker does not know) are replaced by fresh ones with a warning.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt, fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Duration,
};

use aya::{
    maps::{Array, HashMap, Map, MapData, MapError, MapInfo, MapType, PerCpuArray, PerCpuValues},
    programs::{
        links::{FdLink, PinnedLink},
        loaded_programs, Xdp,
    },
    Ebpf, Pod,
};
use aya_obj::generated::bpf_map_type;
use speaker_common::{
    filter_bit_of, map_names, ConflictRecord, VipEntry, VipIndexV4, VipIndexV6, VipKeyV4, VipKeyV6,
    VlanPath, Watchdog, FILTER_BITS_LOG2, LAYOUT_VERSION,
};
use tracing::{info, warn};

use super::{
    maps::{UntaggedKeyV4, UntaggedKeyV6},
    pins::PinDir,
};
use crate::error::{Error, Result};

/// What a map is, as the kernel reports it and as the object declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

impl Shape {
    fn of_pinned(info: &MapInfo) -> Shape {
        Shape {
            // An unknown type cannot match any the object declares.
            map_type: info.map_type().map_or(u32::MAX, |t| t as u32),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
        }
    }

    fn of_declared(map: &aya_obj::Map) -> Shape {
        Shape {
            map_type: map.map_type(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: map.max_entries(),
        }
    }

    fn sizes_match(&self, other: &Shape) -> bool {
        (self.map_type, self.key_size, self.value_size)
            == (other.map_type, other.key_size, other.value_size)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = bpf_map_type::try_from(self.map_type)
            .ok()
            .and_then(|t| MapType::try_from(t).ok())
            .map_or_else(|| format!("type {}", self.map_type), |t| format!("{t:?}"));
        write!(
            f,
            "{kind}, key {} B, value {} B, {} entries",
            self.key_size, self.value_size, self.max_entries
        )
    }
}

/// The shapes the embedded object declares, by map name.
pub fn declared_shapes(object: &[u8]) -> Result<BTreeMap<String, Shape>> {
    let parsed = aya_obj::Object::parse(object).map_err(|e| Error::Bpf {
        context: "reading the eBPF object's map definitions".into(),
        message: e.to_string(),
    })?;
    Ok(parsed
        .maps
        .iter()
        .map(|(name, map)| (name.clone(), Shape::of_declared(map)))
        .collect())
}

/// The layout version pinned under `pins`; `None` when there is no `LAYOUT`
/// pin (maps from before versioning, or nothing pinned) or it is not one.
pub fn pinned_version(pins: &PinDir) -> Option<u32> {
    let data = MapData::from_pin(pins.map(map_names::LAYOUT)).ok()?;
    let info = data.info().ok()?;
    if (info.key_size(), info.value_size()) != (4, 4) {
        return None;
    }
    let array = Array::<MapData, u32>::try_from(Map::Array(data)).ok()?;
    array.get(&0, 0).ok().filter(|v| *v != 0)
}

/// The version of the maps pinned under `pins` for messages: the pinned
/// one, or the one their shapes tell (layouts before versioning).
pub fn describe_version(pins: &PinDir) -> String {
    if let Some(version) = pinned_version(pins) {
        return version.to_string();
    }
    let key_size = |name| {
        MapInfo::from_pin(pins.map(name))
            .ok()
            .map(|info| info.key_size())
    };
    let inferred = match key_size(map_names::VIPS_V4) {
        // The first versioned layout (3) is the first with 12-byte keys.
        Some(k) if k as usize == size_of::<VipKeyV4>() => 3,
        _ if key_size(map_names::VIP_FILTER).is_some() => 2,
        _ => 1,
    };
    format!("{inferred} (no LAYOUT pin; inferred from the maps)")
}

/// Writes this speaker's layout version beside the maps, creating the pin
/// when absent (or replacing one that is not a `u32` array).
pub fn record_version(pins: &PinDir) -> Result<()> {
    let path = pins.map(map_names::LAYOUT);
    let context = || format!("recording the layout version in {}", path.display());
    let existing = MapData::from_pin(&path).ok().filter(|data| {
        data.info()
            .is_ok_and(|i| (i.key_size(), i.value_size()) == (4, 4) && i.max_entries() >= 1)
    });
    let fresh = existing.is_none();
    let data = match existing {
        Some(data) => data,
        None => MapData::create(
            aya_obj::Map::new_from_params(bpf_map_type::BPF_MAP_TYPE_ARRAY as u32, 4, 4, 1, 0),
            map_names::LAYOUT,
            None,
        )
        .map_err(|e| Error::bpf(context(), e))?,
    };
    let mut map = Map::Array(data);
    let mut array =
        Array::<&mut MapData, u32>::try_from(&mut map).map_err(|e| Error::bpf(context(), e))?;
    if array.get(&0, 0).ok() != Some(LAYOUT_VERSION) {
        array
            .set(0, LAYOUT_VERSION, 0)
            .map_err(|e| Error::bpf(context(), e))?;
    }
    if fresh {
        // Written before it is pinned: a reader never sees version 0.
        pin_over(&map, &path).map_err(|e| Error::io(context(), e))?;
    }
    Ok(())
}

/// Pins `map` at `path`, replacing whatever is pinned there in one step:
/// pinned under a temporary name first, then renamed over `path`.
fn pin_over(map: &Map, path: &Path) -> std::io::Result<()> {
    // Not `.migrating`: bpffs refuses names with a dot (EPERM).
    let mut temporary = path.as_os_str().to_owned();
    temporary.push("_migrating");
    let temporary = Path::new(&temporary);
    // A leftover of an interrupted migration.
    let _ = fs::remove_file(temporary);
    map.pin(temporary).map_err(|e| match e {
        aya::pin::PinError::SyscallError(e) => e.io_error,
        other => std::io::Error::other(other.to_string()),
    })?;
    fs::rename(temporary, path)
}

/// What becomes of one pinned map.
enum Fate {
    /// Same shape: the object uses the pin.
    Adopt,
    /// Nothing pinned: the object creates and pins it.
    Create { to: Shape },
    /// Another shape whose contents this speaker knows how to carry over.
    Migrate {
        old: Map,
        old_id: u32,
        from: Shape,
        to: Shape,
    },
    /// Another shape, contents dropped.
    Replace {
        old_id: u32,
        from: Shape,
        to: Shape,
        why: String,
    },
}

/// What to do with every pin, decided before the object is loaded.
pub struct Plan {
    fates: BTreeMap<String, Fate>,
    found_version: String,
    /// The pinned `LAYOUT` value, when there is one.
    pinned_version: Option<u32>,
}

impl Plan {
    /// Compares every pin named in `names` with the shape `declared` for it.
    pub fn read(pins: &PinDir, names: &[&str], declared: &BTreeMap<String, Shape>) -> Result<Plan> {
        let found_version = describe_version(pins);
        let mut fates = BTreeMap::new();
        for &name in names {
            let Some(&to) = declared.get(name) else {
                continue;
            };
            let path = pins.map(name);
            if !path.exists() {
                fates.insert(name.to_owned(), Fate::Create { to });
                continue;
            }
            let old = MapData::from_pin(&path)
                .map_err(|e| Error::bpf(format!("opening pinned map {name}"), e))?;
            let info = old
                .info()
                .map_err(|e| Error::bpf(format!("inspecting map {name}"), e))?;
            let (from, old_id) = (Shape::of_pinned(&info), info.id());
            let fate = if from == to {
                Fate::Adopt
            } else {
                match (carries_over(name, &from, &to), Map::from_map_data(old)) {
                    (Ok(()), Ok(old)) => Fate::Migrate {
                        old,
                        old_id,
                        from,
                        to,
                    },
                    (Err(why), _) => Fate::Replace {
                        old_id,
                        from,
                        to,
                        why,
                    },
                    (Ok(()), Err(e)) => Fate::Replace {
                        old_id,
                        from,
                        to,
                        why: format!("the pinned map cannot be opened as its type ({e})"),
                    },
                }
            };
            fates.insert(name.to_owned(), fate);
        }
        Ok(Plan {
            fates,
            found_version,
            pinned_version: pinned_version(pins),
        })
    }

    /// Whether the object may use the pin of `name` (the same shape, or
    /// none yet): otherwise it gets a fresh map, filled by [`Plan::apply`].
    pub fn keeps_pin(&self, name: &str) -> bool {
        matches!(
            self.fates.get(name),
            None | Some(Fate::Adopt | Fate::Create { .. })
        )
    }

    /// True when some pinned map differs from the object's.
    pub fn migrates(&self) -> bool {
        self.fates
            .values()
            .any(|f| matches!(f, Fate::Migrate { .. } | Fate::Replace { .. }))
    }

    /// Logs maps adopted as they are under another version (pinned before
    /// versioning, or by a speaker whose layout differs only in meaning this
    /// one has no conversion for): nothing to migrate, `LAYOUT` is updated.
    pub fn note_adopted(&self, pins: &PinDir) {
        let pinned_any = self.fates.values().any(|f| matches!(f, Fate::Adopt));
        if pinned_any && !self.migrates() && self.pinned_version != Some(LAYOUT_VERSION) {
            info!(
                event = "layoutAdopted",
                dir = %pins.root().display(),
                "pinned maps of layout version {} have this speaker's shapes: adopted as version \
                 {LAYOUT_VERSION}",
                self.found_version
            );
        }
    }

    /// Steps 3 to 6 of the module comment, on `ebpf` loaded per
    /// [`Plan::keeps_pin`].
    pub fn apply(self, ebpf: &mut Ebpf, pins: &PinDir) -> Result<()> {
        info!(
            event = "layoutMigration",
            dir = %pins.root().display(),
            "pinned maps of layout version {} found; migrating them to version {LAYOUT_VERSION}",
            self.found_version
        );
        // 3: what answering needs, before any program uses the new maps.
        for (name, fate) in &self.fates {
            if let Fate::Migrate { old, .. } = fate {
                copy_state(name, old, ebpf)?;
            }
        }
        rebuild_filter(ebpf)?;
        unseal_index(ebpf)?;

        // 4: the links.
        let old_ids: BTreeSet<u32> = self
            .fates
            .values()
            .filter_map(|fate| match fate {
                Fate::Migrate { old_id, .. } | Fate::Replace { old_id, .. } => Some(*old_id),
                _ => None,
            })
            .collect();
        let mut switched = 0;
        for interface in pins.linked_interfaces() {
            let path = pins.link(&interface);
            let Some((program, uses_old)) = attached_program(&path, &old_ids) else {
                continue;
            };
            // Also a program of ours on none of the old maps: a migration
            // interrupted after the switch left it on maps nobody pins.
            if let Some(xdp) = program_named(ebpf, &program) {
                if xdp.fd().is_err() {
                    xdp.load()
                        .map_err(|e| Error::bpf(format!("verifying program {program}"), e))?;
                }
                // The link keeps its pin: dropping our descriptor of it
                // leaves it attached.
                drop(
                    super::replace_pinned(xdp, &path).map_err(|reason| Error::Bpf {
                        context: format!("switching {} to the new program", path.display()),
                        message: reason,
                    })?,
                );
                switched += 1;
            } else if uses_old {
                warn!(
                    event = "linkNotMigrated",
                    interface = %interface,
                    "the program {program} attached to {interface} uses the old maps and this \
                     speaker has no program of that name: it keeps the old maps until detached"
                );
            }
        }
        if switched > 0 {
            // A frame the old program was handling during the switch may
            // still count in the old maps: let it finish (XDP runs inside
            // one NAPI poll, microseconds) before the counters are read.
            std::thread::sleep(Duration::from_millis(10));
        }

        // 5 and 6: counters, then the pins.
        for (name, fate) in &self.fates {
            match fate {
                Fate::Migrate { old, from, to, .. } => {
                    add_counters(name, old, ebpf)?;
                    pin_over(new_map(ebpf, name)?, &pins.map(name))
                        .map_err(|e| Error::io(format!("pinning the migrated {name}"), e))?;
                    info!(
                        event = "mapMigrated",
                        map = %name,
                        "{name} migrated: {from} -> {to}"
                    );
                }
                Fate::Replace { from, to, why, .. } => {
                    pin_over(new_map(ebpf, name)?, &pins.map(name))
                        .map_err(|e| Error::io(format!("pinning the new {name}"), e))?;
                    warn!(
                        event = "mapReplaced",
                        map = %name,
                        "{name} replaced by an empty map ({from} -> {to}): {why}"
                    );
                }
                Fate::Create { to } => info!(
                    event = "mapMigrated",
                    map = %name,
                    "{name} created: absent -> {to}"
                ),
                Fate::Adopt => {}
            }
        }
        info!(
            event = "layoutMigrated",
            links = switched,
            "pinned maps migrated to layout version {LAYOUT_VERSION}; {switched} link(s) switched \
             to the new program"
        );
        Ok(())
    }
}

/// `Ok` when the contents of `name` can be carried from `from` to `to`;
/// otherwise why not.
fn carries_over(name: &str, from: &Shape, to: &Shape) -> std::result::Result<(), String> {
    if from.map_type != to.map_type {
        return Err("another map type".into());
    }
    let sizes = (from.key_size, from.value_size);
    let same_sizes = from.sizes_match(to);
    let known = match name {
        map_names::VIPS_V4 => {
            same_sizes || sizes == (size_of::<UntaggedKeyV4>() as u32, VALUE_ENTRY)
        }
        map_names::VIPS_V6 => {
            same_sizes || sizes == (size_of::<UntaggedKeyV6>() as u32, VALUE_ENTRY)
        }
        map_names::VIP_ANSWERED
        | map_names::VIP_REFUSED
        | map_names::REASONS
        | map_names::VIP_CONFLICTS
        | map_names::WATCHDOG
        | map_names::BOND_SLAVES => same_sizes,
        // Rebuilt from the VIPs whatever their old shape.
        map_names::VIP_FILTER | map_names::VIP_INDEX_V4 | map_names::VIP_INDEX_V6 => true,
        _ => false,
    };
    if known {
        Ok(())
    } else {
        Err(format!(
            "no conversion from key {} B, value {} B",
            from.key_size, from.value_size
        ))
    }
}

const VALUE_ENTRY: u32 = size_of::<VipEntry>() as u32;

fn new_map<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Map> {
    ebpf.map_mut(name).ok_or_else(|| Error::Bpf {
        context: "migrating the pinned maps".into(),
        message: format!("the object has no map {name}"),
    })
}

fn failed(name: &str) -> impl Fn(MapError) -> Error + '_ {
    move |e| Error::bpf(format!("migrating {name}"), e)
}

/// The key size of a pinned hash map, by which typed view reads it.
fn old_key_size(old: &Map) -> u32 {
    match old {
        Map::HashMap(data) => data.info().map_or(0, |i| i.key_size()),
        _ => 0,
    }
}

/// Copies every VIP entry of `old` into the object's map `name`, its key
/// converted, its MAC and counter slot kept.
fn copy_vips<Old: Pod, New: Pod>(
    name: &str,
    old: &Map,
    ebpf: &mut Ebpf,
    convert: impl Fn(Old) -> New,
) -> Result<()> {
    let err = failed(name);
    let old = HashMap::<_, Old, VipEntry>::try_from(old).map_err(&err)?;
    let mut new = HashMap::<_, New, VipEntry>::try_from(new_map(ebpf, name)?).map_err(&err)?;
    for item in old.iter() {
        let (key, entry) = item.map_err(&err)?;
        new.insert(convert(key), entry, 0).map_err(&err)?;
    }
    Ok(())
}

/// Step 3 for one map: entries the program needs to answer.
fn copy_state(name: &str, old: &Map, ebpf: &mut Ebpf) -> Result<()> {
    let err = failed(name);
    match name {
        map_names::VIPS_V4 if old_key_size(old) as usize == size_of::<VipKeyV4>() => {
            copy_vips(name, old, ebpf, |key: VipKeyV4| key)?;
        }
        map_names::VIPS_V4 => copy_vips(name, old, ebpf, |key: UntaggedKeyV4| VipKeyV4 {
            addr: key.addr,
            ifindex: key.ifindex,
            vlan: VlanPath::UNTAGGED,
        })?,
        map_names::VIPS_V6 if old_key_size(old) as usize == size_of::<VipKeyV6>() => {
            copy_vips(name, old, ebpf, |key: VipKeyV6| key)?;
        }
        map_names::VIPS_V6 => copy_vips(name, old, ebpf, |key: UntaggedKeyV6| VipKeyV6 {
            addr: key.addr,
            ifindex: key.ifindex,
            vlan: VlanPath::UNTAGGED,
        })?,
        map_names::WATCHDOG => {
            let old = Array::<_, Watchdog>::try_from(old).map_err(&err)?;
            let mut new = Array::<_, Watchdog>::try_from(new_map(ebpf, name)?).map_err(&err)?;
            for index in 0..old.len().min(new.len()) {
                new.set(index, old.get(&index, 0).map_err(&err)?, 0)
                    .map_err(&err)?;
            }
        }
        map_names::BOND_SLAVES => {
            let old = HashMap::<_, u32, u32>::try_from(old).map_err(&err)?;
            let mut new = HashMap::<_, u32, u32>::try_from(new_map(ebpf, name)?).map_err(&err)?;
            for item in old.iter() {
                let (slave, master) = item.map_err(&err)?;
                new.insert(slave, master, 0).map_err(&err)?;
            }
        }
        // Counters: after the switch (step 5). The filter: rebuilt.
        _ => {}
    }
    Ok(())
}

/// Sets the filter bit of every VIP in the object's maps (never clears one),
/// so that the new program looks every VIP up from its first frame.
/// Every slot of the VIP index unsealed before the links switch: an
/// unsealed slot sends the program to the hash maps, right whatever the
/// VIPs are, where an adopted slot might vouch for a VIP that a speaker
/// without the index (a downgrade in between) has since removed. The
/// speaker seals the slots again once the object is loaded.
fn unseal_index(ebpf: &mut Ebpf) -> Result<()> {
    let slots = 1u32 << FILTER_BITS_LOG2;
    {
        let err = failed(map_names::VIP_INDEX_V4);
        let mut index = Array::<_, VipIndexV4>::try_from(new_map(ebpf, map_names::VIP_INDEX_V4)?)
            .map_err(&err)?;
        for slot in 0..slots {
            index.set(slot, VipIndexV4::default(), 0).map_err(&err)?;
        }
    }
    let err = failed(map_names::VIP_INDEX_V6);
    let mut index =
        Array::<_, VipIndexV6>::try_from(new_map(ebpf, map_names::VIP_INDEX_V6)?).map_err(&err)?;
    for slot in 0..slots {
        index.set(slot, VipIndexV6::default(), 0).map_err(&err)?;
    }
    Ok(())
}

fn rebuild_filter(ebpf: &mut Ebpf) -> Result<()> {
    let err = failed(map_names::VIP_FILTER);
    let mut addresses: Vec<IpAddr> = Vec::new();
    {
        let v4 = HashMap::<_, VipKeyV4, VipEntry>::try_from(new_map(ebpf, map_names::VIPS_V4)?)
            .map_err(&err)?;
        for key in v4.keys() {
            addresses.push(Ipv4Addr::from(key.map_err(&err)?.addr).into());
        }
    }
    {
        let v6 = HashMap::<_, VipKeyV6, VipEntry>::try_from(new_map(ebpf, map_names::VIPS_V6)?)
            .map_err(&err)?;
        for key in v6.keys() {
            addresses.push(Ipv6Addr::from(key.map_err(&err)?.addr).into());
        }
    }
    let mut filter =
        Array::<_, u64>::try_from(new_map(ebpf, map_names::VIP_FILTER)?).map_err(&err)?;
    for address in addresses {
        let bit = match address {
            IpAddr::V4(a) => filter_bit_of(&a.octets()),
            IpAddr::V6(a) => filter_bit_of(&a.octets()),
        };
        let word = filter.get(&(bit / 64), 0).map_err(&err)?;
        filter
            .set(bit / 64, word | 1 << (bit % 64), 0)
            .map_err(&err)?;
    }
    Ok(())
}

/// Step 5 for one map: the old counts added to what the new program counted
/// since the switch, index by index (per CPU for per-CPU arrays). Indexes
/// the new map does not have are dropped; new ones started at zero.
fn add_counters(name: &str, old: &Map, ebpf: &mut Ebpf) -> Result<()> {
    let err = failed(name);
    match name {
        map_names::VIP_ANSWERED | map_names::VIP_REFUSED | map_names::REASONS => {
            let old = PerCpuArray::<_, u64>::try_from(old).map_err(&err)?;
            let mut new = PerCpuArray::<_, u64>::try_from(new_map(ebpf, name)?).map_err(&err)?;
            for index in 0..old.len().min(new.len()) {
                let before = old.get(&index, 0).map_err(&err)?;
                if before.iter().all(|&v| v == 0) {
                    continue;
                }
                let since = new.get(&index, 0).map_err(&err)?;
                let sum: Vec<u64> = before
                    .iter()
                    .zip(since.iter())
                    .map(|(a, b)| a.wrapping_add(*b))
                    .collect();
                let sum = PerCpuValues::try_from(sum)
                    .map_err(|e| Error::io(format!("migrating {name}"), e))?;
                new.set(index, sum, 0).map_err(&err)?;
            }
        }
        map_names::VIP_CONFLICTS => {
            let old = Array::<_, ConflictRecord>::try_from(old).map_err(&err)?;
            let mut new =
                Array::<_, ConflictRecord>::try_from(new_map(ebpf, name)?).map_err(&err)?;
            for index in 0..old.len().min(new.len()) {
                let before = old.get(&index, 0).map_err(&err)?;
                if before.count == 0 {
                    continue;
                }
                let since = new.get(&index, 0).map_err(&err)?;
                let last = if since.count == 0 { before } else { since };
                let merged = ConflictRecord {
                    count: before.count + since.count,
                    ..last
                };
                new.set(index, merged, 0).map_err(&err)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The name of the program attached through the link pinned at `path`, and
/// whether it uses one of the maps `old_ids`.
fn attached_program(path: &Path, old_ids: &BTreeSet<u32>) -> Option<(String, bool)> {
    let link = PinnedLink::from_pin(path).ok()?;
    let program_id = FdLink::from(link).info().ok()?.program_id();
    let program = loaded_programs()
        .filter_map(|p| p.ok())
        .find(|p| p.id() == program_id)?;
    let uses_old = program
        .map_ids()
        .ok()
        .flatten()
        .is_some_and(|ids| ids.iter().any(|id| old_ids.contains(id)));
    Some((program.name_as_str()?.to_owned(), uses_old))
}

/// The object's program named like `kernel_name` (the kernel keeps the first
/// 15 bytes of a program's name).
fn program_named<'a>(ebpf: &'a mut Ebpf, kernel_name: &str) -> Option<&'a mut Xdp> {
    let name = ebpf
        .programs()
        .map(|(name, _)| name)
        .find(|name| name.get(..15).unwrap_or(name) == kernel_name)?
        .to_owned();
    ebpf.program_mut(&name)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(map_type: bpf_map_type, key_size: u32, value_size: u32, max_entries: u32) -> Shape {
        Shape {
            map_type: map_type as u32,
            key_size,
            value_size,
            max_entries,
        }
    }

    #[test]
    fn known_layouts_carry_over_and_others_are_replaced() {
        use bpf_map_type::BPF_MAP_TYPE_PERCPU_ARRAY as PERCPU;
        use bpf_map_type::{BPF_MAP_TYPE_ARRAY as ARRAY, BPF_MAP_TYPE_HASH as HASH};
        let vips_v4 = shape(HASH, 12, 12, 4096);
        let vips_v6 = shape(HASH, 24, 12, 4096);
        let reasons = shape(PERCPU, 4, 8, 15);
        let cases = [
            (map_names::VIPS_V4, shape(HASH, 8, 12, 4096), vips_v4, true),
            (map_names::VIPS_V4, shape(HASH, 12, 12, 1024), vips_v4, true),
            (
                map_names::VIPS_V4,
                shape(HASH, 16, 12, 4096),
                vips_v4,
                false,
            ),
            (map_names::VIPS_V4, shape(HASH, 8, 16, 4096), vips_v4, false),
            (
                map_names::VIPS_V4,
                shape(ARRAY, 8, 12, 4096),
                vips_v4,
                false,
            ),
            (map_names::VIPS_V6, shape(HASH, 20, 12, 4096), vips_v6, true),
            (map_names::REASONS, shape(PERCPU, 4, 8, 14), reasons, true),
            (map_names::REASONS, shape(PERCPU, 4, 4, 15), reasons, false),
            (map_names::REASONS, shape(ARRAY, 4, 8, 15), reasons, false),
            (
                map_names::VIP_FILTER,
                shape(ARRAY, 4, 8, 16),
                shape(ARRAY, 4, 8, 64),
                true,
            ),
            (
                "SOMETHING_NEW",
                shape(ARRAY, 4, 8, 1),
                shape(ARRAY, 4, 8, 2),
                false,
            ),
        ];
        for (name, from, to, carried) in cases {
            assert_eq!(
                carries_over(name, &from, &to).is_ok(),
                carried,
                "{name}: {from} -> {to}"
            );
        }
    }

    #[test]
    fn shapes_name_their_type() {
        let s = shape(bpf_map_type::BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 15);
        assert_eq!(s.to_string(), "PerCpuArray, key 4 B, value 8 B, 15 entries");
        let unknown = Shape {
            map_type: 9999,
            ..s
        };
        assert!(unknown.to_string().starts_with("type 9999,"), "{unknown}");
    }
}
