//! `speaker run`: the control plane, in the shape of a kube-rs controller.
//! [`config`] turns the command line into a checked [`config::RunConfig`];
//! [`run`] wires the sources, the [`context::Context`] of shared handles and
//! the [`supervise`]d tasks, and loops; [`reconcile`] holds the steps:
//! [`crate::cluster::Change`]s through the [`settle`] gate into the
//! [`reconciler::Reconciler`], its decisions into map updates,
//! announcements and status.

pub mod config;
pub mod context;
pub mod gains;
pub mod gossip;
pub mod handover;
pub mod heartbeat;
mod limits;
pub mod reconcile;
pub mod reconciler;
pub mod restart;
pub mod run;
pub mod settle;
pub mod signals;
pub mod supervise;

#[cfg(test)]
mod tests;
