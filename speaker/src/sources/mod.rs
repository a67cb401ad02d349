//! Where the cluster description comes from when it is not the Kubernetes
//! API (that is `crate::kube`): a YAML file (`file`). It emits
//! `daemon::change::Change`s, as the Kubernetes watches do.

pub mod file;
