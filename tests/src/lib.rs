//! Shared test support: frame builders and network-namespace labs.
pub mod fabric;
pub mod frames;
pub mod kube_emulator;
pub mod kube_lab;
pub mod narration;
pub mod netns;
pub mod pod_spec;
