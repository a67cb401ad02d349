//! `speaker`: argument parsing and wiring only; the work is in the library.

use std::{net::IpAddr, process::ExitCode};

use clap::Parser as _;
use speaker::{
    cli::{Cli, Command, VipAction, XdpAction},
    cluster,
    dataplane::{self, Attached, DataplaneMaps, PinDir},
    election::Membership,
    interfaces::{self, Interface},
    report::MapsReport,
    Error,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // One line, like every other error: clap's first line names the problem.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!("speaker: {first}");
            return ExitCode::FAILURE;
        }
    };
    speaker::logging::init(cli.log_level, cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("speaker: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Xdp { action, pins } => {
            let pins = PinDir::new(pins.pin_dir);
            match action {
                XdpAction::Attach {
                    interface,
                    mode,
                    pass_through,
                } => {
                    let program = if pass_through {
                        dataplane::PASS
                    } else {
                        dataplane::RESPONDER
                    };
                    match dataplane::attach(&pins, &interface, mode.into(), program)? {
                        Attached::New { native } => println!(
                            "attached {program} to {interface} in {} mode",
                            if native { "native" } else { "generic" }
                        ),
                        Attached::Replaced => {
                            println!("{interface}: replaced the attached program in place")
                        }
                    }
                }
                XdpAction::Detach { interface } => {
                    dataplane::detach(&pins, &interface)?;
                    println!("detached from {interface}");
                }
            }
        }
        Command::Vip { action, pins } => {
            let mut maps = DataplaneMaps::from_pins(&PinDir::new(pins.pin_dir))?;
            match action {
                VipAction::Add { address, interface } => {
                    let interface = Interface::by_name(&interface)?;
                    maps.add_vip(address, interface.index, interface.mac)?;
                    if let IpAddr::V6(v6) = address {
                        let group = interfaces::solicited_node_mac(&v6);
                        interfaces::set_multicast_mac(&interface.name, group, true)?;
                    }
                    println!(
                        "answering for {address} on {} ({})",
                        interface.name,
                        interfaces::format_mac(&interface.mac)
                    );
                }
                VipAction::Del { address, interface } => {
                    let ifindex = interfaces::index_of(&interface)?;
                    if !maps.remove_vip(address, ifindex)? {
                        return Err(Error::NoSuchVip(address, interface));
                    }
                    if let IpAddr::V6(v6) = address {
                        let remaining = maps.vips()?;
                        dataplane::sync::leave_group_unless_shared(
                            &interface,
                            ifindex,
                            &v6,
                            remaining.iter().map(|vip| (vip.address, vip.ifindex)),
                        )?;
                    }
                    println!("no longer answering for {address} on {interface}");
                }
            }
        }
        Command::Heartbeat { max_age, pins } => {
            let mut maps = DataplaneMaps::from_pins(&PinDir::new(pins.pin_dir))?;
            maps.heartbeat(max_age)?;
        }
        Command::Run(args) => run_daemon(*args)?,
        Command::Election {
            cluster_state,
            json,
            members,
            election,
        } => {
            let state = cluster::load(&cluster_state).map_err(Error::cluster)?;
            let membership = match members {
                // `--members ""` gives one empty name: nobody is alive.
                Some(names) => {
                    Membership::Members(names.into_iter().filter(|n| !n.is_empty()).collect())
                }
                None => Membership::Disabled,
            };
            let report = cluster::dry_run(&state, election.options(), &membership);
            print_report(&report, json, || report.to_table());
        }
        Command::Maps { json, pins } => {
            let pins = PinDir::new(pins.pin_dir);
            let maps = DataplaneMaps::from_pins(&pins)?;
            let report = MapsReport::read(&pins, &maps)?;
            print_report(&report, json, || report.to_table());
        }
    }
    Ok(())
}

/// Reports print as JSON for scripts or as a table for people.
fn print_report(report: &impl serde::Serialize, json: bool, table: impl FnOnce() -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).expect("plain data")
        );
    } else {
        print!("{}", table());
    }
}

fn run_daemon(args: speaker::cli::RunArgs) -> Result<(), Error> {
    use speaker::{
        announce::AnnounceConfig,
        daemon::run::{RunConfig, Source},
        interfaces::discovery::ExcludeList,
    };
    let exclude = match &args.exclude_interfaces {
        None => ExcludeList::metallb_default(),
        Some(patterns) => {
            let patterns: Vec<&String> = patterns.iter().filter(|p| !p.is_empty()).collect();
            ExcludeList::new(patterns.iter().map(|p| p.as_str()))
                .map_err(|e| Error::Config(format!("--exclude-interfaces: {e}")))?
        }
    };
    let gossip = if args.memberlist {
        let key = args
            .memberlist_key_file
            .as_deref()
            .map(speaker::membership::Key::from_file)
            .transpose()
            .map_err(|e| Error::Config(e.to_string()))?;
        if key.is_none() {
            tracing::warn!("no --memberlist-key-file: gossip is not encrypted or authenticated");
        }
        let join = args
            .memberlist_join
            .iter()
            .filter(|p| !p.is_empty())
            .map(|peer| parse_peer(peer, args.memberlist_port))
            .collect::<Result<Vec<_>, _>>()?;
        Some(speaker::daemon::run::GossipSettings {
            port: args.memberlist_port,
            advertise: args.memberlist_advertise_address,
            key,
            join,
            pod_selector: args.memberlist_pod_selector.clone().map(|selector| {
                let namespace = args
                    .memberlist_pod_namespace
                    .clone()
                    .unwrap_or_else(|| args.election.namespace.clone());
                (selector, namespace)
            }),
            timers: speaker::membership::Timers::fast_lan(),
        })
    } else {
        None
    };
    let dead_man_timeout = args.dead_man_timeout.unwrap_or_else(|| match &gossip {
        Some(g) => dead_man_for(&g.timers),
        None => std::time::Duration::from_secs(10),
    });
    let metrics_address = match args.metrics_address.as_str() {
        "" => None,
        text => Some(text.parse().map_err(|_| {
            Error::Config(format!("--metrics-address {text:?} is not ADDRESS:PORT"))
        })?),
    };
    let config = RunConfig {
        metrics_address,
        node_name: args.node_name,
        source: match args.cluster_state {
            Some(path) => Source::File(
                path,
                cluster::ReadOptions {
                    max_bytes: args.cluster_state_max_bytes,
                    allow_empty: args.allow_empty_cluster_state,
                },
            ),
            None => Source::Kubernetes {
                kubeconfig: args.kubeconfig,
            },
        },
        pins: PinDir::new(args.pins.pin_dir),
        options: args.election.options(),
        membership: Membership::Disabled,
        exclude,
        xdp_mode: args.mode.into(),
        announce: AnnounceConfig {
            periodic: (!args.gratuitous_interval.is_zero()).then_some(args.gratuitous_interval),
            ..AnnounceConfig::default()
        },
        dead_man: dead_man_timeout,
        gossip,
        heartbeat_interval: speaker::daemon::heartbeat::REFRESH_PERIOD,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the runtime", e))?;
    runtime.block_on(speaker::daemon::run::run(config))
}

/// `IP` or `IP:PORT` (IPv6 with a port as `[IP]:PORT`).
fn parse_peer(text: &str, default_port: u16) -> Result<std::net::SocketAddr, Error> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, default_port))
        .map_err(|_| Error::Config(format!("--memberlist-join: {text:?} is not IP or IP:PORT")))
}

/// The dead-man limit that goes with the gossip timers: about when the others
/// declare a silent node down and take over (a probe period to notice, one
/// more for the indirect probes, then the suspicion), so a node whose control
/// plane died stops answering about when its successor starts (see
/// docs/membership.md).
fn dead_man_for(timers: &speaker::membership::Timers) -> std::time::Duration {
    timers.probe_period * 2 + timers.suspect_to_down
}
