//! `mandate demo`: the whole story in one process, over real HTTP, printed for a person to read
//! in a minute. A throwaway `--dev` server runs on a free loopback port with a temporary data
//! directory; everything below goes through its public endpoints.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use mandate_server::{Config, Options};
use serde_json::Value;

use crate::client::{AgentKey, Client, claims_of};
use crate::output::audit_line;

const CRM: &str = "https://crm.example.com";
const TASK: &str = "ticket-12847";

fn act_chain(claims: &Value) -> String {
    let mut out = Vec::new();
    let mut cur = claims.get("act");
    while let Some(a) = cur {
        out.push(a["sub"].as_str().unwrap_or("?").to_owned());
        cur = a.get("act");
    }
    out.join(" ← ")
}

fn show_token(label: &str, token: &str, now: i64) {
    let c = claims_of(token);
    println!("   {label}");
    println!("     sub   = {}", c["sub"].as_str().unwrap_or("?"));
    println!("     act   = {}", act_chain(&c));
    println!("     scope = {}", c["scope"].as_str().unwrap_or("?"));
    println!(
        "     stage = {}   task = {}   expires in {} s",
        c["stage"].as_str().unwrap_or("?"),
        c["task"].as_str().unwrap_or("?"),
        c["exp"].as_i64().unwrap_or(0) - now
    );
}

struct Exchange<'a> {
    client: &'a Client,
    agent: &'a AgentKey,
    subject: &'a str,
    subject_type: &'a str,
    scope: &'a str,
}

impl Exchange<'_> {
    async fn run(&self, task: Option<&str>) -> Result<Value> {
        self.run_with(task, &[]).await
    }

    /// [`Exchange::run`] with extra form fields (e.g. `task_input`).
    async fn run_with(&self, task: Option<&str>, extra: &[(&'static str, &str)]) -> Result<Value> {
        let mut form = self.agent.auth_fields(&self.client.url)?;
        form.extend([
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
            ),
            ("subject_token", self.subject.to_owned()),
            ("subject_token_type", self.subject_type.to_owned()),
            ("scope", self.scope.to_owned()),
            ("resource", CRM.to_owned()),
        ]);
        if let Some(t) = task {
            form.push(("task", t.to_owned()));
            form.push((
                "task_purpose",
                "answer the customer's billing question".to_owned(),
            ));
        }
        form.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        self.client.oauth("/oauth2/token", &form).await
    }
}

/// The demo's second task ends well: the agent completes it with its outcome, and completing
/// it ends its token.
async fn completion(
    running: &mandate_server::Running,
    admin: &Client,
    support: &AgentKey,
) -> Result<()> {
    const DONE: &str = "ticket-12848";
    println!("\n5. A task that ends well: completing {DONE} ends its token too");
    let user = admin
        .post(
            "/v1/dev/user-token",
            &serde_json::json!({"sub": "alice@example.com"}),
        )
        .await?;
    let user_token = user["token"].as_str().unwrap_or_default();
    let issued = Exchange {
        client: admin,
        agent: support,
        subject: user_token,
        subject_type: "urn:ietf:params:oauth:token-type:jwt",
        scope: "tickets:read",
    }
    .run_with(
        Some(DONE),
        &[("task_input", "Where is my refund for invoice 77?")],
    )
    .await?;
    let token = issued["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let as_support = Client::new(&running.url, Some(token.clone()))?;
    as_support
        .post(
            &format!("/v1/tasks/{DONE}/steps"),
            &serde_json::json!({
                "decision": "read the ticket",
                "summary": "the refund was approved yesterday; the customer only needs the date",
                "tool_call": {"action": "tickets:read", "resource": "tickets/12848"},
            }),
        )
        .await?;
    let done = as_support
        .post(
            &format!("/v1/tasks/{DONE}/complete"),
            &serde_json::json!({"outcome": "told the customer the refund arrives on Friday"}),
        )
        .await?;
    println!(
        "   support-v2 completes it with its outcome: {} live token(s) ended",
        done["revocation"]["tokens_ended"]
    );
    let v = admin
        .oauth_admin("/oauth2/introspect", &[("token", token)])
        .await?;
    println!(
        "   introspection of the completed task's token: active = {}",
        v["active"]
    );
    println!("   its timeline (`mandate task show {DONE}`):");
    let task = admin.get(&format!("/v1/tasks/{DONE}")).await?;
    for line in crate::tasks::timeline(&task).lines() {
        println!("     {line}");
    }
    Ok(())
}

/// Now, in seconds since the epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Arguments of `mandate demo`.
#[derive(clap::Args, Debug, Default)]
pub struct DemoArgs {
    /// Run on this PostgreSQL database instead of SQLite, and start a second node on it
    /// (chapter 10). It must be empty: the demo makes its own world there and leaves it.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    if let Some(url) = &args.database_url {
        crate::demo_cluster::check_empty(url).await?;
    }
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let spire = crate::demo_workload::Spire::new(dir.path())?;
    let mut config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.path().to_owned(),
        database_url: args
            .database_url
            .clone()
            .map(mandate_server::config::DatabaseUrl),
        ..Config::default()
    };
    config.workload.spiffe = vec![spire.trust_domain()];
    let mut opts = Options::new(config, true);
    opts.gateway_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let running = mandate_server::start(opts)
        .await
        .context("cannot start the demo server")?;
    let result = story(&running, &spire, args.database_url.as_deref()).await;
    running.shutdown().await;
    result
}

async fn story(
    running: &mandate_server::Running,
    spire: &crate::demo_workload::Spire,
    database_url: Option<&str>,
) -> Result<ExitCode> {
    let admin = Client::new(&running.url, running.admin_token.clone())?;
    let agents = running.data_dir.join("agents");
    let support = AgentKey::load("support-v2", &agents.join("support-v2.jwk"))?;
    let analytics = AgentKey::load("analytics-v1", &agents.join("analytics-v1.jwk"))?;
    let jwt = "urn:ietf:params:oauth:token-type:jwt";
    let at = "urn:ietf:params:oauth:token-type:access_token";

    let storage = match database_url {
        Some(_) => "PostgreSQL at the `--database-url` given",
        None => "SQLite in a temporary directory",
    };
    println!(
        "Mandate demo: a throwaway server at {} ({storage})\n",
        running.url
    );
    println!("1. A user and the agent acting for her");
    println!(
        "   alice@example.com (group `support`) signs in; her ticket {TASK} goes to agent `support-v2`"
    );
    println!(
        "   (owner carol@example.com, ceiling `crm.customers:read tickets:* email:send mcp.crm.*:call`, max stage `draft`)."
    );
    let user = admin
        .post(
            "/v1/dev/user-token",
            &serde_json::json!({"sub": "alice@example.com"}),
        )
        .await?;
    let user_token = user["token"]
        .as_str()
        .ok_or_else(|| anyhow!("no user token"))?
        .to_owned();
    println!(
        "   support-v2 proves itself with a signed client assertion and exchanges alice's token (RFC 8693):"
    );
    let first = Exchange {
        client: &admin,
        agent: &support,
        subject: &user_token,
        subject_type: jwt,
        scope: "crm.customers:read tickets:read",
    }
    .run(Some(TASK))
    .await?;
    let first_token = first["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    show_token(
        "→ a short-lived token that names both of them:",
        &first_token,
        now(),
    );
    let decided = admin
        .get_query(
            "/v1/audit",
            &[
                ("task", TASK.into()),
                ("decision", "allow".into()),
                ("limit", "1".into()),
            ],
        )
        .await?;
    let policies: Vec<&str> = decided["events"][0]["policy_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!("     decided by Cedar policy: {}", policies.join(", "));
    println!(
        "   support-v2 keeps its own record of the work: each step, its reasoning, the call it means to make"
    );
    let as_support = Client::new(&running.url, Some(first_token.clone()))?;
    for (decision, summary) in [
        (
            "look up the customer",
            "the question is about invoice 77; read the account before answering",
        ),
        (
            "hand the lookup to analytics-v1",
            "analytics-v1 summarises a customer's plan; it only needs to read",
        ),
    ] {
        let step = as_support
            .post(
                &format!("/v1/tasks/{TASK}/steps"),
                &serde_json::json!({
                    "decision": decision, "summary": summary,
                    "tool_call": {"action": "crm.customers:read", "resource": "customers/9821"},
                }),
            )
            .await?;
        println!(
            "     step {}: {decision} — {summary} (→ crm.customers:read customers/9821)",
            step["step"]["seq"]
        );
    }

    println!(
        "\n2. A second hop: support-v2 hands the customer lookup to `analytics-v1` (owner bob, observe only)"
    );
    let second = Exchange {
        client: &admin,
        agent: &analytics,
        subject: &first_token,
        subject_type: at,
        scope: "crm.customers:read",
    }
    .run(None)
    .await?;
    let second_token = second["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    show_token(
        "→ the chain is kept and the rights only narrow:",
        &second_token,
        now(),
    );
    let handoff = admin
        .get_query(
            "/v1/audit",
            &[
                ("agent", "analytics-v1".into()),
                ("decision", "allow".into()),
                ("limit", "1".into()),
            ],
        )
        .await?;
    let policies: Vec<&str> = handoff["events"][0]["policy_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!(
        "     the hand-off itself was allowed by Cedar policy: {}",
        policies.join(", ")
    );

    println!("\n3. Over-reach is refused, with the reason");
    for (who, key, subject, subject_type, scope) in [
        (
            "analytics-v1 asks for alice's invoices (its ceiling allows them; her delegation does not)",
            &analytics,
            first_token.as_str(),
            at,
            "billing.invoices:read",
        ),
        (
            "analytics-v1 asks for tickets through support-v2's token",
            &analytics,
            first_token.as_str(),
            at,
            "tickets:read",
        ),
        (
            "support-v2 asks to delete a customer for alice (admins only)",
            &support,
            user_token.as_str(),
            jwt,
            "mcp.crm.delete_customer:call",
        ),
    ] {
        let r = Exchange {
            client: &admin,
            agent: key,
            subject,
            subject_type,
            scope,
        }
        .run(None)
        .await;
        match r {
            Ok(_) => println!("   ✗ {who}: unexpectedly allowed"),
            Err(e) => println!("   ✓ {who}:\n       {e}"),
        }
    }

    println!("\n4. A revocation mid-task: the admin revokes task {TASK}");
    // The CRM's side: a resource server using `mandate-verify`, following the revocation stream.
    let credential = admin
        .post(
            "/v1/credentials",
            &serde_json::json!({"id": "demo-crm", "role": "verifier"}),
        )
        .await?;
    let crm = mandate_verify::Verifier::builder(&running.url)
        .credential(credential["secret"].as_str().unwrap_or_default())
        .when_not_current(mandate_verify::WhenNotCurrent::Refuse)
        .start()
        .await?;
    if !crm.wait_for(0, std::time::Duration::from_secs(5)).await {
        bail!("the CRM's verifier did not connect to the revocation stream");
    }
    match crm.verify(&second_token).await {
        Ok(p) => println!(
            "   the CRM (mandate-verify, following the revocation stream) accepts analytics-v1's token: {}",
            p.describe()
        ),
        Err(e) => bail!("the CRM refused a live token: {e}"),
    }
    let rev = admin
        .post(
            "/v1/revocations",
            &serde_json::json!({"kind": "task", "id": TASK, "reason": "customer withdrew consent"}),
        )
        .await?;
    let returned = std::time::Instant::now();
    println!("   {} live token(s) ended at once", rev["tokens_ended"]);
    loop {
        match crm.verify(&second_token).await {
            Ok(_) if returned.elapsed() < std::time::Duration::from_secs(5) => {
                tokio::task::yield_now().await;
            }
            Ok(_) => bail!("the CRM still accepts the token 5 s after the revocation"),
            Err(e) => {
                println!(
                    "   ✓ the CRM refuses it {} µs after the revoke call returned: {e}",
                    returned.elapsed().as_micros()
                );
                break;
            }
        }
    }
    for (label, t) in [
        ("support-v2's token", &first_token),
        ("analytics-v1's token", &second_token),
    ] {
        let v = admin
            .oauth_admin("/oauth2/introspect", &[("token", t.clone())])
            .await?;
        println!("   introspection of {label}: active = {}", v["active"]);
    }
    match (Exchange {
        client: &admin,
        agent: &analytics,
        subject: &second_token,
        subject_type: at,
        scope: "crm.customers:read",
    })
    .run(None)
    .await
    {
        Ok(_) => println!("   ✗ analytics-v1 continued after the revocation"),
        Err(e) => println!("   ✓ analytics-v1 tries to go on: {e}"),
    }

    completion(running, &admin, &support).await?;
    crate::demo_gateway::chapter(&admin, &support, spire, running).await?;
    crate::demo_draft::chapter(&admin, &support, running).await?;
    crate::demo_posture::chapter(&admin).await?;

    println!("\n9. The audit trail: one hash-chained line per decision");
    let events = admin
        .get_query("/v1/audit", &[("limit", "200".into())])
        .await?;
    for e in events["events"].as_array().into_iter().flatten() {
        if e["kind"].as_str().is_some_and(|k| {
            k.starts_with("token.")
                || k == "revocation"
                || k.starts_with("gateway.")
                || k.starts_with("approval.")
        }) {
            println!("   {}", audit_line(e));
        }
    }
    let report = admin.get("/v1/audit/verify").await?;
    println!(
        "\n   chain verified: {} events, intact = {}, head {}",
        report["checked"],
        report["ok"],
        report["head"].as_str().unwrap_or("?")
    );
    match database_url {
        Some(url) => crate::demo_cluster::chapter(running, &admin, &support, url).await?,
        None => crate::demo_cluster::skipped(),
    }
    println!(
        "\nRun it yourself: `mandate serve --dev`, then `mandate --help`, or open the console \
         sign-in link it prints."
    );
    Ok(ExitCode::SUCCESS)
}
