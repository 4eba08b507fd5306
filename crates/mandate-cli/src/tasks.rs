//! `mandate task …`: tasks as units of agent work — list, create, record steps, complete, and
//! show one timeline of everything that happened in a task.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use mandate_core::audit::AuditEvent;
use mandate_core::ids::TaskId;
use mandate_core::time::rfc3339_millis;
use serde_json::{Value, json};

use crate::client::Client;
use crate::output::{self, audit_line, s};

/// `mandate task …`.
#[derive(Subcommand)]
pub enum TaskCommand {
    /// Show a task as one timeline: its input, the agent's steps, its tokens, its audit events,
    /// the revocations that reached it, and its outcome.
    Show {
        /// Task id.
        id: String,
    },
    /// List tasks, newest first.
    List {
        /// Only this agent's tasks.
        #[arg(long)]
        agent: Option<String>,
        /// Only tasks for this user (subject).
        #[arg(long)]
        user: Option<String>,
        /// `active`, `completed` or `revoked`.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Create a task with its purpose and the input that triggered it.
    Create {
        /// Task id (default: a generated `task-…`).
        #[arg(long)]
        id: Option<String>,
        /// Why the task exists.
        #[arg(long)]
        purpose: String,
        /// The triggering input (at most 4 KiB), e.g. the ticket text.
        #[arg(long, default_value = "")]
        input: String,
        /// The agent doing the work (with an admin credential; an access token names its own).
        #[arg(long)]
        agent: Option<String>,
        /// The user it is for.
        #[arg(long)]
        user: Option<String>,
        /// Act as the agent: authenticate with this Mandate access token instead of the admin
        /// credential.
        #[arg(long)]
        access_token: Option<String>,
    },
    /// Record a step of an active task: what the agent decided, why, and the tool call it
    /// intends.
    Step {
        /// Task id.
        id: String,
        /// What was decided, in a few words.
        #[arg(long)]
        decision: String,
        /// Why: the reasoning.
        #[arg(long, default_value = "")]
        summary: String,
        /// The intended tool call's action (a scope, e.g. `crm.customers:read`).
        #[arg(long, requires = "resource")]
        action: Option<String>,
        /// The intended tool call's resource, e.g. `customers/9821`.
        #[arg(long, requires = "action")]
        resource: Option<String>,
        /// The intended tool call's arguments, as JSON.
        #[arg(long, requires = "action")]
        arguments: Option<String>,
        /// Anything anomalous the agent noticed.
        #[arg(long)]
        anomaly: Option<String>,
        /// Act as the agent: authenticate with this Mandate access token (bound to the task).
        #[arg(long)]
        access_token: Option<String>,
    },
    /// Complete a task with its outcome; every token of the task ends at once.
    Complete {
        /// Task id.
        id: String,
        /// How it ended.
        #[arg(long)]
        outcome: String,
        /// Act as the agent: authenticate with this Mandate access token (bound to the task).
        #[arg(long)]
        access_token: Option<String>,
    },
}

/// Runs a `mandate task …` command.
pub async fn run(
    c: TaskCommand,
    url: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    // Writes may act as the agent: its access token then takes the admin credential's place.
    let client = |access_token: Option<String>| Client::new(url, access_token.or(token.clone()));
    match c {
        TaskCommand::Show { id } => {
            let v = client(None)?
                .get(&format!("/v1/tasks/{}", path(&id)?))
                .await?;
            if json_out {
                output::json(&v);
            } else {
                print!("{}", timeline(&v));
            }
        }
        TaskCommand::List {
            agent,
            user,
            status,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            for (k, v) in [("agent", agent), ("user", user), ("status", status)] {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            let v = client(None)?.get_query("/v1/tasks", &query).await?;
            if json_out {
                output::json(&v);
            } else {
                let rows: Vec<Vec<String>> = v["tasks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        vec![
                            s(t, "id"),
                            s(t, "status"),
                            s(t, "agent"),
                            s(t, "user"),
                            t["created_at"].as_i64().map(time_s).unwrap_or_default(),
                            one_line(&s(t, "purpose"), 60),
                        ]
                    })
                    .collect();
                output::table(
                    &["id", "status", "agent", "user", "created", "purpose"],
                    &rows,
                );
            }
        }
        TaskCommand::Create {
            id,
            purpose,
            input,
            agent,
            user,
            access_token,
        } => {
            let mut body = json!({"purpose": purpose, "input": input});
            for (k, v) in [("id", id), ("agent", agent), ("user", user)] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            let v = client(access_token)?.post("/v1/tasks", &body).await?;
            if json_out {
                output::json(&v);
            } else {
                let t = &v["task"];
                println!(
                    "task {} created for agent {} (user {})",
                    s(t, "id"),
                    s(t, "agent"),
                    s(t, "user")
                );
            }
        }
        TaskCommand::Step {
            id,
            decision,
            summary,
            action,
            resource,
            arguments,
            anomaly,
            access_token,
        } => {
            let mut body = json!({"decision": decision, "summary": summary});
            if let (Some(action), Some(resource)) = (action, resource) {
                let mut call = json!({"action": action, "resource": resource});
                if let Some(a) = arguments {
                    call["arguments"] = serde_json::from_str(&a)
                        .context("`--arguments` must be JSON, e.g. '{\"id\": 9821}'")?;
                }
                body["tool_call"] = call;
            }
            if let Some(a) = anomaly {
                body["anomaly"] = json!(a);
            }
            let v = client(access_token)?
                .post(&format!("/v1/tasks/{}/steps", path(&id)?), &body)
                .await?;
            if json_out {
                output::json(&v);
            } else {
                println!("step {} recorded on task {id}", s(&v["step"], "seq"));
            }
        }
        TaskCommand::Complete {
            id,
            outcome,
            access_token,
        } => {
            let v = client(access_token)?
                .post(
                    &format!("/v1/tasks/{}/complete", path(&id)?),
                    &json!({"outcome": outcome}),
                )
                .await?;
            if json_out {
                output::json(&v);
            } else {
                println!(
                    "task {id} completed; {} live token(s) ended",
                    v["revocation"]["tokens_ended"]
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A task id as a path segment: a valid task id (letters, digits, `-_.:`), or refused here
/// rather than sent.
fn path(id: &str) -> Result<&str> {
    TaskId::parse(id)?;
    Ok(id)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`, the audit log's time format (so
/// every timeline line sorts as text).
fn time_ms(secs: i64) -> String {
    rfc3339_millis(secs.saturating_mul(1000))
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn time_s(secs: i64) -> String {
    let t = time_ms(secs);
    match t.strip_suffix(".000Z") {
        Some(base) => format!("{base}Z"),
        None => t,
    }
}

/// The first line of `text`, at most `n` characters, marked when cut.
fn one_line(text: &str, n: usize) -> String {
    let first = text.lines().next().unwrap_or_default();
    let cut: String = first.chars().take(n).collect();
    if cut.len() < text.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// `text` indented by `pad`, line by line.
fn indented(text: &str, pad: &str) -> String {
    text.lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// One entry of the timeline: its time (sortable text), a tie-break rank, and its lines.
struct Entry {
    time: String,
    rank: u8,
    text: String,
}

/// Where the continuation lines of an entry start.
const PAD: &str = "                                 ";

/// A token's line, at the time of its issuance event if there is one (to the millisecond), else
/// at its `iat`.
fn token_entry(tok: &Value, events: &[Value]) -> Entry {
    let iat = tok["iat"].as_i64().unwrap_or_default();
    let jti: String = s(tok, "jti").chars().take(8).collect();
    let revoked = match tok["revoked_at"].as_i64() {
        Some(at) => format!("  REVOKED at {}", time_s(at)),
        None => String::new(),
    };
    let issued = events.iter().find(|e| {
        e["jti"] == tok["jti"]
            && e["decision"] == "allow"
            && e["kind"].as_str().is_some_and(|k| k.starts_with("token."))
    });
    let time = issued.map_or_else(|| time_ms(iat), |e| s(e, "time"));
    Entry {
        text: format!(
            "  {time} token {jti}  via {}  {}  stage {}  exp {}{revoked}\n",
            strs(&tok["chain"]).join(" > "),
            s(tok, "scope"),
            s(tok, "stage"),
            tok["exp"].as_i64().map(time_s).unwrap_or_default(),
        ),
        time,
        rank: 0,
    }
}

fn step_entry(step: &Value) -> Entry {
    let time = s(step, "time");
    let mut text = format!(
        "  {time} step {} by {}: {}\n",
        s(step, "seq"),
        s(step, "by"),
        s(step, "decision")
    );
    let summary = step["summary"].as_str().unwrap_or_default();
    if !summary.is_empty() {
        text.push_str(&indented(summary, PAD));
    }
    if let Some(call) = step.get("tool_call").filter(|c| c.is_object()) {
        let args = match call.get("arguments") {
            Some(a) if !a.is_null() => format!(" {a}"),
            _ => String::new(),
        };
        text.push_str(&format!(
            "{PAD}intends: {} {}{args}\n",
            s(call, "action"),
            s(call, "resource")
        ));
    }
    if let Some(a) = step["anomaly"].as_str() {
        text.push_str(&format!("{PAD}ANOMALY flagged: {a}\n"));
    }
    Entry {
        time,
        rank: 1,
        text,
    }
}

fn event_entry(e: &Value) -> Entry {
    // The audit log's own one-line form (mandate-core), or the CLI's copy of it if the event
    // has fields this build does not know.
    let line = serde_json::from_value::<AuditEvent>(e.clone())
        .map(|ev| ev.line())
        .unwrap_or_else(|_| audit_line(e));
    Entry {
        time: s(e, "time"),
        rank: 2,
        text: format!("  {line}\n"),
    }
}

fn revocation_entry(r: &Value) -> Entry {
    let reason = match r["reason"].as_str() {
        Some(x) if !x.is_empty() => format!(": {x}"),
        _ => String::new(),
    };
    let time = match r["time"].as_str() {
        Some(t) => t.to_owned(),
        None => time_ms(r["at"].as_i64().unwrap_or_default()),
    };
    Entry {
        text: format!(
            "  {time} revocation {} of {} `{}` by {}{reason}; ended {} token(s) of this task\n",
            s(r, "id"),
            s(r, "kind"),
            s(r, "target"),
            s(r, "by"),
            r["tokens_ended"],
        ),
        time,
        rank: 3,
    }
}

/// The whole timeline of `GET /v1/tasks/{id}`, as text.
pub fn timeline(v: &Value) -> String {
    let t = &v["task"];
    let mut out = format!("task {}  ({})\n", s(t, "id"), s(t, "status"));
    out.push_str(&format!("  agent:   {}\n", s(t, "agent")));
    out.push_str(&format!("  user:    {}\n", s(t, "user")));
    out.push_str(&format!("  purpose: {}\n", s(t, "purpose")));
    if let Some(at) = t["created_at"].as_i64() {
        out.push_str(&format!("  created: {}\n", time_s(at)));
    }
    match t["input"].as_str() {
        Some(input) if !input.is_empty() => {
            out.push_str("input:\n");
            out.push_str(&indented(input, "  "));
        }
        _ => out.push_str("input: (none recorded)\n"),
    }
    let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    let (events, revocations) = (list("events"), list("revocations"));
    let mut entries: Vec<Entry> = Vec::new();
    entries.extend(list("tokens").iter().map(|t| token_entry(t, &events)));
    entries.extend(list("steps").iter().map(step_entry));
    // A step's and a shown revocation's own audit events would only repeat their lines.
    let shown = |e: &Value| {
        if e["kind"] == "task.step" {
            return true;
        }
        let detail: Value = e["detail"]
            .as_str()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        e["kind"] == "revocation" && revocations.iter().any(|r| r["id"] == detail["revocation"])
    };
    entries.extend(events.iter().filter(|e| !shown(e)).map(event_entry));
    entries.extend(revocations.iter().map(revocation_entry));
    // Stable: equal times keep tokens, steps, events, revocations in that order.
    entries.sort_by(|a, b| (&a.time, a.rank).cmp(&(&b.time, b.rank)));
    out.push_str("timeline:\n");
    if entries.is_empty() {
        out.push_str("  (nothing yet)\n");
    }
    for e in entries {
        out.push_str(&e.text);
    }
    match (t["outcome"].as_str(), t["completed_at"].as_i64()) {
        (Some(outcome), at) => {
            let when = at.map(|a| format!(" (completed {})", time_s(a)));
            out.push_str(&format!("outcome{}:\n", when.unwrap_or_default()));
            out.push_str(&indented(outcome, "  "));
        }
        (None, _) => out.push_str(&format!("outcome: none ({})\n", s(t, "status"))),
    }
    out
}
