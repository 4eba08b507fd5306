//! Chapter 10 of `mandate demo`: a second node on the same PostgreSQL database
//! (`mandate demo --database-url URL`). A token issued by node 1 is honoured by node 2; a
//! revocation made on node 2 is refused by node 1 a few milliseconds later; the audit chain both
//! wrote verifies as one.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use mandate_server::config::DatabaseUrl;
use mandate_server::{Config, Options, Running};
use serde_json::json;

use crate::client::{AgentKey, Client};

/// Refuses a database that already holds a Mandate world: the demo makes its own, and its
/// agents' private keys live only in its temporary directory.
pub async fn check_empty(url: &str) -> Result<()> {
    use mandate_store::Store;
    // No schema yet (the usual case) is fine: the demo creates it.
    let Ok(store) = mandate_store::PostgresStore::connect_read_only(url).await else {
        return Ok(());
    };
    let agents = store.agents().await.context("cannot read the database")?;
    store.close().await;
    if agents.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "`--database-url` names a database that already holds agents: give the demo an \
             empty database (it makes its own world)"
        ))
    }
}

/// Tells how to see the chapter when the demo runs on SQLite.
pub fn skipped() {
    println!("\n10. Several nodes on one database");
    println!(
        "   (skipped: this demo runs on SQLite; `mandate demo --database-url postgres://…` with an \
         empty database starts a second node on it)"
    );
}

/// Introspects `token` at `base`: whether it is active.
async fn active(client: &Client, token: &str) -> Result<bool> {
    let v = client
        .oauth_admin("/oauth2/introspect", &[("token", token.to_owned())])
        .await?;
    Ok(v["active"].as_bool().unwrap_or(false))
}

/// The chapter: starts node 2 beside `running` (node 1) on `url`, shows a token crossing and a
/// revocation coming back, and stops node 2.
pub async fn chapter(
    running: &Running,
    admin: &Client,
    support: &AgentKey,
    url: &str,
) -> Result<()> {
    println!("\n10. Several nodes on one database");
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: running.data_dir.clone(),
        issuer: Some(running.url.clone()),
        database_url: Some(DatabaseUrl(url.to_owned())),
        ..Config::default()
    };
    let node2 = mandate_server::start(Options::new(config, true))
        .await
        .context("cannot start the second node")?;
    let result = story(running, admin, support, &node2).await;
    node2.shutdown().await;
    result
}

async fn story(
    running: &Running,
    admin: &Client,
    support: &AgentKey,
    node2: &Running,
) -> Result<()> {
    let node2_url = format!("http://{}", node2.addr);
    println!(
        "   node 2 starts at {node2_url}: same PostgreSQL database, same issuer ({}), same master key",
        running.url
    );
    let admin2 = Client::new(&node2_url, running.admin_token.clone())?;

    let user = admin
        .post("/v1/dev/user-token", &json!({"sub": "alice@example.com"}))
        .await?;
    let user = user["token"]
        .as_str()
        .ok_or_else(|| anyhow!("no user token"))?;
    let mut form = support.auth_fields(&running.url)?;
    form.extend([
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
        ),
        ("subject_token", user.to_owned()),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:jwt".to_owned(),
        ),
        ("scope", "crm.customers:read".to_owned()),
        ("resource", "https://crm.example.com".to_owned()),
    ]);
    let issued = admin.oauth("/oauth2/token", &form).await?;
    let token = issued["access_token"]
        .as_str()
        .ok_or_else(|| anyhow!("node 1 issued no token: {issued}"))?
        .to_owned();
    let claims = mandate_token::verify::peek_claims(&token)?;
    let jti = claims["jti"].as_str().unwrap_or_default().to_owned();
    println!("   node 1 issues support-v2 a token for alice (jti {jti})");
    println!(
        "   node 2 introspects it: active = {}",
        active(&admin2, &token).await?
    );

    admin2
        .post("/v1/revocations", &json!({"kind": "token", "id": jti}))
        .await?;
    let revoked = Instant::now();
    println!("   node 2 revokes it; node 2 tells node 1 through PostgreSQL (LISTEN/NOTIFY)");
    let refused = loop {
        if !active(admin, &token).await? {
            break revoked.elapsed();
        }
        if revoked.elapsed() > Duration::from_secs(5) {
            return Err(anyhow!("node 1 never heard of the revocation"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    println!(
        "   ✓ node 1 refuses it {:.1} ms after node 2 answered",
        refused.as_secs_f64() * 1000.0
    );
    let report = admin2.get("/v1/audit/verify").await?;
    println!(
        "   one audit chain, written by both nodes: {} events, intact = {}",
        report["checked"], report["ok"]
    );
    Ok(())
}
