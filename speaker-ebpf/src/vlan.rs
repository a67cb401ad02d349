//! 802.1Q and 802.1ad tags (IEEE 802.1Q §9.5): one tag, or two stacked
//! (an 802.1ad or 802.1Q outer tag around an 802.1Q inner tag, "QinQ").
//! The tags become the VIP key's `VlanPath`, so a request is answered only
//! for a VIP announced on exactly its VLAN(s); the answer is the request's
//! frame rewritten, with the tags left where they are.

use speaker_common::{Reason, VlanPath};

use crate::{
    ethernet::{Link, ETHERTYPE_QINQ, ETHERTYPE_VLAN},
    frame::Frame,
    verdict::Verdict,
};

/// Offsets from the start of the frame. The outer TPID sits where an
/// untagged frame has its EtherType; each tag is a TPID and a TCI.
mod field {
    const OUTER: usize = crate::ethernet::field::ETHERTYPE;
    const TAG_LEN: usize = 4;
    pub const OUTER_TCI: usize = OUTER + 2;
    /// After one tag: the payload's EtherType, or the inner tag's TPID.
    pub const AFTER_OUTER: usize = OUTER + TAG_LEN;
    pub const INNER_TCI: usize = AFTER_OUTER + 2;
    pub const AFTER_INNER: usize = AFTER_OUTER + TAG_LEN;
    /// Where the payload starts behind one tag, and behind two.
    pub const PAYLOAD_SINGLE: usize = AFTER_OUTER + 2;
    pub const PAYLOAD_STACKED: usize = AFTER_INNER + 2;
}

/// Where the payload starts behind one tag, and behind two.
pub const PAYLOAD_SINGLE: usize = field::PAYLOAD_SINGLE;
pub const PAYLOAD_STACKED: usize = field::PAYLOAD_STACKED;

/// VID 0 marks a priority-tagged frame (no VLAN) and 0xfff is reserved
/// (802.1Q Table 9-2): neither names a VLAN a VIP can be announced on.
const VID_PRIORITY_ONLY: u16 = 0;
const VID_RESERVED: u16 = VlanPath::VID_MASK;

/// The VID of a TCI (PCP and DEI dropped), marked 802.1ad when the tag's
/// TPID says so; `None` for a VID that names no VLAN.
#[inline(always)]
fn tag(tpid: u16, tci: u16) -> Option<u16> {
    let vid = tci & VlanPath::VID_MASK;
    if vid == VID_PRIORITY_ONLY || vid == VID_RESERVED {
        return None;
    }
    Some(if tpid == ETHERTYPE_QINQ {
        vid | VlanPath::AD
    } else {
        vid
    })
}

/// The payload's EtherType behind the tags of a frame whose EtherType is a
/// TPID (`outer_tpid`), and where the payload starts with which tags.
/// `Err`: the verdict for a frame we do not parse further.
#[inline(always)]
pub fn untag(frame: &Frame, outer_tpid: u16) -> Result<(u16, Link), Verdict> {
    let Some(single) = frame.bounded::<{ field::PAYLOAD_SINGLE }>() else {
        return Err(Verdict::pass(Reason::Truncated));
    };
    let Some(outer) = tag(outer_tpid, single.get_be16::<{ field::OUTER_TCI }>()) else {
        return Err(Verdict::pass(Reason::Unsupported));
    };
    let next = single.get_be16::<{ field::AFTER_OUTER }>();
    match next {
        ETHERTYPE_VLAN => {}
        // An 802.1ad tag inside another: not a stack 802.1ad defines.
        ETHERTYPE_QINQ => return Err(Verdict::pass(Reason::Unsupported)),
        _ => {
            let link = Link {
                l3: field::PAYLOAD_SINGLE,
                vlan: VlanPath { outer, inner: 0 },
            };
            return Ok((next, link));
        }
    }
    let Some(stacked) = frame.bounded::<{ field::PAYLOAD_STACKED }>() else {
        return Err(Verdict::pass(Reason::Truncated));
    };
    let Some(inner) = tag(ETHERTYPE_VLAN, stacked.get_be16::<{ field::INNER_TCI }>()) else {
        return Err(Verdict::pass(Reason::Unsupported));
    };
    let payload = stacked.get_be16::<{ field::AFTER_INNER }>();
    if payload == ETHERTYPE_VLAN || payload == ETHERTYPE_QINQ {
        // Three tags or more: VlanPath holds two.
        return Err(Verdict::pass(Reason::Unsupported));
    }
    let link = Link {
        l3: field::PAYLOAD_STACKED,
        vlan: VlanPath { outer, inner },
    };
    Ok((payload, link))
}
