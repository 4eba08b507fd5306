//! `mandate approvals …`: the requests waiting for a human — list, show, approve, deny.
//!
//! Listing and showing take the admin (or auditor) credential, or a human's own identity
//! provider token (`--as-token`), who then sees what they may decide and what was asked on their
//! behalf. Deciding always takes a human's own token: the server refuses an admin credential,
//! because separation of duties is about people.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use mandate_core::time::rfc3339_millis;
use serde_json::{Value, json};

use crate::client::Client;
use crate::output::{self, s};

/// The environment variable holding the deciding human's identity provider token.
pub const USER_TOKEN_ENV: &str = "MANDATE_USER_TOKEN";

/// `mandate approvals …`.
#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// List approvals, newest first (an undecided one past its expiry shows as `expired`).
    List {
        /// `pending`, `expired` (undecided past its expiry), `approved` or `denied`.
        #[arg(long)]
        status: Option<String>,
        /// Only this agent's.
        #[arg(long)]
        agent: Option<String>,
        /// Only those on behalf of this user (subject).
        #[arg(long)]
        user: Option<String>,
        /// `escalation`, `held_write` or `agent_change`.
        #[arg(long)]
        kind: Option<String>,
        /// At most this many (server default 100, at most 1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Look as this human (their identity provider token) instead of with the admin
        /// credential: only what they may decide or was asked on their behalf.
        #[arg(long = "as-token", value_name = "TOKEN")]
        as_token: Option<String>,
    },
    /// Show one approval, every field.
    Show {
        /// Approval id (`ap-…`).
        id: String,
        /// Look as this human (their identity provider token) instead of with the admin
        /// credential.
        #[arg(long = "as-token", value_name = "TOKEN")]
        as_token: Option<String>,
    },
    /// Approve: carry out the escalation, held write or agent change. Needs your own identity
    /// provider token; an admin credential cannot decide.
    Approve(Decide),
    /// Deny. Needs your own identity provider token; an admin credential cannot decide.
    Deny(Decide),
}

/// Arguments of `approve` and `deny`.
#[derive(Args)]
pub struct Decide {
    /// Approval id (`ap-…`).
    id: String,
    /// Why, in your words (recorded and audited).
    #[arg(long)]
    reason: Option<String>,
    /// Your own identity provider token (in `--dev`: `mandate dev user-token SUB`).
    #[arg(
        long = "as-token",
        value_name = "TOKEN",
        env = USER_TOKEN_ENV,
        hide_env_values = true
    )]
    as_token: Option<String>,
}

/// Runs a `mandate approvals …` command. `token` is the admin credential, if any.
pub async fn run(
    c: ApprovalsCommand,
    url: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    match c {
        ApprovalsCommand::List {
            status,
            agent,
            user,
            kind,
            limit,
            as_token,
        } => {
            let client = Client::new(url, viewer(as_token, token)?)?;
            let mut query = Vec::new();
            for (k, v) in [
                ("status", status),
                ("agent", agent),
                ("user", user),
                ("kind", kind),
                ("limit", limit.map(|l| l.to_string())),
            ] {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            let v = client.get_query("/v1/approvals", &query).await?;
            if json_out {
                output::json(&v);
            } else {
                let now = now();
                let rows: Vec<Vec<String>> = v["approvals"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        vec![
                            s(a, "id"),
                            s(a, "kind"),
                            s(a, "status"),
                            s(a, "agent"),
                            s(a, "user"),
                            expires_in(a, now),
                            shorten(&s(a, "binding_message"), 70),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    println!("no approvals");
                } else {
                    output::table(
                        &[
                            "id",
                            "kind",
                            "status",
                            "agent",
                            "user",
                            "expires in",
                            "binding message",
                        ],
                        &rows,
                    );
                }
            }
        }
        ApprovalsCommand::Show { id, as_token } => {
            let client = Client::new(url, viewer(as_token, token)?)?;
            let v = client.get(&format!("/v1/approvals/{}", path(&id)?)).await?;
            if json_out {
                output::json(&v);
            } else {
                print!("{}", details(&v, now()));
            }
        }
        ApprovalsCommand::Approve(d) => return decide(d, true, url, json_out).await,
        ApprovalsCommand::Deny(d) => return decide(d, false, url, json_out).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// The bearer for looking: `--as-token`, else the admin credential, else `MANDATE_USER_TOKEN`.
fn viewer(as_token: Option<String>, admin: Option<String>) -> Result<Option<String>> {
    let given = |t: Option<String>| t.filter(|t| !t.trim().is_empty());
    let user_env = || given(std::env::var(USER_TOKEN_ENV).ok());
    match given(as_token).or(given(admin)).or_else(user_env) {
        Some(t) => Ok(Some(t)),
        None => bail!(
            "no credential: pass the admin credential (`--token` or `MANDATE_TOKEN`), or your own \
             identity provider token (`--as-token` or `{USER_TOKEN_ENV}`)"
        ),
    }
}

async fn decide(d: Decide, approved: bool, url: &str, json_out: bool) -> Result<ExitCode> {
    let verb = if approved { "approve" } else { "deny" };
    let Some(user_token) = d.as_token.filter(|t| !t.trim().is_empty()) else {
        bail!(
            "`{verb}` needs your own identity provider token: pass `--as-token TOKEN` or set \
             `{USER_TOKEN_ENV}` (an admin credential cannot decide an approval: the approver must \
             be a human; in `--dev`, `mandate dev user-token carol@example.com` prints one)"
        );
    };
    let mut body = json!({});
    if let Some(r) = d.reason {
        body["reason"] = json!(r);
    }
    let client = Client::new(url, Some(user_token))?;
    let v = client
        .post(&format!("/v1/approvals/{}/{verb}", path(&d.id)?), &body)
        .await?;
    if json_out {
        output::json(&v);
    } else {
        print!("{}", decided(&v));
    }
    Ok(ExitCode::SUCCESS)
}

/// An approval id as a path segment: letters, digits, `-`, `_`, `.`, at most 128 — or refused
/// here rather than sent.
fn path(id: &str) -> Result<&str> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        let shown: String = id.chars().take(64).collect();
        bail!("`{shown}` is not an approval id (they look like `ap-…`)");
    }
    Ok(id)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn time_s(secs: i64) -> String {
    let t = rfc3339_millis(secs.saturating_mul(1000));
    match t.strip_suffix(".000Z") {
        Some(base) => format!("{base}Z"),
        None => t,
    }
}

/// A duration as `1d 2h`, `14m 30s`, `45s`: the two largest units.
fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let mut parts = Vec::new();
    let mut rest = secs;
    for (name, size) in units {
        let n = rest / size;
        rest %= size;
        if n > 0 || !parts.is_empty() {
            parts.push(format!("{n}{name}"));
        }
        if parts.len() == 2 {
            break;
        }
    }
    match parts.as_slice() {
        [] => "0s".to_owned(),
        [one, zero] if zero.starts_with('0') => one.clone(),
        _ => parts.join(" "),
    }
}

/// The "expires in" cell: the time left while pending, `expired`, or `-` once decided.
fn expires_in(a: &Value, now: i64) -> String {
    match a["status"].as_str() {
        Some("pending") => match a["expires_at"].as_i64() {
            Some(at) if at > now => duration(at - now),
            Some(_) => "expired".to_owned(),
            None => "-".to_owned(),
        },
        Some("expired") => "expired".to_owned(),
        _ => "-".to_owned(),
    }
}

/// The first line of `text`, at most `n` characters, marked when cut.
fn shorten(text: &str, n: usize) -> String {
    let first = text.lines().next().unwrap_or_default();
    let cut: String = first.chars().take(n).collect();
    if cut.len() < text.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// What is asked, in one line.
fn ask_line(ask: &Value) -> String {
    match ask["kind"].as_str() {
        Some("escalation") => format!(
            "a token with `{}` at stage `{}` for `{}`",
            s(ask, "scope"),
            s(ask, "stage"),
            s(ask, "audience")
        ),
        Some("held_write") => format!(
            "{} {} ({} on {})",
            s(ask, "method"),
            s(ask, "path"),
            s(ask, "action"),
            s(ask, "resource")
        ),
        Some("agent_change") => {
            let mut parts = Vec::new();
            if let Some(c) = ask["ceiling"].as_array() {
                let c: Vec<&str> = c.iter().filter_map(Value::as_str).collect();
                parts.push(format!("ceiling → `{}`", c.join(" ")));
            }
            if let Some(st) = ask["max_stage"].as_str() {
                parts.push(format!("max stage → `{st}`"));
            }
            format!("agent `{}`: {}", s(ask, "agent"), parts.join("; "))
        }
        _ => ask.to_string(),
    }
}

fn chain(a: &Value) -> String {
    let c: Vec<&str> = a["chain"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if c.is_empty() {
        "-".to_owned()
    } else {
        c.join(" > ")
    }
}

fn decision_line(d: &Value) -> String {
    if !d.is_object() {
        return "none yet".to_owned();
    }
    let what = if d["approved"].as_bool() == Some(true) {
        "approved"
    } else {
        "denied"
    };
    let at = d["at"].as_i64().map(time_s).unwrap_or_else(|| "-".into());
    match d["reason"].as_str() {
        Some(r) if !r.is_empty() => format!("{what} by {} at {at}: {r}", s(d, "by")),
        _ => format!("{what} by {} at {at}", s(d, "by")),
    }
}

/// `GET /v1/approvals/{id}` as text, every field.
fn details(a: &Value, now: i64) -> String {
    let mut out = format!("approval {}  ({})\n", s(a, "id"), s(a, "status"));
    let mut field = |label: &str, value: String| {
        out.push_str(&format!("  {:<17}{value}\n", format!("{label}:")));
    };
    field("kind", s(a, "kind"));
    field("asks", ask_line(&a["ask"]));
    field("binding message", s(a, "binding_message"));
    field("agent", s(a, "agent"));
    field("user", s(a, "user"));
    field("chain", chain(a));
    field("task", s(a, "task"));
    let ap = &a["approvers"];
    let groups: Vec<&str> = ap["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut who = format!("owner {}", s(ap, "owner"));
    if !groups.is_empty() {
        who.push_str(&format!(" or a member of {}", groups.join(", ")));
    }
    if let Some(never) = ap["never"].as_str() {
        who.push_str(&format!("; never {never}"));
    }
    field("approvers", who);
    let justification = a["justification"].as_str().unwrap_or_default();
    field(
        "justification",
        if justification.is_empty() {
            "-".to_owned()
        } else {
            justification.to_owned()
        },
    );
    field(
        "created",
        a["created_at"].as_i64().map(time_s).unwrap_or_default(),
    );
    let expires = match a["expires_at"].as_i64() {
        Some(at) => match expires_in(a, now).as_str() {
            "-" | "expired" => time_s(at),
            left => format!("{} (in {left})", time_s(at)),
        },
        None => "-".to_owned(),
    };
    field("expires", expires);
    field("decision", decision_line(&a["decided"]));
    field("dispatch", s(a, "dispatch"));
    let outcome = match &a["outcome"] {
        Value::Null => "-".to_owned(),
        o => o.to_string(),
    };
    field("outcome", outcome);
    out
}

/// The answer to `approve` / `deny` as text: the status, who decided, and what happens next.
fn decided(a: &Value) -> String {
    let d = &a["decided"];
    let mut out = format!(
        "approval {} {} by {}\n",
        s(a, "id"),
        s(a, "status"),
        s(d, "by")
    );
    if let Some(r) = d["reason"].as_str().filter(|r| !r.is_empty()) {
        out.push_str(&format!("  reason: {r}\n"));
    }
    out.push_str(&format!("  {}\n", s(a, "binding_message")));
    let approved = a["status"] == "approved";
    let next = match (a["kind"].as_str(), approved) {
        (Some("agent_change"), true) => "the change is applied to the agent",
        (Some("agent_change"), false) => "the agent stays as it was",
        (Some("held_write"), true) => {
            "the gateway sends the held request upstream; `mandate approvals show` shows the outcome"
        }
        (Some("held_write"), false) => "the held request is dropped, never sent",
        (Some("escalation"), true) => "the agent gets its token on its next poll",
        (Some("escalation"), false) => "the agent's next poll gets `access_denied`",
        _ => "",
    };
    if !next.is_empty() {
        out.push_str(&format!("  {next}\n"));
    }
    out
}

/// Prints the answer of `PATCH /v1/agents/{id}` when the change was held for approval (`202`
/// with `{"approval", "agent"}`); returns `false` if it was applied (nothing printed).
pub fn print_held_change(v: &Value) -> bool {
    let Some(a) = v.get("approval").filter(|a| a.is_object()) else {
        return false;
    };
    println!("change held for approval: {}", s(a, "binding_message"));
    println!(
        "approval {} ({}, expires {}); nothing changes until a human with approver rights \
         decides:",
        s(a, "id"),
        s(a, "status"),
        a["expires_at"].as_i64().map(time_s).unwrap_or_default()
    );
    println!(
        "  mandate approvals approve {} --as-token <their identity provider token>",
        s(a, "id")
    );
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn durations_show_the_two_largest_units() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(60), "1m");
        assert_eq!(duration(14 * 60 + 30), "14m 30s");
        assert_eq!(duration(3 * 3600 + 5), "3h");
        assert_eq!(duration(86_400 + 7200 + 59), "1d 2h");
        assert_eq!(duration(-5), "0s");
    }

    #[test]
    fn ids_are_checked_before_they_become_a_path() {
        assert_eq!(path("ap-Ab_9").unwrap(), "ap-Ab_9");
        for bad in ["", "../agents", "a b", "ap-1?x=1", "ap/1"] {
            let e = path(bad).unwrap_err().to_string();
            assert!(e.contains("is not an approval id"), "{e}");
        }
    }

    #[test]
    fn an_agent_change_is_shown_in_full() {
        let v = json!({
            "id": "ap-1", "kind": "agent_change", "status": "approved",
            "ask": {"kind": "agent_change", "agent": "support-v2", "max_stage": "execute"},
            "user": null, "chain": ["support-v2"], "agent": "support-v2",
            "justification": "", "binding_message": "agent `support-v2` changes: max stage `draft` → `execute`",
            "created_at": 1_700_000_000, "expires_at": 1_700_000_900,
            "decided": {"approved": true, "by": "carol@example.com", "reason": "ok", "at": 1_700_000_060},
            "dispatch": "sent", "outcome": {"applied_at": 1_700_000_060, "agent": "support-v2"}
        });
        let text = details(&v, 1_700_000_100);
        assert!(text.starts_with("approval ap-1  (approved)\n"), "{text}");
        assert!(
            text.contains("asks:            agent `support-v2`: max stage → `execute`"),
            "{text}"
        );
        assert!(
            text.contains(
                "decision:        approved by carol@example.com at 2023-11-14T22:14:20Z: ok"
            ),
            "{text}"
        );
        assert!(
            text.contains("expires:         2023-11-14T22:28:20Z\n"),
            "{text}"
        );
        let out = decided(&v);
        assert!(
            out.starts_with("approval ap-1 approved by carol@example.com\n"),
            "{out}"
        );
        assert!(out.contains("the change is applied to the agent"), "{out}");
    }

    #[test]
    fn pending_ones_show_the_time_left() {
        let v = json!({"status": "pending", "expires_at": 1000});
        assert_eq!(expires_in(&v, 100), "15m");
        assert_eq!(expires_in(&v, 1000), "expired");
        assert_eq!(expires_in(&json!({"status": "expired"}), 0), "expired");
        assert_eq!(expires_in(&json!({"status": "denied"}), 0), "-");
        let held = json!({"kind": "held_write", "method": "POST", "path": "/tickets",
                          "action": "tickets:create", "resource": "tickets"});
        assert_eq!(ask_line(&held), "POST /tickets (tickets:create on tickets)");
        assert_eq!(shorten("abcdef", 3), "abc…");
        assert_eq!(shorten("abc", 3), "abc");
    }
}
