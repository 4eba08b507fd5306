//! `mandate compliance`: the server's compliance report (SPEC §8) — SOC 2 CC6.1–CC6.3, HIPAA
//! §164.312(a)(1), (a)(2)(i), (b), (d), OWASP LLM06:2025 and EU AI Act Art. 12 — as Markdown,
//! HTML or JSON, printed or written to a file.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;

/// The rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Markdown: a summary table, then each control.
    Md,
    /// One self-contained HTML page.
    Html,
    /// JSON: each control's status, evidence lines and gaps, and the evidence itself.
    Json,
}

impl ReportFormat {
    fn as_str(self) -> &'static str {
        match self {
            ReportFormat::Md => "md",
            ReportFormat::Html => "html",
            ReportFormat::Json => "json",
        }
    }
}

/// `mandate compliance …`.
#[derive(Debug, Args)]
pub struct ComplianceArgs {
    /// `md` (default; `json` with the global `--json`), `html` or `json`.
    #[arg(long, value_enum)]
    format: Option<ReportFormat>,
    /// Days of activity the report counts (1–3650).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    window_days: u32,
    /// Write the report to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not walk and verify the whole audit hash chain (faster on a large log; the audit
    /// controls then say it was not verified).
    #[arg(long)]
    no_verify: bool,
}

/// Runs `mandate compliance`.
pub async fn run(
    args: ComplianceArgs,
    url: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    let format = args.format.unwrap_or(if json_out {
        ReportFormat::Json
    } else {
        ReportFormat::Md
    });
    let token = token.ok_or_else(|| {
        anyhow!("no admin credential: pass `--token` or set `MANDATE_TOKEN` (in `--dev` it is in `<data>/admin.token`)")
    })?;
    let url = url.trim_end_matches('/');
    // Verifying a large log takes a while.
    let http = crate::client::http_client(std::time::Duration::from_secs(300))?;
    let resp = http
        .get(format!("{url}/v1/compliance"))
        .bearer_auth(&token)
        .query(&[
            ("format", format.as_str().to_owned()),
            ("window_days", args.window_days.to_string()),
            ("verify", (!args.no_verify).to_string()),
        ])
        .send()
        .await
        .with_context(|| format!("cannot reach Mandate at `{url}`"))?;
    let status = resp.status();
    let mut text = resp.text().await.unwrap_or_default();
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
    if format == ReportFormat::Json {
        // Pretty, like every other `--json` output.
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            text = serde_json::to_string_pretty(&v).unwrap_or(text);
            text.push('\n');
        }
    }
    match &args.out {
        Some(path) => {
            std::fs::write(path, text.as_bytes())
                .with_context(|| format!("cannot write `{}`", path.display()))?;
            eprintln!(
                "compliance report ({}) written to `{}`",
                format.as_str(),
                path.display()
            );
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
