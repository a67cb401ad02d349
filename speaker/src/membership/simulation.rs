//! A simulated LAN of speakers: sans-IO cores, a shared clock that jumps
//! from event to event, and a network that can cut a speaker off. Used by the
//! scenario tests and by the bandwidth benchmark.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::core::{Core, Datagram, PeerSource};
use super::identity::SpeakerId;
use super::seal::Key;
use super::timers::Timers;

/// One-way delay of every datagram: a switched LAN.
const LATENCY: Duration = Duration::from_micros(200);

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    arrives: Duration,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: bytes::Bytes,
}

pub struct SimulatedLan {
    timers: Timers,
    node_names: fn(usize) -> String,
    now: Duration,
    /// Index = speaker number; `None` while crashed.
    speakers: Vec<Option<Core>>,
    addrs: BTreeMap<SocketAddr, usize>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    next_seq: u64,
    /// Speakers whose datagrams, both ways, are lost.
    cut_off: BTreeSet<usize>,
    /// Stopped speakers (SIGSTOP) and the datagrams waiting in their socket.
    paused: BTreeMap<usize, Vec<InFlight>>,
    /// Fraction of datagrams lost at random, and the dice.
    loss: f64,
    dice: SmallRng,
    /// Sealed bytes put on the wire since start, lost ones included.
    pub wire_bytes: u64,
}

impl SimulatedLan {
    /// Speakers named `node-<n>`.
    pub fn new(timers: Timers) -> Self {
        Self::with_node_names(timers, Self::node_name)
    }

    pub fn with_node_names(timers: Timers, node_names: fn(usize) -> String) -> Self {
        Self {
            timers,
            node_names,
            now: Duration::ZERO,
            speakers: Vec::new(),
            addrs: BTreeMap::new(),
            in_flight: BinaryHeap::new(),
            next_seq: 0,
            cut_off: BTreeSet::new(),
            paused: BTreeMap::new(),
            loss: 0.0,
            dice: SmallRng::seed_from_u64(0x5EED),
            wire_bytes: 0,
        }
    }

    pub fn now(&self) -> Duration {
        self.now
    }

    /// The gossip address of speaker `index`: 10.0.x.y:7946.
    pub fn addr(index: usize) -> SocketAddr {
        let [_, _, x, y] = (index as u32 + 1).to_be_bytes();
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, x, y)), 7946)
    }

    /// The default name of speaker `index`.
    pub fn node_name(index: usize) -> String {
        format!("node-{index}")
    }

    /// The name of speaker `index` in this LAN.
    pub fn name_of(&self, index: usize) -> String {
        (self.node_names)(index)
    }

    /// Starts a speaker (generation 1) and returns its number.
    pub fn add_speaker(&mut self, key: Option<&Key>) -> usize {
        let index = self.speakers.len();
        self.speakers.push(None);
        self.addrs.insert(Self::addr(index), index);
        self.start(index, 1, key);
        index
    }

    /// (Re)starts speaker `index` as a fresh process with `generation`.
    pub fn start(&mut self, index: usize, generation: u32, key: Option<&Key>) {
        let identity = SpeakerId {
            node: self.name_of(index),
            gossip_addr: Self::addr(index),
            generation,
        };
        let seed = (index as u64) << 32 | u64::from(generation);
        let core = Core::new(identity, &self.timers, key, seed, self.now).expect("valid timers");
        self.speakers[index] = Some(core);
    }

    /// Stops speaker `index` without a word, as a crash or power loss would.
    pub fn crash(&mut self, index: usize) {
        self.speakers[index] = None;
    }

    /// Loses every datagram from and to speaker `index`, which keeps running.
    pub fn cut_off(&mut self, index: usize) {
        self.cut_off.insert(index);
    }

    /// Ends [`SimulatedLan::cut_off`].
    pub fn reconnect(&mut self, index: usize) {
        self.cut_off.remove(&index);
    }

    /// Stops speaker `index` as SIGSTOP does: no timer runs, datagrams to it
    /// wait in its socket.
    pub fn pause(&mut self, index: usize) {
        self.paused.entry(index).or_default();
    }

    /// Ends [`SimulatedLan::pause`]: the speaker reads what waited in its
    /// socket first (as the driver does), then its overdue timers run.
    pub fn resume(&mut self, index: usize) {
        let Some(waiting) = self.paused.remove(&index) else {
            return;
        };
        let now = self.now;
        for flight in waiting {
            if let Some(core) = self.speakers[index].as_mut() {
                core.handle_packet(now, flight.from, &flight.bytes);
            }
        }
        self.collect(index);
    }

    /// Loses this fraction of all datagrams from now on, at random.
    pub fn set_loss(&mut self, fraction: f64) {
        self.loss = fraction;
    }

    pub fn speaker(&self, index: usize) -> &Core {
        self.speakers[index].as_ref().expect("speaker is running")
    }

    pub fn speaker_mut(&mut self, index: usize) -> &mut Core {
        self.speakers[index].as_mut().expect("speaker is running")
    }

    pub fn members(&self, index: usize) -> &BTreeSet<String> {
        self.speaker(index).members()
    }

    pub fn join(&mut self, index: usize, peers: &[usize]) {
        let now = self.now;
        let peers = peers.iter().map(|&peer| Self::addr(peer));
        self.speaker_mut(index).join(now, peers, PeerSource::Seed);
        self.collect(index);
    }

    pub fn leave(&mut self, index: usize) {
        let now = self.now;
        self.speaker_mut(index).leave(now);
        self.collect(index);
    }

    /// Puts a datagram on the wire as if `from` had sent it.
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.send(
            Datagram {
                to,
                bytes: bytes.into(),
            },
            from,
        );
    }

    /// Runs every event up to `now + span`.
    pub fn run_for(&mut self, span: Duration) {
        let until = self.now + span;
        while self.step(until, &mut |_, _| {}) {}
        self.now = until;
    }

    /// Runs until `done` holds or `limit` has passed; returns the time spent.
    pub fn run_until(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) -> Option<Duration> {
        let start = self.now;
        let until = start + limit;
        loop {
            if done(self) {
                return Some(self.now - start);
            }
            if !self.step(until, &mut |_, _| {}) {
                self.now = until;
                return done(self).then(|| self.now - start);
            }
        }
    }

    /// Runs up to `now + span`, handing every delivered datagram and its
    /// sender to `watch` before the receiver sees it.
    pub fn run_watching(&mut self, span: Duration, mut watch: impl FnMut(SocketAddr, &Datagram)) {
        let until = self.now + span;
        while self.step(until, &mut watch) {}
        self.now = until;
    }

    /// Whether every running speaker's set is exactly the running speakers.
    pub fn converged(&self) -> bool {
        let running: BTreeSet<String> = (0..self.speakers.len())
            .filter(|&i| self.speakers[i].is_some())
            .map(|i| self.name_of(i))
            .collect();
        self.speakers
            .iter()
            .flatten()
            .all(|core| core.members() == &running)
    }

    /// Processes the earliest event if it is due by `until`.
    fn step(&mut self, until: Duration, watch: &mut dyn FnMut(SocketAddr, &Datagram)) -> bool {
        let next_delivery = self.in_flight.peek().map(|Reverse(flight)| flight.arrives);
        let next_timer = self
            .speakers
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.paused.contains_key(i))
            .filter_map(|(i, core)| Some((core.as_ref()?.next_deadline()?, i)))
            .min();
        let delivery_first = match (next_delivery, next_timer) {
            (Some(delivery), Some((timer, _))) => delivery <= timer,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return false,
        };
        if delivery_first {
            let Some(Reverse(flight)) = self.in_flight.pop() else {
                return false;
            };
            if flight.arrives > until {
                self.in_flight.push(Reverse(flight));
                return false;
            }
            self.now = self.now.max(flight.arrives);
            let Some(&index) = self.addrs.get(&flight.to) else {
                return true;
            };
            if self.cut_off.contains(&index) {
                return true;
            }
            if let Some(waiting) = self.paused.get_mut(&index) {
                waiting.push(flight);
                return true;
            }
            let datagram = Datagram {
                to: flight.to,
                bytes: flight.bytes,
            };
            watch(flight.from, &datagram);
            let now = self.now;
            if let Some(core) = self.speakers[index].as_mut() {
                core.handle_packet(now, flight.from, &datagram.bytes);
                self.collect(index);
            }
        } else if let Some((at, index)) = next_timer {
            if at > until {
                return false;
            }
            self.now = self.now.max(at);
            let now = self.now;
            self.speaker_mut(index).handle_timers(now);
            self.collect(index);
        }
        true
    }

    fn collect(&mut self, index: usize) {
        let from = Self::addr(index);
        let outgoing: Vec<Datagram> = match self.speakers[index].as_mut() {
            Some(core) => core.take_outgoing().collect(),
            None => return,
        };
        for datagram in outgoing {
            if self.cut_off.contains(&index) {
                self.wire_bytes += datagram.bytes.len() as u64;
                continue;
            }
            self.send(datagram, from);
        }
    }

    fn send(&mut self, datagram: Datagram, from: SocketAddr) {
        self.wire_bytes += datagram.bytes.len() as u64;
        if self.loss > 0.0 && self.dice.random_bool(self.loss) {
            return;
        }
        self.next_seq += 1;
        self.in_flight.push(Reverse(InFlight {
            arrives: self.now + LATENCY,
            seq: self.next_seq,
            from,
            to: datagram.to,
            bytes: datagram.bytes,
        }));
    }
}

/// Steady-state gossip traffic in sealed bytes sent per speaker per second:
/// `nodes` speakers on a lossless LAN, each given every other as a peer (as
/// the cluster discovery does), measured over `seconds` after they have
/// converged and the join news has died down. Node names are cloud-style
/// (`ip-10-0-0-1.eu-west-1.compute.internal`, 38 characters), since every
/// packet carries two identities.
pub fn simulate_bandwidth(nodes: usize, seconds: u64, timers: &Timers) -> f64 {
    let key = Key::from_bytes([0x5A; 32]);
    let mut lan = SimulatedLan::with_node_names(timers.clone(), |index| {
        let ip = SimulatedLan::addr(index).ip().to_string().replace('.', "-");
        format!("ip-{ip}.eu-west-1.compute.internal")
    });
    for _ in 0..nodes {
        lan.add_speaker(Some(&key));
    }
    let everyone: Vec<usize> = (0..nodes).collect();
    for index in 0..nodes {
        lan.join(index, &everyone);
    }
    lan.run_until(Duration::from_secs(60), SimulatedLan::converged);
    // Each join is piggybacked UPDATE_TRANSMISSIONS times; let that finish.
    lan.run_for(Duration::from_secs(10));
    let before = lan.wire_bytes;
    lan.run_for(Duration::from_secs(seconds));
    (lan.wire_bytes - before) as f64 / nodes as f64 / seconds as f64
}
