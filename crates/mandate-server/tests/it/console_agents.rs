//! The console's agents, posture and compliance pages over plain HTTP: who sees which agent,
//! what an agent's page shows, suspending with confirmation (CSRF-checked, audited as the
//! person), and the reports for admins and auditors only.

use mandate_core::ids::UserPrincipal;
use mandate_server::console::posture::code_spans;
use mandate_server::console::session::{COOKIE, Session, SignedInWith};
use reqwest::header;

use super::harness::*;

/// A session cookie (`mandate_console=…`) for the dev operator, `admin@example.com` (group
/// `admin`), through the one-time sign-in link.
async fn admin_cookie(srv: &Server) -> String {
    let running = srv.running();
    let link = running.state.console.issue_dev_link(&running.url).unwrap();
    let r = srv.http.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303, "the sign-in link redirects");
    r.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{COOKIE}=")))
        .and_then(|v| v.split(';').next())
        .expect("the sign-in link sets the session cookie")
        .to_owned()
}

/// A session cookie for `sub` in `groups`, as an OpenID Connect sign-in would set it.
fn user_cookie(srv: &Server, sub: &str, groups: &[&str]) -> String {
    let state = &srv.running().state;
    let user = UserPrincipal {
        issuer: state.issuer.clone(),
        subject: sub.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    };
    let session = Session::begin(state, &user, SignedInWith::Oidc, srv.now()).unwrap();
    let cookie = session.cookie(state).unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// `GET path` with `cookie`: the status and the body.
async fn get(srv: &Server, cookie: &str, path: &str) -> (u16, String) {
    let r = srv
        .http
        .get(srv.at(path))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `POST path` with a form and `cookie`: the status and the `Location` header.
async fn post(srv: &Server, cookie: &str, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let r = srv
        .http
        .post(srv.at(path))
        .header(header::COOKIE, cookie)
        .form(form)
        .send()
        .await
        .unwrap();
    let location = r
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (r.status().as_u16(), location)
}

/// The CSRF token in a page's form.
fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in {page}"))
        + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().unwrap().to_owned()
}

async fn status_of(srv: &Server, agent: &str) -> String {
    let r = srv.admin_get(&format!("/v1/agents/{agent}")).await;
    r.expect(200);
    r.body["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_list_shows_each_person_the_agents_they_may_see() {
    let srv = Server::start().await;
    let admin = admin_cookie(&srv).await;
    let (status, page) = get(&srv, &admin, "/console/agents").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<h1>Agents</h1>"), "{page}");
    for id in ["support-v2", "analytics-v1"] {
        assert!(
            page.contains(&format!("href=\"/console/agents/{id}\"")),
            "{page}"
        );
    }
    assert!(page.contains("carol@example.com") && page.contains("crm.customers:read"));
    assert!(page.contains("<th scope=\"col\">Ceiling</th>"), "{page}");

    let bob = user_cookie(&srv, "bob@example.com", &["finance"]);
    let (status, page) = get(&srv, &bob, "/console/agents").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("/console/agents/analytics-v1"), "{page}");
    assert!(!page.contains("support-v2"), "{page}");

    let nobody = user_cookie(&srv, "dan@example.com", &["sales"]);
    let (status, page) = get(&srv, &nobody, "/console/agents").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("You own no agents"), "{page}");
    assert!(!page.contains("analytics-v1"), "{page}");

    // Nobody signed in: to the sign-in page.
    let r = srv
        .http
        .get(srv.at("/console/agents"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[header::LOCATION], "/console/sign-in");
}

#[tokio::test]
async fn an_agents_page_shows_ceiling_credentials_blast_radius_and_activity() {
    let srv = Server::start().await;
    let admin = admin_cookie(&srv).await;
    let (status, page) = get(&srv, &admin, "/console/agents/support-v2").await;
    assert_eq!(status, 200, "{page}");
    for text in [
        "Support assistant v2",
        "carol@example.com",
        "tickets:*",
        "mcp.crm.*:call",
        "support-v2-k1",
        "EdDSA",
        "never expires",
        "Blast radius",
        "Scope weight",
        "Velocity",
        "Detection window",
        "Recent activity",
        "href=\"/console/agents/support-v2/suspend\"",
        "href=\"/console/agents/support-v2/retire\"",
    ] {
        assert!(page.contains(text), "no `{text}` in {page}");
    }
    assert!(
        !page.contains("/console/agents/support-v2/resume"),
        "{page}"
    );

    // Bob owns analytics-v1, not support-v2.
    let bob = user_cookie(&srv, "bob@example.com", &["finance"]);
    let (status, page) = get(&srv, &bob, "/console/agents/support-v2").await;
    assert_eq!(status, 403, "{page}");
    assert!(
        page.contains("owned by `carol@example.com`; only its owner, admins and auditors"),
        "{page}"
    );
    let (status, page) = get(&srv, &bob, "/console/agents/analytics-v1").await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("/console/agents/analytics-v1/suspend"),
        "{page}"
    );

    // An auditor sees every agent but is offered no change.
    let auditor = user_cookie(&srv, "erin@example.com", &["auditor"]);
    let (status, page) = get(&srv, &auditor, "/console/agents/support-v2").await;
    assert_eq!(status, 200, "{page}");
    assert!(
        !page.contains("/console/agents/support-v2/suspend"),
        "{page}"
    );
    let (status, page) = get(&srv, &auditor, "/console/agents/support-v2/suspend").await;
    assert_eq!(status, 403, "{page}");

    let (status, page) = get(&srv, &admin, "/console/agents/no-such-agent").await;
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("agent `no-such-agent` not found"), "{page}");
    let (status, page) = get(&srv, &admin, "/console/agents/support-v2/delete").await;
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("no such action `delete`"), "{page}");
}

#[tokio::test]
async fn suspending_needs_confirmation_and_csrf_and_is_audited_as_the_person() {
    let srv = Server::start().await;
    let admin = admin_cookie(&srv).await;
    let (status, page) = get(&srv, &admin, "/console/agents/analytics-v1/suspend").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("every token"), "{page}");
    assert!(
        page.contains("<form class=\"stack\" method=\"post\""),
        "{page}"
    );
    assert!(page.contains("<label for=\"reason\""), "{page}");
    assert!(
        page.contains("<button class=\"danger\" type=\"submit\">Suspend analytics-v1</button>"),
        "{page}"
    );
    assert!(
        page.contains("href=\"/console/agents/analytics-v1\">Cancel"),
        "{page}"
    );
    let csrf = csrf_of(&page);

    // Without the CSRF token, or with a wrong one: refused, nothing changes.
    let path = "/console/agents/analytics-v1/suspend";
    let (status, _) = post(&srv, &admin, path, &[("reason", "x")]).await;
    assert_eq!(status, 403);
    let (status, _) = post(&srv, &admin, path, &[("csrf", "forged"), ("reason", "x")]).await;
    assert_eq!(status, 403);
    assert_eq!(status_of(&srv, "analytics-v1").await, "active");

    let (status, location) = post(
        &srv,
        &admin,
        path,
        &[("csrf", &csrf), ("reason", "investigating")],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(location, "/console/agents/analytics-v1");
    assert_eq!(status_of(&srv, "analytics-v1").await, "suspended");
    let events = srv.audit("action=agent.suspend").await;
    assert!(
        events.iter().any(|e| e["chain"][0] == "analytics-v1"
            && e["reason"]
                .as_str()
                .unwrap()
                .contains("user:admin@example.com")),
        "{events:?}"
    );

    // Suspended: resume and retire are offered, suspending again is a conflict.
    let (_, page) = get(&srv, &admin, "/console/agents/analytics-v1").await;
    assert!(
        page.contains("/console/agents/analytics-v1/resume"),
        "{page}"
    );
    assert!(
        !page.contains("/console/agents/analytics-v1/suspend"),
        "{page}"
    );
    let (status, _) = post(&srv, &admin, path, &[("csrf", &csrf)]).await;
    assert_eq!(status, 409);
    let (status, page) = get(&srv, &admin, path).await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("already suspended"), "{page}");

    let (status, _) = post(
        &srv,
        &admin,
        "/console/agents/analytics-v1/resume",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(status_of(&srv, "analytics-v1").await, "active");
}

#[tokio::test]
async fn owners_manage_their_own_agents_and_retiring_is_final() {
    let srv = Server::start().await;
    let bob = user_cookie(&srv, "bob@example.com", &["finance"]);
    let (status, page) = get(&srv, &bob, "/console/agents/analytics-v1/retire").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("final"), "{page}");
    let csrf = csrf_of(&page);

    // Not his agent: refused even with a valid token.
    let (status, _) = post(
        &srv,
        &bob,
        "/console/agents/support-v2/suspend",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(status_of(&srv, "support-v2").await, "active");

    let (status, location) = post(
        &srv,
        &bob,
        "/console/agents/analytics-v1/retire",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(location, "/console/agents/analytics-v1");
    assert_eq!(status_of(&srv, "analytics-v1").await, "retired");
    let events = srv.audit("action=agent.retire").await;
    assert!(
        events.iter().any(|e| e["reason"]
            .as_str()
            .unwrap()
            .contains("user:bob@example.com")),
        "{events:?}"
    );

    let (status, page) = get(&srv, &bob, "/console/agents/analytics-v1").await;
    assert_eq!(status, 200, "{page}");
    for action in ["suspend", "resume", "retire"] {
        assert!(
            !page.contains(&format!("/console/agents/analytics-v1/{action}\"")),
            "{page}"
        );
    }
    let (status, _) = post(
        &srv,
        &bob,
        "/console/agents/analytics-v1/resume",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(status_of(&srv, "analytics-v1").await, "retired");
}

#[tokio::test]
async fn posture_and_compliance_are_for_admins_and_auditors() {
    let srv = Server::start().await;
    let bob = user_cookie(&srv, "bob@example.com", &["finance"]);
    for path in ["/console/posture", "/console/compliance"] {
        let (status, page) = get(&srv, &bob, path).await;
        assert_eq!(status, 403, "{path}: {page}");
        assert!(page.contains("is for admins and auditors"), "{page}");
    }

    let admin = admin_cookie(&srv).await;
    let (status, page) = get(&srv, &admin, "/console/posture").await;
    assert_eq!(status, 200, "{page}");
    let report = srv.admin_get("/v1/posture").await;
    report.expect(200);
    let findings = report.body["findings"].as_array().unwrap();
    assert!(!findings.is_empty(), "{}", report.body);
    for f in findings {
        let problem = code_spans(f["problem"].as_str().unwrap()).into_string();
        assert!(page.contains(&problem), "no `{problem}` in {page}");
    }
    for text in [
        "Findings",
        "key-never-expires",
        "Inventory of non-human identities",
        "Blast radius",
        "Detection window",
        "Open access reviews",
        "href=\"/console/compliance\"",
    ] {
        assert!(page.contains(text), "no `{text}` in {page}");
    }

    let auditor = user_cookie(&srv, "erin@example.com", &["auditor"]);
    let (status, page) = get(&srv, &auditor, "/console/compliance").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<h1>Compliance report</h1>"), "{page}");
    for text in [
        "SOC 2",
        "HIPAA",
        "OWASP",
        "EU AI Act",
        "Evidence in this deployment",
    ] {
        assert!(page.contains(text), "no `{text}` in {page}");
    }
    assert!(!page.contains("<style"), "{page}");
}
