//! Where the cluster description comes from: a YAML file (`file`) or the
//! Kubernetes API (`kube`). Both emit `daemon::change::Change`s.

pub mod file;
pub mod kube;
