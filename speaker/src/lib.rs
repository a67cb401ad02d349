//! xdp-speaker: a Kubernetes Layer-2 load-balancer speaker whose data plane is
//! an XDP program. This crate is the userspace side: it loads and attaches the
//! program, keeps the pinned maps, and gives operators a view into them.

pub mod allocator;
pub mod announce;
pub mod cli;
pub mod cluster;
pub mod daemon;
pub mod dataplane;
pub mod election;
pub mod error;
pub mod interfaces;
pub mod kube;
pub mod logging;
pub mod membership;
pub mod metrics;
pub mod report;
pub mod sources;

pub use error::Error;
