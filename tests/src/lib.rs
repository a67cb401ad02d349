//! Shared test support of the end-to-end tests, demos and benchmarks.
//!
//! - [`lab`]: the network-namespace lab library (programs, namespaces,
//!   hosts, speaker processes, probes).
//! - [`frames`]: Ethernet/ARP/NDP frame builders and parsers.
//! - [`kube_emulator`]: the stand-in Kubernetes API server.
//! - [`narration`]: the demos' step-by-step output.
pub mod frames;
pub mod kube_emulator;
pub mod lab;
pub mod narration;
