//! Nothing a client sends makes the server fail: garbage gets a 4xx, never a 5xx, and the server
//! keeps answering.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::json;

use super::harness::*;

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    SystemRandom::new().fill(&mut v).unwrap();
    v
}

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let srv = Server::start().await;
    for path in ["/healthz", "/readyz"] {
        let r = srv.send(srv.http.get(srv.at(path))).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    // Unknown routes are a JSON 404, wrong methods a 405.
    let r = srv.send(srv.http.get(srv.at("/no/such/route"))).await;
    r.expect(404);
    let r = srv.send(srv.http.get(srv.at("/oauth2/token"))).await;
    r.expect(405);
    srv.shutdown().await;
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let srv = Server::start().await;
    let big = "a".repeat(17 * 1024);
    for path in ["/healthz", "/oauth2/token", "/v1/agents"] {
        let r = srv
            .send(srv.http.get(srv.at(path)).header("x-filler", &big))
            .await;
        assert_eq!(r.status, 431, "{path}: {}", r.body);
    }
    assert!(srv.healthy().await);
    srv.shutdown().await;
}

#[tokio::test]
async fn garbage_never_gets_a_5xx_and_the_server_keeps_answering() {
    let srv = Server::start().await;
    let support = srv.agent("support-v2");
    let mut tried = 0;
    // Never a 5xx; `refuse` also insists on a 4xx.
    let check = |what: String, r: Reply| {
        assert!(
            (200..500).contains(&r.status),
            "{what}: got {}: {}",
            r.status,
            r.body
        );
    };
    let refuse = |what: String, r: Reply| {
        assert!(
            (400..500).contains(&r.status),
            "{what}: expected a 4xx, got {}: {}",
            r.status,
            r.body
        );
    };

    // Admin bodies that are not what they should be.
    let nested = format!("{{\"id\": {}{}}}", "[".repeat(5000), "]".repeat(5000));
    let nested_obj = format!("{}1{}", "{\"a\":".repeat(3000), "}".repeat(3000));
    let bodies: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        ("not JSON", Some("application/json"), b"not json".to_vec()),
        ("no content type", None, b"{}".to_vec()),
        ("an array", Some("application/json"), b"[1,2,3]".to_vec()),
        ("null", Some("application/json"), b"null".to_vec()),
        (
            "id is a number",
            Some("application/json"),
            br#"{"id": 5, "owner": "x"}"#.to_vec(),
        ),
        (
            "deeply nested array",
            Some("application/json"),
            nested.into_bytes(),
        ),
        (
            "deeply nested object",
            Some("application/json"),
            nested_obj.into_bytes(),
        ),
        (
            "truncated",
            Some("application/json"),
            br#"{"id": "x", "owner": "#.to_vec(),
        ),
        ("random bytes", Some("application/json"), random_bytes(2048)),
        ("too large", Some("application/json"), {
            let mut b = br#"{"id": "big", "owner": "x", "description": ""#.to_vec();
            b.extend(std::iter::repeat_n(b'x', 70 * 1024));
            b.extend(br#""}"#);
            b
        }),
        (
            "huge ceiling",
            Some("application/json"),
            json!({"id": "huge", "owner": "x", "ceiling": vec!["a:b"; 5000]})
                .to_string()
                .into_bytes(),
        ),
    ];
    srv.admin_post(
        "/v1/tasks",
        &json!({"id": "garbage-task", "purpose": "p", "input": "i", "agent": "support-v2"}),
    )
    .await
    .expect(201);
    for (method, path) in [
        (Method::POST, "/v1/agents"),
        (Method::POST, "/v1/revocations"),
        (Method::POST, "/v1/credentials"),
        (Method::POST, "/v1/dev/user-token"),
        (Method::POST, "/v1/agents/support-v2/keys"),
        (Method::POST, "/v1/tasks"),
        (Method::POST, "/v1/tasks/garbage-task/steps"),
        (Method::POST, "/v1/tasks/garbage-task/complete"),
        (Method::PUT, "/v1/secrets/garbage"),
        (Method::POST, "/ssf/streams"),
        (Method::PATCH, "/ssf/streams"),
        (Method::PUT, "/ssf/streams"),
        (Method::POST, "/ssf/status"),
        (Method::POST, "/ssf/verify"),
        (Method::POST, "/ssf/subjects:add"),
        (Method::POST, "/ssf/subjects:remove"),
        (Method::POST, "/ssf/poll/no-such-stream"),
        (Method::POST, "/access/v1/evaluation"),
        (Method::POST, "/access/v1/evaluations"),
        (Method::POST, "/v1/approvals/no-such-approval/approve"),
        (Method::POST, "/v1/approvals/no-such-approval/deny"),
        (Method::POST, "/v1/reviews"),
        (Method::POST, "/v1/reviews/no-such-review/attest"),
        (Method::POST, "/v1/reviews/no-such-review/remove"),
    ] {
        for (what, ct, body) in &bodies {
            let mut req = srv.admin_req(method.clone(), path).body(body.clone());
            if let Some(ct) = ct {
                req = req.header("content-type", *ct);
            }
            let r = srv.send(req).await;
            // `{}` is a complete stream configuration (every member is optional in SSF) and a
            // complete review round (every member is optional), and AuthZEN answers an
            // incomplete request with a reasoned `decision: false`.
            let lenient = (matches!(path, "/ssf/streams" | "/v1/reviews")
                && method == Method::POST
                && *what == "no content type")
                || path.starts_with("/access/");
            if lenient {
                check(format!("{method} {path} {what}"), r);
            } else {
                refuse(format!("{method} {path} {what}"), r);
            }
            tried += 1;
        }
    }
    let r = srv
        .send(
            srv.admin_req(Method::PATCH, "/v1/agents/support-v2")
                .json(&json!({"ceiling": ["NOT VALID"], "max_stage": 7})),
        )
        .await;
    refuse("PATCH garbage".into(), r);

    // Approvals: garbage bodies, ids and queries from the human who may decide.
    let approval = mandate_server::approvals::open(
        &srv.running().state,
        mandate_server::approvals::Request {
            ask: mandate_core::approval::Ask::Escalation {
                scope: "tickets:create".into(),
                stage: mandate_core::stage::Stage::Execute,
                audience: CRM.into(),
            },
            user: Some(ALICE.into()),
            chain: vec!["support-v2".into()],
            agent: "support-v2".into(),
            task: None,
            justification: "garbage test".into(),
            binding_message: "support-v2 will get `tickets:create` for alice".into(),
            payload: json!({}),
            request_id: None,
            requested_by: "agent:support-v2".into(),
        },
    )
    .await
    .unwrap()
    .approval
    .id;
    let carol = srv.user_token(CAROL, &["support", "approver"], 600);
    let long_reason = json!({"reason": "r".repeat(5000)}).to_string().into_bytes();
    let odd_reason = json!({"reason": 5}).to_string().into_bytes();
    let unknown_field = json!({"reason": "ok", "approved": false})
        .to_string()
        .into_bytes();
    for verb in ["approve", "deny"] {
        let path = format!("/v1/approvals/{approval}/{verb}");
        for (what, ct, body) in bodies.iter().chain(&[
            ("long reason", Some("application/json"), long_reason.clone()),
            (
                "reason is a number",
                Some("application/json"),
                odd_reason.clone(),
            ),
            (
                "unknown field",
                Some("application/json"),
                unknown_field.clone(),
            ),
        ]) {
            if *what == "no content type" {
                continue;
            }
            let mut req = srv
                .http
                .post(srv.at(&path))
                .bearer_auth(&carol)
                .body(body.clone());
            if let Some(ct) = ct {
                req = req.header("content-type", *ct);
            }
            refuse(format!("POST {path} {what}"), srv.send(req).await);
            tried += 1;
        }
    }
    for path in [
        "/v1/approvals?status=sideways",
        "/v1/approvals?status=",
        "/v1/approvals?kind=coffee",
        "/v1/approvals?limit=-1",
        "/v1/approvals?limit=99999999999",
        "/v1/approvals?colour=blue",
        "/v1/approvals/%00%ff",
        "/v1/approvals/no-such-approval",
    ] {
        refuse(format!("GET {path}"), srv.admin_get(path).await);
        tried += 1;
    }
    let long_approval = format!("/v1/approvals/{}", "x".repeat(8000));
    refuse(
        "GET long approval id".into(),
        srv.admin_get(&long_approval).await,
    );
    let r = srv
        .send(
            srv.http
                .post(srv.at(&format!("{long_approval}/approve")))
                .bearer_auth(&carol),
        )
        .await;
    refuse("POST long approval id".into(), r);
    let shown = srv.admin_get(&format!("/v1/approvals/{approval}")).await;
    shown.expect(200);
    assert_eq!(shown.body["status"], "pending", "garbage decided nothing");

    // Odd admin queries and paths.
    for path in [
        "/v1/audit?since=yesterday",
        "/v1/audit?limit=-1",
        "/v1/audit?decision=maybe",
        "/v1/audit?order=sideways",
        "/v1/audit?colour=blue",
        "/v1/audit?after=abc",
        "/v1/tasks/%00%ff",
        "/v1/tasks/no-such-task",
        "/v1/tasks?status=sideways",
        "/v1/tasks?limit=-5",
        "/v1/audit?on=2026-02-30",
        "/v1/audit?format=xml",
        "/v1/revocations/events?after=-1",
        "/ssf/streams?stream_id=%00",
        "/ssf/status?stream_id=nope",
    ] {
        refuse(format!("GET {path}"), srv.admin_get(path).await);
        tried += 1;
    }
    let long_id = format!("/v1/agents/{}", "x".repeat(8000));
    refuse("GET long id".into(), srv.admin_get(&long_id).await);

    // Tokens that are not tokens, in every place a token goes.
    let random_text = String::from_utf8_lossy(&random_bytes(512)).into_owned();
    let b64 = |n| URL_SAFE_NO_PAD.encode(random_bytes(n));
    let fake_tokens = vec![
        random_text,
        "a.b.c".to_owned(),
        "..".to_owned(),
        ".".repeat(5000),
        format!("{}.{}.{}", b64(40), b64(200), b64(64)),
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode("[1,2]"),
            URL_SAFE_NO_PAD.encode("{}"),
            b64(64)
        ),
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"x","crit":["b64"]}"#),
            URL_SAFE_NO_PAD.encode(r#"{"iss":"x","act":{"act":{"act":7}}}"#)
        ),
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA"}"#),
            URL_SAFE_NO_PAD.encode(format!(r#"{{"iss":"{}","exp":"soon"}}"#, srv.url)),
            b64(64)
        ),
        "x".repeat(20 * 1024),
    ];
    for (i, token) in fake_tokens.iter().enumerate() {
        // As the bearer of an agent's task step and of the revocation stream (when the text
        // can be a header value at all).
        let bearer = format!("Bearer {token}");
        let sendable = reqwest::header::HeaderValue::from_str(&bearer).is_ok();
        for (method, path) in [
            (Method::POST, "/v1/tasks/garbage-task/steps"),
            (Method::GET, "/v1/revocations/events"),
            (Method::GET, "/v1/approvals"),
            (Method::POST, "/v1/approvals/no-such-approval/approve"),
        ]
        .into_iter()
        .filter(|_| sendable)
        {
            let r = srv
                .send(
                    srv.http
                        .request(method, format!("{}{path}", srv.url))
                        .header("authorization", bearer.clone())
                        .json(&json!({"decision": "d", "summary": "s"})),
                )
                .await;
            refuse(format!("fake bearer {i} on {path}"), r);
        }
        for subject_type in [TYPE_JWT, TYPE_ACCESS_TOKEN] {
            let r = srv
                .token_as(
                    &support,
                    exchange_form(token, subject_type, "crm.customers:read", &[]),
                )
                .await;
            refuse(format!("fake subject token {i}"), r);
        }
        let mut form = exchange_form(&srv.alice(), TYPE_JWT, "crm.customers:read", &[]);
        form.push(("client_assertion_type".into(), JWT_BEARER.into()));
        form.push(("client_assertion".into(), token.clone()));
        refuse(format!("fake assertion {i}"), srv.token(&form).await);
        let mut form = exchange_form(
            &srv.alice(),
            TYPE_JWT,
            "crm.customers:read",
            &[("actor_token", token), ("actor_token_type", TYPE_JWT)],
        );
        form.extend(srv.client_auth(&support));
        refuse(format!("fake actor token {i}"), srv.token(&form).await);
        let answer = srv.introspect(token).await;
        assert_eq!(answer, json!({"active": false}), "fake token {i}");
        let mut form = vec![("token".to_owned(), token.clone())];
        form.extend(srv.client_auth(&support));
        let r = srv.post_form("/oauth2/revoke", &form).await;
        assert_eq!(r.status, 200, "RFC 7009 answers 200 for invalid tokens");
        tried += 5;
    }

    // Scopes that are not scopes.
    let many = vec!["crm.customers:read"; 20 * 1024 / 19].join(" ");
    let scopes = [
        many,
        "a".repeat(20 * 1024),
        "x:y ".repeat(5000),
        "crm.*:read".to_owned(),
        "::: : :".to_owned(),
        "CRM.customers:READ".to_owned(),
        "\u{0}\u{1}:\u{7f}".to_owned(),
    ];
    for (i, scope) in scopes.iter().enumerate() {
        let r = srv.exchange(&support, &srv.alice(), scope).await;
        check(format!("scope {i}"), r);
        tried += 1;
    }
    // Other odd fields.
    let odd: Vec<(&str, String)> = vec![
        ("ttl", "-5".into()),
        ("ttl", "99999999999999999999999".into()),
        ("ttl", "soon".into()),
        ("stage", "godmode".into()),
        ("stage", "execute".into()),
        ("task", "bad task id!".into()),
        ("task", "t".repeat(5000)),
        ("scope_mode", "whatever".into()),
        ("resource", "not a uri".into()),
        ("resource", "https://crm.example/#frag".into()),
        ("audience", "a".repeat(600)),
    ];
    for (k, v) in odd {
        let v_shown: String = v.chars().take(40).collect();
        let mut form = without(
            exchange_form(&srv.alice(), TYPE_JWT, "crm.customers:read", &[]),
            &[k],
        );
        form.push((k.to_owned(), v));
        let r = srv.token_as(&support, form).await;
        refuse(format!("{k} = {}", v_shown), r);
        tried += 1;
    }
    // Too many parameters.
    let mut form = exchange_form(&srv.alice(), TYPE_JWT, "crm.customers:read", &[]);
    for i in 0..100 {
        form.push((format!("p{i}"), "x".into()));
    }
    refuse("100 params".into(), srv.token_as(&support, form).await);
    // Nine audiences.
    let mut form = exchange_form(&srv.alice(), TYPE_JWT, "crm.customers:read", &[]);
    for i in 0..9 {
        form.push(("resource".into(), format!("https://r{i}.example")));
    }
    refuse("nine audiences".into(), srv.token_as(&support, form).await);

    assert!(tried > 100);
    assert!(srv.healthy().await);
    let r = srv.send(srv.http.get(srv.at("/readyz"))).await;
    r.expect(200);
    // And it still does its job.
    srv.exchange(&support, &srv.alice(), "crm.customers:read")
        .await
        .access_token();
    srv.shutdown().await;
}
