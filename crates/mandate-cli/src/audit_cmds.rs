//! `mandate audit who` ("who read customers/9821 on March 14?") and `mandate audit export`
//! (the log as JSON lines or OCSF for a SIEM). Both read `GET /v1/audit` page by page with
//! `after=<last seq>`, so a large log is never held in memory. Audit retention: `mandate audit
//! archive`, `mandate audit segments`, and the offline checks behind `mandate audit verify
//! --data` and `--segment`.

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
        let http = crate::client::http_client(std::time::Duration::from_secs(60))?;
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

// Audit retention

/// `mandate audit archive`.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ArchiveArgs {
    /// Archive every event older than this (RFC 3339 or `YYYY-MM-DD`).
    #[arg(long)]
    before: Option<String>,
    /// Archive the events through this `seq` (it must be before the chain head).
    #[arg(long)]
    through_seq: Option<i64>,
}

/// `mandate audit archive`: `POST /v1/audit/archive`, then each new segment and its SHA-256.
pub async fn archive(
    args: ArchiveArgs,
    url: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    let client = crate::client::Client::new(url, token)?;
    let body = match (&args.before, args.through_seq) {
        (Some(before), _) => json!({ "before": before }),
        (None, Some(n)) => json!({ "through_seq": n }),
        (None, None) => bail!("give `--before DATE` or `--through-seq N`"),
    };
    let v = client.post("/v1/audit/archive", &body).await?;
    if json_out {
        output::json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    for seg in v["segments"].as_array().into_iter().flatten() {
        println!(
            "archived seq {}–{} ({} events) to {}",
            s(seg, "first_seq"),
            s(seg, "last_seq"),
            s(seg, "count"),
            s(seg, "path")
        );
        println!("  sha256    {}", s(seg, "sha256"));
        println!("  manifest  {}", s(seg, "manifest"));
    }
    Ok(ExitCode::SUCCESS)
}

/// `mandate audit segments`: `GET /v1/audit/segments` as a table.
pub async fn segments(url: &str, token: Option<String>, json_out: bool) -> Result<ExitCode> {
    let v = crate::client::Client::new(url, token)?
        .get("/v1/audit/segments")
        .await?;
    if json_out {
        output::json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = v["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                s(r, "first_seq"),
                s(r, "last_seq"),
                s(r, "count"),
                s(r, "file"),
                s(r, "sha256"),
                r["archived_at"]
                    .as_i64()
                    .map(|t| mandate_core::time::rfc3339_millis(t.saturating_mul(1000)))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no archived segments");
    } else {
        output::table(
            &["first", "last", "events", "file", "sha256", "archived"],
            &rows,
        );
        println!("in {}", s(&v, "dir"));
    }
    Ok(ExitCode::SUCCESS)
}

/// The keys of a JWKS file.
fn jwks_file(file: &std::path::Path) -> Result<mandate_token::verify::KeySet> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read `{}`", file.display()))?;
    let doc: Value =
        serde_json::from_str(&text).with_context(|| format!("`{}` is not JSON", file.display()))?;
    let (set, errors) = mandate_token::verify::KeySet::from_jwks(&doc);
    for e in errors {
        eprintln!("warning: `{}`: {e}", file.display());
    }
    Ok(set)
}

/// Where an offline check reads the audit log: a data directory's SQLite file, or a PostgreSQL
/// database.
#[derive(Debug, Clone)]
pub enum Offline {
    /// `--data DIR`: `<DIR>/mandate.db`.
    Data(PathBuf),
    /// `--database-url URL`.
    Database(String),
}

impl Offline {
    /// The source named by `--data` or `--database-url` (not both), if any.
    pub fn from_args(
        data: Option<PathBuf>,
        database_url: Option<String>,
    ) -> Result<Option<Offline>> {
        match (data, database_url) {
            (Some(_), Some(_)) => bail!("give `--data DIR` or `--database-url URL`, not both"),
            (Some(dir), None) => Ok(Some(Offline::Data(dir))),
            (None, Some(url)) => Ok(Some(Offline::Database(url))),
            (None, None) => Ok(None),
        }
    }
}

/// Opens the offline source read-only.
async fn open_offline(src: &Offline) -> Result<Box<dyn mandate_store::Store>> {
    match src {
        Offline::Data(dir) => {
            let path = dir.join("mandate.db");
            let store = mandate_store::SqliteStore::open_read_only(&path)
                .await
                .with_context(|| format!("cannot open `{}`", path.display()))?;
            Ok(Box::new(store))
        }
        Offline::Database(url) => {
            let store = mandate_store::PostgresStore::connect_read_only(url)
                .await
                .context("cannot open the PostgreSQL database")?;
            Ok(Box::new(store))
        }
    }
}

/// The keys to trust: `jwks`, else those stored in the database.
async fn trusted_keys(
    store: &dyn mandate_store::Store,
    jwks: Option<&std::path::Path>,
) -> Result<mandate_token::verify::KeySet> {
    match jwks {
        Some(file) => jwks_file(file),
        None => Ok(mandate_server::admin::audit::stored_key_set(
            &store.signing_keys().await?,
        )),
    }
}

/// The report of `mandate audit verify --data DIR | --database-url URL [--jwks FILE]` (the same
/// shape as `GET /v1/audit/verify`).
pub async fn offline_report(src: &Offline, jwks: Option<&std::path::Path>) -> Result<Value> {
    use mandate_server::admin::audit as a;
    let store = open_offline(src).await?;
    let keys = trusted_keys(store.as_ref(), jwks).await?;
    let (r, latest, archived) = a::verify_store_archived(store.as_ref(), &keys).await?;
    store.close().await;
    let mut report = a::report_json(&r, latest.as_ref());
    report["archived"] = json!(archived);
    Ok(report)
}

/// `mandate audit verify --segment FILE… [--data DIR | --database-url URL] [--jwks FILE]`: the
/// segment files offline, and with a database their continuity with it and its own report.
pub async fn verify_segments(
    files: &[PathBuf],
    data: Option<Offline>,
    jwks: Option<PathBuf>,
    json_out: bool,
) -> Result<ExitCode> {
    use mandate_server::admin::audit as a;
    use mandate_server::archive::{self, DbView};
    let files = &segment_files(files)?;
    let (report, db_report) = match &data {
        Some(src) => {
            let store = open_offline(src).await?;
            let keys = trusted_keys(store.as_ref(), jwks.as_deref()).await?;
            let (r, latest, archived) = a::verify_store_archived(store.as_ref(), &keys).await?;
            let view = DbView {
                records: store.audit_segments().await?,
                first_event: store.audit_after(0, 1).await?.into_iter().next(),
                checkpoints: a::check_signatures(&store.checkpoints().await?, &keys).0,
            };
            store.close().await;
            let mut db = a::report_json(&r, latest.as_ref());
            db["archived"] = json!(archived);
            (
                archive::verify_segments(files, &keys, Some(&view)),
                Some(db),
            )
        }
        None => {
            let Some(file) = &jwks else {
                bail!(
                    "`--segment` needs the keys that signed the segments: `--jwks FILE` (a JWKS \
                     kept apart from the server) or `--data DIR`"
                );
            };
            (
                archive::verify_segments(files, &jwks_file(file)?, None),
                None,
            )
        }
    };
    let db_ok = db_report
        .as_ref()
        .is_none_or(|d| d["ok"].as_bool().unwrap_or(false));
    if json_out {
        let mut v = json!({ "ok": report.ok && db_ok, "segments": report });
        if let Some(db) = &db_report {
            v["database"] = db.clone();
        }
        output::json(&v);
    } else {
        print_segment_report(&report);
        if let Some(db) = &db_report {
            println!("database:");
            crate::commands::print_report(db, false);
        }
    }
    Ok(if report.ok && db_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// The segment files given: a directory stands for every `audit-*.jsonl` in it.
fn segment_files(given: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in given {
        if !path.is_dir() {
            out.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path)
            .with_context(|| format!("cannot read the directory `{}`", path.display()))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
            })
            .collect();
        if found.is_empty() {
            bail!(
                "`{}` holds no segment file (`audit-*.jsonl`)",
                path.display()
            );
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// The human form of a segment check.
fn print_segment_report(r: &mandate_server::archive::SegmentReport) {
    let seq = |x: Option<i64>| x.map_or_else(|| "?".to_owned(), |n| n.to_string());
    for seg in &r.segments {
        println!(
            "segment {}: seq {}–{}, {} events, checkpoint {}, sha256 {}",
            seg.file,
            seq(seg.first_seq),
            seq(seg.last_seq),
            seg.events,
            if seg.signed {
                "verified"
            } else {
                "NOT verified"
            },
            seg.sha256
        );
    }
    if r.ok {
        println!(
            "segments intact: {} files, {} events verified",
            r.segments.len(),
            r.events_checked
        );
    } else {
        println!(
            "segments BROKEN: {} problem{}",
            r.findings.len(),
            if r.findings.len() == 1 { "" } else { "s" }
        );
        for f in &r.findings {
            let mut place = f.file.clone();
            if let Some(line) = f.line {
                place.push_str(&format!(" line {line}"));
            }
            if let Some(seq) = f.seq {
                place.push_str(&format!(" (seq {seq})"));
            }
            println!("  {place}: {}", f.problem);
        }
    }
    if !r.not_given.is_empty() {
        println!(
            "segments the database records but not given: {}",
            r.not_given.join(", ")
        );
    }
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
