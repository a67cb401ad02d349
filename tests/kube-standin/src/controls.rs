//! Test controls: the request log and injected faults.

use std::{
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// One request as the server understood it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Position in the log, from 0 (survives [`Controls::clear_requests`]).
    pub seq: u64,
    /// Since the server started.
    pub at: Duration,
    pub method: String,
    pub path: String,
    pub query: String,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete,
    /// deletecollection; `""` for discovery and other paths.
    pub verb: String,
    /// Resource plural (`""` when none).
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The HTTP status answered (a watch: the status it started with).
    pub code: u16,
}

/// "Answer the next `times` requests with `verb` on `resource` (and
/// `subresource`) with status `code`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub verb: String,
    pub resource: String,
    /// `None` matches requests on the object itself only (no subresource).
    #[serde(default)]
    pub subresource: Option<String>,
    pub code: u16,
    pub times: u32,
}

impl Fault {
    fn applies_to(&self, verb: &str, resource: &str, subresource: &str) -> bool {
        self.verb == verb
            && self.resource == resource
            && self.subresource.as_deref().unwrap_or("") == subresource
    }
}

struct ControlState {
    requests: Vec<RequestRecord>,
    next_seq: u64,
    faults: Vec<Fault>,
}

pub struct Controls {
    started: Instant,
    state: Mutex<ControlState>,
}

impl Default for Controls {
    fn default() -> Self {
        Controls {
            started: Instant::now(),
            state: Mutex::new(ControlState {
                requests: Vec::new(),
                next_seq: 0,
                faults: Vec::new(),
            }),
        }
    }
}

impl Controls {
    fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a fault; faults on the same request are used in the order
    /// added.
    pub fn inject(&self, fault: Fault) {
        if fault.times > 0 {
            self.lock().faults.push(fault);
        }
    }

    /// The faults still pending.
    pub fn faults(&self) -> Vec<Fault> {
        self.lock().faults.clone()
    }

    /// The code to answer with, if a fault applies; counts it down.
    pub(crate) fn take_fault(&self, verb: &str, resource: &str, subresource: &str) -> Option<u16> {
        let mut state = self.lock();
        let index = state
            .faults
            .iter()
            .position(|f| f.applies_to(verb, resource, subresource))?;
        let fault = &mut state.faults[index];
        fault.times -= 1;
        let code = fault.code;
        if fault.times == 0 {
            state.faults.remove(index);
        }
        Some(code)
    }

    pub(crate) fn record(&self, mut record: RequestRecord) {
        let mut state = self.lock();
        record.seq = state.next_seq;
        record.at = self.started.elapsed();
        state.next_seq += 1;
        state.requests.push(record);
    }

    /// Every request since the start (or the last clear).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.clone()
    }

    /// The requests with `verb` on `resource` (any subresource).
    pub fn count(&self, verb: &str, resource: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.verb == verb && r.resource == resource)
            .count()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_applies_exactly_its_number_of_times() {
        let controls = Controls::default();
        controls.inject(Fault {
            verb: "patch".into(),
            resource: "services".into(),
            subresource: Some("status".into()),
            code: 409,
            times: 2,
        });
        assert_eq!(controls.take_fault("patch", "services", ""), None);
        assert_eq!(
            controls.take_fault("patch", "services", "status"),
            Some(409)
        );
        assert_eq!(
            controls.take_fault("patch", "services", "status"),
            Some(409)
        );
        assert_eq!(controls.take_fault("patch", "services", "status"), None);
        assert!(controls.faults().is_empty());
    }
}
