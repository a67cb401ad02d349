//! Where the data plane lives on the BPF filesystem:
//!
//! ```text
//! <pin-dir>/VIPS_V4 VIPS_V6 VIP_ANSWERED VIP_REFUSED REASONS WATCHDOG   the maps
//! <pin-dir>/links/<ifname>                                  one XDP link per interface
//! ```
//! Pins outlive the speaker process: that is what keeps answering going
//! across restarts and lets `speaker maps` read everything with no daemon.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xdp-speaker";

#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PinDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn link(&self, interface: &str) -> PathBuf {
        self.links().join(interface)
    }

    /// Creates the directory (and `links/`) on a bpffs, refusing any other
    /// file system: pins there would fail with an obscure error later.
    pub fn create(&self) -> Result<()> {
        let mount = self.nearest_existing();
        if !is_bpffs(&mount) {
            return Err(Error::NoBpffs(self.root.clone()));
        }
        fs::create_dir_all(self.links())
            .map_err(|e| Error::io(format!("creating {}", self.links().display()), e))
    }

    /// Checks that maps are pinned here, for commands that only use them.
    pub fn require_pinned(&self) -> Result<()> {
        let mount = self.nearest_existing();
        if !is_bpffs(&mount) {
            return Err(Error::NoBpffs(self.root.clone()));
        }
        if !self.map(speaker_common::map_names::VIPS_V4).exists() {
            return Err(Error::NotAttached(self.root.clone()));
        }
        Ok(())
    }

    /// Interfaces with a pinned link, by name.
    pub fn linked_interfaces(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.links())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    fn nearest_existing(&self) -> PathBuf {
        let mut path = self.root.as_path();
        while !path.exists() {
            match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => path = parent,
                _ => break,
            }
        }
        path.to_path_buf()
    }
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
        .unwrap_or(false)
}
