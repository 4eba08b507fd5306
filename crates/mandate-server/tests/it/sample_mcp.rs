//! The sample upstream's MCP server at `/mcp`, driven with raw JSON-RPC and with a real rmcp
//! client — plus rmcp's own server, so the client side of the test support is known to work
//! against both.

use reqwest::StatusCode;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

use super::mcp_support::{Credential, RmcpUpstream, connect, first_text, try_connect};
use super::sample::{KEY, http, start};
use mandate_server::sample::SampleHandle;

/// Posts one raw JSON-RPC body to `/mcp`.
async fn rpc(
    h: &SampleHandle,
    body: &str,
    session: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut rb = http()
        .post(format!("{}/mcp", h.url()))
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_owned());
    if let Some(s) = session {
        rb = rb.header("mcp-session-id", s);
    }
    let resp = rb.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_mcp_endpoint_speaks_json_rpc_and_refuses_garbage_clearly() {
    let h = start(None).await;
    let init = |v: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"{v}","capabilities":{{}},"clientInfo":{{"name":"t","version":"1"}}}}}}"#
        )
    };
    let (s, headers, r) = rpc(&h, &init("2025-06-18"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(r["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(r["result"]["serverInfo"]["name"], "crm");
    assert_eq!(
        r["result"]["capabilities"],
        json!({"tools": {"listChanged": false}})
    );
    let session = headers["mcp-session-id"].to_str().unwrap().to_owned();
    let (_, _, r) = rpc(&h, &init("2099-01-01"), None).await;
    assert_eq!(r["result"]["protocolVersion"], "2025-11-25");

    let (s, _, r) = rpc(
        &h,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        Some(&session),
    )
    .await;
    assert_eq!((s, r), (StatusCode::ACCEPTED, Value::Null));
    let (s, _, r) = rpc(
        &h,
        r#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#,
        Some(&session),
    )
    .await;
    assert_eq!(
        (s, r),
        (
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": "p", "result": {}})
        )
    );
    // Without a session it is served statelessly; with an unknown one it is 404.
    let (s, _, r) = rpc(
        &h,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["result"]["tools"].as_array().unwrap().len(), 2);
    let (s, _, r) = rpc(
        &h,
        r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
        Some("gone"),
    )
    .await;
    assert_eq!(
        (s, r["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!(-32001))
    );

    for (body, status, code) in [
        ("{nope", StatusCode::BAD_REQUEST, -32700),
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        ("7", StatusCode::BAD_REQUEST, -32600),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1}"#,
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/list"}"#,
            StatusCode::OK,
            -32601,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
            StatusCode::OK,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
            StatusCode::OK,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm_rf"}}"#,
            StatusCode::OK,
            -32602,
        ),
    ] {
        let (s, headers, r) = rpc(&h, body, None).await;
        assert_eq!(
            (s, r["error"]["code"].clone()),
            (status, json!(code)),
            "{body}: {r}"
        );
        assert!(
            r["error"]["message"].as_str().unwrap().len() > 5,
            "{body}: {r}"
        );
        assert_eq!(headers["content-type"], "application/json");
    }
    // A response from the client is accepted and ignored.
    let (s, _, _) = rpc(&h, r#"{"jsonrpc":"2.0","id":9,"result":{}}"#, None).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    // Bad arguments are a tool error the model can read, not a protocol error.
    for args in [r#"{}"#, r#"{"id":[]}"#, r#""9821""#, r#"{"id":"1"}"#] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"lookup_customer","arguments":{args}}}}}"#
        );
        let (s, _, r) = rpc(&h, &body, None).await;
        assert_eq!(
            (s, r["result"]["isError"].clone()),
            (StatusCode::OK, json!(true)),
            "{args}: {r}"
        );
    }
    let resp = http()
        .get(format!("{}/mcp", h.url()))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let resp = http()
        .delete(format!("{}/mcp", h.url()))
        .header("x-api-key", KEY)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (s, _, _) = rpc(
        &h,
        r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
        Some(&session),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "an ended session is gone");
}

#[tokio::test]
async fn an_rmcp_client_uses_the_sample_mcp_server() {
    let h = start(None).await;
    let url = format!("{}/mcp", h.url());
    let client = connect(&url, Credential::Header("x-api-key", KEY)).await;
    let info = client.peer_info().expect("initialized");
    assert_eq!(info.server_info.as_ref().unwrap().name, "crm");

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["lookup_customer", "delete_customer"]);
    let lookup = tools[0].annotations.as_ref().unwrap();
    assert_eq!(
        (lookup.read_only_hint, lookup.destructive_hint),
        (Some(true), Some(false))
    );
    let delete = tools[1].annotations.as_ref().unwrap();
    assert_eq!(
        (delete.read_only_hint, delete.destructive_hint),
        (Some(false), Some(true))
    );

    let args = |id: &str| json!({"id": id}).as_object().unwrap().clone();
    let found = client
        .call_tool(CallToolRequestParams::new("lookup_customer").with_arguments(args("9821")))
        .await
        .unwrap();
    assert_eq!(found.is_error, Some(false));
    assert_eq!(
        found.structured_content.as_ref().unwrap()["name"],
        "Acme Corp"
    );
    let text: Value = serde_json::from_str(&first_text(&found)).unwrap();
    assert_eq!(text["name"], "Acme Corp");

    let deleted = client
        .call_tool(CallToolRequestParams::new("delete_customer").with_arguments(args("7702")))
        .await
        .unwrap();
    assert_eq!(first_text(&deleted), "deleted customer 7702");
    assert!(h.sample().customer("7702").is_none());
    let gone = client
        .call_tool(CallToolRequestParams::new("lookup_customer").with_arguments(args("7702")))
        .await
        .unwrap();
    assert_eq!(
        (gone.is_error, first_text(&gone)),
        (Some(true), "no customer 7702".to_owned())
    );
    let unknown = client
        .call_tool(CallToolRequestParams::new("drop_tables"))
        .await;
    assert!(unknown.is_err(), "an unknown tool is a protocol error");
    client.cancel().await.unwrap();

    let mcp: Vec<_> = h
        .sample()
        .seen()
        .into_iter()
        .filter(|s| s.path == "/mcp")
        .collect();
    assert!(mcp.len() >= 5, "{mcp:?}");
    for s in &mcp {
        assert!(s.api_key_ok, "{s:?}");
        assert_eq!(s.header("x-api-key"), Some(KEY));
    }
    // What rmcp's client does: initialize without a session, then send the session id and the
    // negotiated version on everything, try a GET stream (405 here, which it accepts), and end
    // the session with DELETE when closed.
    assert_eq!(mcp[0].header("mcp-session-id"), None);
    let sid = mcp[1]
        .header("mcp-session-id")
        .expect("session id sent back");
    for s in &mcp[1..] {
        assert_eq!(s.header("mcp-session-id"), Some(sid), "{s:?}");
        assert_eq!(
            s.header("mcp-protocol-version"),
            Some("2025-11-25"),
            "{s:?}"
        );
    }
    assert!(mcp.iter().any(|s| s.method == "GET"));
    assert_eq!(mcp.last().unwrap().method, "DELETE");

    // rmcp's bearer setting works too; a wrong key is refused at connect.
    let client = connect(&url, Credential::Bearer(KEY)).await;
    assert_eq!(client.list_all_tools().await.unwrap().len(), 2);
    client.cancel().await.unwrap();
    assert!(
        try_connect(&url, Some(Credential::Bearer("wrong")))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_rmcp_client_also_talks_to_an_rmcp_server() {
    let upstream = RmcpUpstream::start(KEY).await;
    let client = connect(&upstream.url(), Credential::Header("x-api-key", KEY)).await;
    assert_eq!(
        client
            .peer_info()
            .unwrap()
            .server_info
            .as_ref()
            .unwrap()
            .name,
        "crm"
    );
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 2);
    assert_eq!(
        tools[0].annotations.as_ref().unwrap().read_only_hint,
        Some(true)
    );
    assert_eq!(
        tools[1].annotations.as_ref().unwrap().destructive_hint,
        Some(true)
    );
    let args = json!({"id": "9821"}).as_object().unwrap().clone();
    let found = client
        .call_tool(CallToolRequestParams::new("lookup_customer").with_arguments(args.clone()))
        .await
        .unwrap();
    assert_eq!(found.structured_content.unwrap()["name"], "Acme Corp");
    let deleted = client
        .call_tool(CallToolRequestParams::new("delete_customer").with_arguments(args))
        .await
        .unwrap();
    assert_eq!(first_text(&deleted), "deleted customer 9821");
    client.cancel().await.unwrap();
    let seen = upstream.seen_headers();
    assert!(seen.len() >= 4);
    assert!(
        seen.iter()
            .all(|h| h.iter().any(|(n, v)| n == "x-api-key" && v == KEY))
    );

    let refused = Some(Credential::Header("x-api-key", "wrong"));
    assert!(try_connect(&upstream.url(), refused).await.is_err());
    assert!(try_connect(&upstream.url(), None).await.is_err());
}
