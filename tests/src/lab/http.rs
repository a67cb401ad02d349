//! Scraping the speaker's HTTP endpoints (`/metrics`, health) from inside a
//! host: the request runs on a thread that has entered the host's network
//! namespace, so it reaches the loopback of that namespace.

use std::{io, sync::Arc, time::Duration};

use ureq::tls::{Certificate, RootCerts, TlsConfig};

use super::netns;

/// MetalLB's metrics port, which the speaker keeps.
pub const METRICS_PORT: u16 = 7472;

/// `GET http://127.0.0.1:port/path` inside namespace `ns`; the status code
/// and the body (any status: an error status is an answer too).
pub fn get_in(ns: &str, port: u16, path: &str) -> io::Result<(u16, String)> {
    let url = format!("http://127.0.0.1:{port}{path}");
    request_in(ns, url, None, None)
}

/// `GET https://127.0.0.1:port/path` inside namespace `ns`, trusting only
/// the CA `ca_pem`, with `Authorization: Bearer <token>` when given.
pub fn https_get_in(
    ns: &str,
    port: u16,
    path: &str,
    ca_pem: &str,
    token: Option<&str>,
) -> io::Result<(u16, String)> {
    let url = format!("https://127.0.0.1:{port}{path}");
    let ca = Certificate::from_pem(ca_pem.as_bytes()).map_err(io::Error::other)?;
    request_in(ns, url, Some(ca), token.map(str::to_owned))
}

fn request_in(
    ns: &str,
    url: String,
    ca: Option<Certificate<'static>>,
    token: Option<String>,
) -> io::Result<(u16, String)> {
    netns::in_namespace(ns, move || {
        let mut config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(2)))
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false);
        if let Some(ca) = ca {
            config = config.tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::Specific(Arc::new(vec![ca])))
                    .build(),
            );
        }
        let agent = ureq::Agent::new_with_config(config.build());
        let mut request = agent.get(&url);
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = request.call().map_err(io::Error::other)?;
        let code = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(io::Error::other)?;
        Ok((code, body))
    })
}

/// The speaker's `/metrics` inside namespace `ns`; an error unless it
/// answered 200.
pub fn metrics_in(ns: &str) -> io::Result<String> {
    let (code, body) = get_in(ns, METRICS_PORT, "/metrics")?;
    if code != 200 {
        return Err(io::Error::other(format!("/metrics answered {code}")));
    }
    Ok(body)
}

/// The value of Prometheus metric `name` in `text` (the exposition format):
/// the sum over every line of that metric (all label sets); `None` if it
/// has no line.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_metric_lines() {
        let text = "# HELP x y\nspeaker_a{vip=\"1\"} 2\nspeaker_a{vip=\"2\"} 3\nspeaker_ab 7\n";
        assert_eq!(metric_value(text, "speaker_a"), Some(5.0));
        assert_eq!(metric_value(text, "speaker_ab"), Some(7.0));
        assert_eq!(metric_value(text, "speaker_c"), None);
    }
}
