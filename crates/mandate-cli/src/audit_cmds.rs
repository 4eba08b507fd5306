//! `mandate audit who` ("who read customers/9821 on March 14?") and `mandate audit export`
//! (the log as JSON lines or OCSF for a SIEM). Both read `GET /v1/audit` page by page with
//! `after=<last seq>`, so a large log is never held in memory.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::output::{self, s};

/// Events per request while paging.
const PAGE: u32 = 1000;

/// Filters shared by `who` and `export` (those of `GET /v1/audit`).
#[derive(Args, Debug, Default)]
pub struct Filters {
    /// User subject.
    #[arg(long)]
    user: Option<String>,
    /// Agent anywhere in the chain.
    #[arg(long)]
    agent: Option<String>,
    /// Task id.
    #[arg(long)]
    task: Option<String>,
    /// Action (a scope, or an admin operation).
    #[arg(long)]
    action: Option<String>,
    /// Resource.
    #[arg(long)]
    resource: Option<String>,
    /// `allow`, `deny` or `info`.
    #[arg(long)]
    decision: Option<String>,
    /// Event kind.
    #[arg(long)]
    kind: Option<String>,
    /// One UTC day `YYYY-MM-DD` (not with `--since`/`--until`).
    #[arg(long)]
    on: Option<String>,
    /// From (RFC 3339 or `YYYY-MM-DD`).
    #[arg(long)]
    since: Option<String>,
    /// Until (exclusive).
    #[arg(long)]
    until: Option<String>,
}

impl Filters {
    /// The filters as `GET /v1/audit` query parameters.
    pub fn query(&self) -> Vec<(&'static str, String)> {
        [
            ("user", &self.user),
            ("agent", &self.agent),
            ("task", &self.task),
            ("action", &self.action),
            ("resource", &self.resource),
            ("decision", &self.decision),
            ("kind", &self.kind),
            ("on", &self.on),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

/// `mandate audit who`.
#[derive(Args, Debug)]
pub struct WhoArgs {
    #[command(flatten)]
    filters: Filters,
}

/// `mandate audit export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// `jsonl` (events as `GET /v1/audit` returns them) or `ocsf` (OCSF API Activity).
    #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "ocsf"])]
    format: String,
    #[command(flatten)]
    filters: Filters,
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Raw `GET /v1/audit` calls (the line formats are not one JSON document).
struct AuditApi {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl AuditApi {
    fn new(url: &str, token: Option<String>) -> Result<AuditApi> {
        let token = token.ok_or_else(|| {
            anyhow!("no admin credential: pass `--token` or set `MANDATE_TOKEN` (in `--dev` it is in `<data>/admin.token`)")
        })?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(AuditApi {
            url: url.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    /// One page: the body text of `GET /v1/audit?<query>`.
    async fn page(&self, query: &[(&str, String)]) -> Result<String> {
        let resp = self
            .http
            .get(format!("{}/v1/audit", self.url))
            .bearer_auth(&self.token)
            .query(query)
            .send()
            .await
            .with_context(|| format!("cannot reach Mandate at `{}`", self.url))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            let msg = body
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| body.to_string());
            let code = body.get("error").and_then(Value::as_str).unwrap_or("error");
            bail!("{status}: {code}: {msg}");
        }
        Ok(text)
    }

    /// Every event matching `filters`, oldest first, in `format` (`json`: the events; `jsonl`
    /// or `ocsf`: the lines as sent), handed to `each` one page at a time.
    async fn pages(
        &self,
        filters: &Filters,
        format: &str,
        mut each: impl FnMut(&str) -> Result<()>,
    ) -> Result<()> {
        let mut after = 0_i64;
        loop {
            let mut q = filters.query();
            q.push(("format", format.to_owned()));
            q.push(("limit", PAGE.to_string()));
            q.push(("after", after.to_string()));
            let text = self.page(&q).await?;
            let mut n = 0_u32;
            let mut last = None;
            for line in text.lines().filter(|l| !l.is_empty()) {
                n += 1;
                last = Some(line);
            }
            let Some(last) = last else { break };
            each(&text)?;
            after = last_seq(format, last)?;
            if n < PAGE {
                break;
            }
        }
        Ok(())
    }
}

/// The `seq` of an exported line: `seq` (jsonl) or `metadata.uid` (ocsf).
fn last_seq(format: &str, line: &str) -> Result<i64> {
    let v: Value = serde_json::from_str(line).context("the server sent a line that is not JSON")?;
    let seq = match format {
        "ocsf" => v["metadata"]["uid"].as_str().and_then(|s| s.parse().ok()),
        _ => v["seq"].as_i64(),
    };
    seq.ok_or_else(|| anyhow!("an exported line has no `seq`"))
}

/// One distinct (user, chain, action, decision) and when it happened.
struct Group {
    user: String,
    chain: String,
    action: String,
    decision: String,
    count: u64,
    first: String,
    last: String,
}

/// `mandate audit who`: one line per distinct (user, agent chain, action, decision) with the
/// count and the first and last time, then the total.
pub async fn who(
    args: WhoArgs,
    url: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    let api = AuditApi::new(url, token)?;
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<(String, String, String, String), usize> = HashMap::new();
    let mut total = 0_u64;
    api.pages(&args.filters, "jsonl", |text| {
        for line in text.lines().filter(|l| !l.is_empty()) {
            let e: Value = serde_json::from_str(line)?;
            let chain: Vec<&str> = e["chain"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let key = (
                s(&e, "user"),
                if chain.is_empty() {
                    "-".to_owned()
                } else {
                    chain.join(" > ")
                },
                s(&e, "action"),
                s(&e, "decision"),
            );
            let time = s(&e, "time");
            total += 1;
            match index.get(&key) {
                Some(&i) => {
                    let g = &mut groups[i];
                    g.count += 1;
                    g.last = time;
                }
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push(Group {
                        user: key.0,
                        chain: key.1,
                        action: key.2,
                        decision: key.3,
                        count: 1,
                        first: time.clone(),
                        last: time,
                    });
                }
            }
        }
        Ok(())
    })
    .await?;
    if json_out {
        for g in &groups {
            println!(
                "{}",
                json!({
                    "user": g.user, "chain": g.chain, "action": g.action, "decision": g.decision,
                    "count": g.count, "first": g.first, "last": g.last,
                })
            );
        }
    } else {
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|g| {
                vec![
                    g.user.clone(),
                    g.chain.clone(),
                    g.action.clone(),
                    g.decision.clone(),
                    g.count.to_string(),
                    g.first.clone(),
                    g.last.clone(),
                ]
            })
            .collect();
        if !rows.is_empty() {
            output::table(
                &[
                    "user", "agents", "action", "decision", "count", "first", "last",
                ],
                &rows,
            );
        }
        println!(
            "total: {total} event{} by {} distinct user/agents/action/decision",
            if total == 1 { "" } else { "s" },
            groups.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `mandate audit export`: the lines exactly as the server sends them, page by page.
pub async fn export(args: ExportArgs, url: &str, token: Option<String>) -> Result<ExitCode> {
    let api = AuditApi::new(url, token)?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create `{}`", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut count = 0_u64;
    api.pages(&args.filters, &args.format, |text| {
        count += text.lines().filter(|l| !l.is_empty()).count() as u64;
        out.write_all(text.as_bytes())?;
        Ok(())
    })
    .await?;
    out.flush()?;
    drop(out);
    if let Some(path) = &args.out {
        eprintln!("{count} events written to `{}`", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seq_of_a_line() {
        assert_eq!(last_seq("jsonl", r#"{"seq":7}"#).unwrap(), 7);
        assert_eq!(
            last_seq("ocsf", r#"{"metadata":{"uid":"12"}}"#).unwrap(),
            12
        );
        assert!(last_seq("jsonl", "{}").is_err());
    }

    #[test]
    fn filters_become_query_parameters() {
        let f = Filters {
            resource: Some("customers/9821".into()),
            on: Some("2026-03-14".into()),
            ..Filters::default()
        };
        assert_eq!(
            f.query(),
            vec![
                ("resource", "customers/9821".to_owned()),
                ("on", "2026-03-14".to_owned())
            ]
        );
    }
}
