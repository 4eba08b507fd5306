//! Draft stage at the gateway (SPEC §6, issue 6): a write under a `draft` token is held, shown
//! to a human, and — only once an allowed approver says yes — sent upstream exactly once, even if
//! approved twice or the gateway restarts in between; the agent fetches the upstream's answer.
//! Every refusal (self-approval, no rights, an admin credential, expiry, deny, a revocation in
//! between) leaves the upstream untouched.

use std::net::SocketAddr;
use std::time::Duration;

use mandate_gateway::config::{GatewayConfig, UpstreamConfig};
use mandate_gateway::forward::Injection;
use mandate_gateway::route::RouteConfig;
use serde_json::{Value, json};

use super::harness::*;

async fn start() -> Server {
    Server::start_configured(|c| {
        c.gateway.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await
}

use super::gateway::{gw, sample};

/// A `draft`-stage token of alice through support-v2 for `tickets:create`, audience `gateway`.
pub(super) async fn draft_token(s: &Server, gateway: &str) -> String {
    let mut form = exchange_form(
        &s.alice(),
        TYPE_JWT,
        "tickets:create",
        &[("stage", "draft"), ("task", "ticket-12847")],
    );
    form.retain(|(k, _)| k != "resource");
    form.push(("resource".into(), gateway.to_owned()));
    let r = s.token_as(&s.agent("support-v2"), form).await;
    r.expect(200);
    assert_eq!(r.body["stage"], "draft");
    r.access_token()
}

pub(super) async fn post_ticket(s: &Server, gateway: &str, token: &str, subject: &str) -> Reply {
    s.send(
        reqwest::Client::new()
            .post(format!("{gateway}/tickets"))
            .bearer_auth(token)
            .header("idempotency-key", "k-1")
            .json(&json!({"customer": "9821", "subject": subject})),
    )
    .await
}

async fn poll(s: &Server, url: &str, token: &str) -> Reply {
    s.send(reqwest::Client::new().get(url).bearer_auth(token))
        .await
}

/// `POST /v1/approvals/{id}/{verb}` as the human whose IdP token is `as_user`.
async fn decide(s: &Server, id: &str, verb: &str, as_user: &str) -> Reply {
    s.send(
        s.http
            .post(s.at(&format!("/v1/approvals/{id}/{verb}")))
            .bearer_auth(as_user)
            .json(&json!({"reason": "checked with the customer"})),
    )
    .await
}

fn carol(s: &Server) -> String {
    s.user_token(CAROL, &["support", "approver"], 600)
}

/// Polls until the answer is not `202` (the dispatcher has sent it), at most 5 s.
async fn poll_until_done(s: &Server, url: &str, token: &str) -> Reply {
    for _ in 0..200 {
        let r = poll(s, url, token).await;
        if r.status != 202 {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the held write was not sent within 5 s");
}

pub(super) fn tickets_with(s: &Server, subject: &str) -> usize {
    sample(s)
        .tickets()
        .iter()
        .filter(|t| t.subject == subject)
        .count()
}

fn posts_seen(sample: &mandate_server::sample::Sample) -> usize {
    sample
        .seen()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/tickets")
        .count()
}

async fn event_where(s: &Server, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    for _ in 0..100 {
        if let Some(e) = s.audit("limit=10000").await.into_iter().find(&pred) {
            return Some(e);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn a_draft_write_is_held_approved_by_the_owner_sent_once_and_fetched() {
    let s = start().await;
    let base = gw(&s);
    let token = draft_token(&s, &base).await;

    // Held: 202, a proposal id, where to poll; nothing reaches the CRM.
    let r = post_ticket(&s, &base, &token, "refund please").await;
    r.expect(202);
    let id = r.body["proposal"].as_str().unwrap().to_owned();
    let url = r.body["poll"].as_str().unwrap().to_owned();
    assert_eq!(r.header("location"), url);
    assert_eq!(url, format!("{base}/.mandate/proposals/{id}"));
    assert_eq!(tickets_with(&s, "refund please"), 0);
    assert_eq!(posts_seen(sample(&s)), 0);

    // Shown to humans: what exactly will happen, for whom, by which agent.
    let shown = s.admin_get(&format!("/v1/approvals/{id}")).await;
    shown.expect(200);
    assert_eq!(shown.body["kind"], "held_write");
    assert_eq!(shown.body["status"], "pending");
    assert_eq!(shown.body["user"], ALICE);
    assert_eq!(shown.body["chain"], json!(["support-v2"]));
    assert_eq!(shown.body["task"], "ticket-12847");
    assert_eq!(
        shown.body["approvers"],
        json!({"owner": CAROL, "groups": ["approver"], "never": ALICE})
    );
    let message = shown.body["binding_message"].as_str().unwrap();
    for part in [
        "POST /tickets",
        "tickets:create",
        ALICE,
        "support-v2",
        "refund please",
    ] {
        assert!(message.contains(part), "{message} lacks {part}");
    }
    assert!(!shown.body.to_string().contains(&token));
    let requested = event_where(&s, |e| e["kind"] == "approval.requested").await;
    assert!(requested.is_some(), "the request is audited");

    // The agent polls: pending. Another principal's token cannot see it.
    let r = poll(&s, &url, &token).await;
    r.expect(202);
    assert_eq!(r.body["status"], "pending");
    let mut other = exchange_form(
        &s.user_token(CAROL, &["support"], 600),
        TYPE_JWT,
        "tickets:create",
        &[("stage", "draft")],
    );
    other.retain(|(k, _)| k != "resource");
    other.push(("resource".into(), base.clone()));
    let other = s
        .token_as(&s.agent("support-v2"), other)
        .await
        .access_token();
    poll(&s, &url, &other).await.expect(404);

    // Refused deciders: the user herself, someone without rights, an admin credential.
    let r = decide(&s, &id, "approve", &s.alice()).await;
    r.expect(403);
    let r = decide(&s, &id, "approve", &s.user_token(BOB, &["finance"], 600)).await;
    r.expect(403);
    let r = s
        .send(
            s.admin_req(
                reqwest::Method::POST,
                &format!("/v1/approvals/{id}/approve"),
            )
            .json(&json!({})),
        )
        .await;
    r.expect(403);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(posts_seen(sample(&s)), 0, "no refusal sends anything");

    // The owner approves: sent once, with the CRM's key and a Transaction Token naming carol.
    decide(&s, &id, "approve", &carol(&s)).await.expect(200);
    let r = poll_until_done(&s, &url, &token).await;
    r.expect(201);
    assert_eq!(r.header("mandate-proposal-status"), "sent");
    assert_eq!(r.body["subject"], "refund please");
    assert_eq!(tickets_with(&s, "refund please"), 1);
    let seen = sample(&s).seen();
    let sent = seen
        .iter()
        .find(|r| r.method == "POST" && r.path == "/tickets")
        .unwrap();
    assert!(
        sent.api_key_ok,
        "the upstream's real credential was injected"
    );
    assert_eq!(sent.header("idempotency-key"), Some("k-1"));
    assert!(sent.headers.iter().all(|(_, v)| !v.contains(&token)));
    let txn = sent.txn.as_ref().expect("a verified Transaction Token");
    assert_eq!(txn["tctx"]["approver"], CAROL);
    assert_eq!(txn["tctx"]["user"], ALICE);

    // Approved again: refused, and still sent once; polling again gives the same answer.
    decide(&s, &id, "approve", &carol(&s)).await.expect(409);
    s.admin_get(&format!("/v1/approvals/{id}"))
        .await
        .expect(200);
    let again = poll(&s, &url, &token).await;
    again.expect(201);
    assert_eq!(again.body, r.body);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(posts_seen(sample(&s)), 1);

    // The audit line names the agent and the approver.
    let sent_event = event_where(&s, |e| {
        e["kind"] == "gateway.request"
            && e["decision"] == "allow"
            && e["action"] == "tickets:create"
    })
    .await
    .expect("the send is audited");
    assert_eq!(sent_event["user"], ALICE);
    assert_eq!(sent_event["chain"], json!(["support-v2"]));
    assert!(sent_event["reason"].as_str().unwrap().contains(CAROL));
    let detail: Value = serde_json::from_str(sent_event["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["approver"], CAROL);
    assert_eq!(detail["approval"], id.as_str());
    assert!(
        event_where(&s, |e| e["kind"] == "approval.approved")
            .await
            .is_some()
    );
    assert!(
        event_where(&s, |e| e["kind"] == "approval.refused")
            .await
            .is_some()
    );
    s.shutdown().await;
}

#[tokio::test]
async fn denied_expired_or_revoked_held_writes_never_reach_the_upstream() {
    let s = start().await;
    let base = gw(&s);
    let token = draft_token(&s, &base).await;

    // Too large to hold: refused before anything is stored.
    let big = "x".repeat(1024 * 1024 + 1);
    let r = post_ticket(&s, &base, &token, &big).await;
    r.expect(413);
    assert!(r.description().contains("held for approval"), "{}", r.body);

    // Denied.
    let r = post_ticket(&s, &base, &token, "deny me").await;
    r.expect(202);
    let (denied, denied_url) = (
        r.body["proposal"].as_str().unwrap().to_owned(),
        r.body["poll"].as_str().unwrap().to_owned(),
    );
    decide(&s, &denied, "deny", &carol(&s)).await.expect(200);
    let r = poll(&s, &denied_url, &token).await;
    r.expect(403);
    assert_eq!(r.body["error"], "access_denied");
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains(CAROL)
    );
    decide(&s, &denied, "approve", &carol(&s)).await.expect(409);

    // Expired: nobody decided within `approvals.ttl`.
    let r = post_ticket(&s, &base, &token, "too late").await;
    r.expect(202);
    let (late, late_url) = (
        r.body["proposal"].as_str().unwrap().to_owned(),
        r.body["poll"].as_str().unwrap().to_owned(),
    );
    s.clock.advance(901);
    let r = decide(&s, &late, "approve", &carol(&s)).await;
    r.expect(409);
    assert!(
        r.body["message"].as_str().unwrap().contains("expired"),
        "{}",
        r.body
    );
    s.clock.advance(-901);
    let r = poll(&s, &late_url, &token).await;
    assert!(r.status == 202 || r.status == 410, "{}", r.body);
    s.clock.advance(901);
    let fresh = draft_token(&s, &base).await;
    // The poll needs a live token of the same principal; the old one expired with the clock.
    let r = poll(&s, &late_url, &fresh).await;
    r.expect(410);
    assert_eq!(r.body["status"], "expired");

    // Approved, but the user was revoked since: not sent, and the agent is told why.
    let r = post_ticket(&s, &base, &fresh, "revoked since").await;
    r.expect(202);
    let (revoked, revoked_url) = (
        r.body["proposal"].as_str().unwrap().to_owned(),
        r.body["poll"].as_str().unwrap().to_owned(),
    );
    s.revoke("user", ALICE).await.expect(201);
    decide(&s, &revoked, "approve", &carol(&s))
        .await
        .expect(200);
    let failed = event_where(&s, |e| {
        e["kind"] == "gateway.request"
            && e["reason"].as_str().is_some_and(|r| r.contains("not sent"))
    })
    .await
    .expect("the refused send is audited");
    assert_eq!(failed["decision"], "deny");
    let stored = s.admin_get(&format!("/v1/approvals/{revoked}")).await;
    assert_eq!(stored.body["dispatch"], "sent");
    assert_eq!(stored.body["outcome"]["status"], 403);
    // The revoked token cannot poll any more.
    poll(&s, &revoked_url, &fresh).await.expect(401);

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(posts_seen(sample(&s)), 0, "nothing reached the CRM");
    s.shutdown().await;
}

fn ticket_route() -> RouteConfig {
    RouteConfig {
        method: "POST".into(),
        path: "/tickets".into(),
        action: "tickets:create".into(),
        resource: "tickets".into(),
        stage: None,
        upstream: None,
        audience: None,
    }
}

#[tokio::test]
async fn an_approval_made_while_no_gateway_runs_is_sent_once_by_the_next_one() {
    // No in-process gateway: only standalone ones, started and stopped by the test.
    let s = Server::start().await;
    let (upstream, credential) =
        super::standalone_gateway::sample_upstream_and_credential(&s).await;
    let config = GatewayConfig {
        public_url: Some("http://gateway.test".into()),
        upstreams: vec![UpstreamConfig {
            name: "crm".into(),
            url: upstream.url(),
            secret: Some("crm-key".into()),
            credential: Some(Injection::Header {
                name: "x-api-key".into(),
                format: None,
            }),
            timeout_secs: None,
            audience: None,
        }],
        routes: vec![ticket_route()],
        ..GatewayConfig::default()
    };
    let launch = || {
        mandate_gateway::standalone::start(
            &config,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &s.url,
            credential.clone(),
            5,
        )
    };
    let first = launch().await.expect("the standalone gateway starts");
    let token = draft_token(&s, "http://gateway.test").await;
    let r = post_ticket(&s, &format!("http://{}", first.addr), &token, "while down").await;
    r.expect(202);
    let id = r.body["proposal"].as_str().unwrap().to_owned();
    first.shutdown().await;

    // Approved while no gateway runs (twice: the second is refused).
    decide(&s, &id, "approve", &carol(&s)).await.expect(200);
    decide(&s, &id, "approve", &carol(&s)).await.expect(409);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(posts_seen(upstream.sample()), 0);

    // Two gateways start: exactly one sends it.
    let (a, b) = tokio::join!(launch(), launch());
    let (a, b) = (a.unwrap(), b.unwrap());
    let url = format!("http://{}/.mandate/proposals/{id}", a.addr);
    let r = poll_until_done(&s, &url, &token).await;
    r.expect(201);
    assert_eq!(r.body["subject"], "while down");
    let url_b = format!("http://{}/.mandate/proposals/{id}", b.addr);
    poll(&s, &url_b, &token).await.expect(201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(posts_seen(upstream.sample()), 1, "sent exactly once");
    a.shutdown().await;
    b.shutdown().await;

    // And never again after a restart of everything.
    let again = launch().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(posts_seen(upstream.sample()), 1);
    again.shutdown().await;
}

#[tokio::test]
async fn a_destructive_mcp_tool_call_in_draft_stage_is_held_and_sent_on_approval() {
    use super::mcp_support::{self, Credential};
    use rmcp::model::CallToolRequestParams;

    let s = start().await;
    let base = gw(&s);
    let dave = s.user_token("dave@example.com", &["admin"], 600);
    let mut form = exchange_form(
        &dave,
        TYPE_JWT,
        "mcp.crm.delete_customer:call",
        &[("stage", "draft")],
    );
    form.retain(|(k, _)| k != "resource");
    form.push(("resource".into(), base.clone()));
    let r = s.token_as(&s.agent("support-v2"), form).await;
    r.expect(200);
    let token = r.access_token();
    let client = mcp_support::connect(&format!("{base}/mcp"), Credential::Bearer(&token)).await;
    let mut args = serde_json::Map::new();
    args.insert("id".into(), json!("7702"));
    let held = client
        .call_tool(CallToolRequestParams::new("delete_customer").with_arguments(args))
        .await
        .unwrap();
    assert_eq!(held.is_error, Some(false));
    let info = held
        .structured_content
        .clone()
        .expect("the proposal, structured");
    assert_eq!(info["status"], "pending");
    let id = info["proposal"].as_str().unwrap().to_owned();
    assert!(mcp_support::first_text(&held).contains("held for a human's approval"));
    assert!(sample(&s).customer("7702").is_some(), "not deleted yet");

    let shown = s.admin_get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(shown.body["ask"]["action"], "mcp.crm.delete_customer:call");
    assert_eq!(shown.body["ask"]["resource"], "mcp/crm/delete_customer");
    decide(&s, &id, "approve", &carol(&s)).await.expect(200);
    let url = info["poll"].as_str().unwrap().to_owned();
    let r = poll_until_done(&s, &url, &token).await;
    r.expect(200);
    assert_eq!(r.header("mandate-proposal-status"), "sent");
    assert!(
        sample(&s).customer("7702").is_none(),
        "deleted once approved"
    );
    client.cancel().await.unwrap();
    s.shutdown().await;
}
