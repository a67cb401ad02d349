//! Typed access to the data plane's maps, whether they belong to a freshly
//! loaded object or are opened from their pins by a later process.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, OwnedFd},
    time::Duration,
};

use aya::{
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues},
    util::nr_cpus,
    Ebpf,
};
use speaker_common::{
    filter_bit_of, map_names, ConflictRecord, Reason, VipEntry, VipIndexV4, VipIndexV6, VipKeyV4,
    VipKeyV6, VlanPath, Watchdog, FILTER_WORDS, MAX_VIPS,
};

use super::{
    clock::monotonic_now,
    pins::PinDir,
    vip_index::{Key, VipIndex},
};
use crate::error::{Error, Result};

/// One owned address on one interface, as the maps hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipRecord {
    pub address: IpAddr,
    pub ifindex: u32,
    /// The VLAN tags requests carry on `ifindex`.
    pub vlan: VlanPath,
    pub mac: [u8; 6],
    /// Requests answered since the entry was added, summed over CPUs.
    pub answered: u64,
    /// Requests for it received since the entry was added (answered or
    /// refused after the lookup), summed over CPUs.
    pub requests: u64,
    /// Frames from other hosts claiming the VIP on this interface.
    pub conflicts: u64,
    /// The last of them, when there was one.
    pub last_conflict: Option<Conflict>,
}

/// The last claim of a VIP by another MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub mac: [u8; 6],
    /// How long ago, against the program's clock.
    pub age: Duration,
}

/// The dead-man switch as stored, with its age read against the same clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchdogState {
    /// `None` when no heartbeat was ever written.
    pub heartbeat_age: Option<Duration>,
    /// `None` when the switch is disabled.
    pub max_age: Option<Duration>,
}

impl WatchdogState {
    /// True when the program has stopped answering because of it.
    pub fn stale(&self) -> bool {
        match (self.max_age, self.heartbeat_age) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(max), Some(age)) => age > max,
        }
    }
}

/// A VIP hash map, by key type.
type Vips<K> = HashMap<MapData, K, VipEntry>;

/// The VIP hash maps: this layout's, or those of layouts 1 and 2, whose
/// keys have no vlan, read so that `speaker maps` and the metrics keep
/// working on maps an older speaker pinned (until one loads this object
/// and migrates them).
enum VipMaps {
    Tagged {
        v4: Vips<VipKeyV4>,
        v6: Vips<VipKeyV6>,
    },
    Untagged {
        v4: Vips<UntaggedKeyV4>,
        v6: Vips<UntaggedKeyV6>,
    },
}

/// A VIPS_V4 key of layouts 1 and 2: no vlan.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct UntaggedKeyV4 {
    pub addr: [u8; 4],
    pub ifindex: u32,
}

/// A VIPS_V6 key of layouts 1 and 2.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct UntaggedKeyV6 {
    pub addr: [u8; 16],
    pub ifindex: u32,
}

// SAFETY: #[repr(C)] byte arrays and a u32 without padding (8 and 20
// bytes); every bit pattern is a valid value.
unsafe impl aya::Pod for UntaggedKeyV4 {}
// SAFETY: as above.
unsafe impl aya::Pod for UntaggedKeyV6 {}

pub struct DataplaneMaps {
    vips: VipMaps,
    vip_answered: PerCpuArray<MapData, u64>,
    vip_refused: PerCpuArray<MapData, u64>,
    reasons: PerCpuArray<MapData, u64>,
    watchdog: Array<MapData, Watchdog>,
    /// A second descriptor of `WATCHDOG`, for [`HeartbeatWriter`]s.
    watchdog_fd: OwnedFd,
    /// `None`, like `vip_conflicts` and `bond_slaves`, in maps pinned by a
    /// speaker of a layout without it (read only).
    vip_filter: Option<Array<MapData, u64>>,
    vip_conflicts: Option<Array<MapData, ConflictRecord>>,
    bond_slaves: Option<HashMap<MapData, u32, u32>>,
    /// Where maps opened from their pins are, for the messages refusing
    /// writes to maps of an older layout.
    pins: Option<PinDir>,
    /// `None` for maps pinned before layout 4 (which `speaker maps` still
    /// reads): their program has no index.
    index: Option<VipIndex>,
}

/// Writes the heartbeat from another thread than the one holding the
/// [`DataplaneMaps`]: its own descriptor of the `WATCHDOG` map.
pub struct HeartbeatWriter {
    watchdog: Array<MapData, Watchdog>,
}

impl HeartbeatWriter {
    /// Refreshes the heartbeat, keeping the limit.
    pub fn beat(&mut self) -> Result<()> {
        write_heartbeat(&mut self.watchdog, None)
    }

    /// The heartbeat's age as the program sees it; `None`: never written.
    pub fn age(&self) -> Result<Option<Duration>> {
        let w = self
            .watchdog
            .get(&0, 0)
            .map_err(|e| Error::bpf("reading WATCHDOG", e))?;
        let now = monotonic_now().as_nanos() as u64;
        Ok((w.heartbeat_ns != 0).then(|| Duration::from_nanos(now.saturating_sub(w.heartbeat_ns))))
    }
}

/// Stamps the heartbeat with the monotonic clock the program reads;
/// `max_age` replaces the limit when given (zero disables the switch).
fn write_heartbeat(
    watchdog: &mut Array<MapData, Watchdog>,
    max_age: Option<Duration>,
) -> Result<()> {
    let current = watchdog
        .get(&0, 0)
        .map_err(|e| Error::bpf("reading WATCHDOG", e))?;
    let stamped = Watchdog {
        heartbeat_ns: monotonic_now().as_nanos() as u64,
        max_age_ns: max_age.map_or(current.max_age_ns, |d| d.as_nanos() as u64),
    };
    watchdog
        .set(0, stamped, 0)
        .map_err(|e| Error::bpf("writing WATCHDOG", e))
}

/// The typed `WATCHDOG` and a duplicate of its descriptor.
fn watchdog_of(map: Map) -> Result<(Array<MapData, Watchdog>, OwnedFd)> {
    let fd = match &map {
        Map::Array(data) => data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io("duplicating the WATCHDOG descriptor", e))?,
        _ => {
            return Err(Error::Bpf {
                context: format!("opening map {}", map_names::WATCHDOG),
                message: "not an array".into(),
            })
        }
    };
    Ok((typed(map_names::WATCHDOG, map)?, fd))
}

fn typed<T: TryFrom<Map, Error = MapError>>(name: &str, map: Map) -> Result<T> {
    T::try_from(map).map_err(|e| Error::bpf(format!("opening map {name}"), e))
}

impl DataplaneMaps {
    /// Takes the maps out of a loaded object.
    pub fn from_object(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &'static str| {
            ebpf.take_map(name).ok_or_else(|| Error::Bpf {
                context: "loading the eBPF object".into(),
                message: format!("it has no map {name}"),
            })
        };
        let (watchdog, watchdog_fd) = watchdog_of(take(map_names::WATCHDOG)?)?;
        Ok(DataplaneMaps {
            vips: VipMaps::Tagged {
                v4: typed(map_names::VIPS_V4, take(map_names::VIPS_V4)?)?,
                v6: typed(map_names::VIPS_V6, take(map_names::VIPS_V6)?)?,
            },
            vip_answered: typed(map_names::VIP_ANSWERED, take(map_names::VIP_ANSWERED)?)?,
            vip_refused: typed(map_names::VIP_REFUSED, take(map_names::VIP_REFUSED)?)?,
            reasons: typed(map_names::REASONS, take(map_names::REASONS)?)?,
            watchdog,
            watchdog_fd,
            vip_filter: Some(typed(map_names::VIP_FILTER, take(map_names::VIP_FILTER)?)?),
            vip_conflicts: Some(typed(
                map_names::VIP_CONFLICTS,
                take(map_names::VIP_CONFLICTS)?,
            )?),
            bond_slaves: Some(typed(
                map_names::BOND_SLAVES,
                take(map_names::BOND_SLAVES)?,
            )?),
            pins: None,
            index: Some(VipIndex::new(
                typed(map_names::VIP_INDEX_V4, take(map_names::VIP_INDEX_V4)?)?,
                typed(map_names::VIP_INDEX_V6, take(map_names::VIP_INDEX_V6)?)?,
            )),
        })
    }

    /// Opens the maps pinned under `pins`, with no program loaded. Maps of
    /// layouts 1 to 3 are opened too, to be read: writes to layouts 1 and 2
    /// are refused (their VIP keys have no vlan), layout 3 has no index.
    pub fn from_pins(pins: &PinDir) -> Result<Self> {
        pins.require_pinned()?;
        let open = |name: &'static str| {
            if !pins.map(name).exists() {
                return Err(layout_mismatch(name, "absent".into(), pins));
            }
            let data = MapData::from_pin(pins.map(name))
                .map_err(|e| Error::bpf(format!("opening pinned map {name}"), e))?;
            check_layout(name, &data, pins)?;
            Ok::<_, Error>(data)
        };
        // Maps a layout before 4 may lack.
        let open_if_pinned =
            |name: &'static str| pins.map(name).exists().then(|| open(name)).transpose();
        let (watchdog, watchdog_fd) = watchdog_of(Map::Array(open(map_names::WATCHDOG)?))?;
        let (v4, v6) = (open(map_names::VIPS_V4)?, open(map_names::VIPS_V6)?);
        let untagged = key_size(&v4, map_names::VIPS_V4)? == size_of::<UntaggedKeyV4>();
        let vips = if untagged {
            VipMaps::Untagged {
                v4: typed(map_names::VIPS_V4, Map::HashMap(v4))?,
                v6: typed(map_names::VIPS_V6, Map::HashMap(v6))?,
            }
        } else {
            VipMaps::Tagged {
                v4: typed(map_names::VIPS_V4, Map::HashMap(v4))?,
                v6: typed(map_names::VIPS_V6, Map::HashMap(v6))?,
            }
        };
        let index = match (
            open_if_pinned(map_names::VIP_INDEX_V4)?,
            open_if_pinned(map_names::VIP_INDEX_V6)?,
        ) {
            (Some(v4), Some(v6)) => Some(VipIndex::new(
                typed::<Array<MapData, VipIndexV4>>(map_names::VIP_INDEX_V4, Map::Array(v4))?,
                typed::<Array<MapData, VipIndexV6>>(map_names::VIP_INDEX_V6, Map::Array(v6))?,
            )),
            _ => None,
        };
        Ok(DataplaneMaps {
            vips,
            vip_answered: typed(
                map_names::VIP_ANSWERED,
                Map::PerCpuArray(open(map_names::VIP_ANSWERED)?),
            )?,
            vip_refused: typed(
                map_names::VIP_REFUSED,
                Map::PerCpuArray(open(map_names::VIP_REFUSED)?),
            )?,
            reasons: typed(
                map_names::REASONS,
                Map::PerCpuArray(open(map_names::REASONS)?),
            )?,
            watchdog,
            watchdog_fd,
            vip_filter: open_if_pinned(map_names::VIP_FILTER)?
                .map(|m| typed(map_names::VIP_FILTER, Map::Array(m)))
                .transpose()?,
            vip_conflicts: open_if_pinned(map_names::VIP_CONFLICTS)?
                .map(|m| typed(map_names::VIP_CONFLICTS, Map::Array(m)))
                .transpose()?,
            bond_slaves: open_if_pinned(map_names::BOND_SLAVES)?
                .map(|m| typed(map_names::BOND_SLAVES, Map::HashMap(m)))
                .transpose()?,
            pins: Some(pins.clone()),
            index,
        })
    }

    /// This layout's VIP maps, for writing.
    fn tagged_vips(&mut self) -> Result<(&mut Vips<VipKeyV4>, &mut Vips<VipKeyV6>)> {
        match &mut self.vips {
            VipMaps::Tagged { v4, v6 } => Ok((v4, v6)),
            VipMaps::Untagged { .. } => Err(read_only(
                self.pins.as_ref(),
                map_names::VIPS_V4,
                format!(
                    "key {} B, value {} B",
                    size_of::<UntaggedKeyV4>(),
                    size_of::<VipEntry>()
                ),
            )),
        }
    }

    /// A map that layouts before this one lacked, for writing.
    fn required<'a, T>(
        map: &'a mut Option<T>,
        pins: Option<&PinDir>,
        name: &'static str,
    ) -> Result<&'a mut T> {
        map.as_mut()
            .ok_or_else(|| read_only(pins, name, "absent".into()))
    }

    /// Adds (or refreshes the MAC of) `address` on interface `ifindex` behind
    /// `vlan`. The
    /// answered counter starts at zero for a new entry and is kept for an
    /// existing one, so re-adding is harmless.
    pub fn add_vip(
        &mut self,
        address: IpAddr,
        ifindex: u32,
        vlan: VlanPath,
        mac: [u8; 6],
    ) -> Result<()> {
        let key = Key {
            address,
            ifindex,
            vlan,
        };
        let bit = filter_bit_of(&octets(address));
        let existing = self.entry(address, ifindex, vlan)?;
        if existing.is_some_and(|entry| entry.mac == mac) {
            return self.set_filter_bit(bit);
        }
        // The slot first: a slot whose filter bit is clear is never read,
        // so it may hold anything until the bit is set.
        if let Some(index) = &mut self.index {
            index.unseal(key)?;
        }
        // Before the entry exists: the program must never see an entry
        // whose filter bit is clear (it would not be answered).
        self.set_filter_bit(bit)?;
        let slot = match existing {
            Some(entry) => entry.slot,
            None => {
                let slot = self.free_slot()?;
                let cpus = cpu_count()?;
                let zeros = || {
                    PerCpuValues::try_from(vec![0u64; cpus])
                        .map_err(|e| Error::io("sizing per-CPU counters", e))
                };
                self.vip_answered
                    .set(slot, zeros()?, 0)
                    .map_err(|e| Error::bpf("resetting the VIP counter", e))?;
                self.vip_refused
                    .set(slot, zeros()?, 0)
                    .map_err(|e| Error::bpf("resetting the VIP refusal counter", e))?;
                Self::required(
                    &mut self.vip_conflicts,
                    self.pins.as_ref(),
                    map_names::VIP_CONFLICTS,
                )?
                .set(slot, ConflictRecord::default(), 0)
                .map_err(|e| Error::bpf("resetting the VIP conflict record", e))?;
                slot
            }
        };
        let entry = VipEntry {
            mac,
            _pad: [0; 2],
            slot,
        };
        let (vips_v4, vips_v6) = self.tagged_vips()?;
        let result = match address {
            IpAddr::V4(a) => vips_v4.insert(
                VipKeyV4 {
                    addr: a.octets(),
                    ifindex,
                    vlan,
                },
                entry,
                0,
            ),
            IpAddr::V6(a) => vips_v6.insert(
                VipKeyV6 {
                    addr: a.octets(),
                    ifindex,
                    vlan,
                },
                entry,
                0,
            ),
        };
        result.map_err(|e| Error::bpf(format!("adding {address}"), e))?;
        self.refresh_index(key)
    }

    /// Seals `key`'s index slot again if it is the only VIP there.
    fn refresh_index(&mut self, key: Key) -> Result<()> {
        if self.index.is_none() {
            return Ok(());
        }
        let entries = self.keyed_entries()?;
        match &mut self.index {
            Some(index) => index.refresh(key, &entries),
            None => Ok(()),
        }
    }

    fn keyed_entries(&self) -> Result<Vec<(Key, VipEntry)>> {
        Ok(self
            .entries()?
            .into_iter()
            .map(|(address, ifindex, vlan, entry)| {
                (
                    Key {
                        address,
                        ifindex,
                        vlan,
                    },
                    entry,
                )
            })
            .collect())
    }

    /// Makes every index slot agree with the VIP hash maps (on start: the
    /// maps may come from a speaker without the index, or an interrupted
    /// update). Nothing to do on maps without an index.
    pub fn rebuild_index(&mut self) -> Result<()> {
        if self.index.is_none() {
            return Ok(());
        }
        let entries = self.keyed_entries()?;
        // The program reads a slot only when its filter bit is set, and a
        // VIP's slot is unsealed before its bit is set: the other slots
        // may stay as they are, which spares thousands of map reads on
        // every load.
        let bits = self.filter_bits()?;
        match &mut self.index {
            Some(index) => index.rebuild(&entries, &bits),
            None => Ok(()),
        }
    }

    /// The set bits of `VIP_FILTER`.
    fn filter_bits(&mut self) -> Result<Vec<u32>> {
        let filter = self.filter()?;
        let mut bits = Vec::new();
        for word_index in 0..FILTER_WORDS {
            let word = filter
                .get(&word_index, 0)
                .map_err(|e| Error::bpf("reading VIP_FILTER", e))?;
            bits.extend(
                (0..64)
                    .filter(|b| word & 1 << b != 0)
                    .map(|b| word_index * 64 + b),
            );
        }
        Ok(bits)
    }

    /// Removes `address` from interface `ifindex` behind `vlan`; false when
    /// it was not there.
    pub fn remove_vip(&mut self, address: IpAddr, ifindex: u32, vlan: VlanPath) -> Result<bool> {
        let key = Key {
            address,
            ifindex,
            vlan,
        };
        self.tagged_vips()?;
        if let Some(index) = &mut self.index {
            index.unseal(key)?;
        }
        let (vips_v4, vips_v6) = self.tagged_vips()?;
        let result = match address {
            IpAddr::V4(a) => vips_v4.remove(&VipKeyV4 {
                addr: a.octets(),
                ifindex,
                vlan,
            }),
            IpAddr::V6(a) => vips_v6.remove(&VipKeyV6 {
                addr: a.octets(),
                ifindex,
                vlan,
            }),
        };
        let removed = match result {
            Ok(()) => true,
            Err(MapError::KeyNotFound) => false,
            Err(e) => return Err(Error::bpf(format!("removing {address}"), e)),
        };
        // Clear the filter bit only when no remaining VIP shares it; a
        // stale set bit merely costs the program a hash lookup.
        let bit = filter_bit_of(&octets(address));
        let shared = self
            .entries()?
            .iter()
            .any(|(a, _, _, _)| filter_bit_of(&octets(*a)) == bit);
        if !shared {
            self.clear_filter_bit(bit)?;
        }
        self.refresh_index(key)?;
        Ok(removed)
    }

    /// Sets the filter bit of every VIP in the maps: maps pinned by a
    /// speaker that had no filter, or an interrupted update, leave VIPs
    /// the program would otherwise skip. Never clears a bit.
    pub fn ensure_filter(&mut self) -> Result<()> {
        for (address, _, _, _) in self.entries()? {
            self.set_filter_bit(filter_bit_of(&octets(address)))?;
        }
        Ok(())
    }

    fn filter(&mut self) -> Result<&mut Array<MapData, u64>> {
        Self::required(
            &mut self.vip_filter,
            self.pins.as_ref(),
            map_names::VIP_FILTER,
        )
    }

    fn set_filter_bit(&mut self, bit: u32) -> Result<()> {
        let filter = self.filter()?;
        let word = filter
            .get(&(bit / 64), 0)
            .map_err(|e| Error::bpf("reading VIP_FILTER", e))?;
        let set = word | 1 << (bit % 64);
        if set != word {
            filter
                .set(bit / 64, set, 0)
                .map_err(|e| Error::bpf("writing VIP_FILTER", e))?;
        }
        Ok(())
    }

    fn clear_filter_bit(&mut self, bit: u32) -> Result<()> {
        let filter = self.filter()?;
        let word = filter
            .get(&(bit / 64), 0)
            .map_err(|e| Error::bpf("reading VIP_FILTER", e))?;
        filter
            .set(bit / 64, word & !(1 << (bit % 64)), 0)
            .map_err(|e| Error::bpf("writing VIP_FILTER", e))
    }

    fn entry(&mut self, address: IpAddr, ifindex: u32, vlan: VlanPath) -> Result<Option<VipEntry>> {
        let (vips_v4, vips_v6) = self.tagged_vips()?;
        let result = match address {
            IpAddr::V4(a) => vips_v4.get(
                &VipKeyV4 {
                    addr: a.octets(),
                    ifindex,
                    vlan,
                },
                0,
            ),
            IpAddr::V6(a) => vips_v6.get(
                &VipKeyV6 {
                    addr: a.octets(),
                    ifindex,
                    vlan,
                },
                0,
            ),
        };
        match result {
            Ok(entry) => Ok(Some(entry)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(Error::bpf(format!("looking up {address}"), e)),
        }
    }

    fn entries(&self) -> Result<Vec<(IpAddr, u32, VlanPath, VipEntry)>> {
        let mut out = Vec::new();
        let v4_err = |e| Error::bpf("reading VIPS_V4", e);
        let v6_err = |e| Error::bpf("reading VIPS_V6", e);
        match &self.vips {
            VipMaps::Tagged { v4, v6 } => {
                for item in v4.iter() {
                    let (k, v) = item.map_err(v4_err)?;
                    out.push((IpAddr::V4(Ipv4Addr::from(k.addr)), k.ifindex, k.vlan, v));
                }
                for item in v6.iter() {
                    let (k, v) = item.map_err(v6_err)?;
                    out.push((IpAddr::V6(Ipv6Addr::from(k.addr)), k.ifindex, k.vlan, v));
                }
            }
            // Layouts 1 and 2 knew no VLANs: every key is untagged.
            VipMaps::Untagged { v4, v6 } => {
                for item in v4.iter() {
                    let (k, v) = item.map_err(v4_err)?;
                    let address = IpAddr::V4(Ipv4Addr::from(k.addr));
                    out.push((address, k.ifindex, VlanPath::UNTAGGED, v));
                }
                for item in v6.iter() {
                    let (k, v) = item.map_err(v6_err)?;
                    let address = IpAddr::V6(Ipv6Addr::from(k.addr));
                    out.push((address, k.ifindex, VlanPath::UNTAGGED, v));
                }
            }
        }
        Ok(out)
    }

    fn free_slot(&self) -> Result<u32> {
        let used: BTreeSet<u32> = self.entries()?.iter().map(|(_, _, _, e)| e.slot).collect();
        (0..MAX_VIPS)
            .find(|s| !used.contains(s))
            .ok_or(Error::TableFull(MAX_VIPS))
    }

    /// Every (VIP, interface) with its answered count, sorted by address.
    pub fn vips(&self) -> Result<Vec<VipRecord>> {
        let mut records = Vec::new();
        for (address, ifindex, vlan, entry) in self.entries()? {
            let answered = sum(&self
                .vip_answered
                .get(&entry.slot, 0)
                .map_err(|e| Error::bpf("reading VIP_ANSWERED", e))?);
            // The program counts refusals, not requests: see VIP_REFUSED.
            let requests = answered
                + sum(&self
                    .vip_refused
                    .get(&entry.slot, 0)
                    .map_err(|e| Error::bpf("reading VIP_REFUSED", e))?);
            // Layout 1 recorded no conflicts.
            let conflict = match &self.vip_conflicts {
                Some(conflicts) => conflicts
                    .get(&entry.slot, 0)
                    .map_err(|e| Error::bpf("reading VIP_CONFLICTS", e))?,
                None => ConflictRecord::default(),
            };
            let now = monotonic_now().as_nanos() as u64;
            records.push(VipRecord {
                address,
                ifindex,
                vlan,
                mac: entry.mac,
                answered,
                requests,
                conflicts: conflict.count,
                last_conflict: (conflict.count != 0).then(|| Conflict {
                    mac: conflict.mac,
                    age: Duration::from_nanos(now.saturating_sub(conflict.last_ns)),
                }),
            });
        }
        records.sort_by_key(|r| (r.address, r.ifindex, r.vlan));
        Ok(records)
    }

    /// Declares `slave` a bond slave of `master`: requests arriving on the
    /// slave are looked up as if they came in on the master.
    pub fn set_bond_slave(&mut self, slave: u32, master: u32) -> Result<()> {
        Self::required(
            &mut self.bond_slaves,
            self.pins.as_ref(),
            map_names::BOND_SLAVES,
        )?
        .insert(slave, master, 0)
        .map_err(|e| Error::bpf(format!("adding bond slave {slave}"), e))
    }

    /// Forgets `slave`; false when it was not declared.
    pub fn remove_bond_slave(&mut self, slave: u32) -> Result<bool> {
        let bond_slaves = Self::required(
            &mut self.bond_slaves,
            self.pins.as_ref(),
            map_names::BOND_SLAVES,
        )?;
        match bond_slaves.remove(&slave) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(Error::bpf(format!("removing bond slave {slave}"), e)),
        }
    }

    /// Every declared (slave, master) pair, sorted.
    pub fn bond_slaves(&self) -> Result<Vec<(u32, u32)>> {
        // Layouts before 3 had no bond slaves.
        let Some(bond_slaves) = &self.bond_slaves else {
            return Ok(Vec::new());
        };
        let mut pairs = bond_slaves
            .iter()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::bpf("reading BOND_SLAVES", e))?;
        pairs.sort();
        Ok(pairs)
    }

    /// The global verdict counters, summed over CPUs, in `Reason` order.
    pub fn reasons(&self) -> Result<Vec<(Reason, u64)>> {
        Reason::ALL
            .iter()
            .map(|&reason| Ok((reason, self.reason(reason)?)))
            .collect()
    }

    /// A reason appended after the pinned `REASONS` was created has no
    /// slot there: it reads as zero, so `speaker maps` keeps working.
    pub fn reason(&self, reason: Reason) -> Result<u64> {
        match self.reasons.get(&(reason as u32), 0) {
            Ok(values) => Ok(sum(&values)),
            Err(MapError::OutOfBounds { .. }) => Ok(0),
            Err(e) => Err(Error::bpf("reading REASONS", e)),
        }
    }

    /// Refreshes the heartbeat now; `max_age` replaces the limit when given
    /// (zero disables the switch).
    pub fn heartbeat(&mut self, max_age: Option<Duration>) -> Result<()> {
        write_heartbeat(&mut self.watchdog, max_age)
    }

    /// A writer for the heartbeat that can live on another thread.
    pub fn heartbeat_writer(&self) -> Result<HeartbeatWriter> {
        let fd = self
            .watchdog_fd
            .try_clone()
            .map_err(|e| Error::io("duplicating the WATCHDOG descriptor", e))?;
        let data = MapData::from_fd(fd)
            .map_err(|e| Error::bpf(format!("opening map {}", map_names::WATCHDOG), e))?;
        Ok(HeartbeatWriter {
            watchdog: typed(map_names::WATCHDOG, Map::Array(data))?,
        })
    }

    pub fn watchdog(&self) -> Result<WatchdogState> {
        let w = self
            .watchdog
            .get(&0, 0)
            .map_err(|e| Error::bpf("reading WATCHDOG", e))?;
        let now = monotonic_now().as_nanos() as u64;
        Ok(WatchdogState {
            heartbeat_age: (w.heartbeat_ns != 0)
                .then(|| Duration::from_nanos(now.saturating_sub(w.heartbeat_ns))),
            max_age: (w.max_age_ns != 0).then(|| Duration::from_nanos(w.max_age_ns)),
        })
    }
}

fn octets(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn sum(values: &PerCpuValues<u64>) -> u64 {
    values.iter().copied().fold(0u64, u64::wrapping_add)
}

fn cpu_count() -> Result<usize> {
    nr_cpus().map_err(|(what, e)| Error::io(format!("counting CPUs ({what})"), e))
}

/// Refuses pinned maps left by a speaker whose map types differ (a daemon of
/// another layout version still running, or not restarted since): read with
/// this speaker's types they would give garbage. Loading the object
/// migrates them instead (`migrate`).
fn check_layout(name: &'static str, data: &MapData, pins: &PinDir) -> Result<()> {
    let info = data
        .info()
        .map_err(|e| Error::bpf(format!("inspecting map {name}"), e))?;
    let expected: (usize, usize) = match name {
        map_names::VIPS_V4 => (size_of::<VipKeyV4>(), size_of::<VipEntry>()),
        map_names::VIPS_V6 => (size_of::<VipKeyV6>(), size_of::<VipEntry>()),
        map_names::VIP_ANSWERED
        | map_names::VIP_REFUSED
        | map_names::REASONS
        | map_names::VIP_FILTER => (4, 8),
        map_names::VIP_CONFLICTS => (4, size_of::<ConflictRecord>()),
        map_names::BOND_SLAVES => (4, 4),
        map_names::VIP_INDEX_V4 => (4, size_of::<VipIndexV4>()),
        map_names::VIP_INDEX_V6 => (4, size_of::<VipIndexV6>()),
        _ => (4, size_of::<Watchdog>()),
    };
    let shape = (info.key_size() as usize, info.value_size() as usize);
    // Layouts 1 and 2: keys without the vlan, read (`VipMaps::Untagged`).
    let untagged = match name {
        map_names::VIPS_V4 => shape == (size_of::<UntaggedKeyV4>(), size_of::<VipEntry>()),
        map_names::VIPS_V6 => shape == (size_of::<UntaggedKeyV6>(), size_of::<VipEntry>()),
        _ => false,
    };
    if shape != expected && !untagged {
        let shape = format!("key {} B, value {} B", info.key_size(), info.value_size());
        return Err(layout_mismatch(name, shape, pins));
    }
    Ok(())
}

/// The refusal of a write to maps of an older layout, or to one without
/// the map `name`.
fn read_only(pins: Option<&PinDir>, name: &'static str, shape: String) -> Error {
    match pins {
        Some(pins) => layout_mismatch(name, shape, pins),
        None => Error::Bpf {
            context: format!("writing {name}"),
            message: shape,
        },
    }
}

fn key_size(data: &MapData, name: &'static str) -> Result<usize> {
    Ok(data
        .info()
        .map_err(|e| Error::bpf(format!("inspecting map {name}"), e))?
        .key_size() as usize)
}

fn layout_mismatch(name: &'static str, shape: String, pins: &PinDir) -> Error {
    Error::LayoutMismatch {
        name,
        shape,
        found: super::migrate::describe_version(pins),
        ours: speaker_common::LAYOUT_VERSION,
        dir: pins.root().to_path_buf(),
    }
}

/// Needs root (BPF) and the built object, like the kernel tests.
#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use aya::programs::{TestRun, TestRunOptions};

    use super::*;
    use crate::dataplane::{Object, RESPONDER};

    const XDP_PASS: u32 = 2;
    const XDP_TX: u32 = 3;
    /// BPF_PROG_TEST_RUN runs the program as if the frame came in on lo.
    const IFINDEX: u32 = 1;
    const OUR_MAC: [u8; 6] = [0x02, 0x5e, 0, 0, 0, 0x10];
    const PEER_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x01];
    const OTHER_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x02];
    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    /// An Ethernet frame with an ARP packet (RFC 826), operation `op`.
    fn arp(
        eth_dst: [u8; 6],
        sender_mac: [u8; 6],
        op: u16,
        spa: Ipv4Addr,
        tpa: Ipv4Addr,
    ) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&eth_dst);
        frame.extend_from_slice(&sender_mac);
        frame.extend_from_slice(&0x0806u16.to_be_bytes());
        frame.extend_from_slice(&1u16.to_be_bytes());
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(&[6, 4]);
        frame.extend_from_slice(&op.to_be_bytes());
        frame.extend_from_slice(&sender_mac);
        frame.extend_from_slice(&spa.octets());
        frame.extend_from_slice(&[0; 6]);
        frame.extend_from_slice(&tpa.octets());
        frame
    }

    fn run(object: &mut Object, frame: &[u8]) -> u32 {
        run_out(object, frame).0
    }

    /// The verdict and, for an answer, its Ethernet source.
    fn run_out(object: &mut Object, frame: &[u8]) -> (u32, [u8; 6]) {
        let mut out = vec![0u8; frame.len() + 64];
        let verdict = object
            .program(RESPONDER)
            .unwrap()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN (needs root)")
            .return_value;
        (verdict, out[6..12].try_into().unwrap())
    }

    /// An IPv4 address other than `VIP` with the same filter bit: the same
    /// index slot.
    fn sharing_slot_with_vip() -> Ipv4Addr {
        let bit = filter_bit_of(&VIP.octets());
        (0..=u16::MAX)
            .map(|n| Ipv4Addr::new(10, 0, (n >> 8) as u8, n as u8))
            .find(|a| filter_bit_of(&a.octets()) == bit)
            .expect("65536 addresses over 4096 bits")
    }

    fn key(address: IpAddr, vlan: VlanPath) -> Key {
        Key {
            address,
            ifindex: IFINDEX,
            vlan,
        }
    }

    fn sealed(maps: &DataplaneMaps, address: IpAddr) -> Option<Key> {
        let index = maps.index.as_ref().expect("a loaded object has the index");
        index.sealed_at(address).unwrap().map(|(k, _)| k)
    }

    /// The speaker keeps the invariant the program relies on: a slot is
    /// sealed exactly when one VIP of its family hashes there, and every
    /// VIP is answered either way.
    #[test]
    fn the_index_holds_sole_keys_and_defers_shared_slots_to_the_hash_map() {
        let mut object = Object::load(None).expect("loading the XDP object (needs root)");
        let mut maps = object.take_maps().unwrap();
        let broadcast = [0xff; 6];
        let vip = IpAddr::V4(VIP);
        let tagged = VlanPath::single(100, false);
        maps.add_vip(vip, IFINDEX, VlanPath::UNTAGGED, OUR_MAC)
            .unwrap();
        assert_eq!(sealed(&maps, vip), Some(key(vip, VlanPath::UNTAGGED)));
        // An IPv6 VIP with the same last four bytes: the same slot number,
        // in the other family's index.
        let v6: IpAddr = "2001:db8::c000:20a".parse().unwrap();
        maps.add_vip(v6, IFINDEX, VlanPath::UNTAGGED, OUR_MAC)
            .unwrap();
        assert_eq!(sealed(&maps, v6), Some(key(v6, VlanPath::UNTAGGED)));
        assert_eq!(sealed(&maps, vip), Some(key(vip, VlanPath::UNTAGGED)));

        let other = sharing_slot_with_vip();
        maps.add_vip(IpAddr::V4(other), IFINDEX, VlanPath::UNTAGGED, OTHER_MAC)
            .unwrap();
        maps.add_vip(vip, IFINDEX, tagged, OUR_MAC).unwrap();
        assert_eq!(sealed(&maps, vip), None, "three keys share the slot");
        assert_eq!(
            run_out(&mut object, &arp(broadcast, PEER_MAC, 1, PEER, VIP)),
            (XDP_TX, OUR_MAC)
        );
        assert_eq!(
            run_out(&mut object, &arp(broadcast, PEER_MAC, 1, PEER, other)),
            (XDP_TX, OTHER_MAC)
        );

        assert!(maps
            .remove_vip(IpAddr::V4(other), IFINDEX, VlanPath::UNTAGGED)
            .unwrap());
        assert_eq!(sealed(&maps, vip), None, "two keys still share it");
        assert!(maps.remove_vip(vip, IFINDEX, tagged).unwrap());
        assert_eq!(sealed(&maps, vip), Some(key(vip, VlanPath::UNTAGGED)));
        assert_eq!(
            run_out(&mut object, &arp(broadcast, PEER_MAC, 1, PEER, VIP)),
            (XDP_TX, OUR_MAC)
        );
        assert_eq!(
            run(&mut object, &arp(broadcast, PEER_MAC, 1, PEER, other)),
            XDP_PASS,
            "a removed VIP is not answered"
        );

        // A new MAC reaches the slot too.
        maps.add_vip(vip, IFINDEX, VlanPath::UNTAGGED, OTHER_MAC)
            .unwrap();
        assert_eq!(
            run_out(&mut object, &arp(broadcast, PEER_MAC, 1, PEER, VIP)),
            (XDP_TX, OTHER_MAC)
        );
        assert!(maps.remove_vip(vip, IFINDEX, VlanPath::UNTAGGED).unwrap());
        assert_eq!(sealed(&maps, vip), None);
        assert_eq!(
            run(&mut object, &arp(broadcast, PEER_MAC, 1, PEER, VIP)),
            XDP_PASS
        );
    }

    /// What the program does with what it may find in a slot: a sealed
    /// slot is believed (it is the only way the answer can carry a MAC
    /// that is not in the hash map), a torn one is not, and `rebuild_index`
    /// puts both right.
    #[test]
    fn the_program_believes_sealed_slots_only() {
        let mut object = Object::load(None).expect("loading the XDP object (needs root)");
        let mut maps = object.take_maps().unwrap();
        let broadcast = [0xff; 6];
        let vip = IpAddr::V4(VIP);
        let request = arp(broadcast, PEER_MAC, 1, PEER, VIP);
        maps.add_vip(vip, IFINDEX, VlanPath::UNTAGGED, OUR_MAC)
            .unwrap();
        let real = maps
            .entry(vip, IFINDEX, VlanPath::UNTAGGED)
            .unwrap()
            .unwrap();
        let planted = VipEntry {
            mac: OTHER_MAC,
            ..real
        };
        let index = maps.index.as_mut().unwrap();
        index
            .force(key(vip, VlanPath::UNTAGGED), planted, true)
            .unwrap();
        assert_eq!(run_out(&mut object, &request), (XDP_TX, OTHER_MAC));

        let index = maps.index.as_mut().unwrap();
        index
            .force(key(vip, VlanPath::UNTAGGED), planted, false)
            .unwrap();
        assert_eq!(
            run_out(&mut object, &request),
            (XDP_TX, OUR_MAC),
            "a torn slot sends the program to the hash map"
        );

        // A sealed slot of another key says the address is no VIP.
        let other = IpAddr::V4(sharing_slot_with_vip());
        let index = maps.index.as_mut().unwrap();
        index
            .force(key(other, VlanPath::UNTAGGED), real, true)
            .unwrap();
        assert_eq!(run(&mut object, &request), XDP_PASS);

        maps.rebuild_index().unwrap();
        assert_eq!(sealed(&maps, vip), Some(key(vip, VlanPath::UNTAGGED)));
        assert_eq!(run_out(&mut object, &request), (XDP_TX, OUR_MAC));
    }

    fn counts(maps: &DataplaneMaps) -> (u64, u64) {
        let vips = maps.vips().unwrap();
        let vip = vips.iter().find(|v| v.address == VIP).unwrap();
        (vip.requests, vip.answered)
    }

    #[test]
    fn requests_count_every_request_for_the_vip_answered_or_refused() {
        let mut object = Object::load(None).expect("loading the XDP object (needs root)");
        let mut maps = object.take_maps().unwrap();
        maps.add_vip(IpAddr::V4(VIP), IFINDEX, VlanPath::UNTAGGED, OUR_MAC)
            .unwrap();
        assert_eq!(counts(&maps), (0, 0));

        let broadcast = [0xff; 6];
        assert_eq!(
            run(&mut object, &arp(broadcast, PEER_MAC, 1, PEER, VIP)),
            XDP_TX
        );
        assert_eq!(counts(&maps), (1, 1), "an answered request");

        // For our VIP but to another host's MAC: received, refused.
        assert_eq!(
            run(&mut object, &arp(OTHER_MAC, PEER_MAC, 1, PEER, VIP)),
            XDP_PASS
        );
        assert_eq!(counts(&maps), (2, 1), "a refused request");

        // Another MAC announcing our VIP is a conflict, not a request.
        assert_eq!(
            run(&mut object, &arp(broadcast, PEER_MAC, 2, VIP, VIP)),
            XDP_PASS
        );
        // A request for an address we do not own is not ours to count.
        let elsewhere = Ipv4Addr::new(192, 0, 2, 99);
        assert_eq!(
            run(&mut object, &arp(broadcast, PEER_MAC, 1, PEER, elsewhere)),
            XDP_PASS
        );
        assert_eq!(counts(&maps), (2, 1));

        // A stale heartbeat refuses the request, which still counts.
        maps.heartbeat(Some(Duration::from_nanos(1))).unwrap();
        // The program's clock is the coarse one (a scheduler tick behind).
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(
            run(&mut object, &arp(broadcast, PEER_MAC, 1, PEER, VIP)),
            XDP_PASS
        );
        assert_eq!(counts(&maps), (3, 1));

        // A new entry in a reused slot starts from zero.
        maps.remove_vip(IpAddr::V4(VIP), IFINDEX, VlanPath::UNTAGGED)
            .unwrap();
        maps.add_vip(IpAddr::V4(VIP), IFINDEX, VlanPath::UNTAGGED, OUR_MAC)
            .unwrap();
        assert_eq!(counts(&maps), (0, 0));
    }
}
