//! `TokenReview` and `SubjectAccessReview`, answered from a table the test
//! gives ([`Reviews`]): which bearer tokens belong to which users, and which
//! users may use which non-resource URL with which verb. Nothing is stored;
//! like the apiserver, a review is created and answered in one call.

use serde_json::{json, Value};

use crate::api_error::ApiError;

/// One user a token authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewedUser {
    pub token: String,
    pub username: String,
    pub groups: Vec<String>,
}

/// The authentication and authorization table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reviews {
    pub users: Vec<ReviewedUser>,
    /// (user, non-resource path, verb) that are allowed; anything else is
    /// not.
    pub allowed: Vec<(String, String, String)>,
}

impl Reviews {
    /// `token` authenticates as `username` (in group
    /// `system:authenticated`, as every authenticated user).
    pub fn user(mut self, token: &str, username: &str) -> Self {
        self.users.push(ReviewedUser {
            token: token.to_owned(),
            username: username.to_owned(),
            groups: vec!["system:authenticated".to_owned()],
        });
        self
    }

    /// `username` may `verb` the non-resource URL `path`.
    pub fn allow(mut self, username: &str, path: &str, verb: &str) -> Self {
        self.allowed
            .push((username.to_owned(), path.to_owned(), verb.to_owned()));
        self
    }
}

fn review_of(body: &Value, kind: &str, group: &str) -> Result<Value, ApiError> {
    let api_version = format!("{group}/v1");
    if body["kind"] != kind || body["apiVersion"] != api_version.as_str() {
        return Err(ApiError::bad_request(format!(
            "expected a {api_version} {kind}, got {} {}",
            body["apiVersion"], body["kind"]
        )));
    }
    Ok(json!({
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"creationTimestamp": null},
        "spec": body["spec"].clone(),
    }))
}

/// The created TokenReview, its status filled in.
pub fn token_review(reviews: &Reviews, body: &Value) -> Result<Value, ApiError> {
    let mut review = review_of(body, "TokenReview", "authentication.k8s.io")?;
    let Some(token) = body["spec"]["token"].as_str().filter(|t| !t.is_empty()) else {
        return Err(ApiError::new(
            422,
            "Invalid",
            "TokenReview.authentication.k8s.io is invalid: spec.token: Required value",
        ));
    };
    review["status"] = match reviews.users.iter().find(|user| user.token == token) {
        Some(user) => json!({
            "authenticated": true,
            "user": {"username": user.username, "groups": user.groups},
        }),
        None => json!({"user": {}, "error": "invalid bearer token"}),
    };
    Ok(review)
}

/// The created SubjectAccessReview, its status filled in. Only
/// non-resource attributes are judged; a resource request is denied.
pub fn subject_access_review(reviews: &Reviews, body: &Value) -> Result<Value, ApiError> {
    let mut review = review_of(body, "SubjectAccessReview", "authorization.k8s.io")?;
    let spec = &body["spec"];
    let user = spec["user"].as_str().unwrap_or("");
    let attributes = &spec["nonResourceAttributes"];
    let (path, verb) = (
        attributes["path"].as_str().unwrap_or(""),
        attributes["verb"].as_str().unwrap_or(""),
    );
    let allowed = !user.is_empty()
        && !attributes.is_null()
        && reviews
            .allowed
            .iter()
            .any(|(u, p, v)| u == user && p == path && v == verb);
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "allowed by the stand-in's table"})
    } else {
        json!({"allowed": false})
    };
    Ok(review)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Reviews {
        Reviews::default()
            .user("good", "prometheus")
            .user("other", "someone")
            .allow("prometheus", "/metrics", "get")
    }

    #[test]
    fn tokens_authenticate_as_their_users_and_others_not() {
        let asked = |token: &str| {
            json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                   "spec": {"token": token}})
        };
        let answer = token_review(&table(), &asked("good")).unwrap();
        assert_eq!(answer["status"]["authenticated"], true);
        assert_eq!(answer["status"]["user"]["username"], "prometheus");
        let answer = token_review(&table(), &asked("forged")).unwrap();
        assert_eq!(answer["status"]["authenticated"], Value::Null);
        assert_eq!(token_review(&table(), &asked("")).unwrap_err().code, 422);
        let wrong = json!({"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1"});
        assert_eq!(token_review(&table(), &wrong).unwrap_err().code, 400);
    }

    #[test]
    fn only_listed_user_path_and_verb_are_allowed() {
        let asked = |user: &str, path: &str, verb: &str| {
            json!({"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                   "spec": {"user": user, "nonResourceAttributes": {"path": path, "verb": verb}}})
        };
        let allowed = |user, path, verb| {
            subject_access_review(&table(), &asked(user, path, verb)).unwrap()["status"]["allowed"]
                == true
        };
        assert!(allowed("prometheus", "/metrics", "get"));
        assert!(!allowed("someone", "/metrics", "get"));
        assert!(!allowed("prometheus", "/metrics", "post"));
        assert!(!allowed("prometheus", "/healthz", "get"));
        let resource = json!({"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                              "spec": {"user": "prometheus", "resourceAttributes": {"verb": "get"}}});
        assert_eq!(
            subject_access_review(&table(), &resource).unwrap()["status"]["allowed"],
            false
        );
    }
}
