//! The XDP program's own debug records (`aya-log`): the level it may log at,
//! fixed when the object is loaded, and the task that reads its ring buffer
//! into `tracing`.
//!
//! The records reach `tracing` through the `log` bridge that
//! [`crate::logging::init`] installs (`tracing_log::LogTracer`): `aya-log`
//! hands every record to `log::logger()`, with the program's module path as
//! target (`speaker_ebpf::log`) and its own level (the program logs at debug
//! only), so the subscriber's filter and JSON format apply to them as to any
//! other line.

use std::{
    os::fd::AsRawFd as _,
    panic::{catch_unwind, AssertUnwindSafe},
};

use aya::Ebpf;
use aya_log::{EbpfLogger, Level};
use tokio::io::{unix::AsyncFd, Interest};
use tracing::{debug, warn};

/// The global in the object that gates every log call (`aya-log`'s name).
pub const LEVEL_GLOBAL: &str = aya_log::LEVEL;
/// The ring buffer `aya-log-ebpf` writes to.
pub const RING_BUFFER: &str = "AYA_LOGS";
/// The one level `speaker-ebpf/src/log.rs` logs at.
const PROGRAM_LEVEL: Level = Level::Debug;

/// The most verbose level the subscriber lets through for the program's
/// records, as `AYA_LOG_LEVEL` wants it (0: none). It is read-only data in
/// the loaded program, so the verifier prunes the log calls of the disabled
/// levels: below debug they cost the program nothing.
pub fn level_in_force() -> u8 {
    let level = if tracing::enabled!(target: "speaker_ebpf", tracing::Level::TRACE) {
        Level::Trace
    } else if tracing::enabled!(target: "speaker_ebpf", tracing::Level::DEBUG) {
        Level::Debug
    } else if tracing::enabled!(target: "speaker_ebpf", tracing::Level::INFO) {
        Level::Info
    } else if tracing::enabled!(target: "speaker_ebpf", tracing::Level::WARN) {
        Level::Warn
    } else if tracing::enabled!(target: "speaker_ebpf", tracing::Level::ERROR) {
        Level::Error
    } else {
        return 0;
    };
    level.into()
}

/// Takes the ring buffer out of `ebpf` and forwards its records until the
/// process ends. Needs a tokio runtime; without one (or below debug, where
/// the program has nothing to say) nothing is started and the records, if any, are dropped in
/// the kernel when the buffer is full — the program never waits on a reader.
pub fn spawn_reader(ebpf: &mut Ebpf) {
    if level_in_force() < u8::from(PROGRAM_LEVEL) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let logger = match EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(e) => {
            warn!("XDP program debug records unavailable: {e}");
            return;
        }
    };
    let fd = logger.as_raw_fd();
    let _guard = runtime.enter();
    // SAFETY: the logger owns the ring buffer's map descriptor; it stays
    // open, and is what `as_raw_fd` returns, for as long as the logger lives,
    // which is as long as the `AsyncFd` that owns it.
    let registered = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
    let mut logger = match registered {
        Ok(logger) => logger,
        Err(e) => {
            warn!(
                "XDP program debug records unavailable: polling ring buffer fd {fd}: {}",
                e
            );
            return;
        }
    };
    runtime.spawn(async move {
        debug!("forwarding the XDP program's debug records");
        loop {
            let mut ready = match logger.readable_mut().await {
                Ok(ready) => ready,
                Err(e) => {
                    warn!("XDP program debug records stopped: {e}");
                    return;
                }
            };
            // aya-log unwraps its parse of each record; a record it cannot
            // parse must cost that record, not the reader (the consumer
            // position has moved past it when the panic unwinds).
            if catch_unwind(AssertUnwindSafe(|| ready.get_inner_mut().flush())).is_err() {
                warn!("an XDP program debug record could not be read; skipped");
            }
            ready.clear_ready();
        }
    });
}

#[cfg(test)]
mod tests {
    use tracing::level_filters::LevelFilter;

    use super::*;

    fn level_under(filter: LevelFilter) -> u8 {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(filter)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, level_in_force)
    }

    #[test]
    fn the_program_logs_only_at_the_levels_the_subscriber_keeps() {
        assert_eq!(level_under(LevelFilter::DEBUG), u8::from(Level::Debug));
        assert_eq!(level_under(LevelFilter::TRACE), u8::from(Level::Trace));
        assert_eq!(level_under(LevelFilter::WARN), u8::from(Level::Warn));
        // The default: the program's debug calls are dead code.
        assert_eq!(level_under(LevelFilter::INFO), u8::from(Level::Info));
        assert!(level_under(LevelFilter::INFO) < u8::from(Level::Debug));
        assert_eq!(level_under(LevelFilter::OFF), 0);
    }
}
