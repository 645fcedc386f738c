//! Paths, methods and handlers of the HTTP API, and how failures become
//! responses.
//!
//! | path | method | handler |
//! |---|---|---|
//! | `/v1/get?key=K` | GET | GETV and TTL: 200 `{"key","value","version"}` (and `"ttl_ms"` if the key expires), 404 if absent |
//! | `/v1/put` | POST | one ATOMIC of PUTVs (each followed by an EXPIRE if the item has `ttl_ms`): 200 `{"result":"Success","versions":[…]}`, 409 on a version conflict |
//! | `/v1/stats` | GET | STATS as JSON, totals and per shard |
//! | `/health` | GET | every shard's state: 200 while all serve, 503 when any is recovering, shutting down or has a poisoned log (and during recovery, [`super::recovering`]) |
//! | `/metrics` | GET | Prometheus text format |
//! | `/v1/backup` | POST | `{"dir": DIR}`: an online, consistent backup into DIR on the server's host ([`crate::backup`]) |
//!
//! Every failure is a JSON body `{"error": message, "code": CODE}` (on
//! `/v1/put` also `"result": "Failure"`), with a 4xx status for the client's
//! mistakes — unknown path 404, wrong method 405, malformed or mistyped input
//! 400, a body or message over `--max-frame-bytes` 413 — and 5xx only for the
//! server's own state (507 over the memory limit, 503 shutting down, 500 a
//! storage failure). A refused request writes nothing: the body is read and
//! validated whole before anything is sent to a shard, and a put is one ATOMIC.

use super::dispatch::{DispatchError, Dispatcher};
use super::json;
use super::metrics;
use crate::ids::ShardId;
use crate::proto::message::{Element, Request};
use crate::proto::request::MAX_TTL_MS;
use crate::proto::ErrorCode;
use crate::server::state::ShardHealth;
use crate::table::expiry::TTL_MISSING;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use serde_json::{json, Value as Json};
use std::convert::Infallible;
use std::rc::Rc;

pub type Response = hyper::Response<Full<Bytes>>;

const JSON_TYPE: &str = "application/json";
const PROMETHEUS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A request that cannot be served, as its response will say.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, "BADREQ", message)
    }

    /// An error element from the shard, with the status its code calls for.
    fn from_server(code: &str, message: String) -> HttpError {
        let (status, code) = match ErrorCode::parse(code) {
            Some(ErrorCode::Conflict) => (StatusCode::CONFLICT, "CONFLICT"),
            Some(ErrorCode::BadReq) => (StatusCode::BAD_REQUEST, "BADREQ"),
            Some(ErrorCode::BadFrame) => (StatusCode::BAD_REQUEST, "BADFRAME"),
            Some(ErrorCode::TooBig) => (StatusCode::PAYLOAD_TOO_LARGE, "TOOBIG"),
            Some(ErrorCode::Oom) => (StatusCode::INSUFFICIENT_STORAGE, "OOM"),
            Some(ErrorCode::Shutdown) => (StatusCode::SERVICE_UNAVAILABLE, "SHUTDOWN"),
            // The HTTP API sends no INCRBY, INCRBYFLOAT or APPEND.
            Some(ErrorCode::WrongType) => (StatusCode::CONFLICT, "WRONGTYPE"),
            Some(ErrorCode::NotANumber) => (StatusCode::BAD_REQUEST, "NOTNUM"),
            // A cluster node: the key's slot is another node's.
            Some(ErrorCode::Moved) => (StatusCode::MISDIRECTED_REQUEST, "MOVED"),
            Some(ErrorCode::IoErr) | None => (StatusCode::INTERNAL_SERVER_ERROR, "IOERR"),
        };
        HttpError::new(status, code, message)
    }

    fn into_response(self, put: bool) -> Response {
        let mut body = json!({ "error": self.message, "code": self.code });
        if put {
            body["result"] = json!("Failure");
        }
        json_response(self.status, &body)
    }
}

impl From<DispatchError> for HttpError {
    fn from(e: DispatchError) -> HttpError {
        match e {
            DispatchError::TooBig { .. } => {
                HttpError::new(StatusCode::PAYLOAD_TOO_LARGE, "TOOBIG", e.to_string())
            }
            DispatchError::Internal(_) => {
                HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string())
            }
        }
    }
}

/// Routes one request; every outcome, failures included, is a response.
pub async fn handle(
    request: hyper::Request<Incoming>,
    dispatcher: Rc<Dispatcher>,
) -> Result<Response, Infallible> {
    let path = request.uri().path().to_owned();
    #[cfg(feature = "failpoints")]
    if path == "/debug/failpoint" {
        return Ok(failpoint_handler(request).await);
    }
    let (allowed, put) = match path.as_str() {
        "/v1/put" => (Method::POST, true),
        "/v1/backup" => (Method::POST, false),
        "/v1/get" | "/v1/stats" | "/health" | "/metrics" => (Method::GET, false),
        _ => {
            let message = format!("no such path {path}; see docs/http.md");
            return Ok(
                HttpError::new(StatusCode::NOT_FOUND, "NOTFOUND", message).into_response(false)
            );
        }
    };
    if request.method() != allowed {
        return Ok(wrong_method(request.method(), &path, allowed));
    }
    let result = match path.as_str() {
        "/v1/put" => put_handler(request, &dispatcher).await,
        "/v1/backup" => backup_handler(request, &dispatcher).await,
        "/v1/get" => get_handler(&request, &dispatcher).await,
        "/v1/stats" => stats_handler(&dispatcher).await,
        "/health" => Ok(health_handler(&dispatcher)),
        _ => metrics_handler(&dispatcher).await,
    };
    Ok(result.unwrap_or_else(|e| e.into_response(put)))
}

fn wrong_method(method: &Method, path: &str, allowed: Method) -> Response {
    let message = format!("{method} is not allowed on {path}; use {allowed}");
    let mut response = HttpError::new(StatusCode::METHOD_NOT_ALLOWED, "BADMETHOD", message)
        .into_response(path == "/v1/put");
    if let Ok(value) = HeaderValue::from_str(allowed.as_str()) {
        response.headers_mut().insert(ALLOW, value);
    }
    response
}

pub(super) fn json_response(status: StatusCode, body: &Json) -> Response {
    response(status, JSON_TYPE, body.to_string().into())
}

fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut response = hyper::Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `GET /v1/get?key=K`: GETV of K.
async fn get_handler(
    request: &hyper::Request<Incoming>,
    dispatcher: &Dispatcher,
) -> Result<Response, HttpError> {
    let key = query_key(request.uri().query().unwrap_or(""))?;
    let bytes = key.clone().into_bytes();
    // GETV then TTL of the same key: they run in this order on its shard,
    // each at its own clock reading (not an ATOMIC, which a read does not
    // need and which would count as a batch).
    let read = [Request::GetV(bytes.clone()), Request::Ttl(bytes)];
    let mut reply = dispatcher.call(&read).await?.into_iter();
    let (found, ttl) = match (reply.next(), reply.next(), reply.next()) {
        (Some(found), Some(Element::Integer(ttl)), None) => (found, ttl),
        (Some(element), None, None) => (single(vec![element])?, -2),
        (first, _, _) => return Err(unexpected(&first.unwrap_or(Element::NotFound))),
    };
    match found {
        // Found, then expired before the TTL ran: it is gone now.
        Element::Versioned(..) if ttl == TTL_MISSING => {
            let body = json!({ "error": "key not found", "code": "NOTFOUND", "key": key });
            Ok(json_response(StatusCode::NOT_FOUND, &body))
        }
        Element::Versioned(value, version) => {
            let mut body =
                json!({ "key": key, "value": json::from_msgpack(&value), "version": version });
            // -1: no deadline, and then no field.
            if ttl >= 0 {
                body["ttl_ms"] = json!(ttl);
            }
            Ok(json_response(StatusCode::OK, &body))
        }
        Element::NotFound => {
            let body = json!({ "error": "key not found", "code": "NOTFOUND", "key": key });
            Ok(json_response(StatusCode::NOT_FOUND, &body))
        }
        other => Err(unexpected(&other)),
    }
}

/// The `key` parameter of a query string, percent-decoded (`+` is a space).
fn query_key(query: &str) -> Result<String, HttpError> {
    let mut found = None;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if decode_component(name)? != "key" {
            continue;
        }
        if found.is_some() {
            return Err(HttpError::bad_request(
                "query parameter key is given more than once",
            ));
        }
        found = Some(decode_component(value)?);
    }
    found.ok_or_else(|| HttpError::bad_request("missing query parameter key (/v1/get?key=K)"))
}

fn decode_component(text: &str) -> Result<String, HttpError> {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| HttpError::bad_request("the query is not UTF-8 after percent-decoding"))
}

/// `POST /v1/put`: all the body's items as one ATOMIC of PUTVs.
async fn put_handler(
    request: hyper::Request<Incoming>,
    dispatcher: &Dispatcher,
) -> Result<Response, HttpError> {
    let limit = dispatcher.ctx().limits.max_frame_bytes;
    let body = read_body(request, limit).await?;
    let items = parse_puts(&body)?;
    if items.is_empty() {
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "result": "Success", "versions": [] }),
        ));
    }
    let nr_puts = items.len();
    let mut requests = Vec::with_capacity(nr_puts);
    let mut answers_of = Vec::with_capacity(nr_puts);
    for item in items {
        answers_of.push(1 + usize::from(item.ttl_ms.is_some()));
        requests.push(Request::PutV(item.key.clone(), item.value, item.version));
        if let Some(ttl_ms) = item.ttl_ms {
            // PUTV clears a deadline; the EXPIRE after it sets the item's.
            requests.push(Request::Expire(item.key, ttl_ms));
        }
    }
    let reply = dispatcher.call(&[Request::Atomic(requests)]).await?;
    let mut reply = reply.into_iter();
    let mut versions = Vec::with_capacity(nr_puts);
    for answers in answers_of {
        match reply.next() {
            Some(Element::Done(version)) => versions.push(version),
            Some(Element::Error { code, message }) => {
                return Err(HttpError::from_server(&code, message))
            }
            Some(other) => return Err(unexpected(&other)),
            None => break,
        }
        if answers == 2 {
            // The EXPIRE's `[-4, 1]`: the key was just written.
            reply.next();
        }
    }
    if versions.len() != nr_puts {
        return Err(HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("{nr_puts} puts answered with {} results", versions.len()),
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "result": "Success", "versions": versions }),
    ))
}

/// The whole body, refused with 413 once it is longer than `limit`.
async fn read_body(request: hyper::Request<Incoming>, limit: u64) -> Result<Bytes, HttpError> {
    let too_big = |what: String| {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "TOOBIG",
            format!("{what}, over the limit of {limit} bytes (--max-frame-bytes)"),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared.filter(|&n| n > limit) {
        return Err(too_big(format!("the body is {declared} bytes")));
    }
    let limited = Limited::new(
        request.into_body(),
        usize::try_from(limit).unwrap_or(usize::MAX),
    );
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(too_big("the body is longer".into()))
        }
        Err(e) => Err(HttpError::bad_request(format!("cannot read the body: {e}"))),
    }
}

/// One item of a put.
struct PutItem {
    key: Vec<u8>,
    value: rmpv::Value,
    version: u64,
    /// The key expires this long after the put; without it, never.
    ttl_ms: Option<u64>,
}

/// The body of a put: `[{"key": str, "value": V, "version": uint,
/// "ttl_ms": uint (optional)}, …]`.
fn parse_puts(body: &[u8]) -> Result<Vec<PutItem>, HttpError> {
    let json: Json = serde_json::from_slice(body)
        .map_err(|e| HttpError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let Json::Array(items) = json else {
        return Err(HttpError::bad_request(
            "the body must be a JSON array of {\"key\", \"value\", \"version\"} objects",
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            parse_put(item).map_err(|e| HttpError::bad_request(format!("item {i}: {e}")))
        })
        .collect()
}

fn parse_put(item: &Json) -> Result<PutItem, String> {
    let Json::Object(fields) = item else {
        return Err("must be an object {\"key\", \"value\", \"version\"}".into());
    };
    if let Some(name) = fields
        .keys()
        .find(|k| !["key", "value", "version", "ttl_ms"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown field \"{name}\" (fields are key, value, version, ttl_ms)"
        ));
    }
    let key = match fields.get("key") {
        Some(Json::String(key)) => key.clone().into_bytes(),
        Some(_) => return Err("\"key\" must be a string".into()),
        None => return Err("missing field \"key\"".into()),
    };
    let value = fields.get("value").ok_or("missing field \"value\"")?;
    let value = json::to_msgpack(value).map_err(|e| format!("\"value\": {e}"))?;
    let version = match fields.get("version") {
        Some(v) => v
            .as_u64()
            .ok_or("\"version\" must be a non-negative integer (0 creates the key)")?,
        None => return Err("missing field \"version\" (0 creates the key)".into()),
    };
    let ttl_ms = match fields.get("ttl_ms") {
        None => None,
        Some(ttl) => Some(
            ttl.as_u64()
                .filter(|ms| (1..=MAX_TTL_MS).contains(ms))
                .ok_or(format!(
                    "\"ttl_ms\" must be an integer of milliseconds from 1 to {MAX_TTL_MS}"
                ))?,
        ),
    };
    Ok(PutItem {
        key,
        value,
        version,
        ttl_ms,
    })
}

/// `GET /v1/stats`: STATS totals and each shard's share.
async fn stats_handler(dispatcher: &Dispatcher) -> Result<Response, HttpError> {
    let stats = match dispatcher.stats().await? {
        Ok(stats) => stats,
        Err(element) => return Err(element_error(element)),
    };
    let shards: Vec<Json> = stats
        .shares
        .iter()
        .enumerate()
        .map(|(id, share)| {
            let mut fields: serde_json::Map<String, Json> = share
                .fields()
                .iter()
                .map(|(name, v)| ((*name).to_owned(), json!(v)))
                .collect();
            fields.insert("shard".into(), json!(id));
            Json::Object(fields)
        })
        .collect();
    let body = json!({ "total": stats.total, "shards": shards });
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /v1/backup` with `{"dir": DIR}`: the whole backup, then its report.
async fn backup_handler(
    request: hyper::Request<Incoming>,
    dispatcher: &Dispatcher,
) -> Result<Response, HttpError> {
    let body = read_body(request, 64 * 1024).await?;
    let json: Json = serde_json::from_slice(&body)
        .map_err(|e| HttpError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let dir = match json.get("dir") {
        Some(Json::String(dir)) => std::path::PathBuf::from(dir),
        _ => {
            return Err(HttpError::bad_request(
                "the body must be {\"dir\": \"/absolute/path\"}",
            ))
        }
    };
    let report = crate::backup::run(dispatcher.ctx(), dir)
        .await
        .map_err(backup_error)?;
    let body = json!({
        "dir": report.dir.display().to_string(),
        "shards": report.nr_shards,
        "entries": report.nr_entries,
        "bytes": report.bytes,
        "cut_ms": report.cut_wait.as_secs_f64() * 1e3,
        "seconds": report.elapsed.as_secs_f64(),
    });
    Ok(json_response(StatusCode::OK, &body))
}

fn backup_error(e: crate::backup::BackupError) -> HttpError {
    use crate::backup::BackupError as E;
    let (status, code) = match &e {
        E::RelativeDir(_) => (StatusCode::BAD_REQUEST, "BADREQ"),
        E::NotEmpty(_) => (StatusCode::CONFLICT, "EXISTS"),
        E::Busy => (StatusCode::CONFLICT, "BUSY"),
        E::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "SHUTDOWN"),
        E::CutTimeout => (StatusCode::SERVICE_UNAVAILABLE, "TIMEOUT"),
        E::Io { .. } | E::Cancelled => (StatusCode::INTERNAL_SERVER_ERROR, "IOERR"),
    };
    HttpError::new(status, code, e.to_string())
}

/// `GET /metrics`.
async fn metrics_handler(dispatcher: &Dispatcher) -> Result<Response, HttpError> {
    let ctx = dispatcher.ctx();
    ctx.metrics.publish(&ctx.shard);
    let stats = match dispatcher.stats().await? {
        Ok(stats) => stats,
        Err(element) => return Err(element_error(element)),
    };
    let page = metrics::render(&stats, &ctx.metrics, &ctx.state);
    Ok(response(StatusCode::OK, PROMETHEUS_TYPE, page.into()))
}

/// `POST /debug/failpoint` with body `NAME=ACTIONS` (test builds only): arms
/// a failpoint on the running server; an empty ACTIONS disarms it.
#[cfg(feature = "failpoints")]
async fn failpoint_handler(request: hyper::Request<Incoming>) -> Response {
    let body = match read_body(request, 4096).await {
        Ok(body) => String::from_utf8_lossy(&body).into_owned(),
        Err(e) => return e.into_response(false),
    };
    let (name, actions) = body.trim().split_once('=').unwrap_or((body.trim(), ""));
    match crate::failpoint::configure(name, actions) {
        Ok(()) => json_response(
            StatusCode::OK,
            &json!({ "failpoint": name, "actions": actions }),
        ),
        Err(message) => HttpError::bad_request(message).into_response(false),
    }
}

/// `GET /health`: every shard's health, whichever shard answers; 200 only
/// while all of them serve.
fn health_handler(dispatcher: &Dispatcher) -> Response {
    let ctx = dispatcher.ctx();
    // The shutdown flag is in the shared state too (this shard's trigger follows it).
    let healths: Vec<ShardHealth> = (0..ctx.state.nr_shards)
        .map(|shard| ctx.state.shard_health(ShardId(shard)))
        .collect();
    let shards: Vec<Json> = healths
        .iter()
        .enumerate()
        .map(|(shard, health)| {
            let mut entry = json!({ "shard": shard, "status": health_name(health) });
            if let ShardHealth::LogPoisoned(cause) = health {
                entry["error"] = json!(cause);
            }
            entry
        })
        .collect();
    let mut body = json!({ "status": "serving", "shard": ctx.shard.id().0, "shards": shards });
    let Some(worst) = most_telling(&healths) else {
        return json_response(StatusCode::OK, &body);
    };
    body["status"] = json!(health_name(worst));
    if let ShardHealth::LogPoisoned(cause) = worst {
        body["error"] = json!(cause);
    }
    json_response(StatusCode::SERVICE_UNAVAILABLE, &body)
}

/// The top-level status when not every shard serves: shutting down, else a
/// poisoned log, else recovering.
fn most_telling(healths: &[ShardHealth]) -> Option<&ShardHealth> {
    healths
        .iter()
        .filter(|health| **health != ShardHealth::Serving)
        .min_by_key(|health| match health {
            ShardHealth::ShuttingDown => 0,
            ShardHealth::LogPoisoned(_) => 1,
            ShardHealth::Recovering | ShardHealth::Serving => 2,
        })
}

fn health_name(health: &ShardHealth) -> &'static str {
    match health {
        ShardHealth::Recovering => "recovering",
        ShardHealth::Serving => "serving",
        ShardHealth::ShuttingDown => "shutting down",
        ShardHealth::LogPoisoned(_) => "log poisoned",
    }
}

/// The one element of a one-request reply; an error element becomes its response.
fn single(mut reply: Vec<Element>) -> Result<Element, HttpError> {
    match (reply.pop(), reply.is_empty()) {
        (Some(Element::Error { code, message }), true) => {
            Err(HttpError::from_server(&code, message))
        }
        (Some(element), true) => Ok(element),
        _ => Err(HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "expected exactly one result element",
        )),
    }
}

fn element_error(element: Element) -> HttpError {
    match element {
        Element::Error { code, message } => HttpError::from_server(&code, message),
        other => unexpected(&other),
    }
}

fn unexpected(element: &Element) -> HttpError {
    HttpError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        format!("unexpected result element {element:?}"),
    )
}
