//! The maps shared with the speaker, and the counting helpers. Types and names
//! come from `speaker-common` so both sides agree on every byte.

use aya_ebpf::{
    btf_maps::{Array, HashMap, PerCpuArray},
    macros::btf_map,
};
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use speaker_common::{
    filter_bit, ConflictRecord, Reason, VipEntry, VipIndexV4, VipIndexV6, VipKeyV4, VipKeyV6,
    VlanPath, Watchdog, FILTER_BITS_LOG2, FILTER_WORDS, MAX_VIPS,
};

use crate::frame::{Ipv4, Ipv6, Mac};

#[btf_map]
pub static VIPS_V4: HashMap<VipKeyV4, VipEntry, { MAX_VIPS as usize }> = HashMap::new();

#[btf_map]
pub static VIPS_V6: HashMap<VipKeyV6, VipEntry, { MAX_VIPS as usize }> = HashMap::new();

/// Requests answered, per (VIP, interface) slot and per CPU.
#[btf_map]
pub static VIP_ANSWERED: PerCpuArray<u64, { MAX_VIPS as usize }> = PerCpuArray::new();

/// Valid requests for the VIP refused after the lookup (wrong Ethernet
/// destination, dead-man switch, resize failure), per (VIP, interface) slot
/// and per CPU. Requests received (MetalLB's
/// `metallb_layer2_requests_received`) are answered + refused: counting the
/// refusals rather than every request keeps the answer path at one counter.
/// Gratuitous announcements of the VIP (conflict, looped) are not requests.
#[btf_map]
pub static VIP_REFUSED: PerCpuArray<u64, { MAX_VIPS as usize }> = PerCpuArray::new();

/// One counter per `Reason`, per CPU.
#[btf_map]
pub static REASONS: PerCpuArray<u64, { Reason::COUNT as usize }> = PerCpuArray::new();

#[btf_map]
pub static WATCHDOG: Array<Watchdog, 1> = Array::new();

/// A bit per address hash; clear: no VIP has it (see `speaker_common::filter_bit`).
/// An array lookup is inlined by the verifier, a hash lookup is not.
#[btf_map]
pub static VIP_FILTER: Array<u64, { FILTER_WORDS as usize }> = Array::new();

/// Claims of our VIPs by other MACs, per (VIP, interface) slot.
#[btf_map]
pub static VIP_CONFLICTS: Array<ConflictRecord, { MAX_VIPS as usize }> = Array::new();

/// Bond slaves of announce interfaces: slave ifindex to master ifindex. In
/// native mode the program runs on each slave with the slave's
/// `ingress_ifindex`, while VIPs are keyed by the master.
#[btf_map]
pub static BOND_SLAVES: HashMap<u32, u32, { MAX_VIPS as usize }> = HashMap::new();

/// The VIP index: slot `filter_bit(address)` holds the one VIP key whose
/// address hashes there, sealed, or nothing (see
/// `speaker_common::VipIndexV4`): the answer paths find their VIP without a
/// hash map lookup, which costs two kernel calls.
#[btf_map]
pub static VIP_INDEX_V4: Array<VipIndexV4, { 1 << FILTER_BITS_LOG2 }> = Array::new();

#[btf_map]
pub static VIP_INDEX_V6: Array<VipIndexV6, { 1 << FILTER_BITS_LOG2 }> = Array::new();

/// False only when no VIP's address has filter bit `bit`: the lookups can
/// be skipped.
#[inline(always)]
fn may_be_vip(bit: u32) -> bool {
    match VIP_FILTER.get(bit >> 6) {
        Some(word) => *word & (1u64 << (bit & 63)) != 0,
        None => true,
    }
}

/// Records that `mac` claimed the VIP of `entry`.
#[inline(always)]
pub fn record_conflict(entry: &VipEntry, mac: Mac) {
    let Some(record) = VIP_CONFLICTS.get_ptr_mut(entry.slot) else {
        return;
    };
    // SAFETY: a map value pointer, valid for the program's run; the count is
    // shared by all CPUs, hence atomic. The MAC and time of concurrent claims
    // may mix, which only blurs which of them was last.
    unsafe {
        // BPF has an atomic add but no compare-and-swap, so the target
        // offers no `AtomicU64::fetch_add`; the intrinsic is the add.
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*record).count, 1);
        (*record).last_ns = now_ns();
        (*record).mac = core::mem::transmute::<Mac, [u8; 6]>(mac);
    }
}

#[inline(always)]
pub fn count_reason(reason: Reason) {
    if let Some(counter) = REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: this CPU's slot; nothing else runs on it concurrently.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
pub fn count_answer(entry: &VipEntry) {
    if let Some(counter) = VIP_ANSWERED.get_ptr_mut(entry.slot) {
        // SAFETY: this CPU's slot.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
pub fn count_refused(entry: &VipEntry) {
    if let Some(counter) = VIP_REFUSED.get_ptr_mut(entry.slot) {
        // SAFETY: this CPU's slot.
        unsafe { *counter += 1 };
    }
}

/// What the VIP index says about a key.
enum Indexed {
    /// The slot's key: this entry.
    Found(VipEntry),
    /// The slot holds another key, the only VIP whose address hashes
    /// there: the key is no VIP (on a bond slave, after the master's key
    /// was tried).
    Absent,
    /// No sealed key in the slot (several VIPs hash there, or the speaker
    /// is rewriting it): the hash map decides.
    Unknown,
}

/// A slot of either index, as the lookup reads it.
trait IndexSlot: Copy {
    type Address: PartialEq;
    fn is_sealed(&self) -> bool;
    fn address(&self) -> Self::Address;
    fn ifindex(&self) -> u32;
    fn vlan(&self) -> VlanPath;
    fn entry(&self) -> VipEntry;
}

impl IndexSlot for VipIndexV4 {
    type Address = [u8; 4];
    #[inline(always)]
    fn is_sealed(&self) -> bool {
        VipIndexV4::is_sealed(self)
    }
    #[inline(always)]
    fn address(&self) -> [u8; 4] {
        self.key.addr
    }
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.key.ifindex
    }
    #[inline(always)]
    fn vlan(&self) -> VlanPath {
        self.key.vlan
    }
    #[inline(always)]
    fn entry(&self) -> VipEntry {
        self.entry
    }
}

impl IndexSlot for VipIndexV6 {
    type Address = [u8; 16];
    #[inline(always)]
    fn is_sealed(&self) -> bool {
        VipIndexV6::is_sealed(self)
    }
    #[inline(always)]
    fn address(&self) -> [u8; 16] {
        self.key.addr
    }
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.key.ifindex
    }
    #[inline(always)]
    fn vlan(&self) -> VlanPath {
        self.key.vlan
    }
    #[inline(always)]
    fn entry(&self) -> VipEntry {
        self.entry
    }
}

/// What the index slot `slot` says about (`address`, `ifindex`, `vlan`).
#[inline(always)]
fn indexed<S: IndexSlot>(
    slot: Option<&S>,
    address: S::Address,
    ifindex: u32,
    vlan: VlanPath,
) -> Indexed {
    let Some(slot) = slot else {
        return Indexed::Unknown;
    };
    // One read of the slot: the seal is checked on the copy that is used.
    // SAFETY: a map value pointer, valid for the program's run.
    let slot = unsafe { core::ptr::read_volatile(slot) };
    if !slot.is_sealed() {
        return Indexed::Unknown;
    }
    if slot.address() != address || slot.vlan() != vlan {
        return Indexed::Absent;
    }
    // The same address on another interface: the frame may have come in
    // on a slave of the slot's bond.
    if slot.ifindex() == ifindex || bond_master(ifindex) == Some(slot.ifindex()) {
        return Indexed::Found(slot.entry());
    }
    Indexed::Absent
}

/// The VIP entry for `addr` on `ifindex` behind `vlan`: the filter, then
/// the index, then (only where the index cannot tell) the hash map. When
/// the frame came in on a bond slave (native mode runs the program on each
/// slave, with the slave's `ingress_ifindex`), the bond master's key is
/// tried next: only after the filter said the address may be a VIP, so the
/// miss path of other hosts' addresses pays nothing for bonds.
#[inline(always)]
pub fn vip_v4(addr: Ipv4, ifindex: u32, vlan: VlanPath) -> Option<VipEntry> {
    // SAFETY: [u16; 2] and [u8; 4] have the same size and any bit pattern.
    let addr: [u8; 4] = unsafe { core::mem::transmute(addr) };
    let bit = filter_bit(u32::from_ne_bytes(addr));
    if !may_be_vip(bit) {
        return None;
    }
    match indexed(VIP_INDEX_V4.get(bit), addr, ifindex, vlan) {
        Indexed::Found(entry) => return Some(entry),
        Indexed::Absent => return None,
        Indexed::Unknown => {}
    }
    let key = VipKeyV4 {
        addr,
        ifindex,
        vlan,
    };
    // SAFETY: the entry is copied out at once; a concurrent update can at worst
    // give a mix of old and new MAC for this one frame.
    if let Some(entry) = unsafe { VIPS_V4.get(key) } {
        return Some(*entry);
    }
    let master = bond_master(ifindex)?;
    // SAFETY: as above.
    unsafe {
        VIPS_V4
            .get(VipKeyV4 {
                ifindex: master,
                ..key
            })
            .copied()
    }
}

#[inline(always)]
pub fn vip_v6(addr: Ipv6, ifindex: u32, vlan: VlanPath) -> Option<VipEntry> {
    let bit = filter_bit(addr[3]);
    if !may_be_vip(bit) {
        return None;
    }
    // SAFETY: [u32; 4] and [u8; 16] have the same size and any bit pattern.
    let addr: [u8; 16] = unsafe { core::mem::transmute(addr) };
    match indexed(VIP_INDEX_V6.get(bit), addr, ifindex, vlan) {
        Indexed::Found(entry) => return Some(entry),
        Indexed::Absent => return None,
        Indexed::Unknown => {}
    }
    let key = VipKeyV6 {
        addr,
        ifindex,
        vlan,
    };
    // SAFETY: as in `vip_v4`.
    if let Some(entry) = unsafe { VIPS_V6.get(key) } {
        return Some(*entry);
    }
    let master = bond_master(ifindex)?;
    // SAFETY: as in `vip_v4`.
    unsafe {
        VIPS_V6
            .get(VipKeyV6 {
                ifindex: master,
                ..key
            })
            .copied()
    }
}

#[inline(always)]
fn bond_master(slave: u32) -> Option<u32> {
    // SAFETY: a u32 copied out at once.
    unsafe { BOND_SLAVES.get(slave).copied() }
}

/// False when the dead-man switch has tripped: the control plane has not
/// refreshed the heartbeat within the limit, so another node may own our VIPs.
#[inline(always)]
pub fn control_plane_alive() -> bool {
    let Some(watchdog) = WATCHDOG.get(0) else {
        return true;
    };
    if watchdog.max_age_ns == 0 {
        return true;
    }
    // A coarse clock lagging the heartbeat's by up to a tick reads as age 0.
    now_ns().saturating_sub(watchdog.heartbeat_ns) <= watchdog.max_age_ns
}

/// The coarse clock as last read on this CPU, and the tick (`jiffies`) it
/// was read at.
#[repr(C)]
pub struct CoarseClock {
    jiffies: u64,
    ns: u64,
}

/// Program-private (not pinned): a cache, valid for one tick.
#[btf_map]
static COARSE_CLOCK: PerCpuArray<CoarseClock, 1> = PerCpuArray::new();

/// CLOCK_MONOTONIC, to the scheduler tick: `bpf_ktime_get_coarse_ns`
/// reads the time the tick last stored, where `bpf_ktime_get_ns` reads the
/// clock source (in a VM, a paravirtual clock costing tens of ns, on every
/// answer). The dead-man limit is seconds and a conflict's age is shown to
/// a tenth of a second: a few ms of lag change neither.
///
/// Even the coarse clock is a kernel call, about 30 ns on every answer
/// where `ret` is costly (AMD SRSO "Safe RET"; BENCHMARKS.md, the armed
/// rows). It only moves at a tick, when `jiffies` does, and
/// `bpf_jiffies64` is inlined by the verifier (a load): so the clock is
/// read once per tick and CPU, and the reading reused until `jiffies`
/// moves. The tick updates `jiffies` just before the time, so a reading
/// may lag by one more tick.
#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: helpers without arguments.
    let jiffies = unsafe { aya_ebpf::helpers::bpf_jiffies64() };
    let Some(cached) = COARSE_CLOCK.get_ptr_mut(0) else {
        // SAFETY: as above.
        return unsafe { aya_ebpf::helpers::bpf_ktime_get_coarse_ns() };
    };
    // SAFETY: this CPU's slot; nothing else runs on it concurrently.
    unsafe {
        if (*cached).jiffies != jiffies {
            (*cached).ns = aya_ebpf::helpers::bpf_ktime_get_coarse_ns();
            (*cached).jiffies = jiffies;
        }
        (*cached).ns
    }
}
