//! The console, end to end, in a real headless Chromium (issue 10): people sign in — through
//! the dev identity provider with OpenID Connect, or with the `--dev` one-time link — approve a
//! held write and see it reach the upstream, deny another, revoke a task from its timeline and
//! search the audit log, and the tests assert what a person sees on the page. Then, over plain
//! HTTP, what a browser would not show: CSRF refusals, pages of agents one does not own,
//! separation of duties, sessions ending with a user revocation.

use std::net::SocketAddr;
use std::time::Duration;

use mandate_core::ids::UserPrincipal;
use mandate_server::config::TrustedIssuerConfig;
use mandate_server::console::session::{Session, SignedInWith};
use mandate_server::dev::CodeGrant;

use super::browser::Browser;
use super::gateway::gw;
use super::harness::*;
use super::held_writes::{draft_token, post_ticket, tickets_with};

async fn start() -> Server {
    Server::start_configured(|c| {
        c.gateway.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await
}

/// Signs `who` in through the console's sign-in page and the dev identity provider's form,
/// as a person would, and waits for the dashboard.
async fn sign_in_with_oidc(b: &Browser, s: &Server, who: &str) {
    b.goto(&s.at("/console")).await;
    b.wait_for_text("h1", "Sign in").await;
    b.click("a.button").await;
    b.wait_for_text("h1", "Sign in to the demo world").await;
    let buttons = b.find_all("button").await;
    let mut chosen = None;
    for button in buttons {
        if button.text().await.contains(who) {
            chosen = Some(button);
            break;
        }
    }
    chosen
        .unwrap_or_else(|| panic!("no button for `{who}` on the dev IdP's page"))
        .click()
        .await;
    b.wait_for_text("h1", "Dashboard").await;
    b.wait_for_text("header .who", who).await;
}

/// The approval id of a held write, from the gateway's `202`.
async fn hold(s: &Server, base: &str, token: &str, subject: &str) -> String {
    let r = post_ticket(s, base, token, subject).await;
    r.expect(202);
    r.body["proposal"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_approver_signs_in_approves_a_held_write_that_reaches_the_upstream_and_denies_another() {
    let s = start().await;
    let base = gw(&s);
    let token = draft_token(&s, &base).await;
    let refund = hold(&s, &base, &token, "refund please").await;
    let close = hold(&s, &base, &token, "close my account").await;

    let b = Browser::start().await;
    sign_in_with_oidc(&b, &s, CAROL).await;
    let who = b.find("header .who").await.text().await;
    assert!(who.contains("approver") && who.contains("owner"), "{who}");
    // The dashboard lists both requests, waiting.
    b.wait_for_text("#approval-list", "2 waiting for a decision")
        .await;
    // A new request shows up on the open page by itself (the console's event stream).
    let _third = hold(&s, &base, &token, "a third one").await;
    b.wait_for_text("#approval-list", "3 waiting for a decision")
        .await;

    // The queue, then the first request: the binding message and exactly what is held.
    b.click("nav a[href='/console/approvals']").await;
    b.wait_for_text("h1", "Approvals").await;
    b.click(&format!("a[href='/console/approvals/{refund}']"))
        .await;
    b.wait_for_text("h1", &refund).await;
    let page = b.page_text().await;
    assert!(page.contains("What will happen"), "{page}");
    assert!(page.contains("POST /tickets"), "{page}");
    assert!(
        page.contains("refund please"),
        "the held body is shown: {page}"
    );
    assert!(
        page.contains("user:alice@example.com via agent:support-v2"),
        "{page}"
    );
    assert_eq!(tickets_with(&s, "refund please"), 0, "held, not sent");

    b.fill("#reason", "checked with the customer").await;
    b.click("button[value='approve']").await;
    b.wait_for_text("#decision-h", "Decision").await;
    let page = b.page_text().await;
    assert!(page.contains("approved"), "{page}");
    assert!(page.contains("checked with the customer"), "{page}");
    // The gateway sends it on: the upstream gets it once.
    for _ in 0..200 {
        if tickets_with(&s, "refund please") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(tickets_with(&s, "refund please"), 1, "sent upstream once");
    // Reloaded, the page says what the upstream answered.
    for _ in 0..100 {
        b.refresh().await;
        if b.page_text().await.contains("the upstream answered") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        b.page_text().await.contains("the upstream answered 201"),
        "{}",
        b.page_text().await
    );

    // The other one: denied, never sent.
    b.goto(&s.at(&format!("/console/approvals/{close}"))).await;
    b.fill("#reason", "not without a call first").await;
    b.click("button[value='deny']").await;
    b.wait_for_text("#decision-h", "Decision").await;
    let page = b.page_text().await;
    assert!(
        page.contains("denied") && page.contains("not without a call first"),
        "{page}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tickets_with(&s, "close my account"), 0);

    // Both decisions are in the audit log, by carol.
    let events = s.audit("kind=approval.approved").await;
    assert!(
        events.iter().any(
            |e| e["reason"].as_str().unwrap_or_default().contains("checked")
                || e["detail"].to_string().contains(CAROL)
        ),
        "{events:?}"
    );
    assert_eq!(s.audit("kind=approval.denied").await.len(), 1);
}

#[tokio::test]
async fn an_admin_revokes_a_task_from_its_timeline_and_searches_the_audit_log() {
    let s = start().await;
    let base = gw(&s);
    let token = draft_token(&s, &base).await; // task ticket-12847
    assert_eq!(s.introspect(&token).await["active"], true);
    let link = s
        .running()
        .console_link
        .clone()
        .expect("--dev prints a link");

    let b = Browser::start().await;
    b.goto(&link).await;
    b.wait_for_text("h1", "Dashboard").await;
    b.wait_for_text("header .who", "admin@example.com").await;

    // Tasks → the task's timeline: its input, its token (live), the exchange that issued it.
    b.click("nav a[href='/console/tasks']").await;
    b.wait_for_text("h1", "Tasks").await;
    b.click("a[href='/console/tasks/ticket-12847']").await;
    b.wait_for_text("h1", "Task ticket-12847").await;
    let page = b.page_text().await;
    assert!(
        page.contains("Triggering input") && page.contains("Timeline"),
        "{page}"
    );
    assert!(page.contains("token.exchange"), "{page}");
    assert!(page.contains("live"), "{page}");

    b.fill("#reason", "the customer withdrew the ticket").await;
    b.click("button.danger").await;
    b.wait_for_text("main", "Revoked: task").await;
    let page = b.page_text().await;
    assert!(page.contains("by user:admin@example.com"), "{page}");
    assert!(page.contains("the customer withdrew the ticket"), "{page}");
    assert!(
        !page.contains("Revoke this task"),
        "no second revoke: {page}"
    );
    // Everywhere at once: the token is no longer active.
    assert_eq!(s.introspect(&token).await["active"], false);

    // Audit search: the task's events, then only refusals (none).
    b.click("nav a[href='/console/audit']").await;
    b.wait_for_text("h1", "Audit").await;
    b.fill("#f-task", "ticket-12847").await;
    b.find("form[role='search'] button[type='submit']")
        .await
        .click()
        .await;
    b.wait_for_text("#audit-results", "revocation").await;
    let results = b.find("#audit-results").await.text().await;
    assert!(results.contains("token.exchange"), "{results}");
    assert!(
        results.contains("user:alice@example.com via agent:support-v2"),
        "{results}"
    );

    // The link is for one use.
    b.delete_cookies().await;
    b.goto(&link).await;
    b.wait_for_text("h1", "Not allowed").await;
}

#[tokio::test]
async fn an_owner_is_refused_another_owners_agent_and_an_unsigned_visitor_is_sent_to_sign_in() {
    let s = start().await;
    let b = Browser::start().await;
    b.goto(&s.at("/console/agents/support-v2")).await;
    b.wait_for_text("h1", "Sign in").await;

    sign_in_with_oidc(&b, &s, BOB).await;
    b.goto(&s.at("/console/agents/support-v2")).await;
    b.wait_for_text("h1", "Not allowed").await;
    assert!(b.page_text().await.contains("carol@example.com"));
    // His own agent is his to see.
    b.goto(&s.at("/console/agents/analytics-v1")).await;
    b.wait_for_text("h1", "analytics-v1").await;
    // Audit search is for admins and auditors, and not in his navigation.
    assert!(b.try_find("nav a[href='/console/audit']").await.is_none());
    b.goto(&s.at("/console/audit")).await;
    b.wait_for_text("h1", "Not allowed").await;
}

// ---- over plain HTTP ----

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A console session cookie (`name=value`) for `sub` with `groups`, as a sign-in would set.
fn session_cookie(s: &Server, sub: &str, groups: &[&str]) -> String {
    let state = &s.running().state;
    let user = UserPrincipal {
        issuer: state.dev.as_ref().unwrap().issuer.clone(),
        subject: sub.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    };
    let session = Session::begin(state, &user, SignedInWith::Oidc, state.clock.now()).unwrap();
    session
        .cookie(state)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

async fn page(s: &Server, cookie: &str, path: &str) -> (u16, String) {
    let r = no_redirects()
        .get(s.at(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn hidden_csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

async fn post(s: &Server, cookie: &str, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let r = no_redirects()
        .post(s.at(path))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn a_form_post_without_the_csrf_token_is_refused_and_changes_nothing() {
    let s = start().await;
    let base = gw(&s);
    let token = draft_token(&s, &base).await;
    let admin = session_cookie(&s, "admin@example.com", &["admin"]);
    let (status, html) = page(&s, &admin, "/console/tasks/ticket-12847").await;
    assert_eq!(status, 200, "{html}");
    let csrf = hidden_csrf(&html);

    for form in [
        vec![("reason", "x")],
        vec![("reason", "x"), ("csrf", "forged")],
    ] {
        let (status, html) = post(&s, &admin, "/console/tasks/ticket-12847/revoke", &form).await;
        assert_eq!(status, 403, "{html}");
        assert!(html.contains("CSRF"), "{html}");
    }
    // Another session's token does not do either.
    let other = session_cookie(&s, "admin@example.com", &["admin"]);
    let (_, other_html) = page(&s, &other, "/console").await;
    let (status, _) = post(
        &s,
        &admin,
        "/console/tasks/ticket-12847/revoke",
        &[("csrf", &hidden_csrf(&other_html))],
    )
    .await;
    assert_eq!(status, 403);
    // A post from another site is refused even with the token.
    let r = no_redirects()
        .post(s.at("/console/tasks/ticket-12847/revoke"))
        .header("cookie", &admin)
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        s.introspect(&token).await["active"],
        true,
        "nothing changed"
    );
    assert!(s.audit("kind=revocation").await.is_empty());

    // With the token it works.
    let (status, _) = post(
        &s,
        &admin,
        "/console/tasks/ticket-12847/revoke",
        &[("csrf", &csrf), ("reason", "done")],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(s.introspect(&token).await["active"], false);
}

#[tokio::test]
async fn pages_say_who_may_see_what() {
    let s = start().await;
    let bob = session_cookie(&s, BOB, &["finance"]);
    let (status, html) = page(&s, &bob, "/console/agents/support-v2").await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("carol@example.com"), "{html}");
    let (status, _) = page(&s, &bob, "/console/agents/analytics-v1").await;
    assert_eq!(status, 200);
    for path in ["/console/audit", "/console/posture", "/console/compliance"] {
        let (status, _) = page(&s, &bob, path).await;
        assert_eq!(status, 403, "{path}");
    }
    // No session, or a tampered one: off to sign in.
    for cookie in ["", "mandate_console=AAAA", "mandate_console=garbage!"] {
        let r = no_redirects()
            .get(s.at("/console/tasks"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{cookie}");
        assert_eq!(r.headers()["location"], "/console/sign-in");
    }
    // A live refresh whose session ended sends the whole page to sign-in.
    let r = no_redirects()
        .get(s.at("/console/approvals/list"))
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["hx-redirect"], "/console/sign-in");
    // Strict headers on every page.
    let r = no_redirects()
        .get(s.at("/console/sign-in"))
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");
}

#[tokio::test]
async fn the_user_a_request_is_for_cannot_approve_it_and_a_revoked_user_is_signed_out() {
    let s = start().await;
    let base = gw(&s);
    let token = draft_token(&s, &base).await;
    let id = hold(&s, &base, &token, "refund please").await;

    // Alice asked (through support-v2); she sees it, with why she may not decide.
    let alice = session_cookie(&s, ALICE, &["support", "approver"]);
    let (status, html) = page(&s, &alice, &format!("/console/approvals/{id}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("made on your behalf"), "{html}");
    assert!(!html.contains("value=\"approve\""), "{html}");
    let (_, dash) = page(&s, &alice, "/console").await;
    let (status, html) = post(
        &s,
        &alice,
        &format!("/console/approvals/{id}/decide"),
        &[("csrf", &hidden_csrf(&dash)), ("decision", "approve")],
    )
    .await;
    assert_eq!(status, 403, "{html}");
    assert_eq!(tickets_with(&s, "refund please"), 0);

    // Bob has no approver rights for support-v2: he does not even see it.
    let bob = session_cookie(&s, BOB, &["finance"]);
    let (status, _) = page(&s, &bob, &format!("/console/approvals/{id}")).await;
    assert_eq!(status, 404);

    // Revoking a user ends their console session.
    let carol = session_cookie(&s, CAROL, &["support", "approver"]);
    assert_eq!(page(&s, &carol, "/console").await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.admin_post(
        "/v1/revocations",
        &serde_json::json!({"kind": "user", "id": CAROL}),
    )
    .await
    .expect(201);
    assert_eq!(page(&s, &carol, "/console").await.0, 303);
}

/// The `Set-Cookie` of `name` (its `name=value` part), if the response sets it.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

fn query_param(url: &str, name: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no `{name}` in {url}"))
}

#[tokio::test]
async fn a_production_console_signs_people_in_with_its_configured_identity_provider() {
    // The identity provider: another server's dev IdP, a real OpenID Connect provider on
    // loopback. The console under test runs without --dev and trusts it by configuration.
    let idp_server = Server::start().await;
    let idp = idp_server
        .running()
        .state
        .dev
        .as_ref()
        .unwrap()
        .issuer
        .clone();
    let jwks = format!("{idp}/jwks.json");
    let s = Server::start_production_configured(|c| {
        c.issuers.push(TrustedIssuerConfig {
            name: "corp".into(),
            issuer: idp.clone(),
            audiences: vec!["https://mandate.example".into()],
            jwks_url: Some(jwks),
            jwks_file: None,
            user_claim: "sub".into(),
            groups_claim: "groups".into(),
        });
        c.console.issuer = Some("corp".into());
        c.console.client_id = Some("mandate-console".into());
    })
    .await;
    assert!(
        s.running().console_link.is_none(),
        "no one-time link without --dev"
    );
    let http = no_redirects();
    let (status, html) = page(&s, "", "/console/sign-in").await;
    assert_eq!(status, 200);
    assert!(html.contains("Sign in with corp"), "{html}");
    assert!(!html.contains("one-time"), "{html}");

    // Start: off to the provider's authorization endpoint, with PKCE and a nonce.
    let start = async || {
        let r = http.get(s.at("/console/auth/start")).send().await.unwrap();
        assert_eq!(r.status(), 303);
        let to = r.headers()["location"].to_str().unwrap().to_owned();
        let login = set_cookie(&r, "mandate_console_login").expect("a sign-in cookie");
        (to, login)
    };
    let (to, login) = start().await;
    assert!(to.starts_with(&format!("{idp}/authorize?")), "{to}");
    assert_eq!(query_param(&to, "client_id"), "mandate-console");
    assert_eq!(
        query_param(&to, "redirect_uri"),
        s.at("/console/auth/callback")
    );
    assert_eq!(query_param(&to, "code_challenge_method"), "S256");
    assert_eq!(query_param(&to, "response_type"), "code");
    let state = query_param(&to, "state");
    // The provider signs carol in (her code bound to this request's PKCE challenge and nonce).
    let dev = idp_server.running().state.dev.as_ref().unwrap();
    let code_for = |nonce: String, challenge: String| {
        dev.issue_code(
            CodeGrant {
                client_id: "mandate-console".into(),
                redirect_uri: s.at("/console/auth/callback"),
                code_challenge: challenge,
                nonce,
                sub: CAROL.into(),
                auth_time: idp_server.now(),
            },
            idp_server.now(),
        )
        .unwrap()
    };
    let code = code_for(
        query_param(&to, "nonce"),
        query_param(&to, "code_challenge"),
    );
    let callback = |code: &str, state: &str, cookie: &str| {
        http.get(s.at(&format!("/console/auth/callback?code={code}&state={state}")))
            .header("cookie", cookie.to_owned())
            .send()
    };

    // Another browser's answer (no sign-in cookie, or the wrong state) is refused.
    let r = callback(&code, &state, "").await.unwrap();
    assert_eq!(r.status(), 401);
    let r = callback(&code, "forged", &login).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("`state` differs"));

    // The real answer signs her in.
    let r = callback(&code, &state, &login).await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console");
    let session = set_cookie(&r, "mandate_console").expect("a session");
    let (status, html) = page(&s, &session, "/console").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(CAROL), "{html}");
    // The code was used up at the provider.
    let r = callback(&code, &state, &login).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("refused the code"));

    // An ID token for another sign-in (its nonce) is not accepted.
    let (to, login) = start().await;
    let code = code_for("someone else's".into(), query_param(&to, "code_challenge"));
    let r = callback(&code, &query_param(&to, "state"), &login)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("nonce"));
    // Nor a code bound to another PKCE challenge.
    let (to, login) = start().await;
    let code = code_for(query_param(&to, "nonce"), "A".repeat(43));
    let r = callback(&code, &query_param(&to, "state"), &login)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The provider's own refusal is shown, not followed.
    let (to, login) = start().await;
    let r = http
        .get(s.at(&format!(
            "/console/auth/callback?error=access_denied&error_description=user+cancelled&state={}",
            query_param(&to, "state")
        )))
        .header("cookie", login)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("access_denied"));
}

#[tokio::test]
async fn sessions_end_at_sign_out_and_after_their_lifetime() {
    let s = start().await;
    let cookie = session_cookie(&s, CAROL, &["support", "approver"]);
    let (status, html) = page(&s, &cookie, "/console").await;
    assert_eq!(status, 200);
    let r = no_redirects()
        .post(s.at("/console/sign-out"))
        .header("cookie", &cookie)
        .form(&[("csrf", hidden_csrf(&html))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cleared = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cleared.starts_with("mandate_console=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert!(
        cleared.contains("HttpOnly") && cleared.contains("SameSite=Lax"),
        "{cleared}"
    );
    assert!(
        cleared.contains("Secure"),
        "loopback keeps secure cookies: {cleared}"
    );

    let cookie = session_cookie(&s, CAROL, &["support", "approver"]);
    assert_eq!(page(&s, &cookie, "/console").await.0, 200);
    s.clock
        .advance(s.running().state.config.console.session_ttl + 1);
    assert_eq!(page(&s, &cookie, "/console").await.0, 303);
}
