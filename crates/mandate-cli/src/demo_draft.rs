//! The demo's approvals chapter: support-v2 asks for a stage above its own and waits for a human
//! (OpenID CIBA poll mode); then its `draft` write is held at the gateway until a human who may
//! approve for it says yes — the user herself may not — and is sent once, the agent fetching the
//! CRM's answer.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::client::{AgentKey, Client};

/// The task of this chapter.
const TASK: &str = "ticket-12850";

/// A dev IdP token for `sub` (the demo user's groups).
async fn user_token(admin: &Client, sub: &str) -> Result<String> {
    let v = admin
        .post("/v1/dev/user-token", &json!({"sub": sub}))
        .await?;
    v["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no user token for `{sub}`"))
}

/// `POST /v1/approvals/{id}/approve` as the human holding `token`: the status and answer.
async fn approve(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    token: &str,
) -> Result<(u16, Value)> {
    let resp = http
        .post(format!("{base}/v1/approvals/{id}/approve"))
        .bearer_auth(token)
        .json(&json!({"reason": "the customer asked for it on the phone"}))
        .send()
        .await
        .context("mandate answers")?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// `POST /oauth2/token` with `form`: the status and answer, errors included.
async fn token(
    http: &reqwest::Client,
    base: &str,
    form: &[(&str, String)],
) -> Result<(u16, Value)> {
    let resp = http
        .post(format!("{base}/oauth2/token"))
        .form(form)
        .send()
        .await
        .context("mandate answers")?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// What people see of the held write in the console: signed in with the one-time link the
/// server printed, the approval's page shows the held request and carol's decision.
async fn console_view(running: &mandate_server::Running, id: &str) -> Result<()> {
    let Some(link) = &running.console_link else {
        bail!("the demo server has no console sign-in link");
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let signed_in = http.get(link).send().await.context("the console answers")?;
    let cookie = signed_in
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("mandate_console="))
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow!("the console's sign-in link set no session"))?
        .to_owned();
    let path = format!("/console/approvals/{id}");
    let page = http
        .get(format!("{}{path}", running.url))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .context("the console answers")?
        .text()
        .await?;
    let shows = |s: &str| page.contains(s);
    if !(shows("refund for order 1182") && shows("approved") && shows("carol@example.com")) {
        bail!("the console's page for approval `{id}` does not show the decision");
    }
    println!(
        "   the console shows people the same: {path} has the held request (POST /tickets, its \
         body) and `approved` by carol@example.com"
    );
    Ok(())
}

/// support-v2 (max stage `draft`) asks for an `execute` token: a human must approve first.
async fn escalation(
    http: &reqwest::Client,
    admin: &Client,
    support: &AgentKey,
    alice: &str,
    carol: &str,
    gateway: &str,
) -> Result<()> {
    let mut form = support.auth_fields(&admin.url)?;
    form.extend([
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
        ),
        ("subject_token", alice.to_owned()),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:jwt".to_owned(),
        ),
        ("scope", "tickets:create".to_owned()),
        ("stage", "execute".to_owned()),
        ("resource", gateway.to_owned()),
        ("task", TASK.to_owned()),
        (
            "justification",
            "the customer is waiting on the phone".to_owned(),
        ),
    ]);
    let (status, asked) = token(http, &admin.url, &form).await?;
    let id = asked["auth_req_id"].as_str().unwrap_or_default().to_owned();
    if id.is_empty() {
        bail!(
            "the escalation was not held for approval: {status} {}",
            asked["error_description"].as_str().unwrap_or_default()
        );
    }
    println!(
        "   support-v2 (max stage `draft`) asks for an `execute` token → {status} {}, auth_req_id {id}",
        asked["error"].as_str().unwrap_or_default()
    );
    let poll = || -> Result<Vec<(&'static str, String)>> {
        let mut f = support.auth_fields(&admin.url)?;
        f.extend([
            ("grant_type", "urn:openid:params:grant-type:ciba".to_owned()),
            ("auth_req_id", id.clone()),
        ]);
        Ok(f)
    };
    let (_, first) = token(http, &admin.url, &poll()?).await?;
    let (_, second) = token(http, &admin.url, &poll()?).await?;
    println!(
        "   it polls (CIBA): {}; polls again at once: {} (interval now {} s)",
        first["error"].as_str().unwrap_or("?"),
        second["error"].as_str().unwrap_or("?"),
        second["interval"]
    );
    let (status, _) = approve(http, &admin.url, &id, carol).await?;
    println!("   carol approves → {status}");
    let (status, issued) = token(http, &admin.url, &poll()?).await?;
    println!(
        "   ✓ the next poll → {status}: a token at stage `{}` for {} s",
        issued["stage"].as_str().unwrap_or("?"),
        issued["expires_in"]
    );
    Ok(())
}

/// Runs the chapter against the running server's gateway.
pub async fn chapter(
    admin: &Client,
    support: &AgentKey,
    running: &mandate_server::Running,
) -> Result<()> {
    let Some(gw) = running.gateway.as_ref() else {
        bail!("the demo server runs no gateway");
    };
    let Some(sample) = running.sample.as_ref() else {
        bail!("the demo server runs no sample CRM");
    };
    let gw = gw.url.clone();
    println!("\n7. Human approval: a higher stage, and a write held in draft stage");
    let alice = user_token(admin, "alice@example.com").await?;
    let carol = user_token(admin, "carol@example.com").await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    escalation(&http, admin, support, &alice, &carol, &gw).await?;
    let mut form = support.auth_fields(&admin.url)?;
    form.extend([
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
        ),
        ("subject_token", alice.clone()),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:jwt".to_owned(),
        ),
        ("scope", "tickets:create".to_owned()),
        ("stage", "draft".to_owned()),
        ("resource", gw.clone()),
        ("task", TASK.to_owned()),
    ]);
    let issued = admin.oauth("/oauth2/token", &form).await?;
    let token = issued["access_token"].as_str().unwrap_or_default();
    println!("   support-v2 (max stage `draft`) gets a `draft` token for tickets:create");
    let before = sample.sample().tickets().len();
    let resp = http
        .post(format!("{gw}/tickets"))
        .bearer_auth(token)
        .json(&json!({"customer": "9821", "subject": "refund for order 1182"}))
        .send()
        .await
        .context("the gateway answers")?;
    let status = resp.status().as_u16();
    let held: Value = resp.json().await.unwrap_or(Value::Null);
    let id = held["proposal"].as_str().unwrap_or_default().to_owned();
    let poll = held["poll"].as_str().unwrap_or_default().to_owned();
    println!(
        "   POST /tickets → {status}: held as proposal {id}; the CRM has {} new tickets",
        sample.sample().tickets().len() - before
    );
    let shown = admin.get(&format!("/v1/approvals/{id}")).await?;
    println!(
        "   the approver sees: {}",
        shown["binding_message"].as_str().unwrap_or("?")
    );
    let (status, body) = approve(&http, &admin.url, &id, &alice).await?;
    println!(
        "   ✓ alice approves her own request → {status}: {}",
        body["message"].as_str().unwrap_or_default()
    );
    let (status, _) = approve(&http, &admin.url, &id, &carol).await?;
    println!("   carol (support-v2's owner, group `approver`) approves → {status}");
    let mut answer = (0u16, Value::Null);
    for _ in 0..100 {
        let resp = http.get(&poll).bearer_auth(token).send().await?;
        answer.0 = resp.status().as_u16();
        answer.1 = resp.json().await.unwrap_or(Value::Null);
        if answer.0 != 202 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    println!(
        "   support-v2 polls its proposal → {} ticket {} (sent once; the CRM now has {} new ticket)",
        answer.0,
        answer.1["id"].as_str().unwrap_or("?"),
        sample.sample().tickets().len() - before
    );
    let (status, body) = approve(&http, &admin.url, &id, &carol).await?;
    println!(
        "   ✓ approved again → {status}: {}",
        body["message"].as_str().unwrap_or_default()
    );
    console_view(running, &id).await?;
    // The gateway writes its audit lines beside its answers: let the send's line land.
    for _ in 0..50 {
        let sent = admin
            .get_query(
                "/v1/audit",
                &[("task", TASK.into()), ("decision", "allow".into())],
            )
            .await?;
        if sent["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "gateway.request"))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}
