//! Logs through `tracing`, shaped like MetalLB's: `--log-level` takes
//! MetalLB's names, and the JSON lines carry MetalLB's keys (see
//! docs/metrics.md). `RUST_LOG`, when set, still wins: it can name targets,
//! which a level cannot.

mod json;

use std::io::IsTerminal as _;

use clap::ValueEnum;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

pub use json::MetalLbJson;

/// `--log-level`: MetalLB's values (`all`, `debug`, `info`, `warn`, `error`,
/// `none`) plus the Rust ecosystem's `trace` and `off`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Everything, trace included (MetalLB's `all`).
    All,
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
    /// Nothing (MetalLB's `none`).
    None,
    Off,
}

impl From<LogLevel> for LevelFilter {
    fn from(level: LogLevel) -> LevelFilter {
        match level {
            LogLevel::All | LogLevel::Trace => LevelFilter::TRACE,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::None | LogLevel::Off => LevelFilter::OFF,
        }
    }
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line with MetalLB's keys.
    Json,
    /// Human-readable lines.
    Text,
}

impl LogFormat {
    /// JSON for log collectors, text for a person at a terminal.
    pub fn for_stderr() -> LogFormat {
        if std::io::stderr().is_terminal() {
            LogFormat::Text
        } else {
            LogFormat::Json
        }
    }
}

/// The filter in force: `RUST_LOG` when set and valid, else `level`.
/// An invalid `RUST_LOG` is reported once and ignored rather than
/// silencing everything.
fn filter(level: LogLevel, rust_log: Option<&str>) -> (EnvFilter, Option<String>) {
    let from_level = || {
        EnvFilter::builder()
            .with_default_directive(LevelFilter::from(level).into())
            .parse_lossy("")
    };
    match rust_log.map(str::trim).filter(|v| !v.is_empty()) {
        None => (from_level(), None),
        Some(directives) => match EnvFilter::builder().parse(directives) {
            Ok(filter) => (filter, None),
            Err(e) => (
                from_level(),
                Some(format!("RUST_LOG={directives:?} ignored: {e}")),
            ),
        },
    }
}

/// Installs the process-wide subscriber, and bridges the `log` crate (used by
/// aya and notify) into it. Call once, before anything logs.
pub fn init(level: LogLevel, format: Option<LogFormat>) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, problem) = filter(level, rust_log.as_deref());
    let format = format.unwrap_or_else(LogFormat::for_stderr);
    let layer = match format {
        LogFormat::Json => fmt::layer()
            .with_writer(std::io::stderr)
            .event_format(MetalLbJson)
            .boxed(),
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init()
        .is_ok();
    // `log` records become tracing events; the subscriber's filter applies.
    if installed {
        let _ = tracing_log::LogTracer::init();
    }
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metallb_level_names_map_to_filters() {
        for (name, expected) in [
            ("all", LevelFilter::TRACE),
            ("trace", LevelFilter::TRACE),
            ("debug", LevelFilter::DEBUG),
            ("info", LevelFilter::INFO),
            ("warn", LevelFilter::WARN),
            ("error", LevelFilter::ERROR),
            ("none", LevelFilter::OFF),
            ("off", LevelFilter::OFF),
        ] {
            let level = LogLevel::from_str(name, false).unwrap();
            assert_eq!(LevelFilter::from(level), expected, "{name}");
        }
        assert!(LogLevel::from_str("verbose", false).is_err());
        assert_eq!(LogLevel::default(), LogLevel::Info);
    }

    #[test]
    fn rust_log_wins_when_set_and_valid() {
        let (filter, problem) = filter_of(LogLevel::Error, Some("debug"));
        assert_eq!(filter.max_level_hint(), Some(LevelFilter::DEBUG));
        assert!(problem.is_none());
        let (filter, problem) = filter_of(LogLevel::Warn, Some("   "));
        assert_eq!(filter.max_level_hint(), Some(LevelFilter::WARN));
        assert!(problem.is_none());
        let (filter, problem) = filter_of(LogLevel::Warn, Some("speaker=notalevel"));
        assert_eq!(filter.max_level_hint(), Some(LevelFilter::WARN));
        assert!(problem.unwrap().contains("RUST_LOG"));
        let (filter, _) = filter_of(LogLevel::None, None);
        assert_eq!(filter.max_level_hint(), Some(LevelFilter::OFF));
    }

    fn filter_of(level: LogLevel, rust_log: Option<&str>) -> (EnvFilter, Option<String>) {
        filter(level, rust_log)
    }
}
