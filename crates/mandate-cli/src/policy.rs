//! `mandate policy …`: validate and test policy files offline (for policy authors' own CI), and
//! show, reload and explain the policies of a running server.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::Client;
use crate::output::{self, s};

/// `mandate policy …`.
#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy directory against Mandate's schema (offline).
    Validate {
        /// The directory (default: `./policies`, else `./mandate-data/policies`).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run a file of requests with expected decisions against a policy directory (offline).
    Test {
        /// The JSON file of cases.
        file: PathBuf,
        /// The directory (default as for `validate`).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Ask the server which policies decide a request, and why (AuthZEN).
    Explain {
        /// A user's subject (or use `--agent`).
        #[arg(long)]
        user: Option<String>,
        /// The user's groups.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// User claims as `key=value` (read by policies as tags).
        #[arg(long = "claim")]
        claims: Vec<String>,
        /// An agent id (instead of a user).
        #[arg(long)]
        agent: Option<String>,
        /// A scope, or `delegate`.
        #[arg(long)]
        action: String,
        /// The resource or audience (for `delegate`, the receiving agent).
        #[arg(long)]
        resource: String,
        /// The stage.
        #[arg(long)]
        stage: Option<String>,
    },
    /// The policies in force on the server, and the last reload error.
    Show,
    /// Reload the server's policy files.
    Reload,
}

fn default_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| {
        let p = PathBuf::from("policies");
        if p.is_dir() {
            p
        } else {
            PathBuf::from("mandate-data/policies")
        }
    })
}

fn load(dir: &std::path::Path) -> Result<mandate_policy::Engine, ExitCode> {
    match mandate_policy::load_dir(dir, &BTreeSet::new()) {
        Ok(e) => Ok(e),
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            Err(ExitCode::FAILURE)
        }
    }
}

/// Runs a `policy` subcommand.
pub async fn run(
    c: PolicyCommand,
    url: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    match c {
        PolicyCommand::Validate { dir } => {
            let dir = default_dir(dir);
            let engine = match load(&dir) {
                Ok(e) => e,
                Err(code) => return Ok(code),
            };
            for w in engine.warnings() {
                eprintln!("warning: {w}");
            }
            println!(
                "{} policies in {} file(s) under `{}` are valid",
                engine.policy_count(),
                engine.files().len(),
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Test { file, dir } => {
            let dir = default_dir(dir);
            let engine = match load(&dir) {
                Ok(e) => e,
                Err(code) => return Ok(code),
            };
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read `{}`", file.display()))?;
            let cases = mandate_policy::cases::parse(&text)
                .map_err(|e| anyhow::anyhow!("`{}`: {e}", file.display()))?;
            let results = mandate_policy::cases::run(&engine, &cases);
            let failed = results.iter().filter(|r| !r.passed).count();
            for r in &results {
                println!(
                    "{} {}: {}",
                    if r.passed { "ok  " } else { "FAIL" },
                    r.name,
                    r.detail
                );
            }
            println!("{} passed, {failed} failed", results.len() - failed);
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PolicyCommand::Explain {
            user,
            groups,
            claims,
            agent,
            action,
            resource,
            stage,
        } => {
            let client = Client::new(url, token)?;
            let subject = match (user, agent) {
                (Some(u), None) => {
                    let mut props = crate::client::parse_claims(&claims)?;
                    props.insert("groups".into(), json!(groups));
                    json!({"type": "user", "id": u, "properties": props})
                }
                (None, Some(a)) => json!({"type": "agent", "id": a}),
                _ => anyhow::bail!("name exactly one of `--user` and `--agent`"),
            };
            let kind = if action == "delegate" {
                "agent"
            } else {
                "resource"
            };
            let mut body = json!({"subject": subject, "action": {"name": action}, "resource": {"type": kind, "id": resource}});
            if let Some(st) = stage {
                body["context"] = json!({"stage": st});
            }
            let v = client.post("/access/v1/evaluation", &body).await?;
            if json_out {
                output::json(&v);
            } else {
                let allowed = v["decision"].as_bool().unwrap_or(false);
                println!(
                    "{}: {}",
                    if allowed { "allow" } else { "deny" },
                    s(&v["context"]["reason_admin"], "en")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Show => {
            let v = Client::new(url, token)?.get("/v1/policies").await?;
            if json_out {
                output::json(&v);
            } else {
                let files: Vec<&str> = v["files"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                println!(
                    "{} policies in force from {}",
                    s(&v, "policies"),
                    files.join(", ")
                );
                for e in v["last_reload_error"].as_array().into_iter().flatten() {
                    println!(
                        "last reload refused: `{}` line {}: {}",
                        s(e, "file"),
                        s(e, "line"),
                        s(e, "message")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Reload => {
            let v = Client::new(url, token)?
                .post("/v1/policies/reload", &json!({}))
                .await?;
            if json_out {
                output::json(&v);
            } else {
                println!("{} policies in force", s(&v, "policies"));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
