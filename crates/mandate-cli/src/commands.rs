//! Admin subcommands: each one HTTP call (or a few) to `/v1`, printed as a table or JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{AgentKey, Client, claims_of};
use crate::output::{self, audit_line, s};

/// `mandate dev …`.
#[derive(Subcommand)]
pub enum DevCommand {
    /// Print a user token from the `--dev` server's test IdP.
    UserToken {
        /// The user's subject, e.g. `alice@example.com`.
        sub: String,
        /// Comma-separated groups (default: the demo user's groups).
        #[arg(long, value_delimiter = ',')]
        groups: Option<Vec<String>>,
        /// Lifetime in seconds; negative mints an already-expired token.
        #[arg(long, allow_hyphen_values = true)]
        ttl: Option<i64>,
        /// Extra claims as `key=value` (policies read them as tags), e.g. `--claim tier=gold`.
        #[arg(long = "claim")]
        claims: Vec<String>,
    },
}

/// `mandate agents …`.
#[derive(Subcommand)]
pub enum AgentsCommand {
    /// List agents.
    List,
    /// Show one agent.
    Show {
        /// Agent id.
        id: String,
    },
    /// Register an agent.
    Register {
        /// Slug id, e.g. `support-v2`.
        #[arg(long)]
        id: String,
        /// The accountable human.
        #[arg(long)]
        owner: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
        /// Ceiling scopes (space- or comma-separated; wildcards allowed).
        #[arg(long, value_delimiter = ',')]
        ceiling: Vec<String>,
        /// `observe`, `draft` or `execute`.
        #[arg(long, default_value = "observe")]
        max_stage: String,
        /// Public JWK files to register for client assertions.
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
        /// Tags policies can test (comma-separated).
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// Why it needs a ceiling pattern, as `PATTERN=WHY` (repeat for several); a write
        /// scope without one is a posture finding.
        #[arg(long = "justify", value_name = "PATTERN=WHY")]
        justify: Vec<String>,
        /// Every token must be DPoP-bound: a token request without a proof is refused.
        #[arg(long)]
        require_dpop: bool,
        /// A SPIFFE ID (or pattern: a `*` segment, a final `**`) whose JWT-SVIDs prove the agent
        /// (repeat for several).
        #[arg(long = "workload", value_name = "SPIFFE_ID")]
        workloads: Vec<String>,
        /// An OIDC workload issuer and subject (`ISSUER=SUBJECT`, a trailing `*` matches any
        /// suffix) whose tokens prove the agent (repeat for several).
        #[arg(long = "workload-oidc", value_name = "ISSUER=SUBJECT")]
        workloads_oidc: Vec<String>,
    },
    /// Change an agent.
    Update {
        /// Agent id.
        id: String,
        /// New owner.
        #[arg(long)]
        owner: Option<String>,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        /// New ceiling.
        #[arg(long, value_delimiter = ',')]
        ceiling: Option<Vec<String>>,
        /// New max stage.
        #[arg(long)]
        max_stage: Option<String>,
        /// New tags (comma-separated).
        #[arg(long, value_delimiter = ',')]
        tags: Option<Vec<String>>,
        /// Why: recorded with the approval when the change widens what the agent may do.
        #[arg(long)]
        justification: Option<String>,
        /// Whether every token must be DPoP-bound (`true` or `false`).
        #[arg(long, value_name = "BOOL")]
        require_dpop: Option<bool>,
        /// Record why it needs a ceiling pattern, as `PATTERN=WHY` (repeat for several);
        /// `PATTERN=` forgets it.
        #[arg(long = "justify", value_name = "PATTERN=WHY")]
        justify: Vec<String>,
        /// Replace its workload identities with these SPIFFE IDs or patterns (and the
        /// `--workload-oidc` ones; repeat for several).
        #[arg(long = "workload", value_name = "SPIFFE_ID")]
        workloads: Vec<String>,
        /// Replace its workload identities with these OIDC `ISSUER=SUBJECT` bindings (and the
        /// `--workload` ones).
        #[arg(long = "workload-oidc", value_name = "ISSUER=SUBJECT")]
        workloads_oidc: Vec<String>,
        /// Remove every workload identity.
        #[arg(long, conflicts_with_all = ["workloads", "workloads_oidc"])]
        no_workloads: bool,
    },
    /// Suspend an agent: its tokens stop working until it is resumed.
    Suspend {
        /// Agent id.
        id: String,
    },
    /// Resume a suspended agent.
    Resume {
        /// Agent id.
        id: String,
    },
    /// Retire an agent for good.
    Retire {
        /// Agent id.
        id: String,
    },
    /// Register another public key.
    AddKey {
        /// Agent id.
        id: String,
        /// Public JWK file (with `kid`).
        #[arg(long)]
        jwk: PathBuf,
        /// Expiry, seconds since the epoch.
        #[arg(long)]
        expires_at: Option<i64>,
    },
    /// Remove a key.
    RemoveKey {
        /// Agent id.
        id: String,
        /// Key id.
        kid: String,
    },
}

/// `mandate revoke KIND ID`.
#[derive(Args)]
pub struct RevokeArgs {
    /// `token`, `task`, `agent`, `user` or `key`.
    kind: String,
    /// The bare id: jti, task id, agent id, user sub, or kid.
    id: String,
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: Option<String>,
}

/// `mandate audit …`.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// The latest events, one line each.
    Tail {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
    },
    /// Query events.
    Query {
        /// Which events.
        #[command(flatten)]
        filters: crate::audit_cmds::Filters,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Who did what: one line per distinct user, agent chain, action and decision, with the
    /// count and first/last time, then the total (e.g. `--resource customers/9821 --on 2026-03-14`).
    Who(crate::audit_cmds::WhoArgs),
    /// Export matching events as JSON lines (`--format jsonl`, the default) or OCSF
    /// (`--format ocsf`), page by page, to standard output or `--out FILE`.
    Export(crate::audit_cmds::ExportArgs),
    /// Verify the hash chain and the signed checkpoints: through the server, or offline from a
    /// data directory; with `--segment`, archived segment files offline.
    Verify {
        /// Verify `<DIR>/mandate.db` directly (read-only), without a server.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Verify a PostgreSQL database directly (read-only), without a server: the URL the
        /// nodes use (`postgres://…`).
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// With `--data`, `--database-url` or `--segment`: check signatures with this JWKS (kept apart from the
        /// database) instead of the public keys stored in it.
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// Verify archived segment files offline (`audit-<first>-<last>.jsonl`, each with its
        /// `.manifest.json` beside it, in any order; a directory means all of its segments):
        /// every line, the chain inside and between them, the SHA-256 and the signed checkpoint;
        /// with `--data`, also their continuity with the database. Needs `--jwks` or `--data`
        /// for the keys.
        #[arg(long = "segment", value_name = "FILE", num_args = 1..)]
        segments: Vec<PathBuf>,
    },
    /// Archive the oldest events to a segment file under `<data>/audit-archive/` that still
    /// verifies (`--before DATE` or `--through-seq N`); the newest event always stays.
    Archive(crate::audit_cmds::ArchiveArgs),
    /// List the archived segments.
    Segments,
}

/// `mandate keys …`.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// List published signing keys.
    List,
    /// Make a new signing key; the old one stays in the JWKS until its tokens expire.
    Rotate,
}

/// `mandate credentials …`.
#[derive(Subcommand)]
pub enum CredentialsCommand {
    /// Make an admin, auditor, verifier or gateway credential; its secret is printed once.
    Create {
        /// A name, e.g. `ci-auditor`.
        #[arg(long)]
        id: String,
        /// `admin`, `auditor`, `verifier` (a resource server's: the revocation stream and
        /// introspection only) or `gateway` (a standalone gateway: that plus `/v1/gateway/*`).
        #[arg(long, default_value = "auditor")]
        role: String,
    },
}

/// `mandate token …`.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Exchange a subject token for a Mandate token as an agent (RFC 8693).
    Exchange {
        /// The agent id.
        #[arg(long)]
        agent: String,
        /// The agent's private JWK file (default: `./mandate-data/agents/<agent>.jwk`).
        #[arg(long)]
        key: Option<PathBuf>,
        /// The user's token, or a Mandate token for the next hop.
        #[arg(long)]
        subject_token: String,
        /// Space- or comma-separated scopes.
        #[arg(long, value_delimiter = ',')]
        scope: Vec<String>,
        /// Where the token will be used (RFC 8707).
        #[arg(long)]
        resource: String,
        /// Task id (default: a new task).
        #[arg(long)]
        task: Option<String>,
        /// Why.
        #[arg(long)]
        purpose: Option<String>,
        /// `observe`, `draft` or `execute`.
        #[arg(long)]
        stage: Option<String>,
    },
    /// Ask the server whether a token is alive (admin credential).
    Introspect {
        /// The token.
        #[arg(value_name = "TOKEN")]
        access_token: String,
    },
    /// Print a token's claims (no verification).
    Decode {
        /// The token.
        #[arg(value_name = "TOKEN")]
        access_token: String,
    },
}

pub async fn dev(
    c: DevCommand,
    url: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    let client = Client::new(url, token)?;
    match c {
        DevCommand::UserToken {
            sub,
            groups,
            ttl,
            claims,
        } => {
            let mut body = json!({"sub": sub});
            body["claims"] = Value::Object(crate::client::parse_claims(&claims)?);
            if let Some(g) = groups {
                body["groups"] = json!(g);
            }
            if let Some(t) = ttl {
                body["ttl"] = json!(t);
            }
            let v = client.post("/v1/dev/user-token", &body).await?;
            if json_out {
                output::json(&v);
            } else {
                println!("{}", s(&v, "token"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_agent(a: &Value) {
    println!("id:          {}", s(a, "id"));
    println!("name:        {}", s(a, "name"));
    println!("owner:       {}", s(a, "owner"));
    println!("status:      {}", s(a, "status"));
    println!("max stage:   {}", s(a, "max_stage"));
    let ceiling: Vec<&str> = a["ceiling"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!("ceiling:     {}", ceiling.join(" "));
    println!("description: {}", s(a, "description"));
    let tags: Vec<&str> = a["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!("tags:        {}", tags.join(" "));
    if a["require_dpop"].as_bool() == Some(true) {
        println!("dpop:        required (tokens are bound to the agent's key)");
    }
    for k in a["keys"].as_array().into_iter().flatten() {
        let state = if !k["revoked_at"].is_null() {
            "revoked"
        } else {
            "active"
        };
        println!(
            "key:         {} ({}, expires {})",
            s(k, "kid"),
            state,
            s(k, "expires_at")
        );
    }
    for w in a["workloads"].as_array().into_iter().flatten() {
        match w["kind"].as_str() {
            Some("spiffe") => println!("workload:    {}", s(w, "id")),
            _ => println!("workload:    {} {}", s(w, "issuer"), s(w, "subject")),
        }
    }
}

fn split_scopes(items: Vec<String>) -> Vec<String> {
    items
        .iter()
        .flat_map(|i| i.split_whitespace())
        .map(str::to_owned)
        .collect()
}

/// `--justify PATTERN=WHY` values as the `justifications` object; an empty `WHY` is `null`
/// (forget it) when `forget` allows, else refused.
fn justifications(items: &[String], forget: bool) -> Result<serde_json::Map<String, Value>> {
    let mut map = serde_json::Map::new();
    for item in items {
        let Some((pattern, why)) = item.split_once('=') else {
            bail!("`--justify` takes `PATTERN=WHY`, not `{item}`");
        };
        let why = why.trim();
        let value = match (why.is_empty(), forget) {
            (false, _) => json!(why),
            (true, true) => Value::Null,
            (true, false) => bail!("`--justify {item}` gives no reason after `=`"),
        };
        map.insert(pattern.trim().to_owned(), value);
    }
    Ok(map)
}

/// `--workload` and `--workload-oidc` values as the `workloads` array of the admin API.
fn workload_bindings(spiffe: &[String], oidc: &[String]) -> Result<Vec<Value>> {
    let mut v: Vec<Value> = spiffe
        .iter()
        .map(|id| json!({"kind": "spiffe", "id": id.trim()}))
        .collect();
    for item in oidc {
        let Some((issuer, subject)) = item.split_once('=') else {
            bail!("`--workload-oidc` takes `ISSUER=SUBJECT`, not `{item}`");
        };
        v.push(json!({"kind": "oidc", "issuer": issuer.trim(), "subject": subject.trim()}));
    }
    Ok(v)
}

fn read_json(path: &PathBuf) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("`{}` is not JSON", path.display()))
}

pub async fn agents(
    c: AgentsCommand,
    url: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    let client = Client::new(url, token)?;
    let v = match c {
        AgentsCommand::List => {
            let v = client.get("/v1/agents").await?;
            if !json_out {
                let rows: Vec<Vec<String>> = v["agents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let ceiling: Vec<&str> = a["ceiling"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        vec![
                            s(a, "id"),
                            s(a, "owner"),
                            s(a, "status"),
                            s(a, "max_stage"),
                            ceiling.join(" "),
                        ]
                    })
                    .collect();
                output::table(&["id", "owner", "status", "max stage", "ceiling"], &rows);
                return Ok(ExitCode::SUCCESS);
            }
            v
        }
        AgentsCommand::Show { id } => client.get(&format!("/v1/agents/{id}")).await?,
        AgentsCommand::Register {
            id,
            owner,
            name,
            description,
            ceiling,
            max_stage,
            keys,
            tags,
            justify,
            require_dpop,
            workloads,
            workloads_oidc,
        } => {
            let mut jwks = Vec::new();
            for k in &keys {
                jwks.push(read_json(k)?);
            }
            let body = json!({"id": id, "owner": owner, "name": name, "description": description,
                "ceiling": split_scopes(ceiling), "max_stage": max_stage, "keys": jwks, "tags": tags,
                "justifications": justifications(&justify, false)?, "require_dpop": require_dpop,
                "workloads": workload_bindings(&workloads, &workloads_oidc)?});
            client.post("/v1/agents", &body).await?
        }
        AgentsCommand::Update {
            id,
            owner,
            name,
            description,
            ceiling,
            max_stage,
            tags,
            justification,
            justify,
            require_dpop,
            workloads,
            workloads_oidc,
            no_workloads,
        } => {
            let mut body = json!({});
            if no_workloads || !workloads.is_empty() || !workloads_oidc.is_empty() {
                body["workloads"] = json!(workload_bindings(&workloads, &workloads_oidc)?);
            }
            if let Some(d) = require_dpop {
                body["require_dpop"] = json!(d);
            }
            if !justify.is_empty() {
                body["justifications"] = Value::Object(justifications(&justify, true)?);
            }
            for (k, v) in [
                ("owner", owner),
                ("name", name),
                ("description", description),
                ("max_stage", max_stage),
                ("justification", justification),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            if let Some(c) = ceiling {
                body["ceiling"] = json!(split_scopes(c));
            }
            if let Some(t) = tags {
                body["tags"] = json!(t);
            }
            let v = client.patch(&format!("/v1/agents/{id}"), &body).await?;
            // A widening change is held for a human's approval (`202`).
            if !json_out && crate::approvals::print_held_change(&v) {
                return Ok(ExitCode::SUCCESS);
            }
            v
        }
        AgentsCommand::Suspend { id } => {
            client
                .post(&format!("/v1/agents/{id}/suspend"), &json!({}))
                .await?
        }
        AgentsCommand::Resume { id } => {
            client
                .post(&format!("/v1/agents/{id}/resume"), &json!({}))
                .await?
        }
        AgentsCommand::Retire { id } => {
            client
                .post(&format!("/v1/agents/{id}/retire"), &json!({}))
                .await?
        }
        AgentsCommand::AddKey {
            id,
            jwk,
            expires_at,
        } => {
            let body = json!({"jwk": read_json(&jwk)?, "expires_at": expires_at});
            let v = client.post(&format!("/v1/agents/{id}/keys"), &body).await?;
            if !json_out {
                println!("key `{}` registered for agent `{id}`", s(&v, "kid"));
                return Ok(ExitCode::SUCCESS);
            }
            v
        }
        AgentsCommand::RemoveKey { id, kid } => {
            client
                .delete(&format!("/v1/agents/{id}/keys/{kid}"))
                .await?;
            if !json_out {
                println!("key `{kid}` removed from agent `{id}`");
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    if json_out {
        output::json(&v);
    } else {
        print_agent(&v);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn revoke(
    a: RevokeArgs,
    url: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    let client = Client::new(url, token)?;
    let v = client
        .post(
            "/v1/revocations",
            &json!({"kind": a.kind, "id": a.id, "reason": a.reason}),
        )
        .await?;
    if json_out {
        output::json(&v);
    } else {
        println!(
            "revoked {} `{}` ({}): {} live token(s) ended",
            s(&v, "kind"),
            s(&v, "target"),
            s(&v, "id"),
            s(&v, "tokens_ended")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn revocations(url: &str, token: Option<String>, json_out: bool) -> Result<ExitCode> {
    let client = Client::new(url, token)?;
    let v = client.get("/v1/revocations").await?;
    if json_out {
        output::json(&v);
    } else {
        let rows: Vec<Vec<String>> = v["revocations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                vec![
                    s(r, "id"),
                    s(r, "kind"),
                    s(r, "target"),
                    s(r, "by"),
                    s(r, "at"),
                    s(r, "reason"),
                ]
            })
            .collect();
        output::table(&["id", "kind", "target", "by", "at", "reason"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_events(v: &Value, json_out: bool) {
    let events = v["events"].as_array().cloned().unwrap_or_default();
    for e in &events {
        if json_out {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
        } else {
            println!("{:>6} {}", s(e, "seq"), audit_line(e));
        }
    }
}

pub(crate) fn print_report(report: &Value, json_out: bool) -> ExitCode {
    if json_out {
        output::json(report);
    }
    let ok = report["ok"].as_bool().unwrap_or(false);
    if !json_out {
        if ok {
            println!(
                "audit chain intact: {} events verified, head {}",
                s(report, "checked"),
                s(report, "head")
            );
        } else if report["first_break"].is_null() {
            println!(
                "audit chain consistent ({} events, head {}) but contradicted by its checkpoints",
                s(report, "checked"),
                s(report, "head")
            );
        } else {
            let b = &report["first_break"];
            println!(
                "audit chain BROKEN at seq {}: {}",
                s(b, "seq"),
                s(b, "problem")
            );
            println!("{} events before it verified", s(report, "checked"));
        }
    }
    if !json_out {
        let findings = report["checkpoint_findings"].as_array();
        for f in findings.into_iter().flatten() {
            println!(
                "checkpoint finding at seq {}: {}",
                s(f, "seq"),
                s(f, "problem")
            );
        }
        if let Some(n) = report["checkpoints_checked"].as_u64() {
            println!("{n} signed checkpoints checked");
        }
        let archived = &report["archived"];
        if archived["segments"].as_u64().is_some_and(|n| n > 0) {
            println!(
                "{} events through seq {} are archived in {} segment file(s); the chain was \
                 checked from there ({} checkpoints name archived events): verify the files with \
                 `mandate audit verify --segment`",
                s(archived, "events"),
                s(archived, "through_seq"),
                s(archived, "segments"),
                s(archived, "checkpoints_archived")
            );
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

pub async fn audit(
    c: AuditCommand,
    url: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    match c {
        AuditCommand::Tail { lines } => {
            let client = Client::new(url, token)?;
            let mut v = client
                .get_query(
                    "/v1/audit",
                    &[("limit", lines.to_string()), ("order", "desc".into())],
                )
                .await?;
            if let Some(a) = v["events"].as_array_mut() {
                a.reverse();
            }
            print_events(&v, json_out);
        }
        AuditCommand::Query { filters, limit } => {
            let client = Client::new(url, token)?;
            let mut q = vec![("limit", limit.to_string())];
            q.extend(filters.query());
            let v = client.get_query("/v1/audit", &q).await?;
            print_events(&v, json_out);
        }
        AuditCommand::Who(args) => {
            return crate::audit_cmds::who(args, url, token, json_out).await;
        }
        AuditCommand::Export(args) => return crate::audit_cmds::export(args, url, token).await,
        AuditCommand::Verify {
            data,
            database_url,
            jwks,
            segments,
        } => {
            let offline = crate::audit_cmds::Offline::from_args(data, database_url)?;
            if !segments.is_empty() {
                return crate::audit_cmds::verify_segments(&segments, offline, jwks, json_out)
                    .await;
            }
            let report = match offline {
                Some(src) => crate::audit_cmds::offline_report(&src, jwks.as_deref()).await?,
                None if jwks.is_some() => {
                    bail!(
                        "`--jwks` is for offline checks: give `--data DIR`, `--database-url URL` \
                         or `--segment FILE`"
                    )
                }
                None => Client::new(url, token)?.get("/v1/audit/verify").await?,
            };
            return Ok(print_report(&report, json_out));
        }
        AuditCommand::Archive(args) => {
            return crate::audit_cmds::archive(args, url, token, json_out).await;
        }
        AuditCommand::Segments => {
            return crate::audit_cmds::segments(url, token, json_out).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn keys(
    c: KeysCommand,
    url: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    let client = Client::new(url, token)?;
    match c {
        KeysCommand::List => {
            let v = client.get("/v1/keys").await?;
            if json_out {
                output::json(&v);
            } else {
                let rows: Vec<Vec<String>> = v["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| {
                        vec![
                            s(k, "kid"),
                            s(k, "alg"),
                            s(k, "current"),
                            s(k, "created_at"),
                            s(k, "publish_until"),
                        ]
                    })
                    .collect();
                output::table(
                    &["kid", "alg", "current", "created", "published until"],
                    &rows,
                );
            }
        }
        KeysCommand::Rotate => {
            let v = client.post("/v1/keys/rotate", &json!({})).await?;
            if json_out {
                output::json(&v);
            } else {
                println!(
                    "new signing key `{}`; `{}` stays in the JWKS until {}",
                    s(&v, "current"),
                    s(&v, "previous"),
                    s(&v, "previous_published_until")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn credentials(
    c: CredentialsCommand,
    url: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    let client = Client::new(url, token)?;
    match c {
        CredentialsCommand::Create { id, role } => {
            let v = client
                .post("/v1/credentials", &json!({"id": id, "role": role}))
                .await?;
            if json_out {
                output::json(&v);
            } else {
                println!(
                    "credential `{}` ({}) — shown once, store it now:",
                    s(&v, "id"),
                    s(&v, "role")
                );
                println!("{}", s(&v, "secret"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn token(
    c: TokenCommand,
    url: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    let client = Client::new(url, token)?;
    match c {
        TokenCommand::Exchange {
            agent,
            key,
            subject_token,
            scope,
            resource,
            task,
            purpose,
            stage,
        } => {
            let key =
                key.unwrap_or_else(|| PathBuf::from(format!("mandate-data/agents/{agent}.jwk")));
            let agent_key = AgentKey::load(&agent, &key)?;
            let subject_type = if claims_of(&subject_token).get("act").is_some() {
                "urn:ietf:params:oauth:token-type:access_token"
            } else {
                "urn:ietf:params:oauth:token-type:jwt"
            };
            let mut form = agent_key.auth_fields(&client.url)?;
            form.extend([
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
                ),
                ("subject_token", subject_token),
                ("subject_token_type", subject_type.to_owned()),
                ("scope", split_scopes(scope).join(" ")),
                ("resource", resource),
            ]);
            for (k, v) in [("task", task), ("task_purpose", purpose), ("stage", stage)] {
                if let Some(v) = v {
                    form.push((k, v));
                }
            }
            let v = client.oauth("/oauth2/token", &form).await?;
            if json_out {
                output::json(&v);
            } else {
                println!("{}", s(&v, "access_token"));
            }
        }
        TokenCommand::Introspect { access_token } => {
            let v = client
                .oauth_admin("/oauth2/introspect", &[("token", access_token)])
                .await?;
            output::json(&v);
            if v["active"] != json!(true) {
                return Ok(ExitCode::from(1));
            }
        }
        TokenCommand::Decode { access_token } => {
            let c = claims_of(&access_token);
            if c.is_null() {
                bail!("not a JWT");
            }
            output::json(&c);
        }
    }
    Ok(ExitCode::SUCCESS)
}
