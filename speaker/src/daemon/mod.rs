//! `speaker run`: the control plane. Sources feed [`change::Change`]s to the
//! [`reconciler::Reconciler`]; the daemon turns its decisions into map
//! updates, announcements and status.

pub mod change;
pub mod heartbeat;
pub mod reconciler;
pub mod run;

#[cfg(test)]
mod tests;
