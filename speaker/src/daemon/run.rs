//! The daemon's event loop: cluster changes, interface changes, the settle
//! deadline and ended tasks in; the reconcile steps do the rest.

use std::{net::IpAddr, time::Duration};

use std::sync::Arc;

use tokio::sync::{mpsc, Notify};
use tracing::{info, warn};

use super::{
    config::{MetricsAuthz, RunConfig, Source},
    context::Context,
    gossip, handover,
    heartbeat::{Health, Heartbeat, STALL_LIMIT},
    limits,
    reconcile::{self, NodeState},
    restart::{self, StopKind},
    signals::{self, Action, Signals},
    supervise::{Supervisor, Task, Verdict},
};
use crate::{
    announce::Announcer,
    cluster::Change,
    dataplane::{self, conflicts::NewConflict, ownership, DataplaneMaps, Ownership},
    election::Membership,
    error::{Error, Result},
    interfaces::LinkWatcher,
    kube::{
        self,
        status::{StatusConfig, StatusWriter},
    },
    metrics::{access::MetricsAccess, server::Security, MetricsState},
    sources,
};

/// How long, at exit, tasks still running (a file being parsed, a scrape)
/// may hold the process.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Runs the daemon on its own runtime until a termination signal (`Ok`) or
/// a fatal error (`Err`, for a non-zero exit).
pub fn start(config: RunConfig) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the runtime", e))?;
    let result = runtime.block_on(run(config));
    // Do not wait for blocking tasks forever on the way out.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    result
}

/// What the loop waits on, besides the settle gate's deadline.
struct Inputs {
    changes: mpsc::Receiver<Change>,
    speaker_pods: mpsc::Receiver<Vec<IpAddr>>,
    links: LinkWatcher,
    tasks: Supervisor,
    signals: Signals,
    /// The first conflict of each burst, from the data path check.
    conflicts: mpsc::UnboundedReceiver<NewConflict>,
    /// SIGUSR2 was received: the next stop is a restart.
    restart_next: bool,
}

pub async fn run(config: RunConfig) -> Result<()> {
    dataplane::capabilities::require(&dataplane::capabilities::DAEMON)?;
    limits::raise_open_files_limit();
    let signals = Signals::install()?;
    // Creating (or adopting) the pinned maps needs the object loaded; it
    // stays loaded, with every link this process attaches, so that removed
    // pins can be restored (see `dataplane::ownership`).
    let ownership = Ownership::shared(config.pins.clone(), config.xdp_mode)?;
    let (conflict_bursts, conflicts) = mpsc::unbounded_channel();
    ownership
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .report_conflict_bursts(conflict_bursts);
    ownership::spawn_checks(ownership.clone(), ownership::CHECK_INTERVAL);
    let reload_cluster = Arc::new(Notify::new());
    let mut maps = DataplaneMaps::from_pins(&config.pins)?;
    // Read before our first heartbeat overwrites it.
    let restart_handoff = maps.watchdog().is_ok_and(|state| {
        restart::is_restart_handoff(&state, config.restart_window, config.dead_man)
    });
    maps.heartbeat(Some(config.dead_man))?;
    if restart_handoff {
        info!(
            event = "restartAdopted",
            "the previous speaker stopped for a restart and its entries never stopped              answering: adopting them without a gratuitous burst"
        );
    }
    // Refreshed by its own thread from here on; see `heartbeat`. Dropped
    // (stopped) when this function returns, or first at a restart stop.
    let health = Health::new();
    let heartbeat = Heartbeat::spawn(
        maps.heartbeat_writer()?,
        health.clone(),
        config.heartbeat_interval,
        STALL_LIMIT,
    )
    .map_err(|e| Error::io("starting the heartbeat thread", e))?;
    if config.gossip.as_ref().is_some_and(|g| g.keyring.is_none()) {
        warn!("no --memberlist-key-file: gossip is not encrypted or authenticated");
    }

    let (changes_tx, changes) = mpsc::channel::<Change>(1024);
    let (pods_tx, speaker_pods) = mpsc::channel::<Vec<IpAddr>>(4);
    let mut tasks = Supervisor::new();
    let announcer = Announcer::new(config.announce);
    let mut metrics = MetricsState::new(
        config.node_name.clone(),
        config.pins.clone(),
        announcer.clone(),
    );
    metrics.health = health.clone();
    let _ = metrics.ownership.set(ownership.clone());
    let status = spawn_source(
        &config,
        &mut tasks,
        &metrics,
        changes_tx.clone(),
        pods_tx,
        reload_cluster.clone(),
    )
    .await?;
    if let Some(address) = config.metrics_address {
        let metrics = metrics.clone();
        let security = metrics_security(&config).await?;
        tasks.spawn(Task::MetricsServer, move || {
            let metrics = metrics.clone();
            let security = security.clone();
            async move {
                crate::metrics::serve(address, metrics, security)
                    .await
                    .map_err(|e| Error::io(format!("serving metrics on {address}"), e))
            }
        });
    }
    let mut inputs = Inputs {
        changes,
        speaker_pods,
        links: LinkWatcher::new()?,
        tasks,
        signals,
        conflicts,
        restart_next: false,
    };
    let mut node = NodeState::new(&config);
    if restart_handoff {
        node.answering.adopt_announced();
    }
    let mut ctx = Context {
        config,
        maps,
        announcer,
        metrics,
        status,
        health,
        changes: changes_tx,
        ownership,
        reload_cluster,
        groups: Default::default(),
    };
    reconcile::rescan_interfaces(&ctx, &mut node);
    if let Some(ip) = ctx.config.gossip.as_ref().and_then(|g| g.advertise) {
        gossip::start(&mut ctx, &mut node, ip).await?;
    }
    info!(
        "speaker running as node {:?}, membership {}",
        ctx.config.node_name,
        match (&ctx.config.gossip, &ctx.config.membership) {
            (Some(g), _) => format!("from gossip on port {}", g.port),
            (None, Membership::Disabled) => "disabled (every node is a candidate)".to_owned(),
            (None, Membership::Members(m)) => format!("fixed, {} member(s)", m.len()),
        }
    );
    let outcome = event_loop(&mut ctx, &mut node, &mut inputs).await;
    let kind = match outcome {
        // A fatal error is not a restart the DaemonSet planned: keep.
        Err(_) => StopKind::Keep,
        // Decided while the heartbeat still runs: asking the API server may
        // take longer than the `fast` dead-man limit.
        Ok(()) => restart::decide(&ctx.config, &node, inputs.restart_next).await,
    };
    // The loop is gone: /healthz says so while the process winds down.
    ctx.health.close();
    match kind {
        StopKind::Handover => {
            handover::hand_over(&mut ctx, &mut node).await;
            return outcome;
        }
        StopKind::Restart => {
            restart::stop_for_restart(&mut ctx, &node, heartbeat).await;
            return outcome;
        }
        StopKind::Keep => {}
    }
    if let Some(gossip) = &node.gossip {
        // The others drop us at once and take over; our answers go on until
        // the dead-man switch runs out, so no request goes unanswered meanwhile.
        info!("leaving the gossip cluster");
        gossip.leave().await;
    }
    // The pins stay: a restarted speaker adopts them with no gap in answering.
    // If none comes back, the dead-man switch stops the answers.
    info!("stopping; pinned maps and links stay for the next speaker");
    outcome
}

/// Until a termination signal (`Ok`) or a task whose end is fatal (`Err`).
async fn event_loop(ctx: &mut Context, node: &mut NodeState, inputs: &mut Inputs) -> Result<()> {
    loop {
        if let Some(members) = node.pending_members.take() {
            let changes = ctx.changes.clone();
            inputs.tasks.spawn(Task::Membership, move || {
                gossip::forward_members(members.clone(), changes.clone())
            });
        }
        let wake = node.gate.wake_at();
        tokio::select! {
            Some(change) = inputs.changes.recv() => {
                let mut batch = vec![change];
                while let Ok(more) = inputs.changes.try_recv() {
                    batch.push(more);
                }
                if batch.iter().any(|c| matches!(c, Change::Reset(_))) {
                    // The source (re)started and described the cluster.
                    ctx.recovered(Task::KubeWatches.name());
                }
                reconcile::apply(ctx, node, batch).await;
            }
            Some(addresses) = inputs.speaker_pods.recv() => {
                ctx.recovered(Task::SpeakerPods.name());
                node.pod_peers = addresses;
                gossip::join_peers(ctx, node);
            }
            changed = inputs.links.changed() => {
                if let Err(e) = changed {
                    ctx.report_error("link events", &e);
                }
                reconcile::rescan_interfaces(ctx, node);
                reconcile::sync(ctx, node).await;
            }
            Some(conflict) = inputs.conflicts.recv() => {
                reconcile::ip_conflict(ctx, node, &conflict);
            }
            _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {
                reconcile::settle_deadline(ctx, node).await;
            }
            (task, ended) = inputs.tasks.next_ended() => {
                let verdict = inputs.tasks.handle(task, &ended);
                let error = ended.into_error(task);
                match verdict {
                    Verdict::Restart { after } => {
                        ctx.report_standing_error(task.name(), &error);
                        warn!(task = task.name(), "restarting {} in {after:?}", task.name());
                    }
                    Verdict::Exit => {
                        ctx.metrics.diagnostics.count(&error);
                        return Err(error);
                    }
                }
            }
            action = inputs.signals.next() => match action {
                Action::Stop(name) => {
                    info!(event = "signalStop", signal = name, "received {name}: stopping");
                    return Ok(());
                }
                Action::RestartNext => {
                    info!(event = "signalRestartNext", "received SIGUSR2: the next stop is a restart");
                    inputs.restart_next = true;
                }
                Action::Reload => signals::reload(
                    matches!(ctx.config.source, Source::File(..)).then_some(&*ctx.reload_cluster),
                    node.gossip.as_ref(),
                    ctx.config.gossip.as_ref().and_then(|g| g.keyring_files.as_ref()),
                ),
            },
        }
    }
}

/// The metrics server's TLS and access check; with `--metrics-authz
/// kubernetes` a client of its own (the reviews are few and cached).
async fn metrics_security(config: &RunConfig) -> Result<Security> {
    let access = match (config.metrics_authz, &config.source) {
        (MetricsAuthz::None, _) => MetricsAccess::Anyone,
        (MetricsAuthz::Kubernetes, Source::Kubernetes { kubeconfig }) => MetricsAccess::kubernetes(
            kube::client(kubeconfig.as_deref())
                .await
                .map_err(Error::kubernetes)?,
        ),
        (MetricsAuthz::Kubernetes, Source::File(..)) => {
            return Err(Error::Config(
                "--metrics-authz kubernetes needs the Kubernetes API".to_owned(),
            ))
        }
    };
    Ok(Security {
        tls: config.metrics_tls.clone(),
        access,
    })
}

/// Starts the cluster source (and, with Kubernetes, the speaker-pod lister)
/// under supervision; returns the status sink.
async fn spawn_source(
    config: &RunConfig,
    tasks: &mut Supervisor,
    metrics: &MetricsState,
    changes: mpsc::Sender<Change>,
    pods: mpsc::Sender<Vec<IpAddr>>,
    reload: Arc<Notify>,
) -> Result<Option<StatusWriter>> {
    let stats = metrics.client.clone();
    match &config.source {
        Source::File(path, read) => {
            let (path, read) = (path.clone(), *read);
            tasks.spawn(Task::FileSource, move || {
                let (path, changes, stats, reload) =
                    (path.clone(), changes.clone(), stats.clone(), reload.clone());
                async move {
                    sources::file::run(path.clone(), read, changes, stats, reload)
                        .await
                        .map_err(|source| Error::FileWatch { path, source })
                }
            });
            Ok(None)
        }
        Source::Kubernetes { kubeconfig } => {
            let client = kube::client(kubeconfig.as_deref())
                .await
                .map_err(Error::kubernetes)?;
            if let Some((selector, pod_namespace)) =
                config.gossip.as_ref().and_then(|g| g.pod_selector.clone())
            {
                let client = client.clone();
                tasks.spawn(Task::SpeakerPods, move || {
                    let lister = kube::speaker_pod_addresses(
                        client.clone(),
                        pod_namespace.clone(),
                        selector.clone(),
                        Duration::from_secs(60),
                        pods.clone(),
                    );
                    async move {
                        lister.await;
                        Ok(())
                    }
                });
            }
            let namespace = config.options.metallb_namespace.clone();
            let source_client = client.clone();
            tasks.spawn(Task::KubeWatches, move || {
                let run = kube::run(
                    source_client.clone(),
                    namespace.clone(),
                    changes.clone(),
                    stats.clone(),
                );
                async move { run.await.map_err(Error::kubernetes) }
            });
            let (writer, reconciler) = StatusWriter::new(
                client,
                StatusConfig {
                    node: config.node_name.clone(),
                    namespace: config.options.metallb_namespace.clone(),
                    pod: config.speaker_pod.clone(),
                },
            );
            tasks.spawn(Task::StatusWriter, move || {
                let reconciler = reconciler.clone();
                async move {
                    reconciler.run().await;
                    Ok(())
                }
            });
            Ok(Some(writer))
        }
    }
}
