//! Which speakers are alive: SWIM membership over UDP (foca), the liveness
//! source MetalLB gets from hashicorp/memberlist.
//!
//! - Identity ([`SpeakerId`]): Kubernetes node name, gossip address (default
//!   port [`DEFAULT_GOSSIP_PORT`], 7946 like memberlist) and a generation, so
//!   a restarted speaker replaces its old self at once.
//! - Every datagram is sealed with XChaCha20-Poly1305 under the primary key
//!   of a [`Keyring`] of shared 32-byte [`Key`]s (file formats on [`Key`]) and
//!   opened with any key of it, so keys rotate without a split; datagrams that
//!   fail authentication are dropped and counted in
//!   [`GossipStats::auth_failures`], replayed ones in
//!   [`GossipStats::replayed`]. Without a key gossip is plaintext and a
//!   warning is logged.
//! - [`Core`] is the protocol without I/O (time and datagrams are arguments);
//!   [`Gossip`] runs it on tokio and publishes the member set on a watch
//!   channel; [`SimulatedLan`] runs many cores on a simulated network.
//!
//! # Who is a member
//!
//! The published set holds this speaker and every speaker foca considers
//! Alive **or Suspect**; a speaker leaves the set only once declared Down
//! (failed to refute suspicion in time) or after leaving gracefully. This is
//! memberlist's behaviour, which MetalLB relies on: memberlist tells MetalLB
//! about a node only on join and on dead/left, never on suspicion. Suspicion
//! is one prober's opinion — often the prober's own network hiccup — and is
//! refuted within a gossip round when wrong; moving VIPs on it would make
//! every lost ping a failover (gratuitous ARP storm, broken connections) and
//! then a failback.
//!
//! One exception: a speaker stopping for a restart asks the others to *hold*
//! it (`hold`); a held node stays in the set whatever foca says until it
//! rejoins under a newer generation or the hold's window ends, so a rolling
//! update moves no IP.
//!
//! The set is for `election::Membership::Members`: a speaker cut off from the
//! others ends up with a set of one (itself), later than the others drop it
//! (within [`Timers::max_unconfirmed_detection_for`]: nobody confirms its
//! suspicions). Whether it should keep announcing then is the daemon's
//! decision.
//!
//! # Lifeguard
//!
//! foca is plain SWIM; the core adds hashicorp memberlist's Lifeguard
//! extensions so that a speaker that is itself slow or losing packets does
//! not make healthy ones flap:
//! - local health (`health`): our own failed probes, refutations and stalls
//!   stretch our probe timeout and period;
//! - suspicion with confirmations (`suspicion`): we declare a member down
//!   after `suspect_to_down_max`, shrinking to `suspect_to_down` as other
//!   speakers report that their own probes failed too;
//! - stall re-check (`Core`): timers that ran out while we were stopped
//!   (SIGSTOP, CPU throttling) restart instead of firing, and the driver
//!   reads every queued datagram before running overdue timers.

mod core;
mod driver;
mod health;
mod hold;
mod identity;
mod keyring;
mod replay;
mod seal;
mod simulation;
mod suspicion;
mod timers;

#[cfg(test)]
mod lifeguard_tests;
#[cfg(test)]
mod tests;

pub use self::core::{
    Core, Datagram, GossipStats, PeerSource, KEY_MISMATCH_FAILURES, KEY_MISMATCH_WINDOW,
    PEER_EXPIRY,
};
pub use self::driver::{Gossip, GossipConfig, GossipError, DEFAULT_GOSSIP_PORT};
pub use self::hold::{HoldRequest, MAX_HOLD};
pub use self::identity::SpeakerId;
pub use self::keyring::{fingerprint, Keyring, KeyringError, KeyringFiles, MAX_KEYS};
pub use self::replay::Replay;
pub use self::seal::{Key, KeyError, KeyFormatError, SEAL_OVERHEAD};
pub use self::simulation::{simulate_bandwidth, SimulatedLan};
pub use self::timers::{Profile, Timers, TimersError, MAX_DATAGRAM};
