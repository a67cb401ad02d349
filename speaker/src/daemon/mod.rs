//! `speaker run`: the control plane. Sources feed [`change::Change`]s to the
//! [`reconciler::Reconciler`]; the daemon turns its decisions into map
//! updates, announcements and status.

pub mod change;
pub mod heartbeat;
mod limits;
pub mod reconciler;
pub mod run;
pub mod signals;

#[cfg(test)]
mod tests;
