//! The demo's gateway chapter: support-v2 reaches the sample CRM only through the gateway,
//! which checks each request at the level of the record, swaps the agent's token for the CRM's
//! real key and a Transaction Token, filters the MCP tool list, and writes one audit line per
//! call.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::client::{AgentKey, Client};

/// The task of this chapter.
const TASK: &str = "ticket-12849";

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req
            .header("accept", "application/json, text/event-stream")
            .json(&b);
    }
    let resp = req.send().await.context("the gateway answers")?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

fn said(v: &Value) -> String {
    v["error_description"]
        .as_str()
        .or_else(|| v["error"]["message"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Runs the chapter against the gateway at `gateway` (the running server's).
pub async fn chapter(
    admin: &Client,
    support: &AgentKey,
    spire: &crate::demo_workload::Spire,
    running: &mandate_server::Running,
) -> Result<()> {
    let Some(gw) = running.gateway.as_ref() else {
        bail!("the demo server runs no gateway");
    };
    let Some(sample) = running.sample.as_ref() else {
        bail!("the demo server runs no sample CRM");
    };
    let gw = gw.url.clone();
    println!("\n6. The gateway: the agent never holds the CRM's key");
    println!(
        "   the CRM ({}) sits behind the gateway ({gw}); its API key is in Mandate's secret store",
        sample.url()
    );
    let user = admin
        .post(
            "/v1/dev/user-token",
            &json!({"sub": "alice@example.com", "claims": {"region": "emea"}}),
        )
        .await?;
    let user_token = user["token"]
        .as_str()
        .ok_or_else(|| anyhow!("no user token"))?;
    let mut form = support.auth_fields(&admin.url)?;
    form.extend(exchange_form(
        user_token,
        "crm.customers:read mcp.crm.lookup_customer:call",
        &gw,
        TASK,
    ));
    let issued = admin.oauth("/oauth2/token", &form).await?;
    let token = issued["access_token"].as_str().unwrap_or_default();
    println!(
        "   support-v2 exchanges alice's token (region emea) for one whose audience is the gateway"
    );
    let http = reqwest::Client::builder().no_proxy().build()?;
    let (status, body) = call(
        &http,
        reqwest::Method::GET,
        &format!("{gw}/customers/9821"),
        token,
        None,
    )
    .await?;
    println!(
        "   GET /customers/9821 → {status} {} (the CRM served it for {} via {})",
        body["name"].as_str().unwrap_or("?"),
        body["served_for"]["user"].as_str().unwrap_or("?"),
        body["served_for"]["agents"]
    );
    if let Some(seen) = sample.sample().seen().last() {
        let names: Vec<&str> = seen
            .headers
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| ["x-api-key", "txn-token", "authorization"].contains(n))
            .collect();
        println!(
            "   the CRM received: {} — the real key and a signed Transaction Token, never the agent's token",
            names.join(", ")
        );
    }
    let (status, body) = call(
        &http,
        reqwest::Method::GET,
        &format!("{gw}/regions/amer/customers/4410"),
        token,
        None,
    )
    .await?;
    println!(
        "   ✓ GET /regions/amer/customers/4410 → {status}: {}",
        said(&body)
    );
    let (status, body) = call(
        &http,
        reqwest::Method::POST,
        &format!("{gw}/tickets"),
        token,
        Some(json!({"customer": "9821", "subject": "refund"})),
    )
    .await?;
    println!("   ✓ POST /tickets → {status}: {}", said(&body));

    let (_, list) = call(
        &http,
        reqwest::Method::POST,
        &format!("{gw}/mcp"),
        token,
        Some(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})),
    )
    .await?;
    let tools: Vec<&str> = list["result"]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    println!("   MCP: the CRM's server has 2 tools; through the gateway support-v2 sees {tools:?}");
    let (status, body) = call(
        &http,
        reqwest::Method::POST,
        &format!("{gw}/mcp"),
        token,
        Some(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "delete_customer", "arguments": {"id": "9821"}}})),
    )
    .await?;
    println!(
        "   ✓ tools/call delete_customer → {status} {}: {}",
        body["error"].as_str().unwrap_or_default(),
        said(&body)
    );
    dpop(admin, support, &http, &gw, user_token).await?;
    crate::demo_workload::beat(admin, &http, spire, &gw, user_token, TASK).await?;
    // The gateway writes its audit lines beside its answers: let the last one land.
    for _ in 0..50 {
        let denied = admin
            .get_query(
                "/v1/audit",
                &[
                    ("task", TASK.into()),
                    ("action", "mcp.crm.delete_customer:call".into()),
                ],
            )
            .await?;
        if denied["events"].as_array().is_some_and(|e| !e.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The fields of a token exchange of `user_token` (a JWT) for `scope` on `resource` in `task`,
/// without client authentication.
pub(crate) fn exchange_form(
    user_token: &str,
    scope: &str,
    resource: &str,
    task: &str,
) -> [(&'static str, String); 6] {
    [
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
        ),
        ("subject_token", user_token.to_owned()),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:jwt".to_owned(),
        ),
        ("scope", scope.to_owned()),
        ("resource", resource.to_owned()),
        ("task", task.to_owned()),
    ]
}

/// A token bound to the agent's key (DPoP, RFC 9449): useless to whoever copies it.
async fn dpop(
    admin: &Client,
    support: &AgentKey,
    http: &reqwest::Client,
    gw: &str,
    user_token: &str,
) -> Result<()> {
    use mandate_token::dpop::prove;
    use mandate_token::{Alg, SigningKey};
    let now = crate::demo::now;
    let key = SigningKey::generate(Alg::EdDSA)?;
    let endpoint = format!("{}/oauth2/token", admin.url);
    let mut form = support.auth_fields(&admin.url)?;
    form.extend(exchange_form(user_token, "crm.customers:read", gw, TASK));
    let proof = prove(&key, "POST", &endpoint, None, None, now())?;
    let issued: Value = http
        .post(&endpoint)
        .header("DPoP", proof)
        .form(&form)
        .send()
        .await
        .context("the token endpoint answers")?
        .json()
        .await?;
    let Some(token) = issued["access_token"].as_str() else {
        bail!("no DPoP-bound token: {issued}");
    };
    let jkt = crate::client::claims_of(token)["cnf"]["jkt"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    println!(
        "   with a DPoP proof, support-v2 gets a token bound to its key (token_type {}, cnf.jkt {}…)",
        issued["token_type"].as_str().unwrap_or("?"),
        jkt.chars().take(12).collect::<String>()
    );
    let url = format!("{gw}/customers/9821");
    let send = |auth: String, proof: Option<String>| {
        let mut req = http.get(&url).header("authorization", auth);
        if let Some(p) = proof {
            req = req.header("DPoP", p);
        }
        async move {
            let resp = req.send().await.context("the gateway answers")?;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, body))
        }
    };
    let proof = prove(&key, "GET", &url, Some(token), None, now())?;
    let (status, _) = send(format!("DPoP {token}"), Some(proof.clone())).await?;
    println!("   GET /customers/9821 with a fresh proof by that key → {status}");
    let (status, body) = send(format!("Bearer {token}"), None).await?;
    println!(
        "   ✓ the same token copied out of the agent's memory, without the key → {status}: {}",
        said(&body)
    );
    let (status, body) = send(format!("DPoP {token}"), Some(proof)).await?;
    println!(
        "   ✓ with the agent's proof replayed → {status} {}",
        body["error"].as_str().unwrap_or_default()
    );
    Ok(())
}
