//! Events on Services, with MetalLB's speaker's reasons and messages
//! (speaker/main.go, speaker/layer2_controller.go): `nodeAssigned` when this
//! node starts announcing a Service, `announceFailed` when it won an IP but
//! has none of the interfaces its advertisement names. `kubectl describe
//! svc` then reads the same as with MetalLB.
//!
//! Events are written by a task of their own, in order, so that a slow API
//! server holds up neither the daemon nor the status reconciler. A failed
//! write is logged and dropped: an Event is a report, and MetalLB's
//! recorder drops them too.

use std::{net::IpAddr, time::Duration};

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::{
    runtime::events::{Event, EventType, Recorder, Reporter},
    Api, Client, Resource,
};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::calls;
use crate::cluster::ServiceKey;

/// MetalLB's speaker reports as this component; keeping it lets existing
/// event filters and `kubectl describe` readers see the same source.
pub const REPORTING_CONTROLLER: &str = "metallb-speaker";

/// The protocol MetalLB names in its messages for layer 2.
const PROTOCOL: &str = "layer2";

/// The action of the events about announcing (MetalLB's).
const ANNOUNCE: &str = "Announce";

/// One Event write is given up after this; the next one is tried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The `nodeAssigned` message, as MetalLB words it.
pub fn node_assigned_message(node: &str) -> String {
    format!("announcing from node {node:?} with protocol {PROTOCOL:?}")
}

/// The `announceFailed` message, as MetalLB words it (its grammar kept, so
/// that alerts matching on it keep working).
pub fn announce_failed_message(ip: IpAddr, node: &str) -> String {
    format!(
        "the interfaces specified by LB IP {:?} doesn't exist in assigned node {node:?} with protocol {PROTOCOL:?}",
        ip.to_string()
    )
}

/// The `IPConflict` message: the IP, the other host's MAC, where, how
/// many frames made up the claim.
pub fn ip_conflict_message(ip: IpAddr, other_mac: &str, interface: &str, frames: u64) -> String {
    let plural = if frames == 1 { "" } else { "s" };
    format!("IP {ip} is also claimed by {other_mac} on {interface} ({frames} frame{plural})")
}

struct Job {
    service: ServiceKey,
    type_: EventType,
    reason: &'static str,
    note: String,
    action: &'static str,
}

/// Records this node's Events. Cheap to clone; the writer task ends when
/// the last clone is dropped.
#[derive(Clone)]
pub struct EventRecorder {
    node: String,
    jobs: mpsc::UnboundedSender<Job>,
}

impl EventRecorder {
    /// Must be called within a Tokio runtime.
    pub fn new(client: Client, node: String) -> Self {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.to_owned(),
            instance: Some(node.clone()),
        };
        let writer = Writer {
            recorder: Recorder::new(client.clone(), reporter),
            client,
        };
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(writer.work(queue));
        EventRecorder { node, jobs }
    }

    /// `nodeAssigned` (Normal) on `service`.
    pub fn node_assigned(&self, service: &ServiceKey) {
        self.send(Job {
            service: service.clone(),
            type_: EventType::Normal,
            reason: "nodeAssigned",
            note: node_assigned_message(&self.node),
            action: ANNOUNCE,
        });
    }

    /// `announceFailed` (Warning) on `service`, for `ip`.
    pub fn announce_failed(&self, service: &ServiceKey, ip: IpAddr) {
        self.send(Job {
            service: service.clone(),
            type_: EventType::Warning,
            reason: "announceFailed",
            note: announce_failed_message(ip, &self.node),
            action: ANNOUNCE,
        });
    }

    /// `IPConflict` (Warning) on `service`: another host claims its IP.
    pub fn ip_conflict(&self, service: &ServiceKey, note: String) {
        self.send(Job {
            service: service.clone(),
            type_: EventType::Warning,
            reason: "IPConflict",
            note,
            action: "Answer",
        });
    }

    fn send(&self, job: Job) {
        if self.jobs.send(job).is_err() {
            warn!("the event writer has stopped; event not recorded");
        }
    }
}

struct Writer {
    client: Client,
    recorder: Recorder,
}

impl Writer {
    async fn work(self, mut queue: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = queue.recv().await {
            let service = job.service.clone();
            let reason = job.reason;
            if tokio::time::timeout(WRITE_TIMEOUT, self.record(job))
                .await
                .is_err()
            {
                warn!(
                    service = %service,
                    "{service}: recording the {reason} event timed out after {WRITE_TIMEOUT:?}"
                );
            }
        }
    }

    async fn record(&self, job: Job) {
        let Job {
            service,
            type_,
            reason,
            note,
            action,
        } = job;
        let Some(regarding) = self.service_reference(&service).await else {
            debug!("{service}: gone, no {reason} event");
            return;
        };
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &regarding).await {
            warn!(
                service = %service,
                error = %e,
                "{service}: cannot record the {reason} event: {e}"
            );
        }
    }

    /// The Service with its uid (`kubectl describe` matches events on it).
    /// `None` when the Service is gone; without the uid if it cannot be read.
    async fn service_reference(&self, service: &ServiceKey) -> Option<ObjectReference> {
        let services: Api<Service> =
            calls::SERVICES.api(self.client.clone(), Some(&service.namespace));
        match services.get_opt(&service.name).await {
            Ok(Some(object)) => Some(ObjectReference {
                // The recorder folds repeats of an event on equal references.
                resource_version: None,
                ..object.object_ref(&())
            }),
            Ok(None) => None,
            Err(e) => {
                debug!("{service}: cannot read it ({e}), referring to it by name");
                Some(ObjectReference {
                    api_version: Some("v1".to_owned()),
                    kind: Some("Service".to_owned()),
                    namespace: Some(service.namespace.clone()),
                    name: Some(service.name.clone()),
                    ..ObjectReference::default()
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_metallbs() {
        assert_eq!(
            node_assigned_message("iris1"),
            r#"announcing from node "iris1" with protocol "layer2""#
        );
        assert_eq!(
            announce_failed_message("192.0.2.1".parse().unwrap(), "iris1"),
            r#"the interfaces specified by LB IP "192.0.2.1" doesn't exist in assigned node "iris1" with protocol "layer2""#
        );
    }

    #[test]
    fn the_conflict_message_names_the_other_mac_and_the_interface() {
        let ip = "192.0.2.10".parse().unwrap();
        assert_eq!(
            ip_conflict_message(ip, "02:00:00:00:00:77", "eth0", 3),
            "IP 192.0.2.10 is also claimed by 02:00:00:00:00:77 on eth0 (3 frames)"
        );
        assert!(ip_conflict_message(ip, "02:00:00:00:00:77", "eth0", 1).ends_with("(1 frame)"));
    }
}
