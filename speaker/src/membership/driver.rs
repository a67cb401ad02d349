//! The tokio side: one UDP socket, the core's timers on the tokio clock, and
//! the member set published on a watch channel.

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::core::{key_mismatch_at, Core, GossipStats, PeerSource};
use super::identity::SpeakerId;
use super::keyring::{Keyring, KeyringFiles};
use super::timers::{Timers, TimersError};

/// memberlist's port, which MetalLB speakers use for the same purpose.
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;

/// Largest datagram we accept off the socket; foca refuses anything above
/// its own limit after that, this only has to hold any UDP payload.
const RECEIVE_BUFFER: usize = 65_536;

/// Most datagrams read in one go before overdue timers run: a few seconds
/// of a large cluster's traffic, far more than a socket buffer holds.
const QUEUED_READ_LIMIT: usize = 4096;
/// How often the keyring files are read again: a change to the Secret
/// reaches the mounted files within the kubelet's sync period (about a
/// minute), so this adds little to a rotation step.
pub const KEYRING_RELOAD_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// Our Kubernetes node name: the name others see in their member set.
    pub node: String,
    /// Where to listen, e.g. `0.0.0.0:7946`.
    pub bind: SocketAddr,
    /// The address others reach us at (the node IP with host networking).
    /// Defaults to the bound address, which must then not be unspecified.
    /// Port 0 means the bound port.
    pub advertise: Option<SocketAddr>,
    /// Shared keys; `None` gossips in plaintext.
    pub keyring: Option<Keyring>,
    /// Where `keyring` came from: read again every
    /// [`KEYRING_RELOAD_PERIOD`], and a changed keyring replaces it (one
    /// that cannot be read or is invalid keeps the one in use).
    pub keyring_files: Option<KeyringFiles>,
    pub timers: Timers,
    /// Addresses to join at start; kept for the lifetime of the process.
    pub seeds: Vec<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("cannot bind gossip socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("gossip socket bound to {0}: set an advertise address others can reach")]
    AdvertiseRequired(SocketAddr),
    #[error(transparent)]
    Timers(#[from] TimersError),
}

enum Command {
    Join(Vec<SocketAddr>),
    SetKeyring(Option<Keyring>),
    Leave(oneshot::Sender<()>),
    Hold(std::time::Duration, oneshot::Sender<()>),
}

/// Handle to a running gossip task. Dropping every handle stops the task
/// without a leave (the others then detect it as a crash).
#[derive(Clone)]
pub struct Gossip {
    commands: mpsc::UnboundedSender<Command>,
    stats: Arc<Mutex<GossipStats>>,
    /// The core's recent authentication failures from known speakers, on
    /// the `epoch` clock.
    known_auth_failures: Arc<Mutex<VecDeque<std::time::Duration>>>,
    epoch: Instant,
    advertised: SocketAddr,
}

impl Gossip {
    /// Binds the socket, announces to the seeds and starts gossiping. The
    /// receiver holds our member set (ourselves included from the start) and
    /// changes whenever a speaker comes up or is declared down, and is
    /// marked changed (the same set again) when we rejoin after the cluster
    /// declared us down.
    pub async fn start(
        config: GossipConfig,
    ) -> Result<(Gossip, watch::Receiver<BTreeSet<String>>), GossipError> {
        config.timers.validate()?;
        let socket = UdpSocket::bind(config.bind)
            .await
            .map_err(|source| GossipError::Bind {
                addr: config.bind,
                source,
            })?;
        let bound = socket.local_addr().map_err(|source| GossipError::Bind {
            addr: config.bind,
            source,
        })?;
        let mut advertised = config.advertise.unwrap_or(bound);
        if advertised.port() == 0 {
            advertised.set_port(bound.port());
        }
        if advertised.ip().is_unspecified() {
            return Err(GossipError::AdvertiseRequired(bound));
        }
        if config.keyring.is_none() {
            tracing::warn!(
                "gossip: no key configured; membership traffic on {bound} is plaintext and \
                 anyone who can reach it can join or inject members"
            );
        }

        let epoch = Instant::now();
        let identity = SpeakerId::starting_now(config.node, advertised);
        tracing::info!(
            "gossip: {} listening on {bound}, advertising {advertised}, generation {}",
            identity.node,
            identity.generation
        );
        if let Some(keyring) = &config.keyring {
            tracing::info!("gossip: keyring {}", keyring.describe());
        }
        let mut core = Core::with_keyring(
            identity,
            &config.timers,
            config.keyring.as_ref(),
            rand::random(),
            epoch.elapsed(),
        )?;
        core.join(epoch.elapsed(), config.seeds, PeerSource::Seed);

        let (members_tx, members_rx) = watch::channel(core.members().clone());
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(core.stats()));
        let known_auth_failures = Arc::new(Mutex::new(VecDeque::new()));
        let task = Task {
            core,
            socket,
            epoch,
            members: members_tx,
            stats: Arc::clone(&stats),
            known_auth_failures: Arc::clone(&known_auth_failures),
            send_errors: 0,
            published_rejoins: 0,
            keyring: config.keyring.clone(),
        };
        tokio::spawn(task.run(commands_rx));
        if let Some(files) = config.keyring_files {
            tokio::spawn(watch_keyring(files, config.keyring, commands.clone()));
        }
        Ok((
            Gossip {
                commands,
                stats,
                known_auth_failures,
                epoch,
                advertised,
            },
            members_rx,
        ))
    }

    /// Adds or refreshes peers to announce to while they are not members.
    /// Cheap and idempotent; call it with every discovered speaker address.
    /// Peers not refreshed for [`super::core::PEER_EXPIRY`] are forgotten.
    pub fn join(&self, peers: Vec<SocketAddr>) {
        let _ = self.commands.send(Command::Join(peers));
    }

    /// Tells the others we are leaving, so they drop us at once, and stops.
    pub async fn leave(&self) {
        let (done, left) = oneshot::channel();
        if self.commands.send(Command::Leave(done)).is_ok() {
            let _ = left.await;
        }
    }

    /// Asks the others to keep us a member for `window` while this process
    /// restarts (see `hold`), and stops without leaving.
    pub async fn hold_for_restart(&self, window: std::time::Duration) {
        let (done, sent) = oneshot::channel();
        if self.commands.send(Command::Hold(window, done)).is_ok() {
            let _ = sent.await;
        }
    }

    /// Seals with `keyring`'s primary and opens with all its keys from now
    /// on; for rotated key files.
    pub fn set_keyring(&self, keyring: Option<Keyring>) {
        let _ = self.commands.send(Command::SetKeyring(keyring));
    }

    /// True while datagrams from known speakers (peers we were told to join,
    /// members) keep failing authentication: repeatedly, within the last
    /// [`super::core::KEY_MISMATCH_WINDOW`]. Unknown senders never count, and
    /// the verdict clears by itself once the failures stop.
    pub fn key_mismatch(&self) -> bool {
        let failures = self
            .known_auth_failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        key_mismatch_at(&failures, self.epoch.elapsed())
    }

    pub fn stats(&self) -> GossipStats {
        *self
            .stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The address the others know us by.
    pub fn advertised_addr(&self) -> SocketAddr {
        self.advertised
    }
}

struct Task {
    core: Core,
    socket: UdpSocket,
    epoch: Instant,
    members: watch::Sender<BTreeSet<String>>,
    stats: Arc<Mutex<GossipStats>>,
    known_auth_failures: Arc<Mutex<VecDeque<std::time::Duration>>>,
    send_errors: u64,
    /// Rejoins already signalled on the member channel.
    published_rejoins: u64,
    /// The keyring in use: the periodic re-read and SIGHUP may both hand
    /// over the same one, which is then not news.
    keyring: Option<Keyring>,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buffer = vec![0u8; RECEIVE_BUFFER];
        loop {
            self.flush().await;
            self.publish();
            let wake = self.core.next_deadline().map(|at| self.epoch + at);
            tokio::select! {
                received = self.socket.recv_from(&mut buffer) => match received {
                    Ok((len, from)) => {
                        let now = self.epoch.elapsed();
                        self.core.handle_packet(now, from, &buffer[..len]);
                    }
                    // E.g. ECONNREFUSED from an ICMP error to an earlier send.
                    Err(error) => tracing::debug!("gossip: receive: {error}"),
                },
                () = sleep_until(wake) => {
                    self.read_queued(&mut buffer);
                    self.core.handle_timers(self.epoch.elapsed());
                }
                command = commands.recv() => match command {
                    Some(Command::Join(peers)) => {
                        self.core.join(self.epoch.elapsed(), peers, PeerSource::Discovered);
                    }
                    Some(Command::SetKeyring(keyring)) if keyring == self.keyring => {}
                    Some(Command::SetKeyring(keyring)) => {
                        self.core.set_keyring(keyring.as_ref());
                        match &keyring {
                            Some(ring) => tracing::info!("gossip: keyring replaced: {}", ring.describe()),
                            None => tracing::info!("gossip: keyring removed, plaintext"),
                        }
                        self.keyring = keyring;
                    }
                    Some(Command::Leave(done)) => {
                        self.core.leave(self.epoch.elapsed());
                        self.flush().await;
                        self.publish();
                        tracing::info!("gossip: {} left the cluster", self.core.identity().node);
                        let _ = done.send(());
                        return;
                    }
                    Some(Command::Hold(window, done)) => {
                        self.core.request_hold(self.epoch.elapsed(), window);
                        self.flush().await;
                        tracing::info!("gossip: asked the others to hold {} for {window:?}", self.core.identity().node);
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
            }
        }
    }

    /// Hands the core every datagram already waiting before its timers run.
    /// After we were stopped (SIGSTOP, CPU throttling) the acks to our
    /// probes and the others' suspicions of us sit in the socket while our
    /// timers are long overdue; timers first would fail those probes and
    /// leave the suspicions unrefuted.
    fn read_queued(&mut self, buffer: &mut [u8]) {
        // Bounded: a flood must not keep the timers from ever running.
        for _ in 0..QUEUED_READ_LIMIT {
            match self.socket.try_recv_from(buffer) {
                Ok((len, from)) => {
                    let now = self.epoch.elapsed();
                    self.core.handle_packet(now, from, &buffer[..len]);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => tracing::debug!("gossip: receive: {error}"),
            }
        }
    }

    async fn flush(&mut self) {
        let outgoing: Vec<_> = self.core.take_outgoing().collect();
        for datagram in outgoing {
            if let Err(error) = self.socket.send_to(&datagram.bytes, datagram.to).await {
                self.send_errors += 1;
                tracing::debug!("gossip: send to {}: {error}", datagram.to);
            }
        }
    }

    fn publish(&mut self) {
        let mut stats = self.core.stats();
        stats.send_errors = self.send_errors;
        // Stats first: a receiver woken below reads the rejoin count.
        *self
            .stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = stats;
        self.known_auth_failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone_from(self.core.known_auth_failures());
        // A rejoin may leave our member set as it was, yet the others took
        // over our IPs meanwhile: receivers must look (and re-announce).
        let rejoined = stats.rejoins != self.published_rejoins;
        self.published_rejoins = stats.rejoins;
        let current = self.core.members();
        self.members.send_if_modified(|published| {
            let changed = published != current;
            if changed {
                published.clone_from(current);
            }
            changed || rejoined
        });
    }
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads the keyring files every [`KEYRING_RELOAD_PERIOD`] and hands a
/// changed keyring to the gossip task; ends with the task. A keyring that
/// cannot be read or is invalid keeps the one in use (logged once per
/// distinct error), so a half-written Secret never drops the last good keys.
async fn watch_keyring(
    files: KeyringFiles,
    mut current: Option<Keyring>,
    commands: mpsc::UnboundedSender<Command>,
) {
    let mut reported = None;
    loop {
        tokio::time::sleep(KEYRING_RELOAD_PERIOD).await;
        if commands.is_closed() {
            return;
        }
        match files.load() {
            Ok(keyring) => {
                reported = None;
                if current.as_ref() != Some(&keyring) {
                    current = Some(keyring.clone());
                    if commands.send(Command::SetKeyring(Some(keyring))).is_err() {
                        return;
                    }
                }
            }
            Err(error) => {
                let text = error.to_string();
                if reported.as_ref() != Some(&text) {
                    tracing::error!("gossip: keeping the keyring in use: {text}");
                    reported = Some(text);
                }
            }
        }
    }
}
