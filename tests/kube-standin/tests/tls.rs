//! HTTPS with a bearer token, as a pod's in-cluster configuration sees the
//! apiserver: the CA, the token, an https URL.

use k8s_openapi::api::core::v1::Node;
use kube::{config::AuthInfo, Api, Client, Config};
use kube_standin::{Options, Server};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use serde_json::json;

const TOKEN: &str = "standin-test-token";

fn tls_server() -> Server {
    Server::start(Options {
        tls: true,
        token: Some(TOKEN.into()),
        ..Options::default()
    })
    .unwrap()
}

fn config(server: &Server, token: Option<&str>) -> Config {
    let ca_pem = server.ca_pem().expect("a CA with TLS");
    let roots: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .map(|cert| cert.unwrap().to_vec())
        .collect();
    assert_eq!(roots.len(), 1);
    let mut config = Config::new(server.url().parse().unwrap());
    config.root_cert = Some(roots);
    if let Some(token) = token {
        config.auth_info = serde_json::from_value::<AuthInfo>(json!({"token": token})).unwrap();
    }
    config
}

#[tokio::test]
async fn an_in_cluster_style_client_works() {
    let server = tls_server();
    assert!(
        server.url().starts_with("https://127.0.0.1:"),
        "{}",
        server.url()
    );
    server
        .create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}))
        .unwrap();
    let client = Client::try_from(config(&server, Some(TOKEN))).unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
    let nodes: Api<Node> = Api::all(client);
    assert_eq!(
        nodes.list(&Default::default()).await.unwrap().items.len(),
        1
    );
}

#[tokio::test]
async fn requests_without_the_token_are_unauthorized() {
    let server = tls_server();
    for token in [None, Some("wrong")] {
        let client = Client::try_from(config(&server, token)).unwrap();
        match Api::<Node>::all(client).list(&Default::default()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"))
            }
            other => panic!("expected 401 with token {token:?}, got {other:?}"),
        }
    }
    assert!(
        server.requests().is_empty(),
        "unauthorized requests reach nothing"
    );
}

#[tokio::test]
async fn a_client_without_the_ca_is_refused() {
    let server = tls_server();
    let mut config = config(&server, Some(TOKEN));
    config.root_cert = None;
    let client = Client::try_from(config).unwrap();
    let result = Api::<Node>::all(client).list(&Default::default()).await;
    assert!(
        matches!(result, Err(ref e) if !matches!(e, kube::Error::Api(_))),
        "{result:?}"
    );
}
