//! From a `--cluster-state` path to YAML objects: which files, which
//! documents, and `List` wrappers unpacked the way `kubectl apply -f` does.
//!
//! A read is a snapshot or an error, never a mix: each file is read whole
//! from one open descriptor and must not change meanwhile (same inode, size
//! and modification time before and after, and the path still naming that
//! inode, which also catches a ConfigMap's `..data` symlink being swapped),
//! and after a directory is read every file is checked again. Objects are
//! handed on one document at a time, so a large file is never held as a
//! whole tree of YAML values; only its bytes and one document's values are.

use std::{
    fs::{self, File, Metadata},
    hash::{DefaultHasher, Hasher},
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::{ClusterError, Origin};

/// The default of `--cluster-state-max-bytes`: far above any real cluster
/// (10,000 Services with their EndpointSlices are about 15 MiB of YAML) and
/// far below a node agent's memory limit.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// How a cluster state path is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// The most bytes all files together may hold.
    pub max_bytes: u64,
    /// Accept a file without any document as an empty cluster. Otherwise it
    /// is an error: a file being rewritten in place is empty for a moment,
    /// and taking that as "no Services" would withdraw every IP.
    pub allow_empty: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_bytes: DEFAULT_MAX_BYTES,
            allow_empty: false,
        }
    }
}

/// One object of the cluster state, as YAML, with where it came from.
pub(super) struct RawObject {
    pub(super) origin: Origin,
    pub(super) value: Value,
}

/// Hands every object under `path` to `add`, in reading order: a file, or
/// the `.yaml` and `.yml` files of a directory in name order. Returns a
/// digest of the files' names and contents (equal digests: same input).
pub(super) fn read_objects(
    path: &Path,
    options: ReadOptions,
    mut add: impl FnMut(RawObject) -> Result<(), ClusterError>,
) -> Result<u64, ClusterError> {
    let files = state_files(path)?;
    let mut budget = options.max_bytes;
    let mut digest = DefaultHasher::new();
    let mut identities = Vec::with_capacity(files.len());
    for file in &files {
        let (bytes, identity) = read_stable(file, &mut budget, options.max_bytes)?;
        digest.write(file.as_os_str().as_encoded_bytes());
        digest.write(&bytes);
        identities.push(identity);
        let text = std::str::from_utf8(&bytes).map_err(|e| ClusterError::Read {
            path: file.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        let documents = for_each_object(file, text, &mut add)?;
        if documents == 0 && !options.allow_empty {
            return Err(ClusterError::Empty { path: file.clone() });
        }
    }
    // A directory swapped (ConfigMap `..data`) between two files' reads.
    for (file, identity) in files.iter().zip(&identities) {
        match fs::metadata(file) {
            Ok(now) if Identity::of(&now) == *identity => {}
            _ => return Err(ClusterError::Changed { path: file.clone() }),
        }
    }
    Ok(digest.finish())
}

/// What tells two versions of a file apart without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Identity {
    fn of(metadata: &Metadata) -> Self {
        Identity {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

/// The whole file from one descriptor, if it did not change meanwhile.
/// Counts its size against `budget`.
fn read_stable(
    path: &Path,
    budget: &mut u64,
    max_bytes: u64,
) -> Result<(Vec<u8>, Identity), ClusterError> {
    let read_error = |source| ClusterError::Read {
        path: path.to_owned(),
        source,
    };
    let too_large = || ClusterError::TooLarge {
        path: path.to_owned(),
        limit: max_bytes,
    };
    let mut file = File::open(path).map_err(read_error)?;
    let before = Identity::of(&file.metadata().map_err(read_error)?);
    if before.size > *budget {
        return Err(too_large());
    }
    // Sized once: no doubling reallocation, no second copy.
    let mut bytes = Vec::with_capacity(before.size as usize);
    (&mut file)
        .take(*budget + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > *budget {
        return Err(too_large());
    }
    let after = Identity::of(&file.metadata().map_err(read_error)?);
    let at_path = fs::metadata(path).map(|m| Identity::of(&m)).ok();
    if before != after || at_path != Some(after) || bytes.len() as u64 != after.size {
        return Err(ClusterError::Changed {
            path: path.to_owned(),
        });
    }
    *budget -= bytes.len() as u64;
    Ok((bytes, after))
}

/// Hands each object of one file's text to `add`; returns how many
/// documents the file holds (a `kind: List` without items counts: an
/// explicitly empty cluster).
pub(super) fn for_each_object(
    file: &Path,
    text: &str,
    add: &mut impl FnMut(RawObject) -> Result<(), ClusterError>,
) -> Result<usize, ClusterError> {
    let mut count = 0;
    let file: Arc<Path> = Arc::from(file);
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let index = index + 1;
        let yaml_error = |source| ClusterError::Yaml {
            origin: Origin::new(&file, index),
            source,
        };
        // The first error ends the file: the parser cannot resynchronise,
        // and some failures would repeat forever.
        let mut value = Value::deserialize(document).map_err(yaml_error)?;
        // `<<:` merge keys, which Kubernetes' YAML reader also honours.
        value.apply_merge().map_err(yaml_error)?;
        // An empty document (a bare `---`, or only comments) is skipped but
        // still counted, so the indices match what an editor shows.
        if !value.is_null() {
            count += 1;
            unpack_list(Origin::new(&file, index), value, add)?;
        }
    }
    Ok(count)
}

/// A file named explicitly is read whatever its name. In a directory only
/// `.yaml`/`.yml` regular files (or links to them) count, not hidden ones and
/// not subdirectories, so a ConfigMap volume (whose `..data` directory and
/// timestamped copies sit next to the links) is read once.
fn state_files(path: &Path) -> Result<Vec<PathBuf>, ClusterError> {
    let read_error = |source| ClusterError::Read {
        path: path.to_owned(),
        source,
    };
    if !fs::metadata(path).map_err(read_error)?.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let file = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if name.starts_with('.') || !is_yaml {
            continue;
        }
        // Follows links; a dangling link is reported when it is read.
        if fs::metadata(&file).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        files.push(file);
    }
    if files.is_empty() {
        return Err(ClusterError::NoFiles {
            path: path.to_owned(),
        });
    }
    files.sort();
    Ok(files)
}

/// `kind: List` (what `kubectl get -o yaml` prints) and typed lists such as
/// `NodeList` (what the API server returns, whose items carry no
/// apiVersion/kind) become their items. Lists inside lists are not
/// unpacked: kubectl does not write them.
fn unpack_list(
    origin: Origin,
    value: Value,
    add: &mut impl FnMut(RawObject) -> Result<(), ClusterError>,
) -> Result<(), ClusterError> {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    let Some(item_kind) = kind.strip_suffix("List") else {
        return add(RawObject { origin, value });
    };
    let item_kind = item_kind.to_owned();
    let list_kind = kind.to_owned();
    let Value::Mapping(mut list) = value else {
        unreachable!("a value with a kind is a mapping");
    };
    let api_version = list.get("apiVersion").cloned();
    // Taken, not cloned: a large list is held once.
    let items = match list.remove("items") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Sequence(items)) => items,
        Some(_) => {
            return Err(ClusterError::Object {
                origin,
                object: list_kind,
                message: "items must be a list of objects".to_owned(),
            })
        }
    };
    drop(list);
    for (index, mut item) in items.into_iter().enumerate() {
        if let Value::Mapping(fields) = &mut item {
            if !item_kind.is_empty() && !fields.contains_key("kind") {
                fields.insert("kind".into(), item_kind.as_str().into());
                if let Some(api_version) = &api_version {
                    fields.insert("apiVersion".into(), api_version.clone());
                }
            }
        }
        add(RawObject {
            origin: origin.item(index + 1),
            value: item,
        })?;
    }
    Ok(())
}
