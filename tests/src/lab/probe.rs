//! Broadcast ARP requests from a host's interface on an AF_PACKET socket,
//! with every reply matched to its request (see [`ArpProber`]).

use std::{
    collections::BTreeSet,
    io,
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use nix::{
    net::if_::if_nametoindex,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::socket::{recvfrom, send, LinkAddr, MsgFlags},
};

use super::{command::lock, mac, netns};

const ETH_P_ARP: u16 = 0x0806;
/// `sockaddr_ll.sll_pkttype` of a frame this host sent itself.
const PACKET_OUTGOING: u8 = 4;

/// One ARP request an [`ArpProber`] sent and what answered it.
#[derive(Clone, Debug)]
pub struct ArpProbe {
    /// Its number in the prober's sequence (from 1).
    pub seq: u64,
    pub sent: Instant,
    /// Every reply to it: the replier's MAC (sender hardware address, lower
    /// case) and when it arrived, in arrival order.
    pub answers: Vec<(String, Instant)>,
}

impl ArpProbe {
    /// The distinct MACs that answered.
    pub fn macs(&self) -> BTreeSet<String> {
        self.answers.iter().map(|(m, _)| m.clone()).collect()
    }

    /// When `mac` first answered, if it did.
    pub fn answered_by(&self, mac: &str) -> Option<Instant> {
        self.answers.iter().find(|(m, _)| m == mac).map(|(_, t)| *t)
    }
}

/// A gratuitous ARP (sender IP = target IP = the probed address) the
/// prober saw: who sent it and when.
#[derive(Clone, Debug)]
pub struct GratuitousArp {
    pub mac: String,
    pub at: Instant,
}

/// The sequence numbers of the `probes` nothing answered.
pub fn unanswered<'a>(probes: impl IntoIterator<Item = &'a ArpProbe>) -> Vec<u64> {
    probes
        .into_iter()
        .filter(|p| p.answers.is_empty())
        .map(|p| p.seq)
        .collect()
}

/// What a running [`ArpProber::spawn`] series has seen so far.
#[derive(Clone, Debug, Default)]
pub struct ArpSeries {
    pub probes: Vec<ArpProbe>,
    pub gratuitous: Vec<GratuitousArp>,
}

/// Broadcast ARP requests for one address from a host's `eth0`, on an
/// AF_PACKET socket opened in that host's namespace, with every reply
/// matched to its request exactly: each request carries a tag in its
/// Ethernet padding (the responder keeps the padding in its reply), so a
/// late reply is never counted for the wrong request. Replies without the
/// tag (a kernel would drop it) go to the newest request. The host's kernel
/// still sees the replies (they are not consumed) but does not act on them:
/// it sent no request itself.
pub struct ArpProber {
    fd: OwnedFd,
    mac: [u8; 6],
    ip: Ipv4Addr,
    target: Ipv4Addr,
    seq: u64,
    session: u16,
}

const PROBE_MAGIC: [u8; 2] = *b"xs";

impl ArpProber {
    /// Opens the socket inside namespace `ns`, bound to `interface` for ARP
    /// frames only; requests go out from `mac`/`ip` and ask for `target`.
    /// `session` tells this prober's tags from another's.
    pub fn open(
        ns: &str,
        interface: &str,
        mac: [u8; 6],
        ip: Ipv4Addr,
        target: Ipv4Addr,
        session: u16,
    ) -> io::Result<ArpProber> {
        let fd = netns::in_namespace(ns, || open_arp_socket(interface))?;
        Ok(ArpProber {
            fd,
            mac,
            ip,
            target,
            seq: 0,
            session,
        })
    }

    fn request(&self, seq: u64) -> Vec<u8> {
        let mut frame = crate::frames::arp_request(self.mac, self.ip, self.target);
        frame.resize(60, 0);
        frame[42..44].copy_from_slice(&PROBE_MAGIC);
        frame[44..46].copy_from_slice(&self.session.to_be_bytes());
        frame[46..54].copy_from_slice(&seq.to_be_bytes());
        frame
    }

    fn send_next(&mut self) -> io::Result<u64> {
        self.seq += 1;
        let frame = self.request(self.seq);
        send(self.fd.as_raw_fd(), &frame, MsgFlags::empty())?;
        Ok(self.seq)
    }

    /// Waits until `deadline` for frames; each reply for the target is
    /// handed to `on_reply(tag, mac, at)`, each gratuitous ARP for it to
    /// `on_gratuitous(mac, at)`.
    fn receive_until(
        &self,
        deadline: Instant,
        mut on_reply: impl FnMut(Option<u64>, String, Instant),
        mut on_gratuitous: impl FnMut(String, Instant),
    ) {
        let mut buf = [0u8; 2048];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let left_ms = (deadline - now).as_micros().div_ceil(1000);
            let timeout = PollTimeout::try_from(left_ms).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            if !matches!(poll(&mut fds, timeout), Ok(1..)) {
                continue;
            }
            let Ok((n, from)) = recvfrom::<LinkAddr>(self.fd.as_raw_fd(), &mut buf) else {
                continue;
            };
            let at = Instant::now();
            if n == 0 || from.is_some_and(|f| f.pkttype() == PACKET_OUTGOING) {
                continue;
            }
            let frame = &buf[..n];
            let Ok(reply) = crate::frames::parse_arp_reply(frame) else {
                // Gratuitous ARP requests (sender = target = the address).
                if let Ok(request) = parse_arp_request(frame) {
                    if request.0 == self.target && request.1 == self.target {
                        on_gratuitous(mac::format(request.2), at);
                    }
                }
                continue;
            };
            if reply.spa != self.target {
                continue;
            }
            if reply.tpa == self.target {
                on_gratuitous(mac::format(reply.sha), at);
                continue;
            }
            if reply.tpa != self.ip || reply.tha != self.mac || reply.eth_dst != self.mac {
                continue;
            }
            let tag = (frame.len() >= 54
                && frame[42..44] == PROBE_MAGIC
                && frame[44..46] == self.session.to_be_bytes())
            .then(|| {
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&frame[46..54]);
                u64::from_be_bytes(seq)
            });
            on_reply(tag, mac::format(reply.sha), at);
        }
    }

    /// Sends one request and collects the replies for `window`.
    pub fn probe(&mut self, window: Duration) -> io::Result<ArpProbe> {
        let sent = Instant::now();
        let seq = self.send_next()?;
        let mut probe = ArpProbe {
            seq,
            sent,
            answers: Vec::new(),
        };
        self.receive_until(
            sent + window,
            |tag, mac, at| {
                if tag.is_none_or(|t| t == seq) {
                    probe.answers.push((mac, at));
                }
            },
            |_, _| {},
        );
        Ok(probe)
    }

    /// `count` requests, one every `interval`.
    pub fn series(&mut self, count: usize, interval: Duration) -> io::Result<Vec<ArpProbe>> {
        (0..count).map(|_| self.probe(interval)).collect()
    }

    /// Sends a request every `interval` on a thread of its own until the
    /// handle is stopped; what it has seen is readable at any time.
    pub fn spawn(mut self, interval: Duration) -> ArpProbing {
        let shared = Arc::new(Mutex::new(ArpSeries::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let shared = shared.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut next = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    let sent = Instant::now();
                    let seq = match self.send_next() {
                        Ok(seq) => seq,
                        Err(e) => return Err(e),
                    };
                    lock(&shared).probes.push(ArpProbe {
                        seq,
                        sent,
                        answers: Vec::new(),
                    });
                    next += interval;
                    if next < Instant::now() {
                        // Fell behind (a stalled thread): no burst to catch up.
                        next = Instant::now() + interval;
                    }
                    self.receive_until(
                        next,
                        |tag, mac, at| {
                            let mut series = lock(&shared);
                            let probe = match tag {
                                Some(t) => series.probes.iter_mut().rev().find(|p| p.seq == t),
                                None => series.probes.last_mut(),
                            };
                            if let Some(p) = probe {
                                p.answers.push((mac, at));
                            }
                        },
                        |mac, at| lock(&shared).gratuitous.push(GratuitousArp { mac, at }),
                    );
                }
                Ok(())
            })
        };
        ArpProbing {
            shared,
            stop,
            thread: Some(thread),
            interval,
        }
    }
}

/// `(sender IP, target IP, sender MAC)` of an Ethernet/IPv4 ARP request.
fn parse_arp_request(frame: &[u8]) -> Result<(Ipv4Addr, Ipv4Addr, [u8; 6]), ()> {
    if frame.len() < 42
        || frame[12..14] != [0x08, 0x06]
        || frame[14..22] != [0, 1, 8, 0, 6, 4, 0, 1]
    {
        return Err(());
    }
    let ip = |o: usize| Ipv4Addr::new(frame[o], frame[o + 1], frame[o + 2], frame[o + 3]);
    let mut sha = [0u8; 6];
    sha.copy_from_slice(&frame[22..28]);
    Ok((ip(28), ip(38), sha))
}

/// A running [`ArpProber::spawn`]: requests go out every `interval` until
/// [`ArpProbing::stop`] (or drop).
pub struct ArpProbing {
    shared: Arc<Mutex<ArpSeries>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
    interval: Duration,
}

impl ArpProbing {
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// What it has seen so far (the newest request may still get answers).
    pub fn snapshot(&self) -> ArpSeries {
        lock(&self.shared).clone()
    }

    /// Waits up to `limit` for a reply from `mac` to a request sent at or
    /// after `since`; that probe and the reply's arrival time.
    pub fn wait_answer_from(
        &self,
        mac: &str,
        since: Instant,
        limit: Duration,
    ) -> Option<(ArpProbe, Instant)> {
        let deadline = Instant::now() + limit;
        loop {
            let found = lock(&self.shared)
                .probes
                .iter()
                .filter(|p| p.sent >= since)
                .find_map(|p| p.answered_by(mac).map(|at| (p.clone(), at)));
            if found.is_some() {
                return found;
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops sending, waits one more interval for late replies, and returns
    /// everything seen. Panics if the socket failed.
    pub fn stop(mut self) -> ArpSeries {
        self.finish()
    }

    fn finish(&mut self) -> ArpSeries {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("the ARP prober failed: {e}"),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        lock(&self.shared).clone()
    }
}

impl Drop for ArpProbing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends each of `frames` (whole Ethernet frames: ARP, NS, anything) once
/// from `interface` inside namespace `ns`, in order.
pub fn send_frames(ns: &str, interface: &str, frames: &[Vec<u8>]) -> io::Result<()> {
    netns::in_namespace(ns, || {
        let fd = open_arp_socket(interface)?;
        for frame in frames {
            send(fd.as_raw_fd(), frame, MsgFlags::empty())?;
        }
        Ok(())
    })
}

/// An AF_PACKET socket of the calling thread's namespace receiving only ARP
/// frames of `interface`: created without a protocol (it receives nothing)
/// and then bound with `ETH_P_ARP`, which sets the protocol it receives.
fn open_arp_socket(interface: &str) -> io::Result<OwnedFd> {
    let ifindex = if_nametoindex(interface)?;
    speaker::announce::listen::open_packet_socket(ifindex, ETH_P_ARP, false)
}
