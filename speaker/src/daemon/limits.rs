//! Process resource limits the daemon sets for itself.

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tracing::{info, warn};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the new
/// soft limit. Many systems still start services with a soft limit of 1,024
/// (kept low for `select(2)`, which we do not use); the hard limit is what
/// the administrator actually allows.
pub fn raise_open_files_limit() -> u64 {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            warn!("reading RLIMIT_NOFILE: {e}");
            return 1024;
        }
    };
    if soft >= hard {
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            info!("open files limit raised from {soft} to {hard}");
            hard
        }
        Err(e) => {
            warn!("raising the open files limit from {soft} to {hard}: {e}");
            soft
        }
    }
}
