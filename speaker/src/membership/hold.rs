//! Restart holds: a speaker stopping for a restart asks its peers to keep
//! it as an election candidate for a bounded window, so that its IPs do not
//! move while the next process starts (issue 10, item 3).
//!
//! foca has no notion of "gone for a moment": once the restarting process
//! stops answering probes, it is suspected and declared down within
//! `max_detection`, and every peer re-elects. A hold keeps the held node in
//! the published member set whatever foca thinks of it, until the first of:
//! - a newer generation of that node becomes a foca member (the restarted
//!   process rejoined; foca's own view takes over, with no change in the set);
//! - the window, counted from when the hold was received, ends. Ordinary
//!   failure detection then decides: if no new process came, foca has long
//!   declared the node down and the others take over.
//!
//! The request travels as its own sealed datagram on the gossip socket. Its
//! first bytes ([`MAGIC`]) can never start a foca message: foca's postcard
//! header begins with the sender's node name, a varint length, and this
//! prefix would declare a name of over 11,000 bytes, longer than any
//! datagram foca accepts ([`super::MAX_DATAGRAM`]).

use std::collections::BTreeMap;
use std::time::Duration;

/// The longest hold a peer grants, whatever the request says: a restart
/// that takes longer is a crash for the others.
pub const MAX_HOLD: Duration = Duration::from_secs(120);

/// How many copies of a request go to each member: one lost datagram must
/// not turn a restart into a failover.
pub const REQUEST_COPIES: usize = 3;

/// 0xff: a varint continuation byte; with 'X' (0x58) next the name length
/// would be 0x7f + (0x58 << 7) = 11,391.
const MAGIC: [u8; 8] = [0xff, b'X', b'D', b'P', b'H', b'O', b'L', b'D'];

/// "Hold `node` (generation `generation`) for `window`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequest {
    pub node: String,
    pub generation: u32,
    pub window: Duration,
}

impl HoldRequest {
    /// MAGIC, generation (u32 BE), window in ms (u32 BE), node name (UTF-8).
    pub fn encode(&self) -> Vec<u8> {
        let window_ms = u32::try_from(self.window.as_millis()).unwrap_or(u32::MAX);
        let mut bytes = Vec::with_capacity(MAGIC.len() + 8 + self.node.len());
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&self.generation.to_be_bytes());
        bytes.extend_from_slice(&window_ms.to_be_bytes());
        bytes.extend_from_slice(self.node.as_bytes());
        bytes
    }

    /// `None` for anything that is not a hold request (foca's messages).
    pub fn decode(bytes: &[u8]) -> Option<HoldRequest> {
        let rest = bytes.strip_prefix(&MAGIC)?;
        let (generation, rest) = rest.split_first_chunk::<4>()?;
        let (window_ms, name) = rest.split_first_chunk::<4>()?;
        let node = std::str::from_utf8(name).ok()?;
        if node.is_empty() {
            return None;
        }
        Some(HoldRequest {
            node: node.to_owned(),
            generation: u32::from_be_bytes(*generation),
            window: Duration::from_millis(u64::from(u32::from_be_bytes(*window_ms))),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    generation: u32,
    until: Duration,
}

/// The holds this speaker grants, on the core's clock.
#[derive(Debug, Default)]
pub struct Holds {
    held: BTreeMap<String, Held>,
}

impl Holds {
    /// Grants `request` from `now`, bounded by [`MAX_HOLD`]; returns when it
    /// ends. A request for an older generation than one held is ignored.
    pub fn grant(&mut self, now: Duration, request: &HoldRequest) -> Option<Duration> {
        let until = now + request.window.min(MAX_HOLD);
        match self.held.get(&request.node) {
            Some(held) if held.generation > request.generation => None,
            _ => {
                self.held.insert(
                    request.node.clone(),
                    Held {
                        generation: request.generation,
                        until,
                    },
                );
                Some(until)
            }
        }
    }

    /// Drops the holds that ended by `now` and those whose node is a member
    /// again under a newer generation (`member_generation`: the newest
    /// generation foca has as a live member for a node name).
    pub fn expire(&mut self, now: Duration, member_generation: impl Fn(&str) -> Option<u32>) {
        self.held.retain(|node, held| {
            held.until > now && member_generation(node).is_none_or(|g| g <= held.generation)
        });
    }

    /// The nodes held at `now`.
    pub fn nodes(&self, now: Duration) -> impl Iterator<Item = &str> {
        self.held
            .iter()
            .filter(move |(_, held)| held.until > now)
            .map(|(node, _)| node.as_str())
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use foca::State;

    use super::super::{Key, SimulatedLan, Timers};
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    fn key() -> Key {
        Key::from_bytes([0x24; 32])
    }

    /// Three converged speakers; speaker 2 asks the others to hold it and
    /// stops without a word.
    fn restart_stop_of_speaker_2() -> SimulatedLan {
        let mut lan = SimulatedLan::new(Timers::fast_lan());
        for _ in 0..3 {
            lan.add_speaker(Some(&key()));
        }
        lan.join(1, &[0]);
        lan.join(2, &[0]);
        lan.run_until(Duration::from_secs(5), SimulatedLan::converged)
            .expect("converged");
        let now = lan.now();
        let requests: Vec<_> = {
            let core = lan.speaker_mut(2);
            core.request_hold(now, WINDOW);
            core.take_outgoing().collect()
        };
        assert_eq!(requests.len(), 2 * REQUEST_COPIES, "{requests:?}");
        for datagram in requests {
            lan.inject(SimulatedLan::addr(2), datagram.to, datagram.bytes.to_vec());
        }
        lan.crash(2);
        lan
    }

    fn everybody_holds_2(lan: &SimulatedLan) -> bool {
        let name = SimulatedLan::node_name(2);
        [0, 1].iter().all(|&i| lan.members(i).contains(&name))
    }

    #[test]
    fn a_held_speaker_stays_a_member_while_foca_declares_it_down() {
        let timers = Timers::fast_lan();
        let mut lan = restart_stop_of_speaker_2();
        let held_for = WINDOW - Duration::from_secs(1);
        assert!(timers.max_detection() * 2 < held_for);
        let dropped = lan.run_until(held_for, |lan| !everybody_holds_2(lan));
        assert_eq!(dropped, None, "node-2 left a member set while held");
        // foca did declare it down: the hold alone kept it.
        assert!(
            matches!(lan.speaker(0).state_of("node-2"), Some(State::Down) | None),
            "{:?}",
            lan.speaker(0).state_of("node-2")
        );
        // The new process rejoins under a newer generation: the set never
        // changes, and stays so past the window (foca's view took over).
        lan.start(2, 2, Some(&key()));
        lan.join(2, &[0]);
        lan.run_until(Duration::from_secs(5), SimulatedLan::converged)
            .expect("rejoined");
        let dropped = lan.run_until(WINDOW + Duration::from_secs(2), |lan| !lan.converged());
        assert_eq!(dropped, None, "the member sets changed after the rejoin");
        assert_eq!(lan.speaker(0).state_of("node-2"), Some(State::Alive));
    }

    #[test]
    fn without_a_new_speaker_the_hold_ends_with_the_window() {
        let mut lan = restart_stop_of_speaker_2();
        let dropped = lan
            .run_until(WINDOW + Duration::from_secs(2), |lan| {
                [0, 1]
                    .iter()
                    .all(|&i| !lan.members(i).contains(&SimulatedLan::node_name(2)))
            })
            .expect("node-2 dropped after the window");
        assert!(
            dropped >= WINDOW - Duration::from_millis(100),
            "dropped after {dropped:?}, inside the {WINDOW:?} window"
        );
    }

    #[test]
    fn a_stranger_cannot_be_held() {
        let mut lan = SimulatedLan::new(Timers::fast_lan());
        lan.add_speaker(Some(&key()));
        let request = HoldRequest {
            node: "phantom".into(),
            generation: 1,
            window: WINDOW,
        };
        // Sealed under the cluster key, but not from a member.
        let ring = super::super::keyring::Keyring::single(key());
        let bytes = super::super::seal::PacketSeal::new(Some(&ring), SimulatedLan::addr(5))
            .seal(&request.encode());
        lan.inject(SimulatedLan::addr(5), SimulatedLan::addr(0), bytes.to_vec());
        lan.run_for(Duration::from_millis(10));
        assert!(!lan.members(0).contains("phantom"));
    }

    fn request(node: &str, generation: u32, window_s: u64) -> HoldRequest {
        HoldRequest {
            node: node.into(),
            generation,
            window: Duration::from_secs(window_s),
        }
    }

    #[test]
    fn a_request_round_trips_and_foreign_bytes_are_not_one() {
        let sent = request("node-a", 1_700_000_000, 10);
        assert_eq!(HoldRequest::decode(&sent.encode()), Some(sent.clone()));
        // foca's header starts with a short name length.
        assert_eq!(HoldRequest::decode(b"\x06node-a..."), None);
        assert_eq!(HoldRequest::decode(&sent.encode()[..12]), None);
        assert_eq!(HoldRequest::decode(&MAGIC), None);
        let mut nameless = sent.encode();
        nameless.truncate(MAGIC.len() + 8);
        assert_eq!(HoldRequest::decode(&nameless), None);
    }

    #[test]
    fn a_hold_ends_with_its_window() {
        let mut holds = Holds::default();
        let at = Duration::from_secs(100);
        assert_eq!(
            holds.grant(at, &request("a", 5, 10)),
            Some(Duration::from_secs(110))
        );
        holds.expire(Duration::from_secs(109), |_| None);
        assert_eq!(
            holds.nodes(Duration::from_secs(109)).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(holds.nodes(Duration::from_secs(110)).count(), 0);
        holds.expire(Duration::from_secs(110), |_| None);
        assert!(holds.is_empty());
    }

    #[test]
    fn a_hold_ends_when_a_newer_generation_is_a_member() {
        let mut holds = Holds::default();
        holds.grant(Duration::ZERO, &request("a", 5, 10));
        // The old generation still listed (suspected): still held.
        holds.expire(Duration::from_secs(1), |_| Some(5));
        assert!(!holds.is_empty());
        holds.expire(Duration::from_secs(2), |n| (n == "a").then_some(6));
        assert!(holds.is_empty());
    }

    #[test]
    fn the_window_is_bounded_and_stale_generations_are_ignored() {
        let mut holds = Holds::default();
        assert_eq!(
            holds.grant(Duration::ZERO, &request("a", 5, 3600)),
            Some(MAX_HOLD)
        );
        assert_eq!(holds.grant(Duration::ZERO, &request("a", 4, 10)), None);
        assert_eq!(
            holds.nodes(MAX_HOLD - Duration::from_secs(1)).count(),
            1,
            "the stale request must not shorten the hold"
        );
    }
}
