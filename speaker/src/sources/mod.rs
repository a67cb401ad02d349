//! Where the cluster description comes from: a YAML file (`file`) or the
//! Kubernetes API (`kube`). Both emit `cluster::Change`s.

pub mod file;
pub mod kube;
