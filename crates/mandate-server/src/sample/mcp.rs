//! The sample MCP server at `/mcp` (SPEC §10): server name `crm`, a read-only tool
//! `lookup_customer` and a destructive tool `delete_customer`, over MCP's streamable HTTP
//! transport, hand-rolled:
//!
//! * `POST /mcp` takes one JSON-RPC 2.0 message. A request is answered with
//!   `Content-Type: application/json` (never an SSE stream); a notification or a response from
//!   the client gets `202` and no body. Batches, bad JSON and malformed messages get a JSON-RPC
//!   error (`-32700`, `-32600`) with `400`.
//! * `initialize` opens a session: the answer carries an `Mcp-Session-Id` header. Later messages
//!   may carry it back (an unknown one gets `404`, as the transport prescribes, so the client
//!   initializes again) or leave it out (served statelessly, for raw JSON-RPC callers).
//!   `DELETE /mcp` with the header ends the session.
//! * `GET /mcp` is `405`: the server never sends messages of its own, so it offers no SSE stream.
//! * Methods: `initialize`, `ping`, `tools/list`, `tools/call`; others get `-32601`. An unknown
//!   tool gets `-32602`; bad arguments or a missing customer get a tool result with
//!   `isError: true`, so the model can correct itself (MCP 2025-11-25).
//! * With a verified Transaction Token, `tools/call` results carry `_meta.served_for`, and
//!   `lookup_customer`'s structured content a `served_for` too, as the REST API does.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};

use super::{Sample, ServedFor, error};

/// The protocol versions this server negotiates in `initialize`, newest first. (`2026-07-28`
/// has no `initialize` handshake, so a client asking for it is answered with the newest here.)
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// The MCP session header.
pub const SESSION_HEADER: &str = "mcp-session-id";

/// The protocol version header clients send after `initialize`.
pub const VERSION_HEADER: &str = "mcp-protocol-version";

/// How many sessions are remembered; the oldest is forgotten past that.
const MAX_SESSIONS: usize = 1024;

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;
const SESSION_NOT_FOUND: i64 = -32001;

/// The `/mcp` route.
pub(crate) fn routes() -> Router<Sample> {
    Router::new().route("/mcp", post(message).get(no_stream).delete(end_session))
}

/// The two tools, as `tools/list` lists them.
pub fn tools() -> Value {
    let id_schema = |what: &str| {
        json!({
            "type": "object",
            "properties": {"id": {"type": "string", "description": what}},
            "required": ["id"],
            "additionalProperties": false
        })
    };
    json!([
        {
            "name": "lookup_customer",
            "title": "Look up a customer",
            "description": "Returns a CRM customer (id, name, region, email) by id.",
            "inputSchema": id_schema("the customer's id, e.g. 9821"),
            "annotations": {"readOnlyHint": true, "destructiveHint": false, "openWorldHint": false}
        },
        {
            "name": "delete_customer",
            "title": "Delete a customer",
            "description": "Deletes a CRM customer by id. This cannot be undone.",
            "inputSchema": id_schema("the id of the customer to delete"),
            "annotations": {"readOnlyHint": false, "destructiveHint": true, "idempotentHint": true, "openWorldHint": false}
        }
    ])
}

async fn message(
    State(sample): State<Sample>,
    Extension(served): Extension<ServedFor>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let bytes = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let why = format!("request too large: the limit is {} bytes", super::MAX_BODY);
            return rpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Value::Null,
                INVALID_REQUEST,
                &why,
            );
        }
        Err(e) => {
            let why = format!("could not read the request: {}", e.body_text());
            return rpc_error(StatusCode::BAD_REQUEST, Value::Null, INVALID_REQUEST, &why);
        }
    };
    if let Some(v) = headers.get(VERSION_HEADER) {
        let v = String::from_utf8_lossy(v.as_bytes());
        if !PROTOCOL_VERSIONS.contains(&v.as_ref()) {
            let why = format!(
                "unsupported MCP-Protocol-Version `{v}`; supported: {}",
                PROTOCOL_VERSIONS.join(", ")
            );
            return rpc_error(StatusCode::BAD_REQUEST, Value::Null, INVALID_REQUEST, &why);
        }
    }
    let msg: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            let why = format!("parse error: {e}");
            return rpc_error(StatusCode::BAD_REQUEST, Value::Null, PARSE_ERROR, &why);
        }
    };
    let msg = match msg {
        Value::Object(m) => m,
        Value::Array(_) => {
            let why = "batches are not supported: send one JSON-RPC message per request";
            return rpc_error(StatusCode::BAD_REQUEST, Value::Null, INVALID_REQUEST, why);
        }
        _ => {
            let why = "a JSON-RPC message must be an object";
            return rpc_error(StatusCode::BAD_REQUEST, Value::Null, INVALID_REQUEST, why);
        }
    };
    let id = msg.get("id").cloned();
    let valid_id = id.clone().filter(|i| i.is_string() || i.is_number());
    let echo_id = valid_id.clone().unwrap_or(Value::Null);
    if msg.get("jsonrpc") != Some(&json!("2.0")) {
        let why = "`jsonrpc` must be \"2.0\"";
        return rpc_error(StatusCode::BAD_REQUEST, echo_id, INVALID_REQUEST, why);
    }
    let method = match msg.get("method") {
        Some(Value::String(m)) => Some(m.as_str()),
        Some(_) => {
            let why = "`method` must be a string";
            return rpc_error(StatusCode::BAD_REQUEST, echo_id, INVALID_REQUEST, why);
        }
        None => None,
    };
    let session = headers
        .get(SESSION_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if method != Some("initialize")
        && let Some(s) = &session
        && !sample.sessions().contains(s)
    {
        let why = "unknown or expired session: send initialize again";
        return rpc_error(StatusCode::NOT_FOUND, echo_id, SESSION_NOT_FOUND, why);
    }
    let Some(method) = method else {
        // A response or an error from the client: nothing was asked of it.
        if id.is_some() && (msg.contains_key("result") || msg.contains_key("error")) {
            return StatusCode::ACCEPTED.into_response();
        }
        let why = "not a JSON-RPC request, notification or response";
        return rpc_error(StatusCode::BAD_REQUEST, echo_id, INVALID_REQUEST, why);
    };
    let Some(id) = id else {
        // A notification (`notifications/initialized`, `notifications/cancelled`, …).
        return StatusCode::ACCEPTED.into_response();
    };
    if valid_id.is_none() {
        let why = "`id` must be a string or a number";
        return rpc_error(StatusCode::BAD_REQUEST, Value::Null, INVALID_REQUEST, why);
    }
    let params = msg.get("params").cloned().unwrap_or(Value::Null);
    let answer = match method {
        "initialize" => initialize(&params),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": tools()})),
        "tools/call" => call(&sample, &served, &params),
        other => Err((METHOD_NOT_FOUND, format!("method not found: {other}"))),
    };
    let mut resp = match answer {
        Ok(result) => json_response(
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": id, "result": result}),
        ),
        Err((code, why)) => rpc_error(StatusCode::OK, id, code, &why),
    };
    if method == "initialize" && resp.status() == StatusCode::OK {
        let Some(sid) = new_session_id() else {
            let why = "could not make a session id";
            return rpc_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                echo_id,
                INTERNAL_ERROR,
                why,
            );
        };
        if let Ok(v) = HeaderValue::from_str(&sid) {
            resp.headers_mut().insert(SESSION_HEADER, v);
            let mut sessions = sample.sessions();
            while sessions.len() >= MAX_SESSIONS {
                sessions.pop_front();
            }
            sessions.push_back(sid);
        }
    }
    resp
}

type RpcResult = Result<Value, (i64, String)>;

fn initialize(params: &Value) -> RpcResult {
    let Some(asked) = params.get("protocolVersion").and_then(Value::as_str) else {
        let why = "initialize needs params.protocolVersion, a string";
        return Err((INVALID_PARAMS, why.to_owned()));
    };
    let version = PROTOCOL_VERSIONS
        .iter()
        .find(|v| **v == asked)
        .unwrap_or(&PROTOCOL_VERSIONS[0]);
    Ok(json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {"name": "crm", "title": "Sample CRM", "version": env!("CARGO_PKG_VERSION")},
        "instructions": "A sample CRM: look customers up by id, or delete them."
    }))
}

fn call(sample: &Sample, served: &ServedFor, params: &Value) -> RpcResult {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        let why = "tools/call needs params.name, a string";
        return Err((INVALID_PARAMS, why.to_owned()));
    };
    let empty = Value::Object(Map::new());
    let args = params.get("arguments").unwrap_or(&empty);
    let mut result = match name {
        "lookup_customer" | "delete_customer" => match customer_id(args) {
            Err(why) => tool_error(&why),
            Ok(id) if name == "lookup_customer" => match sample.customer(&id) {
                Some(c) => {
                    let body = served.add_to(json!(c));
                    json!({
                        "content": [{"type": "text", "text": body.to_string()}],
                        "structuredContent": body,
                        "isError": false
                    })
                }
                None => tool_error(&format!("no customer {id}")),
            },
            Ok(id) => match sample.data().customers.remove(&id) {
                Some(_) => json!({
                    "content": [{"type": "text", "text": format!("deleted customer {id}")}],
                    "isError": false
                }),
                None => tool_error(&format!("no customer {id}")),
            },
        },
        other => return Err((INVALID_PARAMS, format!("unknown tool: {other}"))),
    };
    if let (Some(s), Some(obj)) = (&served.0, result.as_object_mut()) {
        obj.insert("_meta".to_owned(), json!({"served_for": s}));
    }
    Ok(result)
}

/// The `id` argument: a string, or a number taken as one.
fn customer_id(args: &Value) -> Result<String, String> {
    let Some(args) = args.as_object() else {
        return Err("arguments must be an object, like {\"id\": \"9821\"}".to_owned());
    };
    match args.get("id") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        Some(_) => Err("`id` must be a non-empty string, like \"9821\"".to_owned()),
        None => Err("missing argument `id`, like {\"id\": \"9821\"}".to_owned()),
    }
}

fn tool_error(why: &str) -> Value {
    json!({"content": [{"type": "text", "text": why}], "isError": true})
}

async fn no_stream() -> Response {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "this server offers no SSE stream: POST JSON-RPC messages to /mcp",
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
    resp
}

async fn end_session(State(sample): State<Sample>, headers: HeaderMap) -> Response {
    let Some(sid) = headers.get(SESSION_HEADER) else {
        return error(StatusCode::BAD_REQUEST, "missing Mcp-Session-Id header");
    };
    let sid = String::from_utf8_lossy(sid.as_bytes());
    let mut sessions = sample.sessions();
    match sessions.iter().position(|s| *s == sid) {
        Some(i) => {
            sessions.remove(i);
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, "unknown or expired session"),
    }
}

fn new_session_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn rpc_error(status: StatusCode, id: Value, code: i64, message: &str) -> Response {
    json_response(
        status,
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialize_negotiates_a_version() {
        let v = |asked: &str| {
            initialize(&json!({"protocolVersion": asked}))
                .ok()
                .unwrap_or_default()["protocolVersion"]
                .clone()
        };
        assert_eq!(v("2025-06-18"), json!("2025-06-18"));
        assert_eq!(v("2026-07-28"), json!("2025-11-25"));
        assert_eq!(v("1999-01-01"), json!("2025-11-25"));
        assert!(initialize(&json!({})).is_err());
    }

    #[test]
    fn customer_ids_are_checked() {
        assert_eq!(customer_id(&json!({"id": "9821"})), Ok("9821".to_owned()));
        assert_eq!(customer_id(&json!({"id": 9821})), Ok("9821".to_owned()));
        assert!(customer_id(&json!({"id": ""})).is_err());
        assert!(customer_id(&json!({})).is_err());
        assert!(customer_id(&json!([1])).is_err());
    }
}
