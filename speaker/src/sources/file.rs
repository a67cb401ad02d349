//! The file-backed cluster source: `--cluster-state PATH` (a multi-document
//! YAML file or a directory of them), re-read whenever it changes.
//!
//! A read that fails (unreadable file, half-written YAML) is logged and sends
//! nothing, so what is announced stays as it was until the file is valid
//! again: a bad edit never withdraws anything.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::{
    cluster::{self, Change, ClusterState},
    metrics::ClientStats,
};

/// Editors write in several steps (truncate, write, rename): wait for quiet.
const SETTLE: Duration = Duration::from_millis(100);

/// Sends the file's cluster state whenever it changes, or when `reload` is
/// notified (SIGHUP); counts each read in `stats` (an update, or an update
/// error when the file is unusable).
pub async fn run(
    path: PathBuf,
    tx: mpsc::Sender<Change>,
    stats: ClientStats,
    reload: std::sync::Arc<tokio::sync::Notify>,
) -> Result<(), notify::Error> {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let is_dir = path.is_dir();
    let file_name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // In a file's directory, only events naming the file count; the
        // read that follows decides whether anything changed.
        // Our own reads raise open/access/close events: only writes,
        // creations, renames and removals can change what the file says.
        let relevant = match event {
            Ok(event) => {
                !matches!(event.kind, notify::EventKind::Access(_))
                    && (is_dir
                        || event
                            .paths
                            .iter()
                            .any(|p| p.file_name() == file_name.as_deref()))
            }
            Err(_) => true,
        };
        if relevant {
            let _ = events_tx.send(());
        }
    })?;
    // Watch the directory holding a file: a rename-over replaces the inode,
    // which a watch on the file itself would lose.
    let watched = watched_dir(&path);
    watcher.watch(&watched, RecursiveMode::NonRecursive)?;
    info!("watching {} for cluster state", path.display());

    let mut last: Option<ClusterState> = None;
    loop {
        match tokio::task::spawn_blocking({
            let path = path.clone();
            move || cluster::load(&path)
        })
        .await
        {
            Ok(Ok(state)) => {
                stats.updates.inc();
                if !state.problems.is_empty() {
                    stats.update_errors.inc();
                }
                if last.as_ref() != Some(&state) {
                    for problem in &state.problems {
                        warn!("cluster state: skipped {problem}");
                    }
                    last = Some(state.clone());
                    if tx.send(Change::Reset(state)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(Err(e)) => {
                stats.updates.inc();
                stats.update_errors.inc();
                error!(error = %e, "cluster state not applied, keeping the last good one: {e}")
            }
            Err(e) => {
                stats.update_errors.inc();
                error!(error = %e, "reading cluster state: {e}")
            }
        }
        // Wait for a change, then for the writer to finish.
        tokio::select! {
            event = events.recv() => if event.is_none() {
                return Ok(());
            },
            () = reload.notified() => {
                info!("re-reading {} on request", path.display());
                continue;
            }
        }
        loop {
            match tokio::time::timeout(SETTLE, events.recv()).await {
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(()),
                Err(_) => break,
            }
        }
    }
}

fn watched_dir(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_path_buf();
    }
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
