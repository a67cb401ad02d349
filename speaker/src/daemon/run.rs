//! The daemon's event loop: cluster changes, interface changes and the
//! heartbeat tick in; map updates, announcements and status out.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use tokio::{signal::unix::SignalKind, sync::mpsc};
use tracing::{error, info, warn};

use super::{
    change::{Change, ServiceKey},
    heartbeat::{Health, Heartbeat, STALL_LIMIT},
    reconciler::{DecisionChange, InterfaceSelection, OwnedIp, Reconciler},
};
use crate::{
    announce::{AnnounceConfig, Announcer},
    cluster::config::StaleCause,
    dataplane::{self, sync, AttachMode, DataplaneMaps, Object, PinDir},
    election::{Decision, ElectionOptions, Membership},
    error::{Error, Result},
    interfaces::{self, announce_interfaces, ExcludeList, Interface, LinkWatcher},
    membership::{Gossip, GossipConfig, Key, Timers},
    metrics::{ClientStats, MetricsState},
    sources,
    status::StatusWriter,
};

/// Where the cluster comes from.
#[derive(Clone, Debug)]
pub enum Source {
    File(PathBuf, crate::cluster::ReadOptions),
    Kubernetes { kubeconfig: Option<PathBuf> },
}

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub node_name: String,
    pub source: Source,
    pub pins: PinDir,
    pub options: ElectionOptions,
    pub membership: Membership,
    pub exclude: ExcludeList,
    pub xdp_mode: AttachMode,
    pub announce: AnnounceConfig,
    /// The dead-man switch's limit; zero disables it.
    pub dead_man: Duration,
    /// How often the heartbeat thread refreshes the heartbeat.
    pub heartbeat_interval: Duration,
    /// Where to serve /metrics, /healthz and /readyz; `None`: nowhere.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Gossip membership; `None` runs with membership disabled.
    pub gossip: Option<GossipSettings>,
}

/// `--memberlist*`: how this speaker gossips with the others.
#[derive(Clone, Debug)]
pub struct GossipSettings {
    pub port: u16,
    /// The address others reach us at; `None`: this node's first InternalIP.
    pub advertise: Option<IpAddr>,
    pub key: Option<Key>,
    /// Explicit peers (`--memberlist-join`), on top of every Node's InternalIP.
    pub join: Vec<SocketAddr>,
    /// With Kubernetes: the speaker pods' labels and namespace; their pod IPs
    /// are peers too (re-listed every minute).
    pub pod_selector: Option<(String, String)>,
    pub timers: Timers,
}

/// The node-local state the loop keeps between events.
struct Daemon {
    config: RunConfig,
    reconciler: Reconciler,
    maps: DataplaneMaps,
    announcer: Announcer,
    status: Option<StatusWriter>,
    interfaces: Vec<Interface>,
    /// Interfaces the responder has been attached to (or re-attached to, which
    /// replaces an adopted program atomically) by this process.
    attached: BTreeSet<String>,
    /// Until the source's first complete description arrives, the adopted maps
    /// are left alone: diffing them against nothing would withdraw everything.
    synced: bool,
    /// Services whose listed interfaces are all missing here, already reported.
    failed: BTreeSet<ServiceKey>,
    metrics: MetricsState,
    /// Running gossip, once started (at start, or after the first cluster
    /// description when the advertise address comes from our Node object).
    gossip: Option<Gossip>,
    /// Where membership updates go (into the same queue as cluster changes).
    changes: mpsc::Sender<Change>,
    /// With gossip, maps are not touched until membership has settled: right
    /// after start we know only ourselves and would claim every IP.
    settled: bool,
    settle_deadline: tokio::time::Instant,
    /// The newest member set gossip reported.
    latest_members: Option<BTreeSet<String>>,
    /// Whether the reconciler has been given a member set yet.
    membership_applied: bool,
    /// Speaker pods' IPs, when listed by label.
    pod_peers: Vec<IpAddr>,
    /// What the heartbeat thread watches: marked busy while computing.
    health: Health,
}

pub async fn run(config: RunConfig) -> Result<()> {
    dataplane::capabilities::require(&dataplane::capabilities::DAEMON)?;
    // Creating (or adopting) the pinned maps needs the object loaded once.
    drop(Object::load(Some(&config.pins))?);
    let mut maps = DataplaneMaps::from_pins(&config.pins)?;
    maps.heartbeat(Some(config.dead_man))?;
    // Refreshed by its own thread from here on; see `heartbeat`. Dropped
    // (stopped) when this function returns.
    let health = Health::new();
    let _heartbeat = Heartbeat::spawn(
        maps.heartbeat_writer()?,
        health.clone(),
        config.heartbeat_interval,
        STALL_LIMIT,
    )
    .map_err(|e| Error::io("starting the heartbeat thread", e))?;
    let client_stats = ClientStats::default();

    let (tx, mut changes) = mpsc::channel::<Change>(1024);
    let membership_tx = tx.clone();
    let (pods_tx, mut speaker_pods) = mpsc::channel::<Vec<IpAddr>>(4);
    let status = match &config.source {
        Source::File(path, read) => {
            let (path, read) = (path.clone(), *read);
            let stats = client_stats.clone();
            tokio::spawn(async move {
                if let Err(e) = sources::file::run(path, read, tx, stats).await {
                    error!(error = %e, "cluster state watch stopped: {e}");
                }
            });
            None
        }
        Source::Kubernetes { kubeconfig } => {
            let client = sources::kube::client(kubeconfig.as_deref())
                .await
                .map_err(|e| Error::Cluster(e.to_string()))?;
            let namespace = config.options.metallb_namespace.clone();
            let source_client = client.clone();
            if let Some((selector, pod_namespace)) =
                config.gossip.as_ref().and_then(|g| g.pod_selector.clone())
            {
                tokio::spawn(sources::kube::speaker_pod_addresses(
                    client.clone(),
                    pod_namespace,
                    selector,
                    Duration::from_secs(60),
                    pods_tx,
                ));
            }
            let stats = client_stats.clone();
            tokio::spawn(async move {
                if let Err(e) =
                    sources::kube::run(source_client, namespace.clone(), tx, stats).await
                {
                    error!(error = %e, "Kubernetes watches stopped: {e}");
                }
            });
            Some(StatusWriter::new(
                client,
                config.node_name.clone(),
                config.options.metallb_namespace.clone(),
            ))
        }
    };

    let mut links = LinkWatcher::new()?;
    let announcer = Announcer::new(config.announce);
    let mut metrics = MetricsState::new(
        config.node_name.clone(),
        config.pins.clone(),
        announcer.clone(),
    );
    metrics.client = client_stats;
    if let Some(address) = config.metrics_address {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(address, metrics).await {
                error!(error = %e, "metrics server on {address}: {e}");
            }
        });
    }
    let mut daemon = Daemon {
        reconciler: Reconciler::new(
            config.node_name.clone(),
            config.options.clone(),
            match config.gossip {
                // Nobody wins until gossip has settled; see `Daemon::settled`.
                Some(_) => Membership::Members(BTreeSet::new()),
                None => config.membership.clone(),
            },
        ),
        announcer,
        metrics,
        interfaces: Vec::new(),
        attached: BTreeSet::new(),
        synced: false,
        failed: BTreeSet::new(),
        gossip: None,
        changes: membership_tx,
        settled: config.gossip.is_none(),
        settle_deadline: tokio::time::Instant::now(),
        latest_members: None,
        membership_applied: config.gossip.is_none(),
        pod_peers: Vec::new(),
        health: health.clone(),
        config,
        maps,
        status,
    };
    daemon.rescan_interfaces();
    if let Some(settings) = daemon.config.gossip.clone() {
        if let Some(ip) = settings.advertise {
            daemon.start_gossip(ip).await?;
        }
    }

    let mut terminate = tokio::signal::unix::signal(SignalKind::terminate())
        .map_err(|e| Error::io("installing the SIGTERM handler", e))?;
    info!(
        "speaker running as node {:?}, membership {}",
        daemon.config.node_name,
        match (&daemon.config.gossip, &daemon.config.membership) {
            (Some(g), _) => format!("from gossip on port {}", g.port),
            (None, Membership::Disabled) => "disabled (every node is a candidate)".to_owned(),
            (None, Membership::Members(m)) => format!("fixed, {} member(s)", m.len()),
        }
    );
    loop {
        tokio::select! {
            change = changes.recv() => {
                let Some(change) = change else {
                    error!("the cluster source ended; keeping what is announced");
                    // Keep answering; the dead-man switch stays fed while we run.
                    std::future::pending::<()>().await;
                    unreachable!();
                };
                let mut batch = vec![change];
                while let Ok(more) = changes.try_recv() {
                    batch.push(more);
                }
                daemon.apply(batch).await;
            }
            Some(addresses) = speaker_pods.recv() => {
                daemon.pod_peers = addresses;
                daemon.join_peers();
            }
            changed = links.changed() => {
                if let Err(e) = changed {
                    warn!(error = %e, "link events: {e}");
                }
                daemon.rescan_interfaces();
                daemon.sync().await;
            }
            _ = tokio::time::sleep_until(daemon.settle_deadline), if !daemon.settled && daemon.synced && daemon.latest_members.is_some() => {
                if daemon.misconfigured_key() {
                    // Alone because every peer's gossip fails authentication:
                    // a configuration error, not dead peers. Claiming every
                    // IP would put a second MAC on each of them.
                    error!(
                        "not announcing: gossip from the other speakers fails authentication \
                         (is --memberlist-key-file the same on every node?)"
                    );
                    daemon.settle_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                } else {
                    info!("membership settled by time: electing with the members seen so far");
                    daemon.settled = true;
                    daemon.apply(Vec::new()).await;
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    if let Some(gossip) = &daemon.gossip {
        // The others drop us at once and take over; our answers go on until
        // the dead-man switch runs out, so no request goes unanswered meanwhile.
        info!("leaving the gossip cluster");
        gossip.leave().await;
    }
    // The pins stay: a restarted speaker adopts them with no gap in answering.
    // If none comes back, the dead-man switch stops the answers.
    info!("stopping; pinned maps and links stay for the next speaker");
    Ok(())
}

impl Daemon {
    async fn apply(&mut self, batch: Vec<Change>) {
        let health = self.health.clone();
        let busy = health.busy();
        let mut decisions = Vec::new();
        let mut nodes_changed = false;
        let mut reset = false;
        for change in batch {
            match change {
                // Until membership has settled the reconciler keeps the empty
                // member set it started with (nobody wins, nothing is written).
                Change::Membership(Membership::Members(members)) => {
                    let settled_now = !self.settled;
                    self.latest_members = Some(members.clone());
                    self.check_settled();
                    if self.settled && !settled_now {
                        decisions.extend(
                            self.reconciler
                                .apply(Change::Membership(Membership::Members(members))),
                        );
                    }
                    continue;
                }
                Change::Reset(_) => {
                    reset = true;
                    self.synced = true;
                    self.metrics.client.config_loaded.set(1);
                    nodes_changed = true;
                }
                Change::Nodes(_) => nodes_changed = true,
                _ => {}
            }
            decisions.extend(self.reconciler.apply(change));
        }
        let refusal = self.reconciler.stale_config().map(ToString::to_string);
        self.metrics.client.stale.set(StaleCause::Refused, refusal);
        if reset {
            // The previous state was just dropped, possibly a large one.
            crate::allocator::release_free_memory();
        }
        // Awaiting other components (gossip, the API server) is not work the
        // heartbeat should wait for: only the computing above and below is.
        drop(busy);
        if nodes_changed {
            self.nodes_changed().await;
        }
        let busy = health.busy();
        self.check_settled();
        decisions.extend(self.settle_if_due());
        drop(busy);
        for change in &decisions {
            self.report(change).await;
        }
        self.sync().await;
    }

    /// Once settled, hands the member set the reconciler was kept from.
    fn settle_if_due(&mut self) -> Vec<DecisionChange> {
        if !self.settled || self.membership_applied {
            return Vec::new();
        }
        self.membership_applied = true;
        let Some(members) = self.latest_members.clone() else {
            return Vec::new();
        };
        self.reconciler
            .apply(Change::Membership(Membership::Members(members)))
    }

    /// Logs every gain and withdrawal with its reason, and writes status.
    /// Costs what the one service holds, not what the node owns.
    async fn report(&mut self, change: &DecisionChange) {
        let was = change.before.as_ref().is_some_and(Decision::is_announce);
        let is = change.after.as_ref().is_some_and(Decision::is_announce);
        let service = &change.service;
        if !was && is {
            let ips: Vec<String> = self
                .reconciler
                .owned_by(service)
                .map(|(ip, _)| ip.to_string())
                .collect();
            info!(
                event = "serviceAnnounced",
                service = %service,
                ip = ips.join(","),
                node = self.config.node_name,
                protocol = "layer2",
                "{service}: announcing from this node"
            );
            if let Some(status) = &self.status {
                let interfaces = self.interface_names_for(service);
                status.announcing(service, &interfaces).await;
            }
        } else if was && !is {
            let reason = change
                .after
                .as_ref()
                .map_or_else(|| "service gone".to_owned(), |d| d.to_string());
            info!(
                event = "serviceWithdrawn",
                service = %service,
                node = self.config.node_name,
                protocol = "layer2",
                reason,
                "{service}: withdrawn ({reason})"
            );
            self.failed.remove(service);
            if let Some(status) = &self.status {
                status.withdrawn(service, &reason).await;
            }
        }
    }

    /// Gossip peers are every Node's InternalIP (speakers use the host
    /// network); also where our own advertise address comes from.
    async fn nodes_changed(&mut self) {
        if self.config.gossip.is_none() {
            return;
        }
        if self.gossip.is_none() {
            let own = self
                .reconciler
                .view()
                .node(&self.config.node_name)
                .and_then(|n| n.internal_ips.first().copied());
            match own {
                Some(ip) => {
                    if let Err(e) = self.start_gossip(ip).await {
                        error!(error = %e, "{e}");
                    }
                }
                None => warn!(
                    "node {:?} has no InternalIP: cannot gossip until it has one \
                     (or pass --memberlist-advertise-address)",
                    self.config.node_name
                ),
            }
        }
        self.join_peers();
    }

    /// Tells gossip every peer we know: Nodes' InternalIPs, speaker pods and
    /// `--memberlist-join`. Cheap when nothing is new.
    fn join_peers(&self) {
        let (Some(gossip), Some(settings)) = (&self.gossip, &self.config.gossip) else {
            return;
        };
        let own = gossip.advertised_addr();
        let node_ips = self
            .reconciler
            .view()
            .nodes()
            .iter()
            .flat_map(|n| n.internal_ips.iter());
        let mut peers: Vec<SocketAddr> = node_ips
            .chain(self.pod_peers.iter())
            .map(|ip| SocketAddr::new(*ip, settings.port))
            .filter(|addr| *addr != own)
            .collect();
        peers.extend(settings.join.iter().copied());
        peers.sort();
        peers.dedup();
        gossip.join(peers);
    }

    async fn start_gossip(&mut self, advertise: IpAddr) -> Result<()> {
        let Some(settings) = self.config.gossip.clone() else {
            return Ok(());
        };
        let bind = SocketAddr::new(
            if advertise.is_ipv4() {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            },
            settings.port,
        );
        let config = GossipConfig {
            node: self.config.node_name.clone(),
            bind,
            advertise: Some(SocketAddr::new(advertise, settings.port)),
            key: settings.key.clone(),
            timers: settings.timers.clone(),
            seeds: settings.join.clone(),
        };
        let (gossip, mut members) = Gossip::start(config)
            .await
            .map_err(|e| Error::Config(format!("starting gossip on {bind}: {e}")))?;
        info!(
            "gossiping on {bind} as {:?}, advertising {}",
            self.config.node_name,
            gossip.advertised_addr()
        );
        let changes = self.changes.clone();
        tokio::spawn(async move {
            loop {
                let set = members.borrow_and_update().clone();
                let names: Vec<&str> = set.iter().map(String::as_str).collect();
                info!(
                    event = "membersChanged",
                    members = names.join(","),
                    "members: {}",
                    names.join(", ")
                );
                if changes
                    .send(Change::Membership(crate::election::Membership::Members(
                        set,
                    )))
                    .await
                    .is_err()
                    || members.changed().await.is_err()
                {
                    return;
                }
            }
        });
        self.settle_deadline = tokio::time::Instant::now() + settings.timers.max_detection_for(3);
        let _ = self.metrics.gossip.set(gossip.clone());
        self.gossip = Some(gossip);
        Ok(())
    }

    /// Only ourselves in the member set while peers' datagrams fail
    /// authentication: our key differs from theirs.
    fn misconfigured_key(&self) -> bool {
        let alone = self.latest_members.as_ref().is_some_and(|m| m.len() <= 1);
        alone
            && self
                .gossip
                .as_ref()
                .is_some_and(|g| g.stats().auth_failures > 0)
    }

    /// Settled once every node that could gossip is a member, or at the
    /// deadline: a node that is down never joins.
    fn check_settled(&mut self) {
        if self.settled || !self.synced {
            return;
        }
        let Some(members) = &self.latest_members else {
            return;
        };
        let all = self
            .reconciler
            .view()
            .nodes()
            .iter()
            .filter(|n| !n.internal_ips.is_empty())
            .all(|n| members.contains(&n.name));
        if all {
            info!("membership settled: every node is a member");
            self.settled = true;
        }
    }

    fn interface_names_for(&self, service: &ServiceKey) -> Vec<String> {
        let selections: Vec<&InterfaceSelection> = self
            .reconciler
            .owned_by(service)
            .map(|(_, o)| &o.interfaces)
            .collect();
        self.interfaces
            .iter()
            .filter(|i| selections.iter().any(|s| selects(s, &i.name)))
            .map(|i| i.name.clone())
            .collect()
    }

    fn rescan_interfaces(&mut self) {
        match announce_interfaces(&self.config.exclude) {
            Ok(found) => {
                if found != self.interfaces {
                    let names: Vec<&str> = found.iter().map(|i| i.name.as_str()).collect();
                    info!("announcing on interfaces: {}", names.join(", "));
                }
                self.interfaces = found;
            }
            // Keep the last good list: a failed scan must not withdraw anything.
            Err(e) => error!(error = %e, "listing interfaces: {e}"),
        }
    }

    /// Brings the maps to exactly what this node owns, on the interfaces it
    /// announces on; starts announcements for what is new.
    async fn sync(&mut self) {
        if !self.synced || !self.settled {
            return;
        }
        let health = self.health.clone();
        let busy = health.busy();
        self.metrics
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let owned = self.reconciler.owned();
        if let Ok(mut announced) = self.metrics.announced.write() {
            *announced = owned
                .iter()
                .flat_map(|(ip, o)| o.services.iter().map(move |s| (s.clone(), *ip)))
                .collect();
        }
        let (desired, unplaceable) = self.desired();
        drop(busy);
        for (ip, entry) in unplaceable {
            self.announce_failed(ip, &entry).await;
        }
        let _busy = health.busy();
        for name in desired
            .iter()
            .map(|d| d.interface.name.clone())
            .collect::<BTreeSet<_>>()
        {
            if self.attached.contains(&name) {
                continue;
            }
            match dataplane::attach(
                &self.config.pins,
                &name,
                self.config.xdp_mode,
                dataplane::RESPONDER,
            ) {
                Ok(_) => {
                    self.attached.insert(name);
                }
                Err(e) => error!(interface = name, error = %e, "attaching XDP to {name}: {e}"),
            }
        }
        let report = match sync::apply(&mut self.maps, &desired) {
            Ok(report) => report,
            Err(e) => {
                error!(error = %e, "updating the VIP maps: {e}");
                return;
            }
        };
        // sync::apply logs each map change; the announcer logs each burst.
        for (ip, interface) in report.added.iter().chain(&report.updated_mac) {
            self.announcer.gained(*ip, interface);
        }
        for (ip, ifindex) in &report.removed {
            self.announcer.lost(*ip, *ifindex);
        }
        for (ip, why) in &report.failed {
            error!(ip = %ip, error = %why, "{ip}: not programmed: {why}");
        }
    }

    /// The (VIP, interface) pairs to program, and the owned IPs none of
    /// whose interfaces exist here.
    fn desired(&self) -> (Vec<sync::DesiredVip>, Vec<(IpAddr, OwnedIp)>) {
        let mut desired = Vec::new();
        let mut unplaceable = Vec::new();
        for (ip, entry) in self.reconciler.owned() {
            let named = match &entry.interfaces {
                InterfaceSelection::All => None,
                InterfaceSelection::Named(names) => Some(names),
            };
            let chosen = interfaces::select(&self.interfaces, named);
            if chosen.is_empty() {
                unplaceable.push((*ip, entry.clone()));
            }
            desired.extend(chosen.into_iter().map(|interface| sync::DesiredVip {
                address: *ip,
                interface,
            }));
        }
        (desired, unplaceable)
    }

    /// MetalLB's `announceFailed`: the winner lacks every listed interface.
    /// Nobody else takes over (interfaces play no part in the election).
    async fn announce_failed(&mut self, ip: IpAddr, entry: &OwnedIp) {
        for service in &entry.services {
            if !self.failed.insert(service.clone()) {
                continue;
            }
            let message = match &entry.interfaces {
                InterfaceSelection::All => "no usable interface on this node".to_owned(),
                InterfaceSelection::Named(names) => format!(
                    "none of the interfaces {} exists on this node",
                    names.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            };
            warn!(
                event = "announceFailed",
                service = %service,
                ip = %ip,
                "{service}: cannot announce {ip}: {message}"
            );
            if let Some(status) = &self.status {
                status.announce_failed(service, &message).await;
            }
        }
    }
}

fn selects(selection: &InterfaceSelection, name: &str) -> bool {
    match selection {
        InterfaceSelection::All => true,
        InterfaceSelection::Named(names) => names.contains(name),
    }
}
