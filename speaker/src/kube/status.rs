//! What the speaker tells the cluster, as MetalLB's speaker does: Events on
//! the Service (`nodeAssigned`, `announceFailed`) and one `ServiceL2Status`
//! (metallb.io/v1beta1) per announced Service, so that
//! `kubectl get servicel2status` and `kubectl describe svc` read the same.
//!
//! The `ServiceL2Status` follows MetalLB's `Layer2StatusReconciler`
//! (internal/k8s/controllers/layer2_status_controller.go): it lives in the
//! speaker's namespace, is named by the API server from `generateName: l2-`,
//! carries the labels `metallb.io/node`, `metallb.io/service-name` and
//! `metallb.io/service-namespace`, and its status names the node, the
//! Service and the interfaces (none listed means all). The owner keeps one
//! and deletes any other node's; a node that stops announcing deletes its own.
//!
//! Writes happen on a task of their own, in the order they were asked for,
//! so that a slow or unreachable API server never holds up the daemon (whose
//! data plane matters most exactly then). Failures are logged, never
//! returned: status is a report, and a report that cannot be written must not
//! stop anything.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::core::v1::{ObjectReference, Service},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{
    api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, TypeMeta},
    runtime::events::{Event, EventType, Recorder, Reporter},
    Client, Resource, ResourceExt,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::resources::service_l2_status_resource;
use crate::daemon::change::ServiceKey;

pub const LABEL_NODE: &str = "metallb.io/node";
pub const LABEL_SERVICE_NAME: &str = "metallb.io/service-name";
pub const LABEL_SERVICE_NAMESPACE: &str = "metallb.io/service-namespace";

/// MetalLB's speaker reports as this component; keeping it lets existing
/// event filters and `kubectl describe` readers see the same source.
pub const REPORTING_CONTROLLER: &str = "metallb-speaker";

/// The protocol named in `nodeAssigned`, as MetalLB names layer 2.
const PROTOCOL: &str = "layer2";

/// One write is given up after this; the next one is tried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The `nodeAssigned` message, word for word MetalLB's.
pub fn node_assigned_message(node: &str) -> String {
    format!("announcing from node {node:?} with protocol {PROTOCOL:?}")
}

/// Writes this node's Events and `ServiceL2Status`es. Cheap to clone; all
/// clones share one writer task, which ends when the last clone is dropped.
#[derive(Clone)]
pub struct StatusWriter {
    jobs: mpsc::UnboundedSender<Job>,
}

enum Job {
    Announcing {
        service: ServiceKey,
        interfaces: Vec<String>,
    },
    Withdrawn {
        service: ServiceKey,
    },
    AnnounceFailed {
        service: ServiceKey,
        message: String,
    },
    SetOwner(OwnerReference),
    Flush(oneshot::Sender<()>),
}

impl StatusWriter {
    /// `namespace_for_status` is where the `ServiceL2Status` objects live:
    /// the speaker's (MetalLB's) namespace. Must be called within a Tokio
    /// runtime.
    pub fn new(client: Client, node_name: String, namespace_for_status: String) -> Self {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.to_owned(),
            instance: Some(node_name.clone()),
        };
        let writer = Writer {
            recorder: Recorder::new(client.clone(), reporter),
            statuses: Api::namespaced_with(
                client.clone(),
                &namespace_for_status,
                &service_l2_status_resource(),
            ),
            client,
            node: node_name,
            namespace: namespace_for_status,
            owner: None,
        };
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(writer.work(queue));
        StatusWriter { jobs }
    }

    /// This node now announces `service`, on `interfaces` (empty: all).
    pub async fn announcing(&self, service: &ServiceKey, interfaces: &[String]) {
        self.send(Job::Announcing {
            service: service.clone(),
            interfaces: interfaces.to_vec(),
        });
    }

    /// This node no longer announces `service`, because of `reason`.
    /// MetalLB emits no Event for this; the reason is logged.
    pub async fn withdrawn(&self, service: &ServiceKey, reason: &str) {
        info!(
            service = %service,
            reason,
            "{service}: not announced from this node any more: {reason}"
        );
        self.send(Job::Withdrawn {
            service: service.clone(),
        });
    }

    /// This node won `service` but cannot announce it.
    pub async fn announce_failed(&self, service: &ServiceKey, message: &str) {
        self.send(Job::AnnounceFailed {
            service: service.clone(),
            message: message.to_owned(),
        });
    }

    /// Makes `owner` (the speaker's Pod, as in MetalLB) the owner of the
    /// `ServiceL2Status` objects created from now on, so that the garbage
    /// collector removes them with the Pod.
    pub async fn set_owner(&self, owner: OwnerReference) {
        self.send(Job::SetOwner(owner));
    }

    /// Waits until everything asked for before has been written (or failed).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        self.send(Job::Flush(done));
        let _ = wait.await;
    }

    fn send(&self, job: Job) {
        if self.jobs.send(job).is_err() {
            warn!("the status writer has stopped; status not written");
        }
    }
}

struct Writer {
    client: Client,
    recorder: Recorder,
    statuses: Api<DynamicObject>,
    node: String,
    namespace: String,
    owner: Option<OwnerReference>,
}

impl Writer {
    async fn work(mut self, mut queue: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = queue.recv().await {
            let write = async {
                match job {
                    Job::Announcing {
                        service,
                        interfaces,
                    } => {
                        let message = node_assigned_message(&self.node);
                        self.event(&service, EventType::Normal, "nodeAssigned", message)
                            .await;
                        if let Err(e) = self.write_status(&service, interfaces).await {
                            warn!(
                                service = %service,
                                error = %e,
                                "{service}: cannot write its ServiceL2Status: {e}"
                            );
                        }
                    }
                    Job::Withdrawn { service } => {
                        if let Err(e) = self.delete_own_status(&service).await {
                            warn!(
                                service = %service,
                                error = %e,
                                "{service}: cannot delete this node's ServiceL2Status: {e}"
                            );
                        }
                    }
                    Job::AnnounceFailed { service, message } => {
                        self.event(&service, EventType::Warning, "announceFailed", message)
                            .await;
                    }
                    Job::SetOwner(owner) => self.owner = Some(owner),
                    Job::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            };
            if tokio::time::timeout(WRITE_TIMEOUT, write).await.is_err() {
                warn!("status write timed out after {WRITE_TIMEOUT:?}");
            }
        }
    }

    async fn event(&self, service: &ServiceKey, type_: EventType, reason: &str, note: String) {
        let Some(regarding) = self.service_reference(service).await else {
            debug!("{service}: gone, no {reason} event");
            return;
        };
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Announce".to_owned(),
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
        let services: Api<Service> = Api::namespaced(self.client.clone(), &service.namespace);
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

    /// Keeps exactly one `ServiceL2Status` for `service`, this node's, with
    /// the wanted status; written only when it differs.
    async fn write_status(
        &self,
        service: &ServiceKey,
        mut interfaces: Vec<String>,
    ) -> Result<(), kube::Error> {
        interfaces.sort();
        interfaces.dedup();
        let wanted = self.wanted_status(service, &interfaces);
        let existing = self.statuses.list(&service_selector(service, None)).await?;

        let mut own = None;
        for status in existing {
            if own.is_none() && status.labels().get(LABEL_NODE) == Some(&self.node) {
                own = Some(status);
                continue;
            }
            let holder = status.labels().get(LABEL_NODE).cloned().unwrap_or_default();
            info!(
                "{service}: deleting ServiceL2Status {} of node {holder:?}",
                status.name_any()
            );
            self.delete(&status.name_any()).await?;
        }

        let (name, current) = match own {
            Some(status) => (status.name_any(), status.data.get("status").cloned()),
            None => {
                let created = self
                    .statuses
                    .create(&PostParams::default(), &self.new_status(service, &wanted))
                    .await?;
                info!(
                    "{service}: created ServiceL2Status {}/{}",
                    self.namespace,
                    created.name_any()
                );
                // A real API server drops `status` on create (subresource).
                (created.name_any(), created.data.get("status").cloned())
            }
        };
        if current.as_ref() == Some(&wanted) {
            return Ok(());
        }
        let mut patch = wanted;
        if interfaces.is_empty() {
            // Merge patches keep fields they do not mention.
            patch["interfaces"] = Value::Null;
        }
        self.statuses
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": patch })),
            )
            .await?;
        debug!("{service}: ServiceL2Status {name} updated");
        Ok(())
    }

    async fn delete_own_status(&self, service: &ServiceKey) -> Result<(), kube::Error> {
        let own = self
            .statuses
            .list(&service_selector(service, Some(&self.node)))
            .await?;
        for status in own {
            info!(
                "{service}: deleting this node's ServiceL2Status {}",
                status.name_any()
            );
            self.delete(&status.name_any()).await?;
        }
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<(), kube::Error> {
        match self.statuses.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `status` of MetalLB's `MetalLBServiceL2Status`, empty fields omitted.
    fn wanted_status(&self, service: &ServiceKey, interfaces: &[String]) -> Value {
        let mut status = json!({
            "node": self.node,
            "serviceName": service.name,
            "serviceNamespace": service.namespace,
        });
        if !interfaces.is_empty() {
            status["interfaces"] = interfaces
                .iter()
                .map(|name| json!({ "name": name }))
                .collect();
        }
        status
    }

    fn new_status(&self, service: &ServiceKey, status: &Value) -> DynamicObject {
        let resource = service_l2_status_resource();
        DynamicObject {
            types: Some(TypeMeta {
                api_version: resource.api_version,
                kind: resource.kind,
            }),
            metadata: ObjectMeta {
                generate_name: Some("l2-".to_owned()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (LABEL_NODE.to_owned(), self.node.clone()),
                    (LABEL_SERVICE_NAME.to_owned(), service.name.clone()),
                    (
                        LABEL_SERVICE_NAMESPACE.to_owned(),
                        service.namespace.clone(),
                    ),
                ])),
                owner_references: self.owner.clone().map(|owner| vec![owner]),
                ..ObjectMeta::default()
            },
            data: json!({ "spec": {}, "status": status }),
        }
    }
}

/// The `ServiceL2Status`es of `service`, of one node or of all.
fn service_selector(service: &ServiceKey, node: Option<&str>) -> ListParams {
    let mut selector = format!(
        "{LABEL_SERVICE_NAME}={},{LABEL_SERVICE_NAMESPACE}={}",
        service.name, service.namespace
    );
    if let Some(node) = node {
        selector.push_str(&format!(",{LABEL_NODE}={node}"));
    }
    ListParams::default().labels(&selector)
}
