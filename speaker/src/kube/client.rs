//! The connection to the API server.

use std::path::{Path, PathBuf};

use kube::{
    config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError},
    Client, Config,
};
use tracing::debug;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot use kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: KubeconfigError,
    },
    #[error("no Kubernetes configuration found: {0}")]
    NoConfig(#[from] InferConfigError),
    #[error("cannot create the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The watch streams never end on their own; this is a bug if seen.
    #[error("the Kubernetes watches ended")]
    WatchesEnded,
}

/// A client for the cluster: the given kubeconfig file, else the in-cluster
/// service account (a speaker Pod), else `KUBECONFIG` or `~/.kube/config`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, SourceError> {
    let config = match kubeconfig {
        Some(path) => {
            let failed = |source| SourceError::Kubeconfig {
                path: path.to_owned(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(failed)?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(failed)?
        }
        None => match Config::incluster() {
            Ok(config) => config,
            Err(in_cluster) => {
                debug!("not in a cluster ({in_cluster}), looking for a kubeconfig");
                Config::infer().await?
            }
        },
    };
    Client::try_from(config).map_err(SourceError::Client)
}
