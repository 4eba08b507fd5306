//! MCP (Model Context Protocol) over JSON-RPC 2.0, as the gateway sees it (SPEC §6).
//!
//! * `tools/call` of tool `T` on the MCP server configured as `S` needs scope
//!   `mcp.S.T:call`; its `arguments` are handed to policy.
//! * A tool's annotations set its action class: `readOnlyHint: true` is read; otherwise write
//!   (MCP's own defaults: not read-only, destructive).
//! * A `tools/list` answer is filtered to the tools the token may call.
//!
//! Everything here is pure: parsing a request body, naming the scope, filtering an answer,
//! building JSON-RPC errors.

use mandate_core::scope::{ActionClass, Scope};
use serde_json::{Map, Value, json};

/// The largest JSON-RPC request body the gateway parses.
pub const MAX_BODY: usize = 1024 * 1024;

/// One JSON-RPC request or notification, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `tools/call`.
    CallTool {
        /// The request id.
        id: Value,
        /// The tool's name.
        tool: String,
        /// Its arguments (an object; `{}` when absent).
        arguments: Value,
    },
    /// `tools/list`.
    ListTools {
        /// The request id.
        id: Value,
    },
    /// Any other request (`initialize`, `ping`, `resources/read`, …).
    Other {
        /// The request id.
        id: Value,
        /// The method.
        method: String,
    },
    /// A notification (no id): `notifications/initialized`, …
    Notification {
        /// The method.
        method: String,
    },
    /// A JSON-RPC response or error sent by the client (e.g. to a server's sampling request).
    Response,
}

/// Why a body is not an acceptable JSON-RPC message. Each maps to a JSON-RPC error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// Not JSON (`-32700`).
    #[error("the body is not JSON: {0}")]
    Parse(String),
    /// Not a JSON-RPC 2.0 request (`-32600`).
    #[error("not a JSON-RPC 2.0 request: {0}")]
    Invalid(&'static str),
    /// Bad `tools/call` parameters (`-32602`).
    #[error("invalid `tools/call` params: {0}")]
    Params(&'static str),
    /// Too large (`-32600`).
    #[error("the body is larger than {MAX_BODY} bytes")]
    TooLarge,
}

impl RpcError {
    /// The JSON-RPC error code.
    pub fn code(&self) -> i64 {
        match self {
            RpcError::Parse(_) => -32700,
            RpcError::Invalid(_) | RpcError::TooLarge => -32600,
            RpcError::Params(_) => -32602,
        }
    }
}

/// Parses one JSON-RPC message. Batches (JSON arrays) are refused: MCP no longer has them, and
/// one body must be one decision.
pub fn parse(body: &[u8]) -> Result<Message, RpcError> {
    if body.len() > MAX_BODY {
        return Err(RpcError::TooLarge);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| RpcError::Parse(e.to_string()))?;
    let obj = match v {
        Value::Object(o) => o,
        Value::Array(_) => return Err(RpcError::Invalid("batches are not accepted")),
        _ => return Err(RpcError::Invalid("not an object")),
    };
    if obj.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err(RpcError::Invalid("`jsonrpc` must be \"2.0\""));
    }
    let Some(method) = obj.get("method") else {
        if obj.contains_key("result") || obj.contains_key("error") {
            return Ok(Message::Response);
        }
        return Err(RpcError::Invalid("no `method`"));
    };
    let method = method
        .as_str()
        .ok_or(RpcError::Invalid("`method` is not a string"))?
        .to_owned();
    let Some(id) = obj.get("id").cloned() else {
        return Ok(Message::Notification { method });
    };
    if !(id.is_string() || id.is_i64() || id.is_u64()) {
        return Err(RpcError::Invalid("`id` must be a string or an integer"));
    }
    match method.as_str() {
        "tools/call" => {
            let params = obj
                .get("params")
                .and_then(Value::as_object)
                .ok_or(RpcError::Params("`params` must be an object"))?;
            let tool = params
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty() && n.len() <= 128)
                .ok_or(RpcError::Params("`name` must be a tool name"))?
                .to_owned();
            let arguments = match params.get("arguments") {
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(a @ Value::Object(_)) => a.clone(),
                Some(_) => return Err(RpcError::Params("`arguments` must be an object")),
            };
            Ok(Message::CallTool {
                id,
                tool,
                arguments,
            })
        }
        "tools/list" => Ok(Message::ListTools { id }),
        _ => Ok(Message::Other { id, method }),
    }
}

/// The scope a call of `tool` on MCP server `server` needs: `mcp.<server>.<tool>:call`. `None`
/// if the names do not fit a scope (lowercase letters, digits, `_`, `-`): such a tool can never
/// be granted, so it is never callable through the gateway.
pub fn tool_scope(server: &str, tool: &str) -> Option<Scope> {
    if server.contains('.') || tool.contains('.') {
        return None;
    }
    Scope::parse(&format!("mcp.{server}.{tool}:call")).ok()
}

/// The action class a tool's `annotations` give it: read only with `readOnlyHint: true`.
pub fn tool_class(tool: &Value) -> ActionClass {
    let hint = |name: &str| {
        tool.get("annotations")
            .and_then(|a| a.get(name))
            .and_then(Value::as_bool)
    };
    if hint("readOnlyHint") == Some(true) {
        ActionClass::Read
    } else {
        ActionClass::Write
    }
}

/// Filters the `result.tools` of a `tools/list` answer to those `may_call` accepts (given the
/// tool's scope and the tool's description). Tools without a scope form are removed. Returns how
/// many were removed.
pub fn filter_tools(
    answer: &mut Value,
    server: &str,
    mut may_call: impl FnMut(&Scope, &Value) -> bool,
) -> usize {
    let Some(tools) = answer
        .get_mut("result")
        .and_then(|r| r.get_mut("tools"))
        .and_then(Value::as_array_mut)
    else {
        return 0;
    };
    let before = tools.len();
    tools.retain(|t| {
        t.get("name")
            .and_then(Value::as_str)
            .and_then(|name| tool_scope(server, name))
            .is_some_and(|scope| may_call(&scope, t))
    });
    before - tools.len()
}

/// A JSON-RPC error answer.
pub fn error(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut err = json!({"code": code, "message": message});
    if let (Some(d), Some(o)) = (data, err.as_object_mut()) {
        o.insert("data".into(), d);
    }
    json!({"jsonrpc": "2.0", "id": id, "error": err})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_tool_call_is_parsed_with_its_arguments() {
        let m = parse(
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"lookup_customer","arguments":{"id":"9821"}}}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            Message::CallTool {
                id: json!(7),
                tool: "lookup_customer".into(),
                arguments: json!({"id": "9821"}),
            }
        );
        let m = parse(br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"t"}}"#)
            .unwrap();
        assert!(matches!(m, Message::CallTool { arguments, .. } if arguments == json!({})));
    }

    #[test]
    fn other_messages_are_classified() {
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap(),
            Message::ListTools { id: json!(1) }
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#).unwrap(),
            Message::Other {
                id: json!(1),
                method: "initialize".into()
            }
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap(),
            Message::Notification {
                method: "notifications/initialized".into()
            }
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).unwrap(),
            Message::Response
        );
    }

    #[test]
    fn bad_bodies_get_the_json_rpc_error_codes() {
        let cases: &[(&[u8], i64)] = &[
            (b"{", -32700),
            (b"[]", -32600),
            (b"3", -32600),
            (br#"{"id":1,"method":"tools/list"}"#, -32600),
            (br#"{"jsonrpc":"2.0","id":1}"#, -32600),
            (br#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#, -32600),
            (br#"{"jsonrpc":"2.0","id":1,"method":5}"#, -32600),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#, -32602),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":""}}"#,
                -32602,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":[1]}}"#,
                -32602,
            ),
        ];
        for (body, code) in cases {
            let e = parse(body).unwrap_err();
            assert_eq!(e.code(), *code, "{}: {e}", String::from_utf8_lossy(body));
        }
        let big = vec![b' '; MAX_BODY + 1];
        assert_eq!(parse(&big).unwrap_err(), RpcError::TooLarge);
    }

    #[test]
    fn tools_map_to_scopes_and_classes() {
        assert_eq!(
            tool_scope("crm", "lookup_customer").unwrap().as_str(),
            "mcp.crm.lookup_customer:call"
        );
        assert!(tool_scope("crm", "getCustomer").is_none());
        assert!(tool_scope("crm", "a.b").is_none());
        assert!(tool_scope("crm", "x:y").is_none());
        assert_eq!(
            tool_class(&json!({"name": "t", "annotations": {"readOnlyHint": true}})),
            ActionClass::Read
        );
        assert_eq!(
            tool_class(&json!({"name": "t", "annotations": {"destructiveHint": true}})),
            ActionClass::Write
        );
        assert_eq!(tool_class(&json!({"name": "t"})), ActionClass::Write);
    }

    #[test]
    fn tools_list_is_filtered_to_what_may_be_called() {
        let mut answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
            {"name": "lookup_customer", "annotations": {"readOnlyHint": true}},
            {"name": "delete_customer", "annotations": {"destructiveHint": true}},
            {"name": "NoScopeForm"},
        ]}});
        let removed = filter_tools(&mut answer, "crm", |scope, _| {
            scope.as_str() == "mcp.crm.lookup_customer:call"
        });
        assert_eq!(removed, 2);
        assert_eq!(
            answer["result"]["tools"],
            json!([{"name": "lookup_customer", "annotations": {"readOnlyHint": true}}])
        );
        let mut other = json!({"result": {}});
        assert_eq!(filter_tools(&mut other, "crm", |_, _| true), 0);
    }

    #[test]
    fn errors_are_json_rpc_answers() {
        assert_eq!(
            error(
                &json!(3),
                -32001,
                "insufficient_scope",
                Some(json!({"scope": "a:b"}))
            ),
            json!({"jsonrpc": "2.0", "id": 3, "error": {"code": -32001, "message": "insufficient_scope", "data": {"scope": "a:b"}}})
        );
    }
}
