use std::{fmt, io, net::IpAddr, path::PathBuf};

/// A boxed source error of another layer (kube, gossip), kept whole so its
/// chain still reaches the log line.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The speaker's one error type. The messages are one line each and name what
/// to do, since they reach operators as is; [`Error::kind`] says which part
/// of the speaker failed, and is what metrics (`xdp_speaker_errors_total`)
/// and `/readyz` report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("interface {0:?} does not exist in this network namespace")]
    UnknownInterface(String),
    #[error("interface {0:?} has no Ethernet MAC address")]
    NoMacAddress(String),
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    BadAddress(String),
    #[error("pin directory {0} is not on a BPF filesystem: {hint}", hint = bpffs_hint(.0))]
    NoBpffs(PathBuf),
    #[error("nothing is pinned under {0}: run `speaker xdp attach --interface IF` first")]
    NotAttached(PathBuf),
    #[error("no XDP program is pinned for interface {0:?} under {1}")]
    NoLink(String, PathBuf),
    #[error(
        "the maps pinned under {dir} are of layout version {found} ({name}: {shape}) and this \
         speaker reads version {ours}: start this speaker's daemon (`speaker run`) or \
         `speaker xdp attach` to migrate them, or use the speaker of their version"
    )]
    LayoutMismatch {
        name: &'static str,
        /// What was found: "key 8 B, value 12 B", "absent"...
        shape: String,
        /// The pinned version, or the one inferred from the shapes.
        found: String,
        ours: u32,
        dir: PathBuf,
    },
    #[error("the VIP table is full ({0} entries)")]
    TableFull(u32),
    #[error("{0} is not configured on interface {1:?}")]
    NoSuchVip(IpAddr, String),
    #[error("this speaker was built without its eBPF object (SPEAKER_EBPF_PLACEHOLDER)")]
    NoObject,
    #[error(
        "missing capability {capability} (needed for {why}): add it to the container's \
         capabilities or run as root"
    )]
    MissingCapability {
        capability: &'static str,
        why: &'static str,
    },
    #[error(
        "bpf() refused while {0} although the capabilities it needs are effective: a seccomp \
         filter is active, and container runtimes' default profiles allow bpf() only with \
         CAP_SYS_ADMIN (run the container with seccompProfile Unconfined)"
    )]
    SeccompDenied(String),
    #[error("permission denied while {0}: run as root (CAP_BPF, CAP_NET_ADMIN)")]
    PermissionDenied(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Key(#[from] crate::membership::KeyError),
    #[error("cluster state: {0}")]
    Cluster(#[source] crate::cluster::ClusterError),
    #[error("watching {path} for changes: {source}")]
    FileWatch {
        path: PathBuf,
        source: notify::Error,
    },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("{context}: {message}")]
    Bpf { context: String, message: String },
    #[error("{0}")]
    Kubernetes(#[source] Source),
    #[error("{context}: {source}")]
    Membership { context: String, source: Source },
    /// A long-lived task of the daemon ended or panicked.
    #[error("{task} {how}")]
    TaskEnded { task: &'static str, how: String },
}

/// Which part of the speaker an [`Error`] comes from: the `kind` label of
/// `xdp_speaker_errors_total` and the key of a `/readyz` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// Bad flags or files given by the operator.
    Config,
    /// The cluster description (YAML file) could not be used.
    Cluster,
    /// Talking to the Kubernetes API.
    Kubernetes,
    /// The XDP program, its pins and maps (bpf(), bpffs, capabilities).
    Dataplane,
    /// Network interfaces (netlink, names, addresses).
    Interface,
    /// Gossip membership.
    Membership,
    /// Other I/O (files, sockets, threads).
    Io,
    /// A long-lived task ended or panicked.
    Task,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Config,
        ErrorKind::Cluster,
        ErrorKind::Kubernetes,
        ErrorKind::Dataplane,
        ErrorKind::Interface,
        ErrorKind::Membership,
        ErrorKind::Io,
        ErrorKind::Task,
    ];

    /// The metric label value.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Cluster => "cluster",
            ErrorKind::Kubernetes => "kubernetes",
            ErrorKind::Dataplane => "dataplane",
            ErrorKind::Interface => "interface",
            ErrorKind::Membership => "membership",
            ErrorKind::Io => "io",
            ErrorKind::Task => "task",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The usual bpffs is /sys/fs/bpf; anywhere else, mount one at the pin dir.
fn bpffs_hint(pin_dir: &std::path::Path) -> String {
    let usual = std::path::Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(usual) {
        format!("mount it with `mount -t bpf bpf {}`", usual.display())
    } else {
        let dir = pin_dir.display();
        format!(
            "mount one with `mkdir -p {dir} && mount -t bpf bpf {dir}`, or pick another --pin-dir"
        )
    }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::UnknownInterface(_) | Error::NoMacAddress(_) => ErrorKind::Interface,
            Error::BadAddress(_) | Error::Config(_) | Error::Key(_) => ErrorKind::Config,
            Error::NoBpffs(_)
            | Error::NotAttached(_)
            | Error::NoLink(..)
            | Error::LayoutMismatch { .. }
            | Error::TableFull(_)
            | Error::NoSuchVip(..)
            | Error::NoObject
            | Error::MissingCapability { .. }
            | Error::SeccompDenied(_)
            | Error::PermissionDenied(_)
            | Error::Bpf { .. } => ErrorKind::Dataplane,
            Error::Cluster(_) | Error::FileWatch { .. } => ErrorKind::Cluster,
            Error::Io { .. } => ErrorKind::Io,
            Error::Kubernetes { .. } => ErrorKind::Kubernetes,
            Error::Membership { .. } => ErrorKind::Membership,
            Error::TaskEnded { .. } => ErrorKind::Task,
        }
    }

    pub fn kubernetes(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Kubernetes(Box::new(source))
    }

    pub fn membership(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Membership {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// Wraps an aya or I/O failure, turning EPERM into the one-line hint.
    pub fn bpf(context: impl Into<String>, err: impl std::error::Error + 'static) -> Self {
        let context = context.into();
        // The verifier refuses a program with EACCES too: that is a
        // rejection to show with its log, not a missing capability.
        if let Some(aya::programs::ProgramError::LoadError { verifier_log, .. }) =
            (&err as &(dyn std::error::Error + 'static)).downcast_ref()
        {
            let log = verifier_log.to_string();
            if !log.trim().is_empty() {
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                return Error::Bpf {
                    context,
                    message: format!("the verifier refused it:\n{tail}"),
                };
            }
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        let mut message = err.to_string();
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                if io.raw_os_error() == Some(libc::EPERM) || io.raw_os_error() == Some(libc::EACCES)
                {
                    // A seccomp profile answers EPERM before the kernel looks at capabilities.
                    if io.raw_os_error() == Some(libc::EPERM)
                        && crate::dataplane::capabilities::seccomp_filter_active()
                        && crate::dataplane::capabilities::require(&[
                            crate::dataplane::capabilities::LOAD,
                        ])
                        .is_ok()
                    {
                        return Error::SeccompDenied(context);
                    }
                    return Error::PermissionDenied(context);
                }
            }
            if let Some(next) = e.source() {
                message = format!("{message}: {next}");
            }
            source = e.source();
        }
        Error::Bpf { context, message }
    }

    pub fn cluster(err: crate::cluster::ClusterError) -> Self {
        Error::Cluster(err)
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        if matches!(
            source.raw_os_error(),
            Some(libc::EPERM) | Some(libc::EACCES)
        ) {
            return Error::PermissionDenied(context);
        }
        Error::Io { context, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
