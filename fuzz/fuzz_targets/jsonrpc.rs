//! The gateway's MCP JSON-RPC parsing (`mandate_gateway::mcp::parse`), the tool scope naming and
//! the `tools/list` answer filter.
//!
//! Properties: a `tools/call` always has a non-empty tool name of at most 128 bytes, object
//! arguments and a string or integer id; a tool's scope, when it has one, is
//! `mcp.<server>.<tool>:call`; filtering removes only tools and keeps only callable ones.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::scope::Scope;
use mandate_gateway::mcp::{Message, filter_tools, parse, tool_class, tool_scope};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Message::CallTool {
            id,
            tool,
            arguments,
        }) => {
            assert!(!tool.is_empty() && tool.len() <= 128);
            assert!(arguments.is_object());
            assert!(id.is_string() || id.is_i64() || id.is_u64());
            if let Some(scope) = tool_scope("crm", &tool) {
                assert_eq!(scope.as_str(), format!("mcp.crm.{tool}:call"));
                assert_eq!(Scope::parse(scope.as_str()).as_ref(), Ok(&scope));
            }
        }
        Ok(Message::ListTools { id } | Message::Other { id, .. }) => {
            assert!(id.is_string() || id.is_i64() || id.is_u64());
        }
        Ok(Message::Notification { .. } | Message::Response) => {}
        Err(e) => {
            assert!(matches!(e.code(), -32700 | -32600 | -32602));
        }
    }
    // The same bytes as a `tools/list` answer from an upstream.
    if let Ok(mut answer) = serde_json::from_slice::<Value>(data) {
        let count = |v: &Value| {
            v.get("result")
                .and_then(|r| r.get("tools"))
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        };
        let before = count(&answer);
        let removed = filter_tools(&mut answer, "crm", |scope, tool| {
            let _ = tool_class(tool);
            !scope.action().is_empty() && scope.resource().len() % 2 == 0
        });
        assert_eq!(count(&answer) + removed, before);
        if let Some(tools) = answer
            .get("result")
            .and_then(|r| r.get("tools"))
            .and_then(Value::as_array)
        {
            for t in tools {
                let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
                let scope = tool_scope("crm", name).expect("a kept tool has a scope");
                assert_eq!(scope.resource().len() % 2, 0);
            }
        }
    }
});
