//! Who may read `/metrics` (`--metrics-authz`): anyone, or, as
//! kube-rbac-proxy does in MetalLB's chart, a client whose bearer token the
//! API server authenticates (TokenReview) as a user it allows `get` on the
//! non-resource URL `/metrics` (SubjectAccessReview). `/healthz` and
//! `/readyz` are never checked: the kubelet's probes carry no token.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{api::PostParams, Client};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use crate::kube::calls;

/// How long a token that was allowed stays allowed without asking again
/// (kube-rbac-proxy caches its decisions for about as long). Refusals are
/// not cached: a user granted access a moment later need not wait.
pub const ALLOWED_FOR: Duration = Duration::from_secs(10);

/// The URL and verb a scrape is authorised for.
pub const METRICS_PATH: &str = "/metrics";
const METRICS_VERB: &str = "get";

#[derive(Clone)]
pub enum MetricsAccess {
    Anyone,
    Kubernetes(Arc<KubernetesReviews>),
}

/// The answer to one scrape.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// 401: no bearer token, or one the API server does not authenticate.
    Unauthenticated(String),
    /// 403: an authenticated user the API server does not allow.
    Forbidden(String),
    /// 500: the API server could not be asked.
    Failed(String),
}

impl MetricsAccess {
    pub fn kubernetes(client: Client) -> Self {
        Self::Kubernetes(Arc::new(KubernetesReviews {
            client,
            allowed: Mutex::new(HashMap::new()),
        }))
    }

    /// `authorization`: the request's `Authorization` header, if any.
    pub async fn decide(&self, authorization: Option<&str>) -> Decision {
        match self {
            Self::Anyone => Decision::Allowed,
            Self::Kubernetes(reviews) => match bearer_token(authorization) {
                Some(token) => reviews.decide(token).await,
                None => Decision::Unauthenticated("no bearer token".to_owned()),
            },
        }
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme is
/// case-insensitive, RFC 9110 section 11.1).
fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let (scheme, token) = authorization?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub struct KubernetesReviews {
    client: Client,
    /// SHA-256 of an allowed token -> until when; tokens themselves are not
    /// kept.
    allowed: Mutex<HashMap<[u8; 32], Instant>>,
}

impl KubernetesReviews {
    async fn decide(&self, token: &str) -> Decision {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        {
            let mut allowed = self.allowed.lock().unwrap_or_else(|e| e.into_inner());
            allowed.retain(|_, until| *until > now);
            if allowed.contains_key(&digest) {
                return Decision::Allowed;
            }
        }
        let decision = self.review(token).await;
        if decision == Decision::Allowed {
            let mut allowed = self.allowed.lock().unwrap_or_else(|e| e.into_inner());
            allowed.insert(digest, Instant::now() + ALLOWED_FOR);
        }
        decision
    }

    async fn review(&self, token: &str) -> Decision {
        let tokens = calls::TOKEN_REVIEWS.cluster_api::<TokenReview>(self.client.clone());
        let asked = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let reviewed = match tokens.create(&PostParams::default(), &asked).await {
            Ok(reviewed) => reviewed,
            Err(e) => {
                warn!("metrics: the TokenReview failed: {e}");
                return Decision::Failed(format!("the TokenReview failed: {e}"));
            }
        };
        let status = reviewed.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => user,
            _ => {
                let why = status
                    .error
                    .unwrap_or_else(|| "not authenticated".to_owned());
                debug!("metrics: a token was refused: {why}");
                return Decision::Unauthenticated(why);
            }
        };
        let username = user.username.clone().unwrap_or_default();
        let reviews =
            calls::SUBJECT_ACCESS_REVIEWS.cluster_api::<SubjectAccessReview>(self.client.clone());
        let asked = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(METRICS_PATH.to_owned()),
                    verb: Some(METRICS_VERB.to_owned()),
                }),
                resource_attributes: None,
            },
            ..SubjectAccessReview::default()
        };
        match reviews.create(&PostParams::default(), &asked).await {
            Ok(SubjectAccessReview {
                status: Some(status),
                ..
            }) if status.allowed => Decision::Allowed,
            Ok(_) => {
                debug!(user = %username, "metrics: user not allowed to get {METRICS_PATH}");
                Decision::Forbidden(format!(
                    "user {username:?} may not {METRICS_VERB} {METRICS_PATH}"
                ))
            }
            Err(e) => {
                warn!("metrics: the SubjectAccessReview failed: {e}");
                Decision::Failed(format!("the SubjectAccessReview failed: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        assert_eq!(bearer_token(Some("Bearer abc.def")), Some("abc.def"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic dXNlcjpwdw==")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(Some("Bearer")), None);
        assert_eq!(bearer_token(None), None);
    }

    #[tokio::test]
    async fn anyone_is_allowed_without_a_token_and_kubernetes_needs_one() {
        assert_eq!(MetricsAccess::Anyone.decide(None).await, Decision::Allowed);
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let access = MetricsAccess::kubernetes(Client::try_from(config).unwrap());
        assert!(matches!(
            access.decide(None).await,
            Decision::Unauthenticated(_)
        ));
        // Nothing listens on port 9: asking fails, and that is not a refusal.
        assert!(matches!(
            access.decide(Some("Bearer t")).await,
            Decision::Failed(_)
        ));
    }
}
