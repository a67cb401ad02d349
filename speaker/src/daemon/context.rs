//! The handles every reconcile step of the daemon shares (as kube-rs
//! controllers share a `Context`): configuration, the pinned maps, the
//! announcer, metrics and diagnostics, the status sink, the daemon's health
//! and the queue the cluster changes arrive on.

use std::{collections::BTreeMap, sync::Arc};

use tokio::sync::{mpsc, Notify};
use tracing::error;

use super::{config::RunConfig, heartbeat::Health};
use crate::{
    announce::Announcer,
    cluster::Change,
    dataplane::{groups::GroupMemberships, sync::SyncReport, DataplaneMaps, SharedOwnership},
    error::Error,
    interfaces::vlan::Placement,
    kube::status::StatusWriter,
    metrics::MetricsState,
};

pub struct Context {
    pub config: RunConfig,
    pub maps: DataplaneMaps,
    pub announcer: Announcer,
    /// Shared with the HTTP server: metrics, readiness, diagnostics.
    pub metrics: MetricsState,
    /// ServiceL2Status writes; `None` with the file source.
    pub status: Option<StatusWriter>,
    /// What the heartbeat thread watches: marked busy while computing.
    pub health: Health,
    /// Where membership updates go (into the same queue as cluster changes).
    pub changes: mpsc::Sender<Change>,
    /// The loaded object and every link this process attached, held open
    /// for its lifetime so that removing a pin cannot detach the responder.
    pub ownership: SharedOwnership,
    /// Wakes the file source to re-read its file (SIGHUP).
    pub reload_cluster: Arc<Notify>,
    /// The solicited-node groups joined for the IPv6 VIPs in the maps
    /// (MLD), held for as long as this process answers for them.
    pub groups: GroupMemberships,
}

impl Context {
    /// Logs an error with its kind and counts it in
    /// `xdp_speaker_errors_total`; `what` names what was being done.
    pub fn report_error(&self, what: &str, error: &Error) {
        self.metrics.diagnostics.count(error);
        error!(error = %error, error_kind = %error.kind(), "{what}: {error}");
    }

    /// [`Self::report_error`], and `/readyz` says so until
    /// [`Self::recovered`] is called with the same `what`.
    pub fn report_standing_error(&self, what: &'static str, error: &Error) {
        self.report_error(what, error);
        self.metrics.diagnostics.raise(what, error);
    }

    pub fn recovered(&self, what: &'static str) {
        self.metrics.diagnostics.clear(what);
    }

    /// Brings the MLD memberships to the VIPs `report` says are in the
    /// maps; failures are reported and tried again at the next sync. A VIP
    /// answered behind tags joins on its VLAN device (one of `placements`,
    /// by announce interface index): the report must go out tagged, on the
    /// VLAN the requests come from.
    pub fn sync_groups(&mut self, report: &SyncReport, placements: &BTreeMap<u32, Placement>) {
        let in_maps = report
            .added
            .iter()
            .chain(&report.updated_mac)
            .chain(&report.kept)
            .map(|(ip, interface, vlan)| {
                let device = if vlan.is_untagged() {
                    interface.index
                } else {
                    placements
                        .iter()
                        .find(|(_, p)| p.attach.index == interface.index && p.vlan == *vlan)
                        .map_or(interface.index, |(device, _)| *device)
                };
                (*ip, device)
            });
        for e in self.groups.sync(in_maps) {
            self.report_error("MLD membership", &e);
        }
    }
}
