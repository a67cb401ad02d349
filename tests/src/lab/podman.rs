//! podman, as the labs that run the speaker's image use it: the image that
//! `cargo xtask image` saved, loaded once per test process, and podman
//! commands with the options this machine kind needs.

use std::{path::PathBuf, sync::OnceLock, time::Duration};

use serde::Deserialize;

use super::{command::Spawn, workspace_root, CmdOutput};
use crate::pod_spec::PODMAN_GLOBAL;

/// How long a podman command may take (loading the image is the slowest).
pub const PODMAN_TIMEOUT: Duration = Duration::from_secs(120);

/// `podman` with the global options (runc, cgroupfs) and `args`.
pub fn command(args: &[&str]) -> Spawn {
    Spawn::tool("podman").args(PODMAN_GLOBAL).args(args)
}

/// Runs `podman args` to the end.
pub fn run(args: &[&str]) -> CmdOutput {
    command(args).run(PODMAN_TIMEOUT)
}

/// The chart's appVersion: the image's tag.
pub fn app_version() -> String {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Chart {
        app_version: String,
    }
    let path = workspace_root().join("charts/xdp-speaker/Chart.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let chart: Chart = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("{} has no appVersion: {e}", path.display()));
    chart.app_version
}

/// The OCI archive `cargo xtask image` saves.
pub fn archive() -> PathBuf {
    workspace_root().join(format!(
        "target/image/xdp-speaker-{}.oci.tar",
        app_version()
    ))
}

/// Loads [`archive`] into podman's storage, once per process, and returns
/// the image's name; panics naming `cargo xtask image` when it is missing.
pub fn speaker_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let archive = archive();
        assert!(
            archive.exists(),
            "{} is missing: run `cargo xtask image` first (`cargo xtask test` does)",
            archive.display()
        );
        let out = run(&["load", "--input", &archive.to_string_lossy()]);
        assert!(out.success(), "podman load failed:\n{out}");
        // "Loaded image: localhost/xdp-speaker:0.1.0" (older podman: "Loaded image(s): ...").
        let name = out
            .stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix("Loaded image")
                    .and_then(|rest| rest.split_once(": "))
            })
            .map(|(_, name)| name.trim().to_owned())
            .unwrap_or_else(|| panic!("podman load printed no image name:\n{out}"));
        let version = app_version();
        assert!(
            name.ends_with(&format!(":{version}")),
            "{} holds {name}, not the chart's appVersion {version}",
            archive.display()
        );
        name
    })
}
