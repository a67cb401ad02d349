//! TokenReview and SubjectAccessReview through kube-rs: answered from the
//! table in `Options::reviews`, logged like any other create.

mod common;

use common::client;
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{api::PostParams, Api};
use kube_standin::{Options, Reviews, Server};

fn token_review(token: &str) -> TokenReview {
    TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: None,
        },
        ..TokenReview::default()
    }
}

fn access_review(user: &str, path: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some(path.to_owned()),
                verb: Some("get".to_owned()),
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

#[tokio::test]
async fn reviews_answer_from_the_table() {
    let server = Server::start(Options {
        reviews: Reviews::default()
            .user("t1", "alice")
            .allow("alice", "/metrics", "get"),
        ..Options::default()
    })
    .unwrap();
    let client = client(&server);
    let tokens: Api<TokenReview> = Api::all(client.clone());
    let post = PostParams::default();
    let known = tokens.create(&post, &token_review("t1")).await.unwrap();
    let status = known.status.unwrap();
    assert_eq!(status.authenticated, Some(true));
    assert_eq!(status.user.unwrap().username.as_deref(), Some("alice"));
    let unknown = tokens.create(&post, &token_review("t2")).await.unwrap();
    assert_ne!(unknown.status.unwrap().authenticated, Some(true));

    let access: Api<SubjectAccessReview> = Api::all(client);
    let allowed = |review: SubjectAccessReview| review.status.unwrap().allowed;
    assert!(allowed(
        access
            .create(&post, &access_review("alice", "/metrics"))
            .await
            .unwrap()
    ));
    assert!(!allowed(
        access
            .create(&post, &access_review("alice", "/debug"))
            .await
            .unwrap()
    ));
    assert!(!allowed(
        access
            .create(&post, &access_review("bob", "/metrics"))
            .await
            .unwrap()
    ));

    assert_eq!(server.count_requests("create", "tokenreviews"), 2);
    assert_eq!(server.count_requests("create", "subjectaccessreviews"), 3);
}
