//! Checking the process' effective capabilities before touching the kernel,
//! so that a container started without one says which, in one line, instead
//! of failing later with a bare EPERM from deep inside bpf() or netlink.
//!
//! In a container the speaker usually runs as UID 0 with a reduced set (the
//! chart drops ALL and adds a few): "run as root" is then no help, the name
//! of the missing capability is.

use crate::error::{Error, Result};

/// A capability the data plane may need, with its bit in the kernel's sets
/// (include/uapi/linux/capability.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    NetAdmin,
    NetRaw,
    SysAdmin,
    Perfmon,
    Bpf,
}

impl Capability {
    const fn bit(self) -> u32 {
        match self {
            Capability::NetAdmin => 12,
            Capability::NetRaw => 13,
            Capability::SysAdmin => 21,
            Capability::Perfmon => 38,
            Capability::Bpf => 39,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::NetRaw => "CAP_NET_RAW",
            Capability::SysAdmin => "CAP_SYS_ADMIN",
            Capability::Perfmon => "CAP_PERFMON",
            Capability::Bpf => "CAP_BPF",
        }
    }

    fn in_set(self, effective: u64) -> bool {
        effective & (1u64 << self.bit()) != 0
    }
}

/// What a step of the speaker needs, and why (for the error message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    pub capability: Capability,
    /// A capability the kernel accepts instead (CAP_SYS_ADMIN for the BPF
    /// checks: bpf_capable(), perfmon_capable(), bpf_net_capable(); before
    /// Linux 5.8 it was the only way).
    pub or: Option<Capability>,
    pub why: &'static str,
}

impl Need {
    fn granted_by(&self, effective: u64) -> bool {
        self.capability.in_set(effective) || self.or.is_some_and(|c| c.in_set(effective))
    }
}

/// Creating the maps and loading the program: bpf() itself.
pub const LOAD: Need = Need {
    capability: Capability::Bpf,
    or: Some(Capability::SysAdmin),
    why: "creating the XDP program's maps and loading it",
};
/// The responder adds a variable length to packet pointers (parsing the
/// headers it answers); without CAP_PERFMON the verifier rejects that as a
/// Spectre v1 risk: "pointer arithmetic with it prohibited for !root".
pub const VERIFY: Need = Need {
    capability: Capability::Perfmon,
    or: Some(Capability::SysAdmin),
    why: "the verifier to accept the responder's packet pointer arithmetic",
};
/// XDP is a "net admin" program type (kernel/bpf/syscall.c
/// is_net_admin_prog_type), checked when it is loaded.
pub const ATTACH: Need = Need {
    capability: Capability::NetAdmin,
    or: Some(Capability::SysAdmin),
    why: "loading and attaching an XDP program",
};
/// Joining IPv6 solicited-node multicast groups (SIOCADDMULTI) and reading
/// link events: plain CAP_NET_ADMIN, SYS_ADMIN does not do.
pub const MULTICAST: Need = Need {
    capability: Capability::NetAdmin,
    or: None,
    why: "joining IPv6 solicited-node multicast groups",
};
/// Gratuitous ARP and unsolicited Neighbor Advertisements go out over AF_PACKET.
pub const ANNOUNCE: Need = Need {
    capability: Capability::NetRaw,
    or: None,
    why: "sending gratuitous ARP and unsolicited Neighbor Advertisements",
};

/// What `speaker xdp attach` does.
pub const XDP_ATTACH: [Need; 3] = [LOAD, VERIFY, ATTACH];
/// What `speaker run` does: attach, join groups and announce.
pub const DAEMON: [Need; 5] = [LOAD, VERIFY, ATTACH, MULTICAST, ANNOUNCE];

/// The `CapEff:` mask of a /proc/<pid>/status text.
pub fn effective_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// Whether a /proc/<pid>/status text shows a seccomp filter (mode 2).
pub fn seccomp_filter_from_status(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .is_some_and(|mode| mode.trim() == "2")
}

/// Whether this process runs under a seccomp filter (a container runtime's
/// profile, usually).
pub fn seccomp_filter_active() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| seccomp_filter_from_status(&s))
}

/// The first of `needs` that `effective` does not grant.
pub fn first_missing(effective: u64, needs: &[Need]) -> Option<Need> {
    needs
        .iter()
        .copied()
        .find(|need| !need.granted_by(effective))
}

/// Fails with [`Error::MissingCapability`] when this process lacks one of
/// `needs`. When the set cannot be read (no /proc), the check is skipped and
/// the kernel's own EPERM still reports the problem.
pub fn require(needs: &[Need]) -> Result<()> {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Ok(());
    };
    let Some(effective) = effective_from_status(&status) else {
        return Ok(());
    };
    match first_missing(effective, needs) {
        Some(need) => Err(Error::MissingCapability {
            capability: need.capability.name(),
            why: need.why,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// /proc/self/status of the speaker in a container run with
    /// --cap-drop=ALL --cap-add=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN,CAP_NET_RAW
    /// (bits 39, 38, 12, 13).
    const STATUS: &str = "Name:\tspeaker\nUmask:\t0022\nState:\tR (running)\n\
        CapInh:\t0000000000000000\nCapPrm:\t000000c000003000\n\
        CapEff:\t000000c000003000\nCapBnd:\t000000c000003000\n\
        CapAmb:\t0000000000000000\nNoNewPrivs:\t0\n";

    fn mask(caps: &[Capability]) -> u64 {
        caps.iter().fold(0, |m, c| m | 1 << c.bit())
    }

    use Capability::*;

    #[test]
    fn parses_the_effective_set() {
        assert_eq!(
            effective_from_status(STATUS),
            Some(mask(&[Bpf, Perfmon, NetAdmin, NetRaw]))
        );
        assert_eq!(effective_from_status("Name:\tx\n"), None);
        assert_eq!(effective_from_status("CapEff:\tnot-hex\n"), None);
        // Root outside a container: every bit of the kernel's set.
        assert_eq!(
            effective_from_status("CapEff:\t000001ffffffffff\n"),
            Some(0x1ff_ffff_ffff)
        );
    }

    #[test]
    fn seccomp_mode() {
        assert!(!seccomp_filter_from_status(STATUS));
        assert!(seccomp_filter_from_status(
            "Seccomp:\t2\nSeccomp_filters:\t1\n"
        ));
        assert!(!seccomp_filter_from_status("Seccomp:\t0\n"));
    }

    #[test]
    fn the_chart_set_grants_everything() {
        let effective = effective_from_status(STATUS).unwrap();
        assert_eq!(first_missing(effective, &DAEMON), None);
    }

    #[test]
    fn names_the_first_missing_capability() {
        let all = [Bpf, Perfmon, NetAdmin, NetRaw];
        let without =
            |gone: Capability| mask(&all.into_iter().filter(|c| *c != gone).collect::<Vec<_>>());
        assert_eq!(first_missing(without(Bpf), &DAEMON), Some(LOAD));
        assert_eq!(first_missing(without(Perfmon), &DAEMON), Some(VERIFY));
        assert_eq!(first_missing(without(NetAdmin), &DAEMON), Some(ATTACH));
        assert_eq!(first_missing(without(NetRaw), &DAEMON), Some(ANNOUNCE));
        // `xdp attach` sends nothing.
        assert_eq!(first_missing(without(NetRaw), &XDP_ATTACH), None);
        assert_eq!(first_missing(0, &DAEMON), Some(LOAD));
    }

    #[test]
    fn sys_admin_stands_in_for_the_bpf_checks_only() {
        assert_eq!(first_missing(mask(&[SysAdmin]), &XDP_ATTACH), None);
        assert_eq!(
            first_missing(mask(&[SysAdmin, NetRaw]), &DAEMON),
            Some(MULTICAST)
        );
        assert_eq!(
            first_missing(mask(&[SysAdmin, NetAdmin, NetRaw]), &DAEMON),
            None
        );
    }

    #[test]
    fn message_is_one_line_naming_the_capability() {
        let error = Error::MissingCapability {
            capability: LOAD.capability.name(),
            why: LOAD.why,
        }
        .to_string();
        assert!(!error.contains('\n'));
        assert!(error.starts_with("missing capability CAP_BPF ("), "{error}");
    }
}
