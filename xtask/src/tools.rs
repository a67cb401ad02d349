//! The registry of external programs (`tools.toml` at the workspace root) and
//! installing what a task needs of it.
//!
//! CI runs on a fresh machine where nothing was installed by hand: every
//! program the build, the tests, the demo or the benchmarks spawn is listed
//! there with its Debian package, and a task installs exactly the packages of
//! the entries it needs whose command is missing.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::run;

/// Which task an entry is needed for (`for` in tools.toml).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Building anything (always needed).
    Build,
    /// The tests, the demo and the benchmarks.
    Test,
    /// `cargo xtask image` and the tests that run the image.
    Image,
}

/// Where a program comes from when it is not a Debian package.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Provided {
    /// With the machine's Rust toolchain (rustup, cargo).
    Toolchain,
    /// Built by xtask itself (bpf-linker, see `ebpf.rs`).
    Xtask,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Tool {
    pub command: String,
    pub package: Option<String>,
    pub provided: Option<Provided>,
    #[serde(rename = "for")]
    pub purpose: Purpose,
    #[allow(dead_code)] // documentation for readers of tools.toml
    pub why: String,
}

#[derive(Debug, Deserialize)]
struct Registry {
    tool: Vec<Tool>,
}

pub fn registry_path() -> PathBuf {
    run::workspace_root().join("tools.toml")
}

/// Every entry of tools.toml, checked: each has exactly one of `package` and
/// `provided`, and no command is listed twice.
pub fn registry() -> Result<Vec<Tool>> {
    let path = registry_path();
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

fn parse(text: &str) -> Result<Vec<Tool>> {
    let registry: Registry = toml::from_str(text)?;
    let mut seen = BTreeSet::new();
    for tool in &registry.tool {
        if tool.package.is_some() == tool.provided.is_some() {
            bail!(
                "tool {:?} needs exactly one of `package` and `provided`",
                tool.command
            );
        }
        if !seen.insert(tool.command.as_str()) {
            bail!("tool {:?} is listed twice", tool.command);
        }
    }
    Ok(registry.tool)
}

/// Whether `command` is an executable file in a directory of `PATH`.
fn on_path(command: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        fs::metadata(Path::new(&dir).join(command))
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

/// The Debian packages of the entries for `purposes` whose command is missing.
fn missing_packages(tools: &[Tool], purposes: &[Purpose]) -> BTreeSet<String> {
    tools
        .iter()
        .filter(|tool| purposes.contains(&tool.purpose))
        .filter_map(|tool| Some((tool.package.as_ref()?, tool)))
        .filter(|(_, tool)| !on_path(&tool.command))
        .map(|(package, _)| package.clone())
        .collect()
}

/// Installs (with apt-get) the packages of every registry entry for
/// `purposes` (and for building) whose command is not on PATH.
pub fn ensure(purposes: &[Purpose]) -> Result<()> {
    let tools = registry()?;
    let mut wanted = purposes.to_vec();
    wanted.push(Purpose::Build);
    let missing = missing_packages(&tools, &wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
    run::step(&format!("installing {} (tools.toml)", missing.join(" ")))?;
    run::status(Command::new("apt-get").args(["update", "-qq"]))?;
    run::status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let still: Vec<&str> = tools
        .iter()
        .filter(|tool| wanted.contains(&tool.purpose) && tool.package.is_some())
        .filter(|tool| !on_path(&tool.command))
        .map(|tool| tool.command.as_str())
        .collect();
    if !still.is_empty() {
        bail!(
            "after installing, still not on PATH: {} (wrong package in tools.toml?)",
            still.join(" ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_registry_parses() {
        let tools = registry().unwrap();
        assert!(tools.iter().any(|t| t.command == "arping"));
    }

    #[test]
    fn an_entry_needs_one_source() {
        let both = "[[tool]]\ncommand='x'\npackage='p'\nprovided='toolchain'\nfor='test'\nwhy=''\n";
        assert!(parse(both).is_err());
        let neither = "[[tool]]\ncommand='x'\nfor='test'\nwhy=''\n";
        assert!(parse(neither).is_err());
        let twice = "[[tool]]\ncommand='x'\npackage='p'\nfor='test'\nwhy=''\n\
                     [[tool]]\ncommand='x'\npackage='q'\nfor='test'\nwhy=''\n";
        assert!(parse(twice).is_err());
    }

    #[test]
    fn only_missing_commands_of_the_purpose_are_installed() {
        let text = "[[tool]]\ncommand='sh'\npackage='dash'\nfor='test'\nwhy=''\n\
                    [[tool]]\ncommand='no-such-tool-xyz'\npackage='pkg-a'\nfor='test'\nwhy=''\n\
                    [[tool]]\ncommand='no-such-tool-abc'\npackage='pkg-b'\nfor='image'\nwhy=''\n\
                    [[tool]]\ncommand='no-such-tool-def'\nprovided='xtask'\nfor='test'\nwhy=''\n";
        let tools = parse(text).unwrap();
        let missing = missing_packages(&tools, &[Purpose::Test]);
        assert_eq!(missing.into_iter().collect::<Vec<_>>(), ["pkg-a"]);
    }
}
