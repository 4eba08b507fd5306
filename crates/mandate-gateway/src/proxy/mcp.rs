//! MCP (streamable HTTP, JSON-RPC) through the gateway.
//!
//! A `POST` carries one JSON-RPC message, which the gateway reads (at most 1 MiB) to decide:
//! `tools/call` is a request for scope `mcp.<server>.<tool>:call` on resource
//! `mcp/<server>/<tool>`, its scalar arguments the resource's tags, its class from the tool's
//! annotations; `tools/list` answers are filtered to what the token may call. Other messages
//! (`initialize`, `ping`, notifications, `GET` streams, `DELETE`) need a valid token and pass.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use mandate_verify::Principal;
use serde_json::{Value, json};

use super::{
    BoxError, Ctx, Gateway, Outcome, ProxyBody, ReadError, limited, read_body, respond, scalar_tags,
};
use crate::admit::{Admitted, Target, admit};
use crate::authority::Authority;
use crate::mcp::{self as rpc, MAX_BODY, Message};
use mandate_core::scope::ActionClass;

/// Largest `tools/list` answer the gateway reads to filter.
const MAX_LIST_ANSWER: usize = 4 * 1024 * 1024;

impl<A: Authority> Gateway<A> {
    /// Handles a request to MCP server `index`.
    pub(super) async fn mcp<B>(
        &self,
        index: usize,
        req: Request<B>,
        p: &Principal,
        ctx: &Ctx,
        metadata_url: &str,
    ) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let server = &self.plan.mcp[index];
        let up = server.upstream;
        let path = format!(
            "{}{}",
            self.plan.upstreams[up].base_path, server.upstream_path
        );
        if let Err(r) = self.audience(p, &server.audiences, ctx, metadata_url) {
            return *r;
        }
        let resource = format!("mcp/{}", server.server);
        if req.method() != Method::POST {
            let (parts, body) = req.into_parts();
            let body = limited(body, self.plan.max_body_bytes);
            let action = format!("mcp:{}", parts.method.as_str().to_ascii_lowercase());
            return self
                .forward(ctx, p, up, &path, parts, body, &action, &resource, false)
                .await;
        }
        let (parts, body) = req.into_parts();
        let bytes = match read_body(body, MAX_BODY).await {
            Ok(b) => b,
            Err(e) => {
                let (status, msg) = if matches!(e, ReadError::TooLarge) {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("the body is larger than {MAX_BODY} bytes"),
                    )
                } else {
                    (StatusCode::BAD_REQUEST, "the body could not be read".into())
                };
                return respond::rpc_error(status, &Value::Null, -32600, &msg);
            }
        };
        let message = match rpc::parse(&bytes) {
            Ok(m) => m,
            Err(e) => {
                return respond::rpc_error(
                    StatusCode::BAD_REQUEST,
                    &Value::Null,
                    e.code(),
                    &e.to_string(),
                );
            }
        };
        match message {
            Message::CallTool {
                id,
                tool,
                arguments,
            } => {
                let Some(scope) = rpc::tool_scope(&server.server, &tool) else {
                    let why = format!(
                        "tool `{tool}` has a name no scope can grant (lowercase letters, digits, `_`, `-`)"
                    );
                    self.record(
                        ctx,
                        Outcome {
                            principal: Some(p),
                            resource: Some(&resource),
                            reason: why.clone(),
                            ..Outcome::deny()
                        },
                    );
                    return respond::rpc_error(StatusCode::FORBIDDEN, &id, -32602, &why);
                };
                let class = match self.tool_class(index, &tool) {
                    Some(c) => c,
                    None => {
                        self.learn_tools(index, &parts, p, ctx, &path).await;
                        self.tool_class(index, &tool).unwrap_or(ActionClass::Write)
                    }
                };
                let tool_resource = format!("mcp/{}/{tool}", server.server);
                let tags = scalar_tags(&arguments);
                let target = Target {
                    action: &scope,
                    class,
                    least_stage: None,
                };
                match self.decide(p, &target, &tool_resource, &tags, ctx, metadata_url) {
                    Ok(Admitted::Forward) => {}
                    Ok(Admitted::Hold) => {
                        let target = super::proposals::HoldTarget {
                            upstream: up,
                            upstream_path: path.clone(),
                            action: scope.as_str(),
                            resource: &tool_resource,
                        };
                        return self
                            .hold_tool_call(ctx, p, &parts, bytes.clone(), &id, &target)
                            .await;
                    }
                    Err(r) => return *r,
                }
                self.forward(
                    ctx,
                    p,
                    up,
                    &path,
                    parts,
                    respond::full(bytes.clone()),
                    scope.as_str(),
                    &tool_resource,
                    true,
                )
                .await
            }
            Message::ListTools { .. } => {
                let answer = self
                    .forward(
                        ctx,
                        p,
                        up,
                        &path,
                        parts,
                        respond::full(bytes.clone()),
                        "mcp:tools/list",
                        &resource,
                        false,
                    )
                    .await;
                self.filter_list(index, p, answer).await
            }
            Message::Other { method, .. } | Message::Notification { method } => {
                let action = format!("mcp:{method}");
                self.forward(
                    ctx,
                    p,
                    up,
                    &path,
                    parts,
                    respond::full(bytes.clone()),
                    &action,
                    &resource,
                    false,
                )
                .await
            }
            Message::Response => {
                self.forward(
                    ctx,
                    p,
                    up,
                    &path,
                    parts,
                    respond::full(bytes.clone()),
                    "mcp:response",
                    &resource,
                    false,
                )
                .await
            }
        }
    }

    /// The class of `tool`: configured, or learnt from a `tools/list` answer.
    fn tool_class(&self, index: usize, tool: &str) -> Option<ActionClass> {
        let read = self.plan.mcp[index]
            .read_tools
            .get(tool)
            .copied()
            .or_else(|| {
                self.tools
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&(index, tool.to_owned()))
                    .copied()
            })?;
        Some(if read {
            ActionClass::Read
        } else {
            ActionClass::Write
        })
    }

    /// Remembers the classes of the tools in a `tools/list` answer.
    fn learn(&self, index: usize, answer: &Value) {
        let Some(tools) = answer
            .get("result")
            .and_then(|r| r.get("tools"))
            .and_then(Value::as_array)
        else {
            return;
        };
        let mut known = self
            .tools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for t in tools {
            if let Some(name) = t.get("name").and_then(Value::as_str) {
                let read = rpc::tool_class(t) == ActionClass::Read;
                known.insert((index, name.to_owned()), read);
            }
        }
    }

    /// Asks the upstream for its tools (as the client's session) to learn their classes, when a
    /// `tools/call` names a tool the gateway has not seen listed.
    async fn learn_tools(
        &self,
        index: usize,
        parts: &http::request::Parts,
        p: &Principal,
        ctx: &Ctx,
        path: &str,
    ) {
        let mut ask = Request::new(());
        *ask.method_mut() = Method::POST;
        *ask.uri_mut() = parts.uri.clone();
        *ask.headers_mut() = parts.headers.clone();
        ask.headers_mut().remove(CONTENT_LENGTH);
        let (ask_parts, ()) = ask.into_parts();
        let body = json!({"jsonrpc": "2.0", "id": "mandate-gateway-tools", "method": "tools/list"});
        let body = respond::full(body.to_string());
        let resource = format!("mcp/{}", self.plan.mcp[index].server);
        let up = self.plan.mcp[index].upstream;
        let answer = self
            .forward(
                ctx,
                p,
                up,
                path,
                ask_parts,
                body,
                "mcp:tools/list",
                &resource,
                false,
            )
            .await;
        if let Some((_, messages)) = read_answer(answer).await {
            for m in &messages {
                self.learn(index, m);
            }
        }
    }

    /// Filters a `tools/list` answer to the tools the token may call (JSON or SSE).
    async fn filter_list(
        &self,
        index: usize,
        p: &Principal,
        answer: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        if !answer.status().is_success() {
            return answer;
        }
        let (mut parts, body) = answer.into_parts();
        let sse = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let bytes = match read_body(body, MAX_LIST_ANSWER).await {
            Ok(b) => b,
            Err(_) => {
                return respond::error(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    "the MCP server's tool list could not be read",
                );
            }
        };
        let server = self.plan.mcp[index].server.clone();
        let mut filter = |v: &mut Value| {
            self.learn(index, v);
            rpc::filter_tools(v, &server, |scope, tool| {
                let class = match self.plan.mcp[index]
                    .read_tools
                    .get(tool.get("name").and_then(Value::as_str).unwrap_or_default())
                {
                    Some(true) => ActionClass::Read,
                    Some(false) => ActionClass::Write,
                    None => rpc::tool_class(tool),
                };
                let target = Target {
                    action: scope,
                    class,
                    least_stage: None,
                };
                admit(&p.scopes, p.claims.stage, &target).is_ok()
            });
        };
        let out = if sse {
            rewrite_sse(&String::from_utf8_lossy(&bytes), &mut filter)
        } else {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(mut v) => {
                    filter(&mut v);
                    v.to_string()
                }
                Err(_) => {
                    return respond::error(
                        StatusCode::BAD_GATEWAY,
                        "bad_gateway",
                        "the MCP server's tool list is not JSON",
                    );
                }
            }
        };
        parts.headers.remove(CONTENT_LENGTH);
        Response::from_parts(parts, respond::full(out))
    }
}

/// The JSON-RPC messages of an answer (JSON or SSE), with its status.
async fn read_answer(answer: Response<ProxyBody>) -> Option<(StatusCode, Vec<Value>)> {
    let status = answer.status();
    if !status.is_success() {
        return None;
    }
    let (parts, body) = answer.into_parts();
    let bytes = read_body(body, MAX_LIST_ANSWER).await.ok()?;
    let sse = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut messages = Vec::new();
    if sse {
        rewrite_sse(&String::from_utf8_lossy(&bytes), &mut |v: &mut Value| {
            messages.push(v.clone());
        });
    } else if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
        messages.push(v);
    }
    Some((status, messages))
}

/// Applies `f` to the JSON of each SSE event's `data` and writes the stream back. Events whose
/// data is not JSON, comments and other fields pass unchanged.
pub(crate) fn rewrite_sse(text: &str, f: &mut dyn FnMut(&mut Value)) -> String {
    let mut out = String::with_capacity(text.len());
    let normalized = text.replace("\r\n", "\n");
    let mut events = normalized.split("\n\n").peekable();
    while let Some(event) = events.next() {
        let last = events.peek().is_none();
        if event.is_empty() {
            if !last {
                out.push_str("\n\n");
            }
            continue;
        }
        let mut data = Vec::new();
        let mut others = Vec::new();
        for line in event.split('\n') {
            match line.strip_prefix("data:") {
                Some(d) => data.push(d.strip_prefix(' ').unwrap_or(d)),
                None => others.push(line),
            }
        }
        let rewritten = if data.is_empty() {
            None
        } else {
            serde_json::from_str::<Value>(&data.join("\n"))
                .ok()
                .map(|mut v| {
                    f(&mut v);
                    v.to_string()
                })
        };
        match rewritten {
            Some(json) => {
                for o in others {
                    out.push_str(o);
                    out.push('\n');
                }
                out.push_str("data: ");
                out.push_str(&json);
            }
            None => out.push_str(event),
        }
        if !last {
            out.push_str("\n\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn sse_events_are_rewritten_in_place() {
        let text = "id: 1\nevent: message\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: not json\n\n";
        let out = rewrite_sse(text, &mut |v: &mut Value| {
            v["a"] = json!(2);
        });
        assert_eq!(
            out,
            "id: 1\nevent: message\ndata: {\"a\":2}\n\n: keep-alive\n\ndata: not json\n\n"
        );
    }

    #[test]
    fn multi_line_data_is_one_json_document() {
        let text = "data: {\"a\":\ndata: 1}\n\n";
        let mut seen = Vec::new();
        rewrite_sse(text, &mut |v: &mut Value| seen.push(v.clone()));
        assert_eq!(seen, vec![json!({"a": 1})]);
    }
}
