//! The maps shared with the speaker, and the counting helpers. Types and names
//! come from `speaker-common` so both sides agree on every byte.

use aya_ebpf::{
    btf_maps::{Array, HashMap, PerCpuArray},
    macros::btf_map,
};
use speaker_common::{Reason, VipEntry, VipKeyV4, VipKeyV6, Watchdog, MAX_VIPS};

#[btf_map]
pub static VIPS_V4: HashMap<VipKeyV4, VipEntry, { MAX_VIPS as usize }> = HashMap::new();

#[btf_map]
pub static VIPS_V6: HashMap<VipKeyV6, VipEntry, { MAX_VIPS as usize }> = HashMap::new();

/// Requests answered, per (VIP, interface) slot and per CPU.
#[btf_map]
pub static VIP_ANSWERED: PerCpuArray<u64, { MAX_VIPS as usize }> = PerCpuArray::new();

/// One counter per `Reason`, per CPU.
#[btf_map]
pub static REASONS: PerCpuArray<u64, { Reason::COUNT as usize }> = PerCpuArray::new();

#[btf_map]
pub static WATCHDOG: Array<Watchdog, 1> = Array::new();

#[inline(always)]
fn bump(map: &PerCpuArray<u64, { MAX_VIPS as usize }>, index: u32) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; nothing else on this CPU runs concurrently.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
pub fn count_reason(reason: Reason) {
    if let Some(counter) = REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
pub fn count_answer(entry: &VipEntry) {
    bump(&VIP_ANSWERED, entry.slot);
}

#[inline(always)]
pub fn vip_v4(addr: [u8; 4], ifindex: u32) -> Option<VipEntry> {
    // SAFETY: the entry is copied out at once; a concurrent update can at worst
    // give a mix of old and new MAC for this one frame.
    unsafe { VIPS_V4.get(VipKeyV4 { addr, ifindex }).copied() }
}

#[inline(always)]
pub fn vip_v6(addr: [u8; 16], ifindex: u32) -> Option<VipEntry> {
    // SAFETY: as in `vip_v4`.
    unsafe { VIPS_V6.get(VipKeyV6 { addr, ifindex }).copied() }
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
    // SAFETY: helper without arguments.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    now.saturating_sub(watchdog.heartbeat_ns) <= watchdog.max_age_ns
}
