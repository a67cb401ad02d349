//! Debian packages the tests and the demo drive: real clients, not mocks.

use std::process::Command;

use anyhow::Result;

use crate::run;

/// (command that must exist, package providing it). iputils-arping is pinned
/// because the two Debian arping packages differ in options and output.
const TEST_TOOLS: [(&str, &str); 5] = [
    ("arping", "iputils-arping"),
    ("ndisc6", "ndisc6"),
    ("ping", "iputils-ping"),
    ("ip", "iproute2"),
    ("bpftool", "bpftool"),
];

fn present(command: &str) -> bool {
    run::output(Command::new("sh").args(["-c", &format!("command -v {command}")])).is_some()
}

pub fn ensure_test_tools() -> Result<()> {
    install_missing(&TEST_TOOLS)
}

/// Installs with apt-get the package of every (command, package) pair whose
/// command is not on PATH.
pub fn install_missing(tools: &[(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = tools
        .iter()
        .filter(|(cmd, _)| !present(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    run::step(&format!("installing {}", missing.join(" ")))?;
    run::status(Command::new("apt-get").args(["update", "-qq"]))?;
    run::status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
