//! The HTTP side: authentication, routing, faults, the request log, and the
//! verbs on resources.

use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::{
    api_error::ApiError,
    controls::{Controls, Fault, RequestRecord},
    discovery, reviews,
    reviews::Reviews,
    route::{self, ResourcePath, Route},
    selector::Selection,
    selector::{FieldSelector, LabelSelector},
    store::{Page, Part, PatchBody, Store},
    watch,
};

pub type Body = BoxBody<Bytes, Infallible>;

/// Bodies larger than this are refused (the apiserver's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// What every request handler shares.
pub struct Shared {
    pub store: Store,
    pub controls: Controls,
    /// Required as `Authorization: Bearer TOKEN` when set.
    pub token: Option<String>,
    pub bookmark_interval: Duration,
    pub reviews: Reviews,
    /// `host:port` for `/api`'s serverAddressByClientCIDRs (set once bound).
    pub server_address: std::sync::Arc<std::sync::OnceLock<String>>,
}

pub fn json_response(code: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .expect("a valid response")
}

fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.code, &error.status())
}

fn query_of(query: &str) -> HashMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query.get(name).is_some_and(|v| v == "true" || v == "1")
}

async fn body_of(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    let body = http_body_util::Limited::new(request.into_body(), MAX_BODY);
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(ApiError::new(413, "RequestEntityTooLarge", e.to_string())),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
}

/// Serves one request.
pub async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if let Some(token) = &shared.token {
        let expected = format!("Bearer {token}");
        let given = request.headers().get(header::AUTHORIZATION);
        if given.and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            return Ok(error_response(&ApiError::new(
                401,
                "Unauthorized",
                "Unauthorized",
            )));
        }
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let mut record = RequestRecord {
        seq: 0,
        at: Duration::ZERO,
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        verb: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
        code: 0,
    };
    let response = match route::route(&path) {
        Route::Control(rest) => return Ok(control(&shared, &method, &rest, &query, request).await),
        Route::Resource(target) => {
            let params = query_of(&query);
            let verb = route::verb(&method, target.name.is_some(), flag(&params, "watch"));
            record.verb = verb.to_owned();
            record.resource = target.resource.plural.to_owned();
            record.subresource = target.subresource.clone().unwrap_or_default();
            record.namespace = target.namespace.clone().unwrap_or_default();
            record.name = target.name.clone().unwrap_or_default();
            let fault = shared
                .controls
                .take_fault(verb, &record.resource, &record.subresource);
            match fault {
                Some(code) => error_response(&ApiError::for_code(
                    code,
                    format!("injected fault: {verb} {}", record.resource),
                )),
                None => match on_resource(&shared, verb, target, params, request).await {
                    Ok(response) => response,
                    Err(error) => error_response(&error),
                },
            }
        }
        Route::Review(plural) => {
            record.verb = route::verb(&method, false, false).to_owned();
            record.resource = plural.to_owned();
            match shared.controls.take_fault(&record.verb, plural, "") {
                Some(code) => error_response(&ApiError::for_code(
                    code,
                    format!("injected fault: {} {plural}", record.verb),
                )),
                None => match review(&shared, &method, plural, request).await {
                    Ok(response) => response,
                    Err(error) => error_response(&error),
                },
            }
        }
        route => discovery_response(&shared, &method, route),
    };
    record.code = response.status().as_u16();
    shared.controls.record(record);
    Ok(response)
}

/// A review: created and answered at once (201, as the apiserver).
async fn review(
    shared: &Shared,
    method: &Method,
    plural: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if method != Method::POST {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{plural} can only be created"),
        ));
    }
    let body = parse_json(&body_of(request).await?)?;
    let answered = match plural {
        "tokenreviews" => reviews::token_review(&shared.reviews, &body)?,
        _ => reviews::subject_access_review(&shared.reviews, &body)?,
    };
    Ok(json_response(201, &answered))
}

fn discovery_response(shared: &Shared, method: &Method, route: Route) -> Response<Body> {
    if method != Method::GET {
        return error_response(&ApiError::new(
            405,
            "MethodNotAllowed",
            "only GET is served here",
        ));
    }
    let found = match route {
        Route::Version => Some(discovery::version()),
        Route::Health => {
            return Response::new(Full::new(Bytes::from_static(b"ok")).boxed());
        }
        Route::CoreVersions => Some(discovery::core_versions(
            shared
                .server_address
                .get()
                .map(String::as_str)
                .unwrap_or(""),
        )),
        Route::Groups => Some(discovery::groups()),
        Route::Group(group) => discovery::group(&group),
        Route::GroupResources(group, version) => discovery::resources(&group, &version),
        Route::UnknownResource(plural) => {
            return error_response(&ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({plural})"),
            ))
        }
        Route::Resource(_) | Route::Review(_) | Route::Control(_) | Route::NotFound => None,
    };
    match found {
        Some(body) => json_response(200, &body),
        None => error_response(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
    }
}

fn part_of(target: &ResourcePath) -> Result<Part, ApiError> {
    match target.subresource.as_deref() {
        None => Ok(Part::Object),
        Some("status") if target.resource.status_subresource => Ok(Part::Status),
        Some(other) => Err(ApiError::new(
            404,
            "NotFound",
            format!(
                "{} has no subresource {other:?} here",
                target.resource.plural
            ),
        )),
    }
}

fn selection_of(
    target: &ResourcePath,
    params: &HashMap<String, String>,
) -> Result<Selection, ApiError> {
    let text = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
    Ok(Selection {
        namespace: target.namespace.clone(),
        labels: LabelSelector::parse(text("labelSelector")).map_err(ApiError::bad_request)?,
        fields: FieldSelector::parse(text("fieldSelector")).map_err(ApiError::bad_request)?,
    })
}

fn patch_body(content_type: &str, body: &[u8]) -> Result<PatchBody, ApiError> {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    match media_type {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            Ok(PatchBody::Merge(parse_json(body)?))
        }
        "application/json-patch+json" => serde_json::from_slice(body)
            .map(PatchBody::Json)
            .map_err(|e| ApiError::bad_request(format!("not a JSON patch: {e}"))),
        "application/apply-patch+yaml" => serde_yaml_ng::from_slice(body)
            .map(PatchBody::Apply)
            .map_err(|e| ApiError::bad_request(format!("not an apply patch: {e}"))),
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format ({other:?})"),
        )),
    }
}

/// Where the apiserver serves a list from, by the request's
/// `resourceVersion` and `resourceVersionMatch` (api-concepts, "semantics
/// for get and list"): `resourceVersion=0` or `NotOlderThan` is served from
/// the watch cache, which does not paginate: `limit` is ignored and the
/// whole list comes in one response (kubernetes/kubernetes#70735). Anything
/// else is a consistent read from etcd, paginated by `limit`.
#[derive(Debug, PartialEq, Eq)]
enum ListSource {
    WatchCache,
    Storage,
}

fn list_source(params: &HashMap<String, String>, continuing: bool) -> Result<ListSource, ApiError> {
    let version = params
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let matching = params
        .get("resourceVersionMatch")
        .map(String::as_str)
        .unwrap_or("");
    let invalid = |why: &str| Err(ApiError::new(422, "Invalid", why.to_owned()));
    match matching {
        "" if continuing => Ok(ListSource::Storage),
        "" if version == "0" => Ok(ListSource::WatchCache),
        "" => Ok(ListSource::Storage),
        _ if continuing => invalid("resourceVersionMatch is forbidden when continue is provided"),
        _ if version.is_empty() => {
            invalid("resourceVersionMatch is forbidden unless resourceVersion is provided")
        }
        "NotOlderThan" => Ok(ListSource::WatchCache),
        "Exact" => Err(ApiError::new(
            400,
            "BadRequest",
            "resourceVersionMatch=Exact is not emulated",
        )),
        other => invalid(&format!("unsupported resourceVersionMatch {other:?}")),
    }
}

async fn on_resource(
    shared: &Shared,
    verb: &str,
    target: ResourcePath,
    params: HashMap<String, String>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let store = &shared.store;
    let resource = target.resource;
    let namespace = target.namespace.as_deref();
    let name = target.name.as_deref().unwrap_or("");
    let part = part_of(&target)?;
    match verb {
        "get" => Ok(json_response(200, &store.get(resource, namespace, name)?)),
        "list" => {
            let selection = selection_of(&target, &params)?;
            let limit = match params.get("limit") {
                Some(limit) => Some(
                    limit
                        .parse()
                        .map_err(|_| ApiError::bad_request(format!("invalid limit {limit:?}")))?,
                ),
                None => None,
            };
            let continue_token = params.get("continue").filter(|c| !c.is_empty()).cloned();
            let page = Page {
                limit: match list_source(&params, continue_token.is_some())? {
                    ListSource::WatchCache => None,
                    ListSource::Storage => limit,
                },
                continue_token,
            };
            let (items, revision, token, remaining) = store.list(resource, &selection, &page)?;
            let mut metadata = json!({"resourceVersion": revision.to_string()});
            if let Some(token) = token {
                metadata["continue"] = token.into();
                metadata["remainingItemCount"] = remaining.into();
            }
            Ok(json_response(
                200,
                &json!({
                    "apiVersion": resource.api_version(),
                    "kind": format!("{}List", resource.kind),
                    "metadata": metadata,
                    "items": items,
                }),
            ))
        }
        "watch" => {
            let selection = selection_of(&target, &params)?;
            watch::start(shared, resource, selection, &params)
        }
        "create" => {
            if target.subresource.is_some() {
                return Err(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    "create on a subresource",
                ));
            }
            let object = parse_json(&body_of(request).await?)?;
            Ok(json_response(
                201,
                &store.create(resource, namespace, object, false)?,
            ))
        }
        "update" => {
            let object = parse_json(&body_of(request).await?)?;
            Ok(json_response(
                200,
                &store.replace(resource, namespace, name, part, object)?,
            ))
        }
        "patch" => {
            let content_type = request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let patch = patch_body(&content_type, &body_of(request).await?)?;
            Ok(json_response(
                200,
                &store.patch(resource, namespace, name, part, patch)?,
            ))
        }
        "delete" => Ok(json_response(
            200,
            &store.delete(resource, namespace, name)?,
        )),
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{verb} is not emulated"),
        )),
    }
}

/// `/_standin/...`: the test controls over HTTP.
async fn control(
    shared: &Shared,
    method: &Method,
    rest: &[String],
    query: &str,
    request: Request<Incoming>,
) -> Response<Body> {
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let result = match (method.as_str(), rest.as_slice()) {
        ("POST", ["compact"]) => Ok(json!({"compactedAt": shared.store.compact()})),
        ("GET", ["faults"]) => Ok(json!(shared.controls.faults())),
        ("POST", ["faults"]) => match body_of(request).await.and_then(|b| {
            serde_json::from_slice::<Fault>(&b)
                .map_err(|e| ApiError::bad_request(format!("not a fault: {e}")))
        }) {
            Ok(fault) => {
                shared.controls.inject(fault.clone());
                Ok(json!(fault))
            }
            Err(e) => Err(e),
        },
        ("GET", ["requests"]) => {
            let params = query_of(query);
            let wanted = |field: &str, value: &str| params.get(field).is_none_or(|w| w == value);
            let requests: Vec<RequestRecord> = shared
                .controls
                .requests()
                .into_iter()
                .filter(|r| wanted("verb", &r.verb) && wanted("resource", &r.resource))
                .collect();
            Ok(json!(requests))
        }
        ("DELETE", ["requests"]) => {
            shared.controls.clear_requests();
            Ok(json!({}))
        }
        ("GET", ["objects"]) => Ok(json!(shared.store.all())),
        ("POST", ["objects"]) => match body_of(request).await {
            Ok(body) => crate::load::create_all(&shared.store, &String::from_utf8_lossy(&body))
                .map(Value::from)
                .map_err(|e| ApiError::bad_request(e.to_string())),
            Err(e) => Err(e),
        },
        _ => Err(ApiError::new(404, "NotFound", "no such control")),
    };
    match result {
        Ok(body) => json_response(200, &body),
        Err(error) => error_response(&error),
    }
}

/// A 200 response whose body `frames` streams.
pub fn streaming_response(frames: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = futures::stream::unfold(frames, |mut frames| async move {
        frames
            .recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(hyper::body::Frame::data(bytes)), frames))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(http_body_util::StreamBody::new(stream).boxed())
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn lists_at_any_version_come_from_the_watch_cache_unpaginated() {
        let cache = [
            params(&[("resourceVersion", "0"), ("limit", "500")]),
            params(&[
                ("resourceVersion", "0"),
                ("resourceVersionMatch", "NotOlderThan"),
                ("limit", "500"),
            ]),
            params(&[
                ("resourceVersion", "17"),
                ("resourceVersionMatch", "NotOlderThan"),
            ]),
        ];
        for query in &cache {
            assert_eq!(
                list_source(query, false).unwrap(),
                ListSource::WatchCache,
                "{query:?}"
            );
        }
        let storage = [
            params(&[("limit", "500")]),
            params(&[("resourceVersion", "17"), ("limit", "500")]),
        ];
        for query in &storage {
            assert_eq!(
                list_source(query, false).unwrap(),
                ListSource::Storage,
                "{query:?}"
            );
        }
        assert_eq!(
            list_source(&params(&[("resourceVersion", "0")]), true).unwrap(),
            ListSource::Storage,
            "a continue token is always served from etcd"
        );
        let refused = list_source(&params(&[("resourceVersionMatch", "NotOlderThan")]), false);
        assert_eq!(refused.unwrap_err().code, 422);
    }
}
