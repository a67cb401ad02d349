//! Secure metrics through the real `speaker run` against the stand-in API
//! server: HTTPS with a certificate made here, and `/metrics` only for a
//! bearer token the API server authenticates (TokenReview) as a user it
//! allows `get /metrics` (SubjectAccessReview), like MetalLB's
//! kube-rbac-proxy. The probes' endpoints stay open.
//!
//! Needs root (namespaces, bpffs, XDP) and fails, not skips, without it.
//! Run: `cargo test -p speaker-tests --test secure_metrics_lab`.

use std::{fs, path::Path, time::Duration};

use kube_standin::{Options, Reviews};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use speaker_tests::lab::{
    http::{get_in, https_get_in, metric_value, METRICS_PORT},
    kube::{iris_example, KubeLab, NODE},
    require_root, wait_for, Side,
};

const SCRAPER_TOKEN: &str = "token-of-prometheus";
const SCRAPER: &str = "system:serviceaccount:monitoring:prometheus";
const STRANGER_TOKEN: &str = "token-of-someone-else";
const STRANGER: &str = "system:serviceaccount:default:someone";

/// A CA (returned as PEM, for the client) and a certificate for 127.0.0.1
/// it signs, written as `tls.crt` and `tls.key` in `dir`.
fn certificates(dir: &Path) -> String {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    ca.pem()
}

/// (TokenReviews, SubjectAccessReviews) the stand-in has answered so far.
fn reviews(k: &KubeLab) -> (usize, usize) {
    let standin = k.kube().standin();
    (
        standin.count_requests("create", "tokenreviews"),
        standin.count_requests("create", "subjectaccessreviews"),
    )
}

#[test]
fn metrics_need_an_allowed_token_over_https_and_probes_stay_open() {
    require_root();
    let table = Reviews::default()
        .user(SCRAPER_TOKEN, SCRAPER)
        .user(STRANGER_TOKEN, STRANGER)
        .allow(SCRAPER, "/metrics", "get");
    let mut k = KubeLab::with_options(
        &[iris_example()],
        Options {
            reviews: table,
            ..Options::default()
        },
    );
    let ca = certificates(&k.temp_dir);
    let (cert, key) = (k.temp_dir.join("tls.crt"), k.temp_dir.join("tls.key"));
    k.start_speaker(
        NODE,
        &[
            "--metrics-tls-cert",
            &cert.to_string_lossy(),
            "--metrics-tls-key",
            &key.to_string_lossy(),
            "--metrics-authz",
            "kubernetes",
        ],
    );
    let ns = k.lab.ns(Side::Node).to_owned();
    let get = |path: &str, token: Option<&str>| https_get_in(&ns, METRICS_PORT, path, &ca, token);

    // /healthz needs no token (the kubelet's probes carry none).
    let health = wait_for(Duration::from_secs(20), || get("/healthz", None).ok());
    assert_eq!(
        health.as_ref().map(|(code, _)| *code),
        Some(200),
        "/healthz over HTTPS: {health:?}\n{}",
        k.diagnostics()
    );
    let ready = get("/readyz", None).expect("/readyz answers");
    assert!(ready.0 == 200 || ready.0 == 503, "/readyz: {ready:?}");
    // Plain HTTP gets no answer from a TLS server.
    assert!(
        !matches!(get_in(&ns, METRICS_PORT, "/healthz"), Ok((200, _))),
        "plain HTTP was served"
    );
    assert_eq!(reviews(&k), (0, 0), "probes asked the API server");

    // No token: 401 without asking anyone.
    let (code, body) = get("/metrics", None).expect("/metrics answers");
    assert_eq!(code, 401, "{body}");
    assert_eq!(reviews(&k), (0, 0));

    // A token the API server does not know: 401 after one TokenReview.
    let (code, body) = get("/metrics", Some("forged")).expect("/metrics answers");
    assert_eq!(code, 401, "{body}");
    assert_eq!(reviews(&k), (1, 0));

    // A known user who may not get /metrics: 403, one review of each.
    let (code, body) = get("/metrics", Some(STRANGER_TOKEN)).expect("/metrics answers");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains(STRANGER), "{body}");
    assert_eq!(reviews(&k), (2, 1));

    // The allowed user: 200 and the metrics, one review of each.
    let (code, body) = get("/metrics", Some(SCRAPER_TOKEN)).expect("/metrics answers");
    assert_eq!(code, 200, "{body}");
    assert!(
        metric_value(&body, "metallb_k8s_client_config_loaded_bool").is_some(),
        "{body}"
    );
    assert_eq!(reviews(&k), (3, 2));

    // Again at once: the allowed decision is cached, nothing is asked.
    let (code, _) = get("/metrics", Some(SCRAPER_TOKEN)).expect("/metrics answers");
    assert_eq!(code, 200);
    assert_eq!(reviews(&k), (3, 2), "the allowed decision was not cached");

    // Refusals are not cached: a user granted a moment later gets in.
    let (code, _) = get("/metrics", Some(STRANGER_TOKEN)).expect("/metrics answers");
    assert_eq!(code, 403);
    assert_eq!(reviews(&k), (4, 3));

    let errors = k.speaker().log_lines_with("\"level\":\"error\"");
    assert!(errors.is_empty(), "errors logged: {errors:#?}");
}

#[test]
fn an_unreadable_certificate_stops_the_start_with_one_line() {
    require_root();
    let mut k = KubeLab::new(&[iris_example()]);
    let missing = k.temp_dir.join("missing.crt");
    let key = k.temp_dir.join("tls.key");
    k.start_speaker(
        NODE,
        &[
            "--metrics-tls-cert",
            &missing.to_string_lossy(),
            "--metrics-tls-key",
            &key.to_string_lossy(),
        ],
    );
    let status = wait_for(Duration::from_secs(20), || k.speaker().exit_status());
    assert!(
        status.is_some_and(|s| !s.success()),
        "the speaker did not stop: {status:?}\n{}",
        k.speaker().log()
    );
    let lines = k
        .speaker()
        .log_lines_with(&format!("--metrics-tls-cert {}", missing.display()));
    assert_eq!(lines.len(), 1, "{}", k.speaker().log());
}
