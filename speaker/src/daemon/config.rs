//! What `speaker run` runs with: the command line turned into a checked
//! [`RunConfig`] before anything starts, so that a bad flag is one error line
//! and never a half-started daemon.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use rustls::ServerConfig;

use crate::{
    announce::AnnounceConfig,
    cli::{MetricsAuthzArg, OnStopArg, ProfileArg, RunArgs},
    cluster::ReadOptions,
    dataplane::{AttachMode, PinDir},
    election::{ElectionOptions, Membership},
    error::Error,
    interfaces::ExcludeList,
    kube::status::SpeakerPod,
    membership::{Keyring, KeyringFiles, Profile, Timers, TimersError},
};

use super::{handover::OnStop, heartbeat::REFRESH_PERIOD};

/// The dead-man limit without gossip: nothing to line it up with, so long
/// enough for a restart (the pins are adopted) and short enough that a dead
/// speaker does not answer for long.
const DEAD_MAN_WITHOUT_GOSSIP: Duration = Duration::from_secs(10);

/// Where the cluster comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File(PathBuf, ReadOptions),
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
    pub metrics_address: Option<SocketAddr>,
    /// HTTPS for the metrics address (`--metrics-tls-cert`/`-key`, read at
    /// start); `None`: plain HTTP.
    pub metrics_tls: Option<Arc<ServerConfig>>,
    /// Whether `/metrics` asks the API server who may read it.
    pub metrics_authz: MetricsAuthz,
    /// Gossip membership; `None` runs with membership disabled.
    pub gossip: Option<GossipSettings>,
    /// What SIGTERM does with the IPs this node answers for.
    pub on_stop: OnStop,
    /// How long a restart stop keeps answering and has the others hold it.
    pub restart_window: Duration,
    /// The speaker's Pod, owner of its ServiceL2Statuses.
    pub speaker_pod: Option<SpeakerPod>,
}

/// `--metrics-authz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsAuthz {
    /// Anyone may read `/metrics`.
    None,
    /// TokenReview + SubjectAccessReview (see `metrics::access`).
    Kubernetes,
}

/// `--memberlist*`: how this speaker gossips with the others.
#[derive(Clone, Debug)]
pub struct GossipSettings {
    pub port: u16,
    /// The address others reach us at; `None`: this node's first InternalIP.
    pub advertise: Option<IpAddr>,
    /// The gossip keys: `--memberlist-key-file` is the primary.
    pub keyring: Option<Keyring>,
    /// Where `keyring` was read from; re-read periodically and on SIGHUP.
    pub keyring_files: Option<KeyringFiles>,
    /// Explicit peers (`--memberlist-join`), on top of every Node's InternalIP.
    pub join: Vec<SocketAddr>,
    /// With Kubernetes: the speaker pods' labels and namespace; their pod IPs
    /// are peers too (re-listed every minute).
    pub pod_selector: Option<(String, String)>,
    pub timers: Timers,
}

impl TryFrom<RunArgs> for RunConfig {
    type Error = Error;

    fn try_from(args: RunArgs) -> Result<Self, Error> {
        let exclude = exclude_list(args.exclude_interfaces.as_deref())?;
        let gossip = if args.memberlist {
            Some(gossip_settings(&args)?)
        } else {
            None
        };
        let dead_man = args.dead_man_timeout.unwrap_or_else(|| match &gossip {
            Some(g) => dead_man_for(&g.timers),
            None => DEAD_MAN_WITHOUT_GOSSIP,
        });
        let on_stop = match (args.on_stop, &gossip) {
            (Some(OnStopArg::Auto), _) | (None, Some(_)) => OnStop::Auto,
            (Some(OnStopArg::Restart), _) => OnStop::Restart,
            (Some(OnStopArg::Handover), _) => OnStop::Handover,
            (Some(OnStopArg::Keep), _) | (None, None) => OnStop::Keep,
        };
        if args.restart_window.is_zero() || args.restart_window > crate::membership::MAX_HOLD {
            return Err(Error::Config(format!(
                "--restart-window must be above 0 and at most {} s",
                crate::membership::MAX_HOLD.as_secs()
            )));
        }
        let metrics_address = metrics_address(&args.metrics_address)?;
        let (metrics_tls, metrics_authz) = metrics_security(&args, metrics_address.is_some())?;
        Ok(RunConfig {
            metrics_address,
            metrics_tls,
            metrics_authz,
            source: match args.cluster_state {
                Some(path) => Source::File(
                    path,
                    ReadOptions {
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
            dead_man,
            gossip,
            on_stop,
            restart_window: args.restart_window,
            heartbeat_interval: REFRESH_PERIOD,
            speaker_pod: SpeakerPod::from_downward_api(
                args.pod_name,
                args.pod_uid,
                args.memberlist_pod_namespace,
            ),
            node_name: args.node_name,
        })
    }
}

/// `--exclude-interfaces`: absent means MetalLB's list; empty patterns are
/// dropped, so an empty value excludes nothing.
fn exclude_list(patterns: Option<&[String]>) -> Result<ExcludeList, Error> {
    let Some(patterns) = patterns else {
        return Ok(ExcludeList::metallb_default());
    };
    ExcludeList::new(patterns.iter().filter(|p| !p.is_empty())).map_err(|e| {
        // regex errors draw a caret under the pattern on several lines;
        // operators get one line.
        let text = e.to_string();
        let one_line: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '^' || c == ' '))
            .collect();
        Error::Config(format!("--exclude-interfaces: {}", one_line.join(" ")))
    })
}

fn gossip_settings(args: &RunArgs) -> Result<GossipSettings, Error> {
    let keyring_files = args
        .memberlist_key_file
        .clone()
        .map(|primary| KeyringFiles {
            primary,
            dir: args.memberlist_keyring_dir.clone(),
        });
    let keyring = keyring_files
        .as_ref()
        .map(KeyringFiles::load)
        .transpose()
        .map_err(|e| Error::Config(e.to_string()))?;
    let join = args
        .memberlist_join
        .iter()
        .filter(|p| !p.is_empty())
        .map(|peer| parse_peer(peer, args.memberlist_port))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GossipSettings {
        port: args.memberlist_port,
        advertise: args.memberlist_advertise_address,
        keyring,
        keyring_files,
        join,
        pod_selector: args.memberlist_pod_selector.clone().map(|selector| {
            let namespace = args
                .memberlist_pod_namespace
                .clone()
                .unwrap_or_else(|| args.election.namespace.clone());
            (selector, namespace)
        }),
        timers: timers(args)?,
    })
}

/// `--memberlist-profile` and the single timers that override it.
fn timers(args: &RunArgs) -> Result<Timers, Error> {
    let profile = match args.memberlist_profile {
        ProfileArg::Lan => Profile::Lan,
        ProfileArg::Fast => Profile::Fast,
    };
    let mut timers = profile.timers();
    let overrides = [
        (&mut timers.probe_period, args.memberlist_probe_interval),
        (&mut timers.probe_rtt, args.memberlist_probe_timeout),
        (
            &mut timers.suspect_to_down,
            args.memberlist_suspicion_timeout,
        ),
        (
            &mut timers.suspect_to_down_max,
            args.memberlist_suspicion_max_timeout,
        ),
        (&mut timers.periodic_gossip, args.memberlist_gossip_interval),
        (
            &mut timers.periodic_announce,
            args.memberlist_announce_interval,
        ),
        (
            &mut timers.remove_down_after,
            args.memberlist_down_retention,
        ),
    ];
    for (timer, given) in overrides {
        if let Some(value) = given {
            *timer = value;
        }
    }
    if let Some(count) = args.memberlist_indirect_checks {
        timers.indirect_probes = count;
    }
    if let Some(factor) = args.memberlist_awareness_max_multiplier {
        timers.awareness_max_multiplier = factor;
    }
    // A shorter minimum alone lifts the maximum with it rather than refusing.
    if args.memberlist_suspicion_max_timeout.is_none() {
        timers.suspect_to_down_max = timers.suspect_to_down_max.max(timers.suspect_to_down);
    }
    timers.validate().map_err(|e| {
        Error::Config(match e {
            TimersError::Zero(timer) => format!("{} must not be zero", timer_flag(timer)),
            TimersError::RttNotBelowPeriod { rtt, period } => format!(
                "--memberlist-probe-timeout ({} s) must be shorter than \
                 --memberlist-probe-interval ({} s)",
                rtt.as_secs_f64(),
                period.as_secs_f64()
            ),
            TimersError::SuspicionMaxBelowMin { min, max } => format!(
                "--memberlist-suspicion-max-timeout ({} s) must not be shorter than \
                 --memberlist-suspicion-timeout ({} s)",
                max.as_secs_f64(),
                min.as_secs_f64()
            ),
        })
    })?;
    Ok(timers)
}

/// The flag that sets a [`Timers`] field.
fn timer_flag(field: &str) -> &'static str {
    match field {
        "probe_period" => "--memberlist-probe-interval",
        "probe_rtt" => "--memberlist-probe-timeout",
        "indirect_probes" => "--memberlist-indirect-checks",
        "suspect_to_down" => "--memberlist-suspicion-timeout",
        "suspect_to_down_max" => "--memberlist-suspicion-max-timeout",
        "awareness_max_multiplier" => "--memberlist-awareness-max-multiplier",
        "periodic_gossip" => "--memberlist-gossip-interval",
        "periodic_announce" => "--memberlist-announce-interval",
        "remove_down_after" => "--memberlist-down-retention",
        _ => "a --memberlist timer",
    }
}

/// `--metrics-address`: empty turns the server off.
fn metrics_address(text: &str) -> Result<Option<SocketAddr>, Error> {
    match text {
        "" => Ok(None),
        text => text
            .parse()
            .map(Some)
            .map_err(|_| Error::Config(format!("--metrics-address {text:?} is not ADDRESS:PORT"))),
    }
}

/// `--metrics-tls-cert`, `--metrics-tls-key`, `--metrics-authz`: the
/// certificate is read here so that a bad one stops the start.
fn metrics_security(
    args: &RunArgs,
    served: bool,
) -> Result<(Option<Arc<ServerConfig>>, MetricsAuthz), Error> {
    let tls = match (&args.metrics_tls_cert, &args.metrics_tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(crate::metrics::tls::server_config(cert, key)?),
        _ => {
            return Err(Error::Config(
                "--metrics-tls-cert and --metrics-tls-key go together".to_owned(),
            ))
        }
    };
    let authz = match args.metrics_authz {
        MetricsAuthzArg::None => MetricsAuthz::None,
        MetricsAuthzArg::Kubernetes => MetricsAuthz::Kubernetes,
    };
    if authz == MetricsAuthz::Kubernetes {
        if tls.is_none() {
            // A bearer token sent in clear is anyone's on the path.
            return Err(Error::Config(
                "--metrics-authz kubernetes needs --metrics-tls-cert and --metrics-tls-key"
                    .to_owned(),
            ));
        }
        if args.cluster_state.is_some() {
            return Err(Error::Config(
                "--metrics-authz kubernetes needs the Kubernetes API, not --cluster-state"
                    .to_owned(),
            ));
        }
    }
    if !served && (tls.is_some() || authz != MetricsAuthz::None) {
        return Err(Error::Config(
            "--metrics-tls-cert/--metrics-authz with --metrics-address= (no metrics server)"
                .to_owned(),
        ));
    }
    Ok((tls, authz))
}

/// `IP` or `IP:PORT` (IPv6 with a port as `[IP]:PORT`).
fn parse_peer(text: &str, default_port: u16) -> Result<SocketAddr, Error> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| Error::Config(format!("--memberlist-join: {text:?} is not IP or IP:PORT")))
}

/// The dead-man limit that goes with the gossip timers: about when the others
/// declare a silent node down and take over (a probe period to notice, one
/// more for the indirect probes, then the suspicion), so a node whose control
/// plane died stops answering about when its successor starts (see
/// docs/membership.md).
pub fn dead_man_for(timers: &Timers) -> Duration {
    timers.probe_period * 2 + timers.suspect_to_down
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{
        cli::{Cli, Command},
        error::ErrorKind,
    };

    fn config(extra: &[&str]) -> Result<RunConfig, Error> {
        let mut argv = vec!["speaker", "run", "--node-name", "node-a"];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv).expect("the flags parse");
        let Command::Run(args) = cli.command else {
            panic!("not `run`");
        };
        RunConfig::try_from(*args)
    }

    fn config_error(extra: &[&str]) -> String {
        let e = config(extra).expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        e.to_string()
    }

    #[test]
    fn defaults_are_metallbs() {
        let c = config(&[]).unwrap();
        assert_eq!(c.node_name, "node-a");
        assert_eq!(c.source, Source::Kubernetes { kubeconfig: None });
        assert_eq!(c.metrics_address, Some("0.0.0.0:7472".parse().unwrap()));
        assert!(c.exclude.excludes("docker0"));
        assert!(c.exclude.excludes("cali12ab"));
        assert!(!c.exclude.excludes("eth0"));
        assert_eq!(c.options.lb_class, None);
        assert_eq!(c.announce.periodic, None);
        let gossip = c.gossip.expect("memberlist is on by default");
        assert_eq!(gossip.port, 7946);
        assert!(gossip.join.is_empty());
        assert_eq!(gossip.advertise, None);
    }

    #[test]
    fn exclude_patterns_replace_the_default_and_empty_excludes_nothing() {
        let c = config(&["--exclude-interfaces", "^eth1$,^bond.*"]).unwrap();
        assert!(c.exclude.excludes("eth1"));
        assert!(c.exclude.excludes("bond0"));
        assert!(
            !c.exclude.excludes("docker0"),
            "the default list is replaced"
        );
        assert!(!c.exclude.excludes("eth10"));

        let c = config(&["--exclude-interfaces="]).unwrap();
        assert!(c.exclude.patterns().is_empty());
        assert!(!c.exclude.excludes("docker0"));
    }

    #[test]
    fn a_bad_exclude_pattern_is_one_line() {
        let message = config_error(&["--exclude-interfaces", "eth(0"]);
        assert!(message.starts_with("--exclude-interfaces: "), "{message}");
        assert!(!message.contains('\n'), "{message:?}");
    }

    #[test]
    fn peers_take_the_gossip_port_unless_they_name_one() {
        let c = config(&[
            "--memberlist-port",
            "7000",
            "--memberlist-join",
            "192.0.2.1,192.0.2.2:7946,,2001:db8::1,[2001:db8::2]:8000",
        ])
        .unwrap();
        let join: Vec<String> = c
            .gossip
            .unwrap()
            .join
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            join,
            [
                "192.0.2.1:7000",
                "192.0.2.2:7946",
                "[2001:db8::1]:7000",
                "[2001:db8::2]:8000"
            ]
        );
        let message = config_error(&["--memberlist-join", "node-b"]);
        assert_eq!(
            message,
            "--memberlist-join: \"node-b\" is not IP or IP:PORT"
        );
    }

    #[test]
    fn metrics_address_empty_is_off_and_garbage_is_refused() {
        assert_eq!(
            config(&["--metrics-address="]).unwrap().metrics_address,
            None
        );
        assert_eq!(
            config(&["--metrics-address", "[::1]:9000"])
                .unwrap()
                .metrics_address,
            Some("[::1]:9000".parse().unwrap())
        );
        let message = config_error(&["--metrics-address", "7472"]);
        assert!(message.contains("is not ADDRESS:PORT"), "{message}");
    }

    #[test]
    fn dead_man_follows_gossip_timers_unless_given() {
        let with_gossip = config(&[]).unwrap();
        let timers = Timers::lan();
        assert_eq!(with_gossip.dead_man, dead_man_for(&timers));
        assert!(with_gossip.dead_man > timers.suspect_to_down);

        let without = config(&["--memberlist=false"]).unwrap();
        assert!(without.gossip.is_none());
        assert_eq!(without.dead_man, DEAD_MAN_WITHOUT_GOSSIP);

        let given = config(&["--dead-man-timeout", "2.5"]).unwrap();
        assert_eq!(given.dead_man, Duration::from_millis(2500));
        let off = config(&["--dead-man-timeout", "0"]).unwrap();
        assert_eq!(off.dead_man, Duration::ZERO);
    }

    fn timers_of(extra: &[&str]) -> Timers {
        config(extra).unwrap().gossip.expect("gossip").timers
    }

    #[test]
    fn the_profile_picks_the_timers_and_lan_is_the_default() {
        assert_eq!(timers_of(&[]), Timers::lan());
        assert_eq!(timers_of(&["--memberlist-profile", "lan"]), Timers::lan());
        let fast = timers_of(&["--memberlist-profile", "fast"]);
        assert_eq!(fast, Timers::fast_lan());
        // The dead-man limit follows the profile: 0.8 s fast, 1.7 s lan
        // (above the 1 s stop lan tolerates).
        let c = config(&["--memberlist-profile", "fast"]).unwrap();
        assert_eq!(c.dead_man, Duration::from_millis(800));
        assert_eq!(config(&[]).unwrap().dead_man, Duration::from_millis(1700));
        let argv = [
            "speaker",
            "run",
            "--node-name",
            "a",
            "--memberlist-profile",
            "wan",
        ];
        let refused = Cli::try_parse_from(argv).map(|_| ()).unwrap_err();
        assert!(refused.to_string().contains("wan"), "{refused}");
    }

    #[test]
    fn every_timer_overrides_the_profile_and_moves_the_dead_man_limit() {
        let c = config(&[
            "--memberlist-profile",
            "fast",
            "--memberlist-probe-interval",
            "0.5",
            "--memberlist-probe-timeout",
            "0.2",
            "--memberlist-indirect-checks",
            "2",
            "--memberlist-suspicion-timeout",
            "1.5",
            "--memberlist-suspicion-max-timeout",
            "4",
            "--memberlist-awareness-max-multiplier",
            "3",
            "--memberlist-gossip-interval",
            "0.05",
            "--memberlist-announce-interval",
            "7",
            "--memberlist-down-retention",
            "3600",
        ])
        .unwrap();
        let timers = c.gossip.as_ref().unwrap().timers.clone();
        assert_eq!(
            timers,
            Timers {
                probe_period: Duration::from_millis(500),
                probe_rtt: Duration::from_millis(200),
                indirect_probes: 2,
                suspect_to_down: Duration::from_millis(1500),
                suspect_to_down_max: Duration::from_secs(4),
                awareness_max_multiplier: 3,
                remove_down_after: Duration::from_secs(3600),
                periodic_gossip: Duration::from_millis(50),
                periodic_announce: Duration::from_secs(7),
            }
        );
        assert_eq!(c.dead_man, Duration::from_millis(2500));
        // An explicit limit wins over the derived one.
        let given = config(&[
            "--memberlist-suspicion-timeout",
            "9",
            "--dead-man-timeout",
            "2",
        ]);
        assert_eq!(given.unwrap().dead_man, Duration::from_secs(2));
    }

    #[test]
    fn impossible_timers_are_one_line_naming_the_flag() {
        assert_eq!(
            config_error(&["--memberlist-probe-timeout", "1"]),
            "--memberlist-probe-timeout (1 s) must be shorter than \
             --memberlist-probe-interval (0.4 s)"
        );
        assert_eq!(
            config_error(&["--memberlist-suspicion-max-timeout", "0.5"]),
            "--memberlist-suspicion-max-timeout (0.5 s) must not be shorter than \
             --memberlist-suspicion-timeout (0.9 s)"
        );
        // A longer minimum alone carries the maximum along.
        let timers = timers_of(&["--memberlist-suspicion-timeout", "8"]);
        assert_eq!(timers.suspect_to_down_max, Duration::from_secs(8));
        assert_eq!(
            config_error(&["--memberlist-suspicion-timeout", "0"]),
            "--memberlist-suspicion-timeout must not be zero"
        );
        assert_eq!(
            config_error(&["--memberlist-indirect-checks", "0"]),
            "--memberlist-indirect-checks must not be zero"
        );
        // Without memberlist the timers are not looked at.
        assert!(config(&["--memberlist=false", "--memberlist-probe-timeout", "5"]).is_ok());
    }

    #[test]
    fn a_stop_decides_with_gossip_and_keeps_without_unless_told() {
        assert_eq!(config(&[]).unwrap().on_stop, OnStop::Auto);
        assert_eq!(
            config(&["--on-stop", "restart"]).unwrap().on_stop,
            OnStop::Restart
        );
        assert_eq!(config(&[]).unwrap().restart_window, Duration::from_secs(10));
        assert_eq!(
            config_error(&["--restart-window", "0"]),
            "--restart-window must be above 0 and at most 120 s"
        );
        assert_eq!(
            config_error(&["--restart-window", "121"]),
            "--restart-window must be above 0 and at most 120 s"
        );
        assert_eq!(
            config(&["--memberlist=false"]).unwrap().on_stop,
            OnStop::Keep
        );
        assert_eq!(
            config(&["--on-stop", "keep"]).unwrap().on_stop,
            OnStop::Keep
        );
        assert_eq!(
            config(&["--memberlist=false", "--on-stop", "handover"])
                .unwrap()
                .on_stop,
            OnStop::Handover
        );
    }

    #[test]
    fn pod_namespace_defaults_to_the_metallb_namespace() {
        let c = config(&[
            "--memberlist-pod-selector",
            "app=speaker",
            "--namespace",
            "lb",
        ])
        .unwrap();
        assert_eq!(
            c.gossip.unwrap().pod_selector,
            Some(("app=speaker".to_owned(), "lb".to_owned()))
        );
    }

    #[test]
    fn keyring_dir_adds_accepted_keys_behind_the_key_file() {
        let dir = std::env::temp_dir().join(format!("config-keyring-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let primary = dir.join("secretkey");
        std::fs::write(&primary, "11".repeat(32)).unwrap();
        std::fs::write(dir.join("secretkey-next"), "22".repeat(32)).unwrap();
        let (primary_arg, dir_arg) = (primary.to_str().unwrap(), dir.to_str().unwrap());
        let gossip = config(&[
            "--memberlist-key-file",
            primary_arg,
            "--memberlist-keyring-dir",
            dir_arg,
        ])
        .unwrap()
        .gossip
        .unwrap();
        let keyring = gossip.keyring.expect("keyed");
        assert_eq!(keyring.keys().len(), 2);
        assert_eq!(
            keyring.primary(),
            &crate::membership::Key::from_bytes([0x11; 32])
        );
        assert_eq!(
            gossip.keyring_files.unwrap().dir.as_deref(),
            Some(dir.as_path())
        );

        std::fs::write(dir.join("secretkey-next"), "11".repeat(32)).unwrap();
        let message = config_error(&[
            "--memberlist-key-file",
            primary_arg,
            "--memberlist-keyring-dir",
            dir_arg,
        ]);
        assert!(message.contains("holds the same key as"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();

        let refused = Cli::try_parse_from([
            "speaker",
            "run",
            "--node-name",
            "node-a",
            "--memberlist-keyring-dir",
            "/tmp",
        ]);
        assert!(refused.is_err(), "a keyring needs its primary key file");
    }

    #[test]
    fn cluster_state_selects_the_file_source_and_a_missing_key_file_is_refused() {
        let c = config(&[
            "--cluster-state",
            "/tmp/cluster.yaml",
            "--gratuitous-interval",
            "3",
        ])
        .unwrap();
        assert_eq!(
            c.source,
            Source::File(
                "/tmp/cluster.yaml".into(),
                ReadOptions {
                    max_bytes: crate::cluster::DEFAULT_MAX_BYTES,
                    allow_empty: false
                }
            )
        );
        assert_eq!(c.announce.periodic, Some(Duration::from_secs(3)));
        let message = config_error(&["--memberlist-key-file", "/nonexistent/xdp-speaker-key"]);
        assert!(
            message.contains("/nonexistent/xdp-speaker-key"),
            "{message}"
        );
    }

    #[test]
    fn an_empty_lb_class_means_no_class() {
        assert_eq!(config(&["--lb-class="]).unwrap().options.lb_class, None);
        assert_eq!(
            config(&["--lb-class", "example.com/lb"])
                .unwrap()
                .options
                .lb_class
                .as_deref(),
            Some("example.com/lb")
        );
    }

    /// A self-signed certificate and its key in PEM files under a fresh
    /// directory named for `test` (left for the next run to overwrite: the
    /// files are read while the config is built, and nothing else uses them).
    fn certificate_files(test: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("xdp-speaker-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn metrics_are_plain_and_open_by_default() {
        let c = config(&[]).unwrap();
        assert!(c.metrics_tls.is_none());
        assert_eq!(c.metrics_authz, MetricsAuthz::None);
    }

    #[test]
    fn a_certificate_and_key_make_metrics_https_and_kubernetes_authz_needs_them() {
        let (cert, key) = certificate_files("metrics-tls");
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let tls = ["--metrics-tls-cert", cert, "--metrics-tls-key", key];
        let c = config(&tls).unwrap();
        assert_eq!(
            c.metrics_tls.expect("TLS configured").alpn_protocols,
            [b"http/1.1".to_vec()]
        );
        assert_eq!(c.metrics_authz, MetricsAuthz::None);
        let mut secured = tls.to_vec();
        secured.extend(["--metrics-authz", "kubernetes"]);
        assert_eq!(
            config(&secured).unwrap().metrics_authz,
            MetricsAuthz::Kubernetes
        );

        let message = config_error(&["--metrics-authz", "kubernetes"]);
        assert!(message.contains("needs --metrics-tls-cert"), "{message}");
        let mut from_file = secured.clone();
        from_file.extend(["--cluster-state", "/tmp/cluster.yaml"]);
        let message = config_error(&from_file);
        assert!(message.contains("not --cluster-state"), "{message}");
        let mut unserved = tls.to_vec();
        unserved.push("--metrics-address=");
        let message = config_error(&unserved);
        assert!(message.contains("no metrics server"), "{message}");
    }

    #[test]
    fn bad_certificate_files_are_one_line_errors() {
        let (cert, key) = certificate_files("metrics-tls-bad");
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let one_line_error = |flags: &[&str]| {
            let message = config_error(flags);
            assert!(!message.contains('\n'), "{message:?}");
            message
        };
        let message = one_line_error(&["--metrics-tls-cert", cert]);
        assert_eq!(
            message,
            "--metrics-tls-cert and --metrics-tls-key go together"
        );
        let message = one_line_error(&[
            "--metrics-tls-cert",
            "/nonexistent/tls.crt",
            "--metrics-tls-key",
            key,
        ]);
        assert!(
            message.starts_with("--metrics-tls-cert /nonexistent/tls.crt: "),
            "{message}"
        );
        // The key file holds no certificate, and the certificate no key.
        let message = one_line_error(&["--metrics-tls-cert", key, "--metrics-tls-key", key]);
        assert!(message.contains("no PEM certificate"), "{message}");
        let message = one_line_error(&["--metrics-tls-cert", cert, "--metrics-tls-key", cert]);
        assert!(
            message.starts_with(&format!("--metrics-tls-key {cert}: ")),
            "{message}"
        );
    }
}
