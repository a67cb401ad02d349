//! Objects from multi-document YAML (or JSON): preloads and the
//! `/_standin/objects` control.

use serde::Deserialize;
use serde_json::Value;

use crate::{api_error::ApiError, kinds, store::Store};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("document {index}: not YAML: {source}")]
    Yaml {
        index: usize,
        source: serde_yaml_ng::Error,
    },
    #[error("document {index}: {message}")]
    Object { index: usize, message: String },
}

/// The objects of `text`; `kind: List` documents give their items.
pub fn objects(text: &str) -> Result<Vec<Value>, LoadError> {
    let mut objects = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value =
            Value::deserialize(document).map_err(|source| LoadError::Yaml { index, source })?;
        match value {
            Value::Null => {}
            Value::Object(ref fields)
                if fields.get("kind").and_then(Value::as_str) == Some("List") =>
            {
                objects.extend(
                    fields
                        .get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            Value::Object(_) => objects.push(value),
            other => {
                return Err(LoadError::Object {
                    index,
                    message: format!("not an object: {other}"),
                })
            }
        }
    }
    Ok(objects)
}

fn store_each(
    text: &str,
    mut put: impl FnMut(&'static kinds::Resource, Value) -> Result<Value, ApiError>,
) -> Result<Vec<Value>, LoadError> {
    let mut stored = Vec::new();
    for (index, object) in objects(text)?.into_iter().enumerate() {
        let text = |field: &str| object[field].as_str().unwrap_or("").to_owned();
        let (api_version, kind) = (text("apiVersion"), text("kind"));
        let resource = kinds::by_kind(&api_version, &kind).ok_or_else(|| LoadError::Object {
            index,
            message: format!("kind {api_version:?} {kind:?} is not served"),
        })?;
        let object = put(resource, object).map_err(|e| LoadError::Object {
            index,
            message: e.message,
        })?;
        stored.push(object);
    }
    Ok(stored)
}

/// Preloads `text`'s objects: no watch events.
pub fn preload(store: &Store, text: &str) -> Result<usize, LoadError> {
    store_each(text, |resource, object| store.preload(resource, object)).map(|s| s.len())
}

/// Creates `text`'s objects (status kept), with watch events.
pub fn create_all(store: &Store, text: &str) -> Result<Vec<Value>, LoadError> {
    store_each(text, |resource, object| {
        store.create(resource, None, object, true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_and_lists_give_objects() {
        let text = "---\napiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\n\
                    kind: List\nitems:\n- {apiVersion: v1, kind: Node, metadata: {name: b}}\n---\n";
        let names: Vec<String> = objects(text)
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn unknown_kinds_and_bad_yaml_are_errors() {
        let store = Store::default();
        let error = preload(
            &store,
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
        )
        .unwrap_err();
        assert!(error.to_string().contains("Deployment"), "{error}");
        assert!(preload(&store, "a: [").is_err());
        assert!(preload(&store, "- 1\n").is_err());
    }
}
