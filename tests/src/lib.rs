//! Shared test support of the end-to-end tests, demos and benchmarks.
//!
//! - [`lab`]: the network-namespace lab library (programs, namespaces,
//!   hosts, speaker processes, probes).
//! - [`frames`]: Ethernet/ARP/NDP frame builders and parsers.
//! - [`fuzz`]: differential fuzzing of the XDP responder against a model.
//! - [`kube_emulator`]: the stand-in Kubernetes API server.
//! - [`narration`]: the demos' step-by-step output.
//! - [`pod_spec`]: the chart's speaker container as a kubelet would start it.
pub mod frames;
pub mod fuzz;
pub mod kube_emulator;
pub mod lab;
pub mod narration;
pub mod pod_spec;
