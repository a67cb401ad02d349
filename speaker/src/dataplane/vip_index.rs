//! The VIP index (`VIP_INDEX_V4`, `VIP_INDEX_V6`): derived from the VIP hash
//! maps, kept so that the program finds a VIP with an array lookup, which
//! the verifier inlines, rather than a hash map lookup, which is two kernel
//! calls (see `speaker_common::VipIndexV4` and docs/dataplane.md, "VIP
//! lookup").
//!
//! The invariant the program relies on: a sealed slot holds the *only* VIP
//! key of its family whose address has the slot's filter bit, with its
//! current entry. Every change keeps it at every instant the program can
//! observe: a slot is unsealed (zeroed) before the hash map changes under
//! it and sealed again afterwards only when one key is left, so in between
//! the program asks the hash map, which is the record.

use std::{collections::BTreeMap, net::IpAddr};

use aya::maps::{Array, MapData};
use speaker_common::{
    filter_bit_of, map_names, VipEntry, VipIndexV4, VipIndexV6, VipKeyV4, VipKeyV6, VlanPath,
};

use crate::error::{Error, Result};

/// A VIP key of either family, as the hash maps hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub address: IpAddr,
    pub ifindex: u32,
    pub vlan: VlanPath,
}

impl Key {
    fn bit(&self) -> u32 {
        filter_bit_of(&octets(self.address))
    }
}

fn octets(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The two index maps.
pub struct VipIndex {
    v4: Array<MapData, VipIndexV4>,
    v6: Array<MapData, VipIndexV6>,
}

/// What a slot should hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    V4(VipIndexV4),
    V6(VipIndexV6),
}

impl Slot {
    /// The sealed slot of `key` and `entry`.
    fn sealed(key: Key, entry: VipEntry) -> Slot {
        match key.address {
            IpAddr::V4(a) => Slot::V4(VipIndexV4::sealed(
                VipKeyV4 {
                    addr: a.octets(),
                    ifindex: key.ifindex,
                    vlan: key.vlan,
                },
                entry,
            )),
            IpAddr::V6(a) => Slot::V6(VipIndexV6::sealed(
                VipKeyV6 {
                    addr: a.octets(),
                    ifindex: key.ifindex,
                    vlan: key.vlan,
                },
                entry,
            )),
        }
    }

    /// The unsealed slot of `address`'s family.
    fn empty(address: IpAddr) -> Slot {
        match address {
            IpAddr::V4(_) => Slot::V4(VipIndexV4::default()),
            IpAddr::V6(_) => Slot::V6(VipIndexV6::default()),
        }
    }
}

/// What the slot of a key should hold, given every VIP of its family whose
/// address has the same filter bit (the key's own included, if present).
fn desired(address: IpAddr, sharing: &[(Key, VipEntry)]) -> Slot {
    match sharing {
        [(key, entry)] => Slot::sealed(*key, *entry),
        _ => Slot::empty(address),
    }
}

impl VipIndex {
    pub fn new(v4: Array<MapData, VipIndexV4>, v6: Array<MapData, VipIndexV6>) -> Self {
        VipIndex { v4, v6 }
    }

    fn read(&self, address: IpAddr, bit: u32) -> Result<Slot> {
        Ok(match address {
            IpAddr::V4(_) => Slot::V4(
                self.v4
                    .get(&bit, 0)
                    .map_err(|e| Error::bpf(format!("reading {}", map_names::VIP_INDEX_V4), e))?,
            ),
            IpAddr::V6(_) => Slot::V6(
                self.v6
                    .get(&bit, 0)
                    .map_err(|e| Error::bpf(format!("reading {}", map_names::VIP_INDEX_V6), e))?,
            ),
        })
    }

    fn write(&mut self, bit: u32, slot: Slot) -> Result<()> {
        match slot {
            Slot::V4(value) => self
                .v4
                .set(bit, value, 0)
                .map_err(|e| Error::bpf(format!("writing {}", map_names::VIP_INDEX_V4), e)),
            Slot::V6(value) => self
                .v6
                .set(bit, value, 0)
                .map_err(|e| Error::bpf(format!("writing {}", map_names::VIP_INDEX_V6), e)),
        }
    }

    /// Before the hash maps change for `key`: its slot no longer vouches
    /// for any key (the program asks the hash maps).
    pub fn unseal(&mut self, key: Key) -> Result<()> {
        let bit = key.bit();
        let empty = Slot::empty(key.address);
        if self.read(key.address, bit)? != empty {
            self.write(bit, empty)?;
        }
        Ok(())
    }

    /// After the hash maps changed for `key`: its slot sealed again when
    /// exactly one VIP of its family hashes there. `entries` are all VIPs.
    pub fn refresh(&mut self, key: Key, entries: &[(Key, VipEntry)]) -> Result<()> {
        let bit = key.bit();
        let sharing: Vec<(Key, VipEntry)> = entries
            .iter()
            .filter(|(k, _)| k.address.is_ipv4() == key.address.is_ipv4() && k.bit() == bit)
            .copied()
            .collect();
        let slot = desired(key.address, &sharing);
        if self.read(key.address, bit)? != slot {
            self.write(bit, slot)?;
        }
        Ok(())
    }

    /// The slots `bits` made to agree with `entries` (all VIPs), in both
    /// families: on start, after maps pinned before the index (layout 3)
    /// or an interrupted update.
    pub fn rebuild(&mut self, entries: &[(Key, VipEntry)], bits: &[u32]) -> Result<()> {
        let mut by_slot: BTreeMap<(bool, u32), Vec<(Key, VipEntry)>> = BTreeMap::new();
        for &(key, entry) in entries {
            by_slot
                .entry((key.address.is_ipv4(), key.bit()))
                .or_default()
                .push((key, entry));
        }
        let families = [IpAddr::from([0u8; 4]), IpAddr::from([0u8; 16])];
        for family in families {
            for &bit in bits {
                let sharing = by_slot
                    .get(&(family.is_ipv4(), bit))
                    .map_or(&[][..], Vec::as_slice);
                let slot = desired(family, sharing);
                if self.read(family, bit)? != slot {
                    self.write(bit, slot)?;
                }
            }
        }
        Ok(())
    }

    /// The sealed key and entry of `address`'s slot, if any.
    #[cfg(test)]
    pub fn sealed_at(&self, address: IpAddr) -> Result<Option<(Key, VipEntry)>> {
        let bit = filter_bit_of(&octets(address));
        Ok(match self.read(address, bit)? {
            Slot::V4(s) if s.is_sealed() => Some((
                Key {
                    address: IpAddr::from(s.key.addr),
                    ifindex: s.key.ifindex,
                    vlan: s.key.vlan,
                },
                s.entry,
            )),
            Slot::V6(s) if s.is_sealed() => Some((
                Key {
                    address: IpAddr::from(s.key.addr),
                    ifindex: s.key.ifindex,
                    vlan: s.key.vlan,
                },
                s.entry,
            )),
            _ => None,
        })
    }

    /// Writes `address`'s slot as given, sealed or not: for tests that
    /// show what the program does with what it may find there.
    #[cfg(test)]
    pub fn force(&mut self, key: Key, entry: VipEntry, sealed: bool) -> Result<()> {
        let mut slot = Slot::sealed(key, entry);
        if !sealed {
            match &mut slot {
                Slot::V4(s) => s.seal ^= 2,
                Slot::V6(s) => s.seal ^= 2,
            }
        }
        self.write(key.bit(), slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(address: &str, ifindex: u32) -> Key {
        Key {
            address: address.parse().unwrap(),
            ifindex,
            vlan: VlanPath::UNTAGGED,
        }
    }

    fn entry(slot: u32) -> VipEntry {
        VipEntry {
            mac: [2, 0, 0, 0, 0, slot as u8],
            _pad: [0; 2],
            slot,
        }
    }

    #[test]
    fn a_slot_is_sealed_only_for_a_sole_key() {
        let a = key("192.0.2.1", 2);
        assert_eq!(
            desired(a.address, &[(a, entry(1))]),
            Slot::sealed(a, entry(1))
        );
        assert_eq!(desired(a.address, &[]), Slot::empty(a.address));
        let same_ip_elsewhere = key("192.0.2.1", 3);
        assert_eq!(
            desired(a.address, &[(a, entry(1)), (same_ip_elsewhere, entry(2))]),
            Slot::empty(a.address)
        );
        let v6 = key("2001:db8::1", 2);
        assert_eq!(desired(v6.address, &[]), Slot::V6(VipIndexV6::default()));
        assert_eq!(
            desired(v6.address, &[(v6, entry(4))]),
            Slot::sealed(v6, entry(4))
        );
    }
}
