//! The file-backed cluster source: `--cluster-state PATH` (a multi-document
//! YAML file or a directory of them), re-read whenever it changes.
//!
//! What it guarantees:
//! - Only complete writes are read: after a file is modified, it is read
//!   once its writer has closed it (inotify `IN_CLOSE_WRITE`) or has not
//!   written for [`WRITER_WAIT`], and the input is quiet for [`SETTLE`]. A
//!   slow in-place rewrite is therefore never seen half-written.
//! - A read is a snapshot ([`cluster::read`]): a file that changes while it
//!   is read is read again, never used.
//! - A read that fails (unreadable, empty, over `--cluster-state-max-bytes`,
//!   invalid YAML) is logged and sends nothing, so what is announced stays
//!   as it was; the configuration is reported stale until a good read.
//! - A ConfigMap volume is followed: its `..data` symlink swap is an event
//!   in the watched directory, and a single file that is a symlink into
//!   another directory has that directory watched too, re-resolved after
//!   every read.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use notify::{
    event::{AccessKind, AccessMode, ModifyKind},
    EventKind, RecommendedWatcher, RecursiveMode, Watcher,
};
use tokio::{
    sync::mpsc,
    time::{timeout, Instant},
};
use tracing::{debug, error, info, warn};

use crate::{
    cluster::{self, config::StaleCause, Change, ClusterError, ReadOptions, Snapshot},
    metrics::ClientStats,
};

/// Editors write in several steps (truncate, write, rename): wait for quiet.
const SETTLE: Duration = Duration::from_millis(100);
/// A file modified and still open for writing is read anyway after this
/// long without a write (a writer that keeps its descriptor open).
const WRITER_WAIT: Duration = Duration::from_secs(10);

/// Sends the file's cluster state whenever it changes, or when `reload` is
/// notified (SIGHUP); counts each read in `stats` (an update, or an update
/// error when the file is unusable).
pub async fn run(
    path: PathBuf,
    options: ReadOptions,
    tx: mpsc::Sender<Change>,
    stats: ClientStats,
    reload: std::sync::Arc<tokio::sync::Notify>,
) -> Result<(), notify::Error> {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = events_tx.send(event);
    })?;
    let mut watches = Watches::new(&path);
    watches.update(&mut watcher)?;
    info!("watching {} for cluster state", path.display());

    let mut last_digest = None;
    loop {
        let read = tokio::task::spawn_blocking({
            let path = path.clone();
            move || cluster::read(&path, options)
        })
        .await;
        // The file's bytes and YAML values are gone; only the state is left.
        crate::allocator::release_free_memory();
        // The file may now resolve elsewhere (a symlink swapped).
        if let Err(e) = watches.update(&mut watcher) {
            warn!(error = %e, "watching {}: {e}", path.display());
        }
        match read {
            Ok(Ok(Snapshot { state, digest })) => {
                stats.updates.inc();
                if !state.problems.is_empty() {
                    stats.update_errors.inc();
                }
                stats.stale.set(StaleCause::Source, None);
                if last_digest != Some(digest) {
                    for problem in &state.problems {
                        warn!("cluster state: skipped {problem}");
                    }
                    last_digest = Some(digest);
                    if tx.send(Change::Reset(state)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(Err(e @ ClusterError::Changed { .. })) => {
                // Being written or replaced: read again once it is quiet.
                debug!("{e}; reading again");
                tokio::time::sleep(SETTLE).await;
                continue;
            }
            Ok(Err(e)) => {
                stats.updates.inc();
                stats.update_errors.inc();
                error!(error = %e, "cluster state not applied, keeping the last good one: {e}");
                stats.stale.set(StaleCause::Source, Some(e.to_string()));
            }
            Err(e) => {
                stats.update_errors.inc();
                error!(error = %e, "reading cluster state: {e}")
            }
        }
        // Wait for a change (then for its writers to finish), or a request.
        tokio::select! {
            changed = watches.wait_for_change(&mut events) => if !changed {
                return Ok(());
            },
            () = reload.notified() => {
                info!("re-reading {} on request", path.display());
            }
        }
    }
}

/// The directories watched for one `--cluster-state` path, and which of
/// their events matter.
struct Watches {
    path: PathBuf,
    is_dir: bool,
    /// The name of a single file, in its directory.
    file_name: Option<std::ffi::OsString>,
    watched: BTreeSet<PathBuf>,
    /// Files modified and not yet closed by their writer.
    writing: BTreeSet<PathBuf>,
}

impl Watches {
    fn new(path: &Path) -> Self {
        Watches {
            path: path.to_path_buf(),
            is_dir: path.is_dir(),
            file_name: path.file_name().map(|n| n.to_os_string()),
            watched: BTreeSet::new(),
            writing: BTreeSet::new(),
        }
    }

    /// The directory holding the path (a rename-over replaces the inode,
    /// which a watch on the file itself would lose), and for a single file
    /// reached through symlinks, the directory of what it resolves to.
    fn wanted(&self) -> BTreeSet<PathBuf> {
        if self.is_dir {
            return BTreeSet::from([self.path.clone()]);
        }
        let mut dirs = BTreeSet::from([parent_of(&self.path)]);
        if let Ok(resolved) = self.path.canonicalize() {
            dirs.insert(parent_of(&resolved));
        }
        dirs
    }

    fn update(&mut self, watcher: &mut RecommendedWatcher) -> Result<(), notify::Error> {
        let wanted = self.wanted();
        for gone in self.watched.difference(&wanted) {
            let _ = watcher.unwatch(gone);
        }
        for dir in wanted.difference(&self.watched) {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        self.watched = wanted;
        Ok(())
    }

    /// Whether an event at `path` can change what the cluster state says:
    /// in a watched directory, anything; in a single file's directory, the
    /// file itself and a ConfigMap's `..data` links.
    fn relevant(&self, path: &Path) -> bool {
        if self.is_dir {
            return true;
        }
        let name = path.file_name();
        name == self.file_name.as_deref()
            || name.is_some_and(|n| n.to_string_lossy().starts_with(".."))
            || self
                .watched
                .iter()
                .any(|dir| *dir != parent_of(&self.path) && path.starts_with(dir))
    }

    /// Notes one event; `true` when it may have changed the input.
    fn note(&mut self, event: notify::Result<notify::Event>) -> bool {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                warn!(error = %e, "watching the cluster state: {e}");
                return true;
            }
        };
        let paths: Vec<&PathBuf> = event.paths.iter().filter(|p| self.relevant(p)).collect();
        if paths.is_empty() {
            return false;
        }
        match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for path in paths {
                    self.writing.remove(path);
                }
                true
            }
            // Our own reads open and close the files.
            EventKind::Access(_) => false,
            EventKind::Modify(ModifyKind::Data(_)) => {
                self.writing.extend(paths.into_iter().cloned());
                true
            }
            _ => true,
        }
    }

    /// Waits for a change, then for its writers to finish and the input to
    /// be quiet. `false` when the watcher is gone.
    async fn wait_for_change(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    ) -> bool {
        loop {
            match events.recv().await {
                Some(event) => {
                    if self.note(event) {
                        break;
                    }
                }
                None => return false,
            }
        }
        let mut last_event = Instant::now();
        loop {
            match timeout(SETTLE, events.recv()).await {
                Ok(Some(event)) => {
                    if self.note(event) {
                        last_event = Instant::now();
                    }
                }
                Ok(None) => return false,
                Err(_) if self.writing.is_empty() => return true,
                Err(_) if last_event.elapsed() >= WRITER_WAIT => {
                    let names: Vec<String> = self
                        .writing
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect();
                    warn!(
                        "{} still open for writing after {WRITER_WAIT:?} without a write; reading it",
                        names.join(", ")
                    );
                    self.writing.clear();
                    return true;
                }
                Err(_) => {}
            }
        }
    }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use notify::{
        event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RenameMode},
        Event, EventKind,
    };

    use super::*;

    fn event(kind: EventKind, path: &str) -> notify::Result<Event> {
        Ok(Event::new(kind).add_path(PathBuf::from(path)))
    }

    fn modified(path: &str) -> notify::Result<Event> {
        event(EventKind::Modify(ModifyKind::Data(DataChange::Any)), path)
    }

    fn closed(path: &str) -> notify::Result<Event> {
        event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            path,
        )
    }

    #[test]
    fn a_modified_file_waits_for_its_writer_to_close_it() {
        let mut watches = Watches::new(Path::new("/cm/cluster.yaml"));
        assert!(watches.note(modified("/cm/cluster.yaml")));
        assert_eq!(watches.writing.len(), 1);
        // Our own reads.
        let open = event(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            "/cm/cluster.yaml",
        );
        assert!(!watches.note(open));
        assert!(watches.note(closed("/cm/cluster.yaml")));
        assert!(watches.writing.is_empty());
    }

    #[test]
    fn a_single_file_sees_its_own_events_and_the_configmap_links() {
        let mut watches = Watches::new(Path::new("/cm/cluster.yaml"));
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert!(watches.note(event(renamed, "/cm/..data")));
        let created = EventKind::Create(CreateKind::File);
        assert!(!watches.note(event(created, "/cm/other.yaml")));
        assert!(!watches.note(modified("/cm/.cluster.yaml.swp")));
        assert!(watches.writing.is_empty());
        // A watch error may have lost events: read again.
        assert!(watches.note(Err(notify::Error::generic("queue overflow"))));
    }

    #[test]
    fn a_directory_sees_every_event_in_it() {
        let dir = std::env::temp_dir();
        let mut watches = Watches::new(&dir);
        assert!(watches.is_dir);
        assert!(watches.note(modified(&dir.join("b.yaml").to_string_lossy())));
        assert_eq!(watches.wanted(), BTreeSet::from([dir]));
    }
}
