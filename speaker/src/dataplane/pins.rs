//! Where the data plane lives on the BPF filesystem:
//!
//! ```text
//! <pin-dir>/VIPS_V4 VIPS_V6 VIP_ANSWERED VIP_REFUSED REASONS WATCHDOG   the maps
//! <pin-dir>/LAYOUT                                          their layout version
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

/// What belongs at a path of the pin directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinKind {
    Map,
    Link,
}

/// Removes whatever sits at `path` that is not a pinned object of `kind`
/// (a directory, a pinned program, a link where a map belongs...), so that
/// pinning there does not fail with `File exists`. Returns whether something
/// was removed.
pub fn clear_foreign(path: &Path, kind: PinKind) -> Result<bool> {
    let Ok(metadata) = fs::symlink_metadata(path) else {
        return Ok(false);
    };
    let opened = if metadata.is_dir() || metadata.is_symlink() {
        Err(None)
    } else {
        match kind {
            PinKind::Map => aya::maps::MapInfo::from_pin(path)
                .map(drop)
                .map_err(|e| match e {
                    aya::maps::MapError::SyscallError(e) => Some(e.io_error),
                    _ => None,
                }),
            PinKind::Link => aya::programs::links::PinnedLink::from_pin(path)
                .and_then(|link| aya::programs::links::FdLink::from(link).info())
                .map(drop)
                .map_err(|e| match e {
                    aya::programs::links::LinkError::SyscallError(e) => Some(e.io_error),
                    _ => None,
                }),
        }
    };
    match opened {
        Ok(()) => return Ok(false),
        // Out of descriptors or memory says nothing about the file: never
        // remove a pin (and with it the VIPs) for that.
        Err(Some(e)) if is_transient(&e) => {
            return Err(Error::io(format!("opening {}", path.display()), e));
        }
        Err(_) => {}
    }
    tracing::warn!(
        path = %path.display(),
        "{} is not a pinned {}: replacing it",
        path.display(),
        match kind {
            PinKind::Map => "map",
            PinKind::Link => "link",
        }
    );
    let removed = if metadata.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    removed.map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
    Ok(true)
}

/// Whether a failed BPF call on a link says nothing about the pin itself.
pub fn is_transient_link_error(error: &aya::programs::links::LinkError) -> bool {
    matches!(error, aya::programs::links::LinkError::SyscallError(e) if is_transient(&e.io_error))
}

fn is_transient(error: &std::io::Error) -> bool {
    use nix::errno::Errno;
    error.raw_os_error().is_some_and(|code| {
        [
            Errno::EMFILE,
            Errno::ENFILE,
            Errno::ENOMEM,
            Errno::EAGAIN,
            Errno::EINTR,
            Errno::EPERM,
            Errno::EACCES,
        ]
        .contains(&Errno::from_raw(code))
    })
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
        .unwrap_or(false)
}
