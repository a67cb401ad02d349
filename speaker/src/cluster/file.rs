//! From a `--cluster-state` path to YAML objects: which files, which
//! documents, and `List` wrappers unpacked the way `kubectl apply -f` does.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::{ClusterError, Origin};

/// One object of the cluster state, as YAML, with where it came from.
pub(super) struct RawObject {
    pub(super) origin: Origin,
    pub(super) value: Value,
}

/// Every object under `path`, in reading order: a file, or the `.yaml` and
/// `.yml` files of a directory in name order.
pub(super) fn read_objects(path: &Path) -> Result<Vec<RawObject>, ClusterError> {
    let mut objects = Vec::new();
    for file in state_files(path)? {
        let text = fs::read_to_string(&file).map_err(|source| ClusterError::Read {
            path: file.clone(),
            source,
        })?;
        objects.extend(parse_objects(&file, &text)?);
    }
    Ok(objects)
}

/// The objects of one file's text.
pub(super) fn parse_objects(file: &Path, text: &str) -> Result<Vec<RawObject>, ClusterError> {
    let mut objects = Vec::new();
    for (index, value) in documents(file, text)? {
        unpack_list(Origin::new(file, index), value, &mut objects)?;
    }
    Ok(objects)
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

/// The non-empty documents of one file with their 1-based index. An empty
/// document (a bare `---`, or only comments) is skipped but still counted,
/// so the indices match what an editor shows between the separators.
fn documents(file: &Path, text: &str) -> Result<Vec<(usize, Value)>, ClusterError> {
    let mut documents = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let index = index + 1;
        let yaml_error = |source| ClusterError::Yaml {
            origin: Origin::new(file, index),
            source,
        };
        // The first error ends the file: the parser cannot resynchronise,
        // and some failures would repeat forever.
        let mut value = Value::deserialize(document).map_err(yaml_error)?;
        // `<<:` merge keys, which Kubernetes' YAML reader also honours.
        value.apply_merge().map_err(yaml_error)?;
        if !value.is_null() {
            documents.push((index, value));
        }
    }
    Ok(documents)
}

/// `kind: List` (what `kubectl get -o yaml` prints) and typed lists such as
/// `NodeList` (what the API server returns, whose items carry no
/// apiVersion/kind) become their items. Lists inside lists are not
/// unpacked: kubectl does not write them.
fn unpack_list(
    origin: Origin,
    value: Value,
    objects: &mut Vec<RawObject>,
) -> Result<(), ClusterError> {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    let Some(item_kind) = kind.strip_suffix("List") else {
        objects.push(RawObject { origin, value });
        return Ok(());
    };
    let api_version = value.get("apiVersion").cloned();
    let items = match value.get("items") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Sequence(items)) => items.clone(),
        Some(_) => {
            return Err(ClusterError::Object {
                origin,
                object: kind.to_owned(),
                message: "items must be a list of objects".to_owned(),
            })
        }
    };
    for (index, mut item) in items.into_iter().enumerate() {
        if let Value::Mapping(fields) = &mut item {
            if !item_kind.is_empty() && !fields.contains_key("kind") {
                fields.insert("kind".into(), item_kind.into());
                if let Some(api_version) = &api_version {
                    fields.insert("apiVersion".into(), api_version.clone());
                }
            }
        }
        objects.push(RawObject {
            origin: origin.item(index + 1),
            value: item,
        });
    }
    Ok(())
}
