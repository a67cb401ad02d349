//! The daemon's event loop: cluster changes, interface changes and the
//! heartbeat tick in; map updates, announcements and status out.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
    time::Duration,
};

use log::{error, info, warn};
use tokio::{signal::unix::SignalKind, sync::mpsc};

use super::{
    change::{Change, ServiceKey},
    reconciler::{DecisionChange, InterfaceSelection, OwnedIp, Reconciler},
};
use crate::{
    announce::{AnnounceConfig, Announcer},
    dataplane::{self, sync, AttachMode, DataplaneMaps, Object, PinDir},
    election::{Decision, ElectionOptions, Membership},
    error::{Error, Result},
    interfaces::{self, announce_interfaces, ExcludeList, Interface, LinkWatcher},
    metrics::MetricsState,
    sources,
    status::StatusWriter,
};

/// Where the cluster comes from.
#[derive(Clone, Debug)]
pub enum Source {
    File(PathBuf),
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
    pub heartbeat_interval: Duration,
    /// Where to serve /metrics, /healthz and /readyz; `None`: nowhere.
    pub metrics_address: Option<std::net::SocketAddr>,
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
}

pub async fn run(config: RunConfig) -> Result<()> {
    // Creating (or adopting) the pinned maps needs the object loaded once.
    drop(Object::load(Some(&config.pins))?);
    let mut maps = DataplaneMaps::from_pins(&config.pins)?;
    maps.heartbeat(Some(config.dead_man))?;

    let (tx, mut changes) = mpsc::channel::<Change>(1024);
    let status = match &config.source {
        Source::File(path) => {
            let path = path.clone();
            tokio::spawn(async move {
                if let Err(e) = sources::file::run(path, tx).await {
                    error!("cluster state watch stopped: {e}");
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
            tokio::spawn(async move {
                if let Err(e) = sources::kube::run(source_client, namespace.clone(), tx).await {
                    error!("Kubernetes watches stopped: {e}");
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
    let metrics = MetricsState {
        node: config.node_name.clone(),
        pins: config.pins.clone(),
        announcer: announcer.clone(),
        announced: Default::default(),
        ready: Default::default(),
    };
    if let Some(address) = config.metrics_address {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(address, metrics).await {
                error!("metrics server on {address}: {e}");
            }
        });
    }
    let mut daemon = Daemon {
        reconciler: Reconciler::new(
            config.node_name.clone(),
            config.options.clone(),
            config.membership.clone(),
        ),
        announcer,
        metrics,
        interfaces: Vec::new(),
        attached: BTreeSet::new(),
        synced: false,
        failed: BTreeSet::new(),
        config,
        maps,
        status,
    };
    daemon.rescan_interfaces();

    let mut heartbeat = tokio::time::interval(daemon.config.heartbeat_interval);
    let mut terminate = tokio::signal::unix::signal(SignalKind::terminate())
        .map_err(|e| Error::io("installing the SIGTERM handler", e))?;
    info!(
        "speaker running as node {:?}, membership {}",
        daemon.config.node_name,
        match &daemon.config.membership {
            Membership::Disabled => "disabled (every node is a candidate)".to_owned(),
            Membership::Members(m) => format!("{} member(s)", m.len()),
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
            changed = links.changed() => {
                if let Err(e) = changed {
                    warn!("link events: {e}");
                }
                daemon.rescan_interfaces();
                daemon.sync().await;
            }
            _ = heartbeat.tick() => {
                if let Err(e) = daemon.maps.heartbeat(None) {
                    error!("refreshing the heartbeat: {e}");
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    // The pins stay: a restarted speaker adopts them with no gap in answering.
    // If none comes back, the dead-man switch stops the answers.
    info!("stopping; pinned maps and links stay for the next speaker");
    Ok(())
}

impl Daemon {
    async fn apply(&mut self, batch: Vec<Change>) {
        let mut decisions = Vec::new();
        for change in batch {
            if matches!(change, Change::Reset(_)) {
                self.synced = true;
            }
            decisions.extend(self.reconciler.apply(change));
        }
        for change in &decisions {
            self.report(change).await;
        }
        self.sync().await;
    }

    /// Logs every gain and withdrawal with its reason, and writes status.
    async fn report(&mut self, change: &DecisionChange) {
        let was = change.before.as_ref().is_some_and(Decision::is_announce);
        let is = change.after.as_ref().is_some_and(Decision::is_announce);
        let service = &change.service;
        if !was && is {
            info!("{service}: announcing from this node");
            if let Some(status) = &self.status {
                let interfaces = self.interface_names_for(service);
                status.announcing(service, &interfaces).await;
            }
        } else if was && !is {
            let reason = change
                .after
                .as_ref()
                .map_or_else(|| "service gone".to_owned(), |d| d.to_string());
            info!("{service}: withdrawn ({reason})");
            self.failed.remove(service);
            if let Some(status) = &self.status {
                status.withdrawn(service, &reason).await;
            }
        }
    }

    fn interface_names_for(&self, service: &ServiceKey) -> Vec<String> {
        let owned = self.reconciler.owned();
        let selections: Vec<&InterfaceSelection> = owned
            .values()
            .filter(|o| o.services.contains(service))
            .map(|o| &o.interfaces)
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
            Err(e) => error!("listing interfaces: {e}"),
        }
    }

    /// Brings the maps to exactly what this node owns, on the interfaces it
    /// announces on; starts announcements for what is new.
    async fn sync(&mut self) {
        if !self.synced {
            return;
        }
        let owned = self.reconciler.owned();
        self.metrics
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut announced) = self.metrics.announced.write() {
            *announced = owned
                .iter()
                .flat_map(|(ip, o)| o.services.iter().map(move |s| (s.clone(), *ip)))
                .collect();
        }
        let desired = self.desired(&owned).await;
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
                Err(e) => error!("attaching XDP to {name}: {e}"),
            }
        }
        let report = match sync::apply(&mut self.maps, &desired) {
            Ok(report) => report,
            Err(e) => {
                error!("updating the VIP maps: {e}");
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
            error!("{ip}: not programmed: {why}");
        }
    }

    async fn desired(&mut self, owned: &BTreeMap<IpAddr, OwnedIp>) -> Vec<sync::DesiredVip> {
        let mut desired = Vec::new();
        for (ip, entry) in owned {
            let named = match &entry.interfaces {
                InterfaceSelection::All => None,
                InterfaceSelection::Named(names) => Some(names),
            };
            let chosen = interfaces::select(&self.interfaces, named);
            if chosen.is_empty() {
                self.announce_failed(*ip, entry).await;
            }
            desired.extend(chosen.into_iter().map(|interface| sync::DesiredVip {
                address: *ip,
                interface,
            }));
        }
        desired
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
            warn!("{service}: cannot announce {ip}: {message}");
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
