//! A throw-away certificate authority and the server certificate it signs.

use std::{net::IpAddr, sync::Arc};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    ServerConfig,
};

/// The in-cluster name of the API server, which clients may verify.
pub const SERVICE_DNS_NAME: &str = "kubernetes.default.svc";

pub struct Certificates {
    /// The CA's certificate, for clients to trust.
    pub ca_pem: String,
    pub server_config: Arc<ServerConfig>,
}

/// A CA and a server certificate for `addresses`, 127.0.0.1,
/// `localhost` and [`SERVICE_DNS_NAME`].
pub fn generate(addresses: &[IpAddr]) -> Result<Certificates, anyhow::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kube-standin CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut names = vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        SERVICE_DNS_NAME.to_owned(),
    ];
    for address in addresses {
        let address = address.to_string();
        if !names.contains(&address) {
            names.push(address);
        }
    }
    let mut server_params = CertificateParams::new(names)?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let server_key = KeyPair::generate()?;
    let server_cert = server_params.signed_by(&server_key, &ca)?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![server_cert.der().clone()];
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Certificates {
        ca_pem: ca.pem(),
        server_config: Arc::new(config),
    })
}
