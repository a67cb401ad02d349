//! What the tests of the stand-in share.
#![allow(dead_code)]

use std::{future::Future, time::Duration};

use kube::{
    api::{ApiResource, DynamicObject},
    Api, Client, Config,
};
use kube_standin::{Options, Server};

/// Long enough for any change to reach a watcher.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn server() -> Server {
    Server::start(Options {
        bookmark_interval: Duration::from_millis(300),
        ..Options::default()
    })
    .expect("starting the stand-in")
}

pub fn client(server: &Server) -> Client {
    Client::try_from(Config::new(server.url().parse().unwrap())).unwrap()
}

pub fn metallb(kind: &str) -> ApiResource {
    let resource = kube_standin::kinds::by_kind("metallb.io/v1beta1", kind).unwrap();
    ApiResource {
        group: resource.group.into(),
        version: resource.version.into(),
        api_version: resource.api_version(),
        kind: kind.into(),
        plural: resource.plural.into(),
    }
}

pub fn pools(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), "metallb-system", &metallb("IPAddressPool"))
}

/// Polls `check` until it gives a value or [`WAIT`] passes.
pub async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, check: impl Fn() -> F) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
