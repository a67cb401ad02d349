//! Shared test support: frame builders and network-namespace labs.
pub mod frames;
pub mod kube_emulator;
pub mod netns;
