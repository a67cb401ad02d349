//! The registry of external programs: `tools.toml` at the workspace root,
//! compiled in. [`crate::lab::command::Spawn`] refuses to start a program
//! that is not declared there, so that `cargo xtask` installs everything the
//! tests drive and a missing tool is named with its Debian package.

use std::sync::OnceLock;

use serde::Deserialize;

const REGISTRY_TEXT: &str = include_str!("../../../tools.toml");

/// One `[[tool]]` entry.
#[derive(Clone, Debug, Deserialize)]
pub struct Tool {
    /// The program name, as spawned.
    pub command: String,
    /// The Debian package that provides it.
    pub package: Option<String>,
    /// Set instead of `package` for programs of the Rust toolchain.
    pub provided: Option<String>,
    /// Which task needs it: "test", "image" or "build".
    #[serde(rename = "for")]
    pub needed_for: String,
    pub why: String,
}

#[derive(Deserialize)]
struct Registry {
    tool: Vec<Tool>,
}

/// Every declared tool.
pub fn registry() -> &'static [Tool] {
    static REGISTRY: OnceLock<Vec<Tool>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let registry: Registry = toml::from_str(REGISTRY_TEXT)
            .unwrap_or_else(|e| panic!("tools.toml at the workspace root is invalid: {e}"));
        registry.tool
    })
}

/// The entry of `command`; panics when it is not declared.
pub fn declared(command: &str) -> &'static Tool {
    registry()
        .iter()
        .find(|t| t.command == command)
        .unwrap_or_else(|| {
            panic!(
                "`{command}` is not declared in tools.toml at the workspace root: every program \
                 the tests spawn must be listed there with its Debian package"
            )
        })
}

/// How to get `tool`, for messages.
fn install_hint(tool: &Tool) -> String {
    match (&tool.package, &tool.provided) {
        (Some(package), _) => format!("apt-get install -y {package}"),
        (None, Some(provided)) => format!("it comes with the {provided}"),
        (None, None) => "see tools.toml".to_owned(),
    }
}

/// Panics unless `command` is declared and found on `PATH`.
pub fn require(command: &str) {
    let tool = declared(command);
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(command).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{command}` is not installed: {}",
        install_hint(tool)
    );
}

/// Checks that every tool the labs drive is installed.
pub fn require_lab_tools() {
    for command in ["ip", "mount", "arping", "ndisc6", "ping"] {
        require(command);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_names_its_source() {
        assert!(!registry().is_empty());
        for tool in registry() {
            assert!(
                tool.package.is_some() != tool.provided.is_some(),
                "{}: exactly one of package and provided",
                tool.command
            );
        }
        assert_eq!(declared("ip").package.as_deref(), Some("iproute2"));
    }

    #[test]
    #[should_panic(expected = "not declared in tools.toml")]
    fn undeclared_programs_are_refused() {
        declared("no-such-tool-xyz");
    }
}
