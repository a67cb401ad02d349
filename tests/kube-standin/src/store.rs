//! The objects, their resource versions and the change log watches resume
//! from.
//!
//! One counter plays etcd's revision: every write takes the next value as
//! the object's `resourceVersion`, and a list's version is the counter. The
//! log keeps the changes after `log_start`; a watch from an older version
//! gets `410 Expired`, as after an etcd compaction.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use crate::{
    api_error::ApiError,
    kinds::{self, Resource},
    selector::Selection,
};

/// Changes kept for watches to resume from; older ones are forgotten (and
/// resuming from before them is `410 Expired`).
const LOG_CAPACITY: usize = 10_000;
/// Notices a slow watch may fall behind by before it is ended with 410.
const NOTICE_CAPACITY: usize = 4_096;

/// Which part of an object a write changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The object; `status` is kept as stored when the resource has a
    /// status subresource.
    Object,
    /// The `/status` subresource: only `status` changes.
    Status,
}

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One logged write.
#[derive(Debug)]
pub struct Change {
    pub revision: u64,
    pub resource: &'static Resource,
    pub change: ChangeType,
    pub object: Value,
    /// The object before a modification: a watch with a selector needs it
    /// to turn "stopped matching" into DELETED and "started" into ADDED.
    pub previous: Option<Value>,
}

/// What open watches are told.
#[derive(Debug, Clone)]
pub enum Notice {
    Changed(Arc<Change>),
    /// Every open watch ends with 410.
    Compacted(u64),
}

/// The body of a patch request.
#[derive(Debug, Clone)]
pub enum PatchBody {
    /// `application/merge-patch+json`, and strategic merge patches, which
    /// are applied the same way (lists are replaced whole).
    Merge(Value),
    /// `application/json-patch+json` (RFC 6902).
    Json(json_patch::Patch),
    /// Server-side apply, treated as a merge patch that creates a missing
    /// object (no field managers).
    Apply(Value),
}

/// A page of a list.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// Where a watch starts.
pub struct WatchStart {
    /// Events to send before the live ones.
    pub initial: Vec<(ChangeType, Value)>,
    /// The revision the initial events bring the watcher to.
    pub revision: u64,
    pub notices: broadcast::Receiver<Notice>,
}

type Key = (usize, String, String);

struct State {
    objects: BTreeMap<Key, Value>,
    revision: u64,
    log: VecDeque<Arc<Change>>,
    /// Watches may resume from this revision or later.
    log_start: u64,
}

/// The stored objects (shared by the HTTP side and the in-process API).
pub struct Store {
    state: Mutex<State>,
    notices: broadcast::Sender<Notice>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                // etcd's first revision: a list never says "0", which in a
                // watch means "from any version, after the current state".
                revision: 1,
                log: VecDeque::new(),
                log_start: 1,
            }),
            notices: broadcast::channel(NOTICE_CAPACITY).0,
        }
    }
}

fn index_of(resource: &'static Resource) -> usize {
    kinds::RESOURCES
        .iter()
        .position(|r| std::ptr::eq(r, resource))
        .expect("a resource of the table")
}

fn key(resource: &'static Resource, namespace: Option<&str>, name: &str) -> Key {
    (
        index_of(resource),
        namespace.unwrap_or("").to_owned(),
        name.to_owned(),
    )
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn random_suffix(length: usize) -> String {
    // The apiserver's generateName alphabet (no vowels, no confusables).
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..length)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn uid() -> String {
    // A random (version 4, RFC 9562 variant) UUID, as the apiserver makes.
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn metadata(object: &mut Value) -> &mut Map<String, Value> {
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["metadata"].as_object_mut().expect("an object")
}

/// Everything but `metadata` and `status`: what `generation` counts.
fn spec_of(object: &Value) -> Value {
    let mut spec = object.clone();
    if let Some(fields) = spec.as_object_mut() {
        fields.remove("metadata");
        fields.remove("status");
    }
    spec
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// Stores `object` as preloaded: stamped like a create, but no change is
    /// logged and watches from before it are not possible.
    pub fn preload(&self, resource: &'static Resource, object: Value) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let stored = self.insert(&mut state, resource, object, true, false)?;
        state.log.clear();
        state.log_start = state.revision;
        Ok(stored)
    }

    /// Creates `object` in `namespace` (from the URL; the object's own is
    /// used when `None`). `keep_status`: keep a given `status` even where a
    /// create over HTTP drops it.
    pub fn create(
        &self,
        resource: &'static Resource,
        namespace: Option<&str>,
        mut object: Value,
        keep_status: bool,
    ) -> Result<Value, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        if let Some(namespace) = namespace {
            let given = object["metadata"]["namespace"].as_str();
            if given.is_some_and(|given| given != namespace) {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            metadata(&mut object).insert("namespace".into(), namespace.into());
        }
        let mut state = self.lock();
        self.insert(&mut state, resource, object, keep_status, true)
    }

    fn insert(
        &self,
        state: &mut State,
        resource: &'static Resource,
        mut object: Value,
        keep_status: bool,
        log: bool,
    ) -> Result<Value, ApiError> {
        let api_version = resource.api_version();
        if object
            .get("apiVersion")
            .is_some_and(|v| v != &Value::from(api_version.as_str()))
            || object.get("kind").is_some_and(|k| k != resource.kind)
        {
            return Err(ApiError::bad_request(format!(
                "the object is not a {api_version} {}",
                resource.kind
            )));
        }
        object["apiVersion"] = api_version.into();
        object["kind"] = resource.kind.into();
        let meta = metadata(&mut object);
        if meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let name = format!("{prefix}{}", random_suffix(5));
                    meta.insert("name".into(), name.into());
                }
                _ => {
                    return Err(ApiError::invalid(
                        "metadata.name: Required value: name or generateName is required",
                    ))
                }
            }
        }
        let namespace = meta
            .get("namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match (resource.namespaced, &namespace) {
            (true, None) => {
                // kubectl's behaviour for a namespaced object without one.
                meta.insert("namespace".into(), "default".into());
            }
            (false, Some(_)) => {
                meta.remove("namespace");
            }
            _ => {}
        }
        let namespace = meta
            .get("namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let name = meta["name"].as_str().unwrap_or_default().to_owned();
        let key = key(resource, namespace.as_deref(), &name);
        if state.objects.contains_key(&key) {
            return Err(ApiError::already_exists(
                resource.group,
                resource.plural,
                &name,
            ));
        }
        state.revision += 1;
        meta.insert("uid".into(), uid().into());
        meta.insert("creationTimestamp".into(), now().into());
        meta.insert("generation".into(), 1.into());
        meta.insert("resourceVersion".into(), state.revision.to_string().into());
        if resource.status_subresource && !resource.status_on_create && !keep_status {
            if let Some(fields) = object.as_object_mut() {
                fields.remove("status");
            }
        }
        state.objects.insert(key, object.clone());
        if log {
            self.record(state, resource, ChangeType::Added, object.clone(), None);
        }
        Ok(object)
    }

    fn record(
        &self,
        state: &mut State,
        resource: &'static Resource,
        change: ChangeType,
        object: Value,
        previous: Option<Value>,
    ) {
        let change = Arc::new(Change {
            revision: state.revision,
            resource,
            change,
            object,
            previous,
        });
        state.log.push_back(Arc::clone(&change));
        while state.log.len() > LOG_CAPACITY {
            if let Some(dropped) = state.log.pop_front() {
                state.log_start = dropped.revision;
            }
        }
        // No receivers is fine: nobody watches.
        let _ = self.notices.send(Notice::Changed(change));
    }

    pub fn get(
        &self,
        resource: &'static Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.lock()
            .objects
            .get(&key(resource, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource.group, resource.plural, name))
    }

    /// Replaces an object (PUT). A `metadata.resourceVersion` in `object`
    /// must be the stored one.
    pub fn replace(
        &self,
        resource: &'static Resource,
        namespace: Option<&str>,
        name: &str,
        part: Part,
        object: Value,
    ) -> Result<Value, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        if object["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n != name)
        {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        self.update(resource, namespace, name, part, |_| Ok(object))
    }

    /// Patches an object or its status.
    pub fn patch(
        &self,
        resource: &'static Resource,
        namespace: Option<&str>,
        name: &str,
        part: Part,
        patch: PatchBody,
    ) -> Result<Value, ApiError> {
        if let PatchBody::Apply(object) = &patch {
            if part == Part::Object && self.get(resource, namespace, name).is_err() {
                let mut object = object.clone();
                metadata(&mut object).insert("name".into(), name.into());
                return match self.create(resource, namespace, object, false) {
                    // Raced with another create: patch that one.
                    Err(e) if e.reason == "AlreadyExists" => {
                        self.patch(resource, namespace, name, part, patch)
                    }
                    other => other,
                };
            }
        }
        self.update(resource, namespace, name, part, |stored| {
            let mut patched = stored.clone();
            match &patch {
                PatchBody::Merge(patch) | PatchBody::Apply(patch) => {
                    if !patch.is_object() {
                        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                    }
                    json_patch::merge(&mut patched, patch);
                }
                PatchBody::Json(patch) => json_patch::patch(&mut patched, patch)
                    .map_err(|e| ApiError::invalid(format!("the JSON patch failed: {e}")))?,
            }
            Ok(patched)
        })
    }

    /// The common part of PUT and PATCH: `edit` makes the new object from
    /// the stored one; the subresource rules, the resourceVersion
    /// precondition and the immutable metadata are applied here.
    fn update(
        &self,
        resource: &'static Resource,
        namespace: Option<&str>,
        name: &str,
        part: Part,
        edit: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let key = key(resource, namespace, name);
        let stored = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource.group, resource.plural, name))?;
        let edited = edit(&stored)?;
        let stored_version = &stored["metadata"]["resourceVersion"];
        match &edited["metadata"]["resourceVersion"] {
            Value::Null => {}
            version if version == stored_version => {}
            _ => return Err(ApiError::conflict(resource.group, resource.plural, name)),
        }
        let mut updated = match part {
            Part::Status => {
                let mut updated = stored.clone();
                match edited.get("status") {
                    Some(status) => updated["status"] = status.clone(),
                    None => {
                        if let Some(fields) = updated.as_object_mut() {
                            fields.remove("status");
                        }
                    }
                }
                updated
            }
            Part::Object => {
                let mut updated = edited;
                if resource.status_subresource {
                    match stored.get("status") {
                        Some(status) => updated["status"] = status.clone(),
                        None => {
                            if let Some(fields) = updated.as_object_mut() {
                                fields.remove("status");
                            }
                        }
                    }
                }
                updated
            }
        };
        updated["apiVersion"] = resource.api_version().into();
        updated["kind"] = resource.kind.into();
        let generation = stored["metadata"]["generation"].as_i64().unwrap_or(1);
        let generation = if spec_of(&updated) == spec_of(&stored) {
            generation
        } else {
            generation + 1
        };
        state.revision += 1;
        let revision = state.revision.to_string();
        let meta = metadata(&mut updated);
        for immutable in ["name", "namespace", "uid", "creationTimestamp"] {
            match stored["metadata"].get(immutable) {
                Some(value) => meta.insert(immutable.into(), value.clone()),
                None => meta.remove(immutable),
            };
        }
        meta.insert("generation".into(), generation.into());
        meta.insert("resourceVersion".into(), revision.into());
        state.objects.insert(key, updated.clone());
        self.record(
            &mut state,
            resource,
            ChangeType::Modified,
            updated.clone(),
            Some(stored),
        );
        Ok(updated)
    }

    /// Deletes an object at once (finalizers are not emulated); returns it
    /// as it was, with the deletion's resourceVersion.
    pub fn delete(
        &self,
        resource: &'static Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let mut object = state
            .objects
            .remove(&key(resource, namespace, name))
            .ok_or_else(|| ApiError::not_found(resource.group, resource.plural, name))?;
        state.revision += 1;
        let revision = state.revision.to_string();
        metadata(&mut object).insert("resourceVersion".into(), revision.into());
        self.record(
            &mut state,
            resource,
            ChangeType::Deleted,
            object.clone(),
            None,
        );
        Ok(object)
    }

    /// The objects of `resource` that `selection` selects, ordered by
    /// namespace and name (etcd's key order), and the list's
    /// resourceVersion.
    pub fn list(
        &self,
        resource: &'static Resource,
        selection: &Selection,
        page: &Page,
    ) -> Result<(Vec<Value>, u64, Option<String>, usize), ApiError> {
        let state = self.lock();
        let index = index_of(resource);
        let after: Option<(String, String)> = match &page.continue_token {
            Some(token) => Some(parse_continue(token, state.log_start)?),
            None => None,
        };
        let mut selected = state
            .objects
            .range((index, String::new(), String::new())..)
            .take_while(|((i, _, _), _)| *i == index)
            .filter(|((_, namespace, name), _)| {
                after
                    .as_ref()
                    .is_none_or(|(ns, n)| (namespace, name) > (ns, n))
            })
            .filter(|(_, object)| selection.matches(object))
            .map(|(_, object)| object.clone());
        let items: Vec<Value> = match page.limit {
            Some(limit) if limit > 0 => selected.by_ref().take(limit).collect(),
            _ => selected.by_ref().collect(),
        };
        let remaining = selected.count();
        let token = (remaining > 0).then(|| {
            let last = &items[items.len() - 1]["metadata"];
            continue_token(
                state.revision,
                last["namespace"].as_str().unwrap_or(""),
                last["name"].as_str().unwrap_or(""),
            )
        });
        Ok((items, state.revision, token, remaining))
    }

    /// Starts a watch of `resource` from `from` (`None`: from now, after
    /// ADDED events for the objects that exist).
    pub fn watch(
        &self,
        resource: &'static Resource,
        selection: &Selection,
        from: Option<u64>,
    ) -> Result<WatchStart, ApiError> {
        let state = self.lock();
        // Subscribed under the lock: no change falls between the initial
        // events and the live ones.
        let notices = self.notices.subscribe();
        let index = index_of(resource);
        let initial = match from {
            None => state
                .objects
                .iter()
                .filter(|((i, _, _), object)| *i == index && selection.matches(object))
                .map(|(_, object)| (ChangeType::Added, object.clone()))
                .collect(),
            Some(from) if from < state.log_start => {
                return Err(ApiError::expired(format!(
                    "too old resource version: {from} ({})",
                    state.log_start
                )))
            }
            Some(from) => state
                .log
                .iter()
                .filter(|change| change.revision > from && std::ptr::eq(change.resource, resource))
                .filter_map(|change| seen_through(change, selection))
                .collect(),
        };
        Ok(WatchStart {
            initial,
            revision: state.revision,
            notices,
        })
    }

    /// Forgets the log: every open watch ends with 410 and watches from
    /// older versions are refused. Returns the revision compacted at.
    pub fn compact(&self) -> u64 {
        let mut state = self.lock();
        state.log.clear();
        state.log_start = state.revision;
        let _ = self.notices.send(Notice::Compacted(state.revision));
        state.revision
    }

    /// Every stored object.
    pub fn all(&self) -> Vec<Value> {
        self.lock().objects.values().cloned().collect()
    }
}

/// How a watch with `selection` sees `change`: selectors turn an object
/// that starts matching into ADDED and one that stops into DELETED, as the
/// apiserver's watch cache does.
pub fn seen_through(change: &Change, selection: &Selection) -> Option<(ChangeType, Value)> {
    let now = selection.matches(&change.object);
    let before = change
        .previous
        .as_ref()
        .is_some_and(|previous| selection.matches(previous));
    let seen = match change.change {
        ChangeType::Added | ChangeType::Deleted => now.then_some(change.change),
        ChangeType::Modified => match (before, now) {
            (true, true) => Some(ChangeType::Modified),
            (false, true) => Some(ChangeType::Added),
            (true, false) => Some(ChangeType::Deleted),
            (false, false) => None,
        },
    };
    seen.map(|seen| (seen, change.object.clone()))
}

/// A continue token: the list's revision and the last key returned.
fn continue_token(revision: u64, namespace: &str, name: &str) -> String {
    json!([revision, namespace, name]).to_string()
}

fn parse_continue(token: &str, log_start: u64) -> Result<(String, String), ApiError> {
    let invalid = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    let parsed: (u64, String, String) = serde_json::from_str(token).map_err(|_| invalid())?;
    // The apiserver cannot serve a page of a compacted revision either.
    if parsed.0 < log_start {
        return Err(ApiError::expired(
            "the provided continue parameter is too old to display a consistent list result",
        ));
    }
    Ok((parsed.1, parsed.2))
}
