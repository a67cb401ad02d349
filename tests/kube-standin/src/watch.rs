//! Watch streams: newline-separated `{"type", "object"}` events.

use std::{collections::HashMap, time::Duration};

use bytes::Bytes;
use http::Response;
use serde_json::{json, Value};
use tokio::{
    sync::{broadcast::error::RecvError, mpsc},
    time::Instant,
};

use crate::{
    api_error::ApiError,
    http::{streaming_response, Body, Shared},
    kinds::Resource,
    selector::Selection,
    store::{seen_through, Notice, WatchStart},
};

/// Marks the end of the initial events of a streaming list (KEP-3157).
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark(resource: &Resource, revision: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        metadata["annotations"] = json!({INITIAL_EVENTS_END: "true"});
    }
    let object = json!({
        "apiVersion": resource.api_version(),
        "kind": resource.kind,
        "metadata": metadata,
    });
    event_line("BOOKMARK", &object)
}

fn expired(message: String) -> Bytes {
    event_line("ERROR", &ApiError::expired(message).status())
}

/// Starts a watch from the request's parameters.
pub fn start(
    shared: &Shared,
    resource: &'static Resource,
    selection: Selection,
    params: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let flag = |name: &str| params.get(name).is_some_and(|v| v == "true" || v == "1");
    let bookmarks = flag("allowWatchBookmarks");
    let send_initial = flag("sendInitialEvents");
    if send_initial
        && (!bookmarks
            || params.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan"))
    {
        // The apiserver's validation of streaming lists.
        return Err(ApiError::invalid(
            "sendInitialEvents requires allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan",
        ));
    }
    let from = match params.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(_) if send_initial => None,
        Some(text) => Some(
            text.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {text:?}")))?,
        ),
    };
    let deadline = match params.get("timeoutSeconds") {
        Some(text) => {
            let seconds: u64 = text
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {text:?}")))?;
            (seconds > 0).then(|| Instant::now() + Duration::from_secs(seconds))
        }
        None => None,
    };
    let (frames, receiver) = mpsc::channel(64);
    match shared.store.watch(resource, &selection, from) {
        // The apiserver answers 200 and sends the 410 as the only event:
        // kube-rs relists on that, while a failed request would be retried
        // from the same version.
        Err(error) if error.code == 410 => {
            let _ = frames.try_send(expired(error.message));
        }
        Err(error) => return Err(error),
        Ok(start) => {
            let stream = Stream {
                resource,
                selection,
                bookmarks,
                bookmark_interval: shared.bookmark_interval,
                deadline,
                frames,
            };
            tokio::spawn(stream.run(start, send_initial));
        }
    }
    Ok(streaming_response(receiver))
}

struct Stream {
    resource: &'static Resource,
    selection: Selection,
    bookmarks: bool,
    bookmark_interval: Duration,
    deadline: Option<Instant>,
    frames: mpsc::Sender<Bytes>,
}

impl Stream {
    async fn send(&self, frame: Bytes) -> bool {
        self.frames.send(frame).await.is_ok()
    }

    async fn run(self, mut start: WatchStart, send_initial: bool) {
        for (change, object) in &start.initial {
            if !self.send(event_line(change.as_str(), object)).await {
                return;
            }
        }
        let mut revision = start.revision;
        if send_initial && !self.send(bookmark(self.resource, revision, true)).await {
            return;
        }
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let deadline = self.deadline.unwrap_or(far);
        let mut next_bookmark = Instant::now() + self.bookmark_interval;
        loop {
            let bookmark_at = if self.bookmarks { next_bookmark } else { far };
            tokio::select! {
                notice = start.notices.recv() => match notice {
                    Ok(Notice::Changed(change)) => {
                        revision = revision.max(change.revision);
                        if !std::ptr::eq(change.resource, self.resource) {
                            continue;
                        }
                        if let Some((seen, object)) = seen_through(&change, &self.selection) {
                            if !self.send(event_line(seen.as_str(), &object)).await {
                                return;
                            }
                        }
                    }
                    Ok(Notice::Compacted(at)) => {
                        let _ = self.send(expired(format!("too old resource version: {revision} ({at})"))).await;
                        return;
                    }
                    Err(RecvError::Lagged(_)) => {
                        // Fell too far behind: as the apiserver does with a
                        // slow watcher, end it; the client relists.
                        let _ = self.send(expired(format!("the watch fell behind at {revision}"))).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(bookmark_at) => {
                    next_bookmark = Instant::now() + self.bookmark_interval;
                    if !self.send(bookmark(self.resource, revision, false)).await {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = self.frames.closed() => return,
            }
        }
    }
}
