//! Where the cluster description comes from when it is not the Kubernetes
//! API (that is `crate::kube`): a YAML file (`file`). It emits
//! `cluster::Change`s, as the Kubernetes watches do.

pub mod file;
