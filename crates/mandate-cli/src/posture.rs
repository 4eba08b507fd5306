//! `mandate posture` (SPEC §8) and `mandate review …` (access reviews).
//!
//! `mandate posture` prints the inventory of every agent, the findings (most severe first, each
//! with its fix), each agent's blast radius with its three terms, and the open access reviews.
//! Exit status: 0 when no finding is at or above `--fail-on` (default `high`), 2 when one is,
//! 1 when the report could not be made — so a CI job can gate on it and still tell a failed check
//! from a broken one.
//!
//! `mandate review start` opens a review item per active agent for its owner; owners answer with
//! their own identity provider token (`--as-token` or `MANDATE_USER_TOKEN`): `attest` keeps the
//! ceiling, `remove --scope …` narrows it at once.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use mandate_core::time::rfc3339_millis;
use serde_json::{Value, json};

use crate::approvals::USER_TOKEN_ENV;
use crate::client::Client;
use crate::output::{self, s};

/// Exit status when a finding is at or above `--fail-on`.
pub const FINDINGS_EXIT: u8 = 2;

/// `mandate posture`.
#[derive(Args)]
pub struct PostureArgs {
    /// A ceiling scope no token held in this many days is reported unused.
    #[arg(long, value_name = "DAYS")]
    unused_days: Option<u32>,
    /// A key older than this many days is reported old.
    #[arg(long, value_name = "DAYS")]
    key_age_days: Option<u32>,
    /// Exit with status 2 when a finding is at least this severe: `critical`, `high`, `medium`,
    /// `low`, or `none` to always exit 0 once the report is made.
    #[arg(long, default_value = "high", value_name = "SEVERITY")]
    fail_on: String,
}

/// `mandate review …`.
#[derive(Subcommand)]
pub enum ReviewCommand {
    /// Open a review item per active agent for its owner (admin credential).
    Start {
        /// Days until the owners' answers are due (default 14).
        #[arg(long, value_name = "DAYS")]
        due_days: Option<u32>,
    },
    /// List reviews, newest first: with the admin (or auditor) credential all of them, with
    /// `--as-token` the ones you are asked to answer.
    List {
        /// `open`, `overdue`, `attested` or `narrowed`.
        #[arg(long)]
        status: Option<String>,
        /// Only this agent's.
        #[arg(long)]
        agent: Option<String>,
        /// Only this round's (`rc-…`).
        #[arg(long)]
        campaign: Option<String>,
        /// Look as this human (their identity provider token) instead of with the admin
        /// credential.
        #[arg(long = "as-token", value_name = "TOKEN")]
        as_token: Option<String>,
    },
    /// Attest: the agent still needs its whole ceiling. Needs the owner's own identity provider
    /// token.
    Attest {
        /// Review id (`rv-…`).
        id: String,
        /// Why (recorded and audited).
        #[arg(long)]
        note: Option<String>,
        /// The owner's identity provider token (in `--dev`: `mandate dev user-token SUB`).
        #[arg(long = "as-token", value_name = "TOKEN", env = USER_TOKEN_ENV, hide_env_values = true)]
        as_token: Option<String>,
    },
    /// Remove scopes from the agent's ceiling; it narrows at once. Needs the owner's own
    /// identity provider token.
    Remove {
        /// Review id (`rv-…`).
        id: String,
        /// A ceiling pattern to remove, as written in the ceiling (repeat, or comma-separate).
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Why (recorded and audited).
        #[arg(long)]
        note: Option<String>,
        /// The owner's identity provider token (in `--dev`: `mandate dev user-token SUB`).
        #[arg(long = "as-token", value_name = "TOKEN", env = USER_TOKEN_ENV, hide_env_values = true)]
        as_token: Option<String>,
    },
}

fn rank(severity: &str) -> Option<usize> {
    ["critical", "high", "medium", "low"]
        .iter()
        .position(|s| *s == severity)
}

/// Runs `mandate posture`.
pub async fn posture(
    args: PostureArgs,
    url: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    let threshold = match args.fail_on.as_str() {
        "none" => None,
        s => match rank(s) {
            Some(r) => Some(r),
            None => bail!(
                "`--fail-on` must be `critical`, `high`, `medium`, `low` or `none`, not `{s}`"
            ),
        },
    };
    let client = Client::new(url, token)?;
    let mut query = Vec::new();
    if let Some(d) = args.unused_days {
        query.push(("unused_days", d.to_string()));
    }
    if let Some(d) = args.key_age_days {
        query.push(("key_age_days", d.to_string()));
    }
    let v = client.get_query("/v1/posture", &query).await?;
    if json_out {
        output::json(&v);
    } else {
        print!("{}", report(&v));
    }
    let failing = threshold.is_some_and(|t| {
        v["findings"].as_array().into_iter().flatten().any(|f| {
            f["severity"]
                .as_str()
                .and_then(rank)
                .is_some_and(|r| r <= t)
        })
    });
    Ok(if failing {
        ExitCode::from(FINDINGS_EXIT)
    } else {
        ExitCode::SUCCESS
    })
}

/// `YYYY-MM-DD` of seconds since the epoch.
fn day(secs: i64) -> String {
    rfc3339_millis(secs.saturating_mul(1000))
        .chars()
        .take(10)
        .collect()
}

fn list(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// A number without a fractional part when it has none, else with two decimals.
fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if (x - x.round()).abs() < 1e-9 => format!("{}", x.round() as i64),
        Some(x) => format!("{x:.2}"),
        None => "-".to_owned(),
    }
}

fn credential_line(c: &Value) -> String {
    let expiry = match (c["revoked_at"].as_i64(), c["expires_at"].as_i64()) {
        (Some(r), _) => format!("revoked {}", day(r)),
        (None, Some(e)) => format!("expires {}", day(e)),
        (None, None) => "never expires".to_owned(),
    };
    let used = c["last_used"]
        .as_i64()
        .map(|t| format!("last used {}", day(t)))
        .unwrap_or_else(|| "never used".to_owned());
    format!(
        "{} ({}d old, {expiry}, {used})",
        s(c, "kid"),
        num(&c["age_days"])
    )
}

/// The whole report as text.
fn report(v: &Value) -> String {
    let mut out = String::new();
    let st = &v["settings"];
    let sum = &v["summary"];
    out.push_str(&format!(
        "Mandate posture at {} (unused: {} days; old keys: over {} days)\n",
        s(v, "generated_at"),
        num(&st["unused_days"]),
        num(&st["key_max_age_days"])
    ));
    out.push_str(&format!(
        "{} agents; {} findings: {} critical, {} high, {} medium, {} low; {} open reviews ({} \
         overdue)\n",
        num(&sum["agents"]),
        num(&sum["findings"]),
        num(&sum["critical"]),
        num(&sum["high"]),
        num(&sum["medium"]),
        num(&sum["low"]),
        num(&sum["open_reviews"]),
        num(&sum["overdue_reviews"])
    ));

    out.push_str("\nINVENTORY\n");
    let mut rows = Vec::new();
    for e in v["inventory"].as_array().into_iter().flatten() {
        let creds: Vec<String> = e["credentials"]
            .as_array()
            .into_iter()
            .flatten()
            .map(credential_line)
            .collect();
        let owner = match e["owner"].as_str() {
            Some("") | None => "(none)".to_owned(),
            Some(o) => o.to_owned(),
        };
        rows.push(vec![
            s(e, "agent"),
            owner,
            s(e, "status"),
            s(e, "max_stage"),
            list(&e["ceiling"]).join(" "),
            if creds.is_empty() {
                "-".to_owned()
            } else {
                creds.join("; ")
            },
        ]);
    }
    out.push_str(&table(
        &[
            "agent",
            "owner",
            "status",
            "stage",
            "ceiling",
            "credentials",
        ],
        &rows,
    ));

    let findings = v["findings"].as_array().cloned().unwrap_or_default();
    out.push_str("\nFINDINGS (most severe first)\n");
    if findings.is_empty() {
        out.push_str("  none\n");
    }
    for f in &findings {
        out.push_str(&format!(
            "[{}] {}  agent `{}`  {}\n    problem: {}\n    fix:     {}\n",
            s(f, "severity").to_uppercase(),
            s(f, "id"),
            s(f, "agent"),
            s(f, "subject"),
            s(f, "problem"),
            s(f, "fix")
        ));
    }

    out.push_str(
        "\nBLAST RADIUS (scope weight × velocity per minute × detection window in minutes)\n",
    );
    for b in v["blast_radius"].as_array().into_iter().flatten() {
        let w = &b["scope_weight"];
        let vel = &b["velocity"];
        let d = &b["detection_window"];
        out.push_str(&format!("{}  score {}\n", s(b, "agent"), num(&b["score"])));
        let parts: Vec<String> = w["scopes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{} {}", s(p, "pattern"), num(&p["weight"])))
            .collect();
        out.push_str(&format!(
            "    scope weight      {} = {}\n",
            num(&w["total"]),
            if parts.is_empty() {
                "(empty ceiling)".to_owned()
            } else {
                parts.join(" + ")
            }
        ));
        out.push_str(&format!(
            "    velocity          {}/min: {}\n",
            num(&vel["per_minute"]),
            s(vel, "explanation")
        ));
        out.push_str(&format!(
            "    detection window  {} s = {} s token life + {} ms revocation + {} s alerting: {}\n",
            num(&d["seconds"]),
            num(&d["token_ttl_secs"]),
            num(&d["revocation_latency_ms"]),
            num(&d["alerting_secs"]),
            s(d, "explanation")
        ));
        out.push_str(&format!("    = {}\n", s(b, "formula")));
    }
    if let Some(rule) = v["blast_radius"][0]["scope_weight"]["rule"].as_str() {
        out.push_str(&format!("  weights: {rule}\n"));
    }

    let reviews = v["reviews"].as_array().cloned().unwrap_or_default();
    out.push_str("\nOPEN ACCESS REVIEWS\n");
    if reviews.is_empty() {
        out.push_str("  none (start a round with `mandate review start`)\n");
    } else {
        out.push_str(&review_table(&reviews));
    }
    out
}

/// [`output::table`], into a string.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        format!("{}\n", parts.join("  ").trim_end())
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn review_rows(reviews: &[Value]) -> Vec<Vec<String>> {
    reviews
        .iter()
        .map(|r| {
            let status = if r["overdue"] == true {
                "overdue".to_owned()
            } else {
                s(r, "status")
            };
            vec![
                s(r, "id"),
                s(r, "agent"),
                s(r, "owner"),
                status,
                r["due_at"].as_i64().map(day).unwrap_or_default(),
                s(r, "decided_by"),
                list(&r["removed"]).join(" "),
            ]
        })
        .collect()
}

fn review_table(reviews: &[Value]) -> String {
    table(
        &[
            "id",
            "agent",
            "owner",
            "status",
            "due",
            "answered by",
            "removed",
        ],
        &review_rows(reviews),
    )
}

/// A review id as a path segment, or refused here rather than sent.
fn review_id(id: &str) -> Result<&str> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        let shown: String = id.chars().take(64).collect();
        bail!("`{shown}` is not a review id (they look like `rv-…`)");
    }
    Ok(id)
}

fn owner_token(as_token: Option<String>, verb: &str) -> Result<String> {
    match as_token.filter(|t| !t.trim().is_empty()) {
        Some(t) => Ok(t),
        None => bail!(
            "`review {verb}` needs the agent owner's own identity provider token: pass \
             `--as-token TOKEN` or set `{USER_TOKEN_ENV}` (an admin credential cannot answer an \
             access review; in `--dev`, `mandate dev user-token carol@example.com` prints one)"
        ),
    }
}

/// Runs a `mandate review …` command. `token` is the admin credential, if any.
pub async fn review(
    c: ReviewCommand,
    url: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    match c {
        ReviewCommand::Start { due_days } => {
            let client = Client::new(url, token)?;
            let mut body = json!({});
            if let Some(d) = due_days {
                body["due_days"] = json!(d);
            }
            let v = client.post("/v1/reviews", &body).await?;
            if json_out {
                output::json(&v);
            } else {
                let opened = v["reviews"].as_array().cloned().unwrap_or_default();
                println!(
                    "review round {}: {} review(s) opened",
                    s(&v, "campaign"),
                    opened.len()
                );
                if !opened.is_empty() {
                    print!("{}", review_table(&opened));
                }
                for sk in v["skipped"].as_array().into_iter().flatten() {
                    println!("skipped `{}`: {}", s(sk, "agent"), s(sk, "reason"));
                }
                if !opened.is_empty() {
                    println!(
                        "each owner answers with their own token: `mandate review attest ID \
                         --as-token TOKEN` or `mandate review remove ID --scope PATTERN --as-token \
                         TOKEN`"
                    );
                }
            }
        }
        ReviewCommand::List {
            status,
            agent,
            campaign,
            as_token,
        } => {
            let given = |t: Option<String>| t.filter(|t| !t.trim().is_empty());
            let bearer = given(as_token)
                .or(given(token))
                .or_else(|| given(std::env::var(USER_TOKEN_ENV).ok()));
            if bearer.is_none() {
                bail!(
                    "no credential: pass the admin credential (`--token` or `MANDATE_TOKEN`), or \
                     your own identity provider token (`--as-token` or `{USER_TOKEN_ENV}`)"
                );
            }
            let client = Client::new(url, bearer)?;
            let mut query = Vec::new();
            for (k, v) in [("status", status), ("agent", agent), ("campaign", campaign)] {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            let v = client.get_query("/v1/reviews", &query).await?;
            if json_out {
                output::json(&v);
            } else {
                let reviews = v["reviews"].as_array().cloned().unwrap_or_default();
                if reviews.is_empty() {
                    println!("no reviews");
                } else {
                    print!("{}", review_table(&reviews));
                }
            }
        }
        ReviewCommand::Attest { id, note, as_token } => {
            let client = Client::new(url, Some(owner_token(as_token, "attest")?))?;
            let mut body = json!({});
            if let Some(n) = note {
                body["note"] = json!(n);
            }
            let v = client
                .post(&format!("/v1/reviews/{}/attest", review_id(&id)?), &body)
                .await?;
            if json_out {
                output::json(&v);
            } else {
                println!(
                    "review {} attested by {}: agent `{}` keeps `{}`",
                    s(&v, "id"),
                    s(&v, "decided_by"),
                    s(&v, "agent"),
                    list(&v["ceiling"]).join(" ")
                );
            }
        }
        ReviewCommand::Remove {
            id,
            scopes,
            note,
            as_token,
        } => {
            let client = Client::new(url, Some(owner_token(as_token, "remove")?))?;
            let mut body = json!({"scopes": scopes});
            if let Some(n) = note {
                body["note"] = json!(n);
            }
            let v = client
                .post(&format!("/v1/reviews/{}/remove", review_id(&id)?), &body)
                .await?;
            if json_out {
                output::json(&v);
            } else {
                println!(
                    "review {} answered by {}: `{}` removed from agent `{}`'s ceiling",
                    s(&v, "id"),
                    s(&v, "decided_by"),
                    list(&v["removed"]).join(" "),
                    s(&v, "agent")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_report_shows_every_part() {
        let v = json!({
            "generated_at": "2026-03-14T14:32:01.000Z",
            "settings": {"unused_days": 30, "key_max_age_days": 90},
            "summary": {"agents": 1, "findings": 1, "critical": 0, "high": 1, "medium": 0,
                        "low": 0, "open_reviews": 1, "overdue_reviews": 1},
            "inventory": [{"agent": "a", "owner": "", "status": "active", "max_stage": "draft",
                           "ceiling": ["tickets:*"],
                           "credentials": [{"kid": "a-k1", "age_days": 3, "expires_at": null,
                                            "revoked_at": null, "last_used": null}]}],
            "findings": [{"id": "key-never-expires", "severity": "high", "agent": "a",
                          "subject": "a-k1", "problem": "it never expires", "fix": "rotate"}],
            "blast_radius": [{"agent": "a", "score": 1200.5,
                "scope_weight": {"total": 2, "rule": "the rule",
                                 "scopes": [{"pattern": "tickets:*", "weight": 2}]},
                "velocity": {"per_minute": 600.0, "explanation": "unbounded"},
                "detection_window": {"seconds": 3600.0054, "token_ttl_secs": 3600,
                                     "revocation_latency_ms": 5.4, "alerting_secs": 0,
                                     "explanation": "why"},
                "formula": "2 × 600 × 60 = 72000"}],
            "reviews": [{"id": "rv-1", "agent": "a", "owner": "carol", "status": "open",
                         "overdue": true, "due_at": 0, "decided_by": null, "removed": []}]
        });
        let text = report(&v);
        for want in [
            "1 agents; 1 findings: 0 critical, 1 high",
            "(none)",
            "a-k1 (3d old, never expires, never used)",
            "[HIGH] key-never-expires  agent `a`  a-k1",
            "    fix:     rotate",
            "a  score 1200.50",
            "    scope weight      2 = tickets:* 2",
            "    velocity          600/min: unbounded",
            "5.40 ms revocation",
            "    = 2 × 600 × 60 = 72000",
            "weights: the rule",
            "rv-1  a      carol  overdue  1970-01-01",
        ] {
            assert!(text.contains(want), "missing `{want}` in:\n{text}");
        }
    }

    #[test]
    fn severities_rank_and_ids_are_checked() {
        assert_eq!(rank("critical"), Some(0));
        assert_eq!(rank("low"), Some(3));
        assert_eq!(rank("none"), None);
        assert_eq!(review_id("rv-Ab_9").unwrap(), "rv-Ab_9");
        for bad in ["", "../x", "rv 1", "rv/1"] {
            assert!(review_id(bad).is_err(), "{bad}");
        }
    }
}
