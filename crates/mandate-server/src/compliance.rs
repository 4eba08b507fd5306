//! `mandate compliance` (SPEC §8): gathers this deployment's [`Evidence`] — configuration,
//! agents, aggregate counts of the audit log over a window, the hash chain's verification and
//! checkpoints, a few sample audit lines — assesses it with
//! [`mandate_core::compliance::assess`], and renders the report as JSON, Markdown or HTML.
//!
//! The rules live in `mandate-core`; this module only reads and writes. Every value shown in
//! the Markdown is inside a code span or a code block, and every value in the HTML is escaped.

use mandate_core::audit::Decision;
use mandate_core::compliance::{
    ActivityFacts, AgentFacts, ApprovalConfigFacts, BreakerFact, ChainCheck, Control,
    ControlResult, DEFAULT_WINDOW_DAYS, Evidence, GatewayFacts, IntegrityFacts, MAX_WINDOW_DAYS,
    Status, TokenLifetimes, assess, summary,
};
use mandate_core::time::rfc3339_millis;
use mandate_store::{AuditFilter, StoreError};
use serde_json::{Value, json};

use crate::state::AppState;

/// Sample lines of each decision (allowed, refused) in a report.
pub const SAMPLES_PER_DECISION: u32 = 3;

/// What to gather.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Days of activity to count, 1 to [`MAX_WINDOW_DAYS`].
    pub window_days: u32,
    /// Walk and verify the whole hash chain (slow on a large log).
    pub verify: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            window_days: DEFAULT_WINDOW_DAYS,
            verify: true,
        }
    }
}

/// An assessed report: the evidence and one result per control.
#[derive(Debug, Clone)]
pub struct Report {
    /// What was gathered.
    pub evidence: Evidence,
    /// The assessment, in catalogue order.
    pub results: Vec<ControlResult>,
}

/// Gathers the evidence of the deployment behind `state` and assesses it.
pub async fn report(state: &AppState, opts: Options) -> Result<Report, StoreError> {
    let evidence = gather(state, opts).await?;
    let results = assess(&evidence);
    Ok(Report { evidence, results })
}

/// Gathers the evidence of the deployment behind `state`.
pub async fn gather(state: &AppState, opts: Options) -> Result<Evidence, StoreError> {
    let window_days = opts.window_days.clamp(1, MAX_WINDOW_DAYS);
    let now_ms = state.clock.now_ms();
    let now = now_ms.div_euclid(1000);
    let since_secs = now - i64::from(window_days) * 86_400;
    let since = rfc3339_millis(since_secs.saturating_mul(1000));
    let store = state.store.as_ref();

    let agents = store.agents().await?;
    let audit = store.audit_counts(&since).await?;
    let approvals = store.approval_counts(since_secs, now).await?;
    let revocations_total = store.revocation_head().await?;
    let ssf_streams = store.ssf_streams().await?.len() as u64;

    let verification = if opts.verify {
        let keys = crate::admin::audit::stored_key_set(&store.signing_keys().await?);
        let (r, _) = crate::admin::audit::verify_store(store, &keys).await?;
        Some(ChainCheck {
            ok: r.is_ok(),
            checked: r.checked,
            head: r.head.clone(),
            first_break: r
                .first_break
                .as_ref()
                .map(|b| format!("seq {}: {}", b.seq, b.problem)),
            checkpoint_findings: r
                .checkpoint_findings
                .iter()
                .map(|f| f.problem.clone())
                .collect(),
        })
    } else {
        None
    };

    let mut samples = Vec::new();
    for decision in [Decision::Allow, Decision::Deny] {
        let events = store
            .audit(&AuditFilter {
                decision: Some(decision.as_str().to_owned()),
                since: Some(since.clone()),
                limit: Some(SAMPLES_PER_DECISION),
                newest_first: true,
                ..AuditFilter::default()
            })
            .await?;
        samples.extend(events);
    }
    samples.sort_by_key(|e| e.seq);
    let samples = samples.iter().map(|e| one_line(&e.line())).collect();

    let c = &state.config;
    let t = &c.tokens;
    let policy = state.policy.engine();
    let evidence = Evidence {
        generated_at: rfc3339_millis(now_ms),
        issuer: state.issuer.clone(),
        window_days,
        since,
        dev: state.dev.is_some(),
        config: mandate_core::compliance::ConfigFacts {
            tokens: TokenLifetimes {
                default_ttl: t.default_ttl,
                max_ttl: t.max_ttl,
                execute_write_ttl: t.execute_write_ttl,
                observe_max_ttl: t.stage_max_ttl.observe,
                draft_max_ttl: t.stage_max_ttl.draft,
                execute_max_ttl: t.stage_max_ttl.execute,
            },
            max_chain_depth: t.max_chain_depth as u64,
            issuance_per_user_per_minute: c.limits.issuance_per_user_per_minute,
            issuance_per_agent_per_minute: c.limits.issuance_per_agent_per_minute,
            trusted_idps: c.issuers.len() as u64,
            policy_count: policy.policy_count() as u64,
            policy_reload_failed: state.policy.last_error().is_some(),
            audit_checkpoint_secs: c.audit_checkpoint_secs,
            // `audit_retention_days` archives old events into signed, verifiable segment files
            // under the data directory; nothing deletes them, so the record is kept whole.
            audit_retention_days: None,
            approvals: ApprovalConfigFacts {
                agent_changes: c.approvals.agent_changes.unwrap_or(true),
                approver_groups: c.approvals.approver_groups.len() as u64,
                escalation: c.approvals.escalation,
                scopes: c.approvals.scopes.clone(),
                ttl_secs: c.approvals.ttl,
            },
            gateway: gateway_facts(state),
            ssf_streams,
        },
        agents: AgentFacts::from_agents(&agents, now, &c.catalog),
        activity: ActivityFacts::from_counts(&audit, &approvals, revocations_total),
        integrity: IntegrityFacts {
            verification,
            checkpoints: audit.checkpoints,
            latest_checkpoint: audit.latest_checkpoint.clone(),
        },
        samples,
    };
    Ok(evidence)
}

/// The gateway as configured; in `--dev` without upstreams of its own, the sample CRM's
/// (`mandate serve --dev` always runs it).
fn gateway_facts(state: &AppState) -> GatewayFacts {
    let configured = &state.config.gateway;
    let dev_sample = state.dev.is_some() && configured.upstreams.is_empty();
    let sample;
    let g = if dev_sample {
        sample = crate::gateway::dev_config("http://127.0.0.1");
        &sample
    } else {
        configured
    };
    GatewayFacts {
        upstreams: g.upstreams.len() as u64,
        upstreams_with_secret: g.upstreams.iter().filter(|u| u.secret.is_some()).count() as u64,
        routes: g.routes.len() as u64,
        mcp_servers: g.mcp.len() as u64,
        breakers: configured
            .breakers
            .iter()
            .map(|b| BreakerFact {
                id: b.id.clone(),
                agent: b.agent.clone(),
                action: b.action.clone(),
            })
            .collect(),
        dev_sample,
    }
}

/// A line with every control character (a line break in a user's name…) made a space.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

// ---- rendering ----

impl Report {
    /// The report as JSON: the summary, each control with its status, evidence lines and gaps,
    /// and the evidence itself.
    pub fn json(&self) -> Value {
        let (met, partial, gap) = summary(&self.results);
        let e = &self.evidence;
        json!({
            "generated_at": e.generated_at,
            "issuer": e.issuer,
            "window_days": e.window_days,
            "since": e.since,
            "dev": e.dev,
            "summary": {
                "controls": self.results.len(),
                "met": met,
                "partial": partial,
                "gap": gap,
            },
            "controls": self.results,
            "evidence": e,
        })
    }

    /// The report as Markdown: a summary table, then each control.
    pub fn markdown(&self) -> String {
        let e = &self.evidence;
        let (met, partial, gap) = summary(&self.results);
        let mut out = String::new();
        out.push_str("# Mandate compliance report\n\n");
        out.push_str(&format!(
            "Deployment {} · generated {} · activity of the last {} days (since {}).\n\n",
            md_code(&e.issuer),
            md_code(&e.generated_at),
            e.window_days,
            md_code(&e.since)
        ));
        if e.dev {
            out.push_str(&format!("> {DEV_NOTE}\n\n"));
        }
        out.push_str(&format!(
            "**{} controls: {met} met, {partial} partial, {gap} gap.** {SCOPE_NOTE}\n\n",
            self.results.len()
        ));
        out.push_str("| Control | Framework | Title | Status |\n|---|---|---|---|\n");
        for r in &self.results {
            out.push_str(&format!(
                "| [{}](#{}) | {} | {} | {} |\n",
                r.control.reference,
                r.control.id,
                r.control.framework.name(),
                r.control.title,
                status_word(r.status)
            ));
        }
        for r in &self.results {
            let c: &Control = r.control;
            out.push_str(&format!(
                "\n<a id=\"{}\"></a>\n\n## {} {} — {}: {}\n\n",
                c.id,
                c.framework.name(),
                c.reference,
                c.title,
                status_word(r.status)
            ));
            out.push_str(&format!("**The control asks.** {}\n\n", c.asks));
            out.push_str(&format!("**What Mandate does.** {}\n\n", c.mandate_does));
            out.push_str("**Evidence in this deployment:**\n\n");
            for line in &r.evidence {
                out.push_str(&format!("- {line}\n"));
            }
            if r.gaps.is_empty() {
                out.push_str("\n**Gaps:** none.\n");
            } else {
                out.push_str("\n**Gaps and fixes:**\n\n");
                for g in &r.gaps {
                    out.push_str(&format!(
                        "- **{}:** {}. *Fix:* {}.\n",
                        g.severity.as_str(),
                        g.problem,
                        g.fix
                    ));
                }
            }
            let items: Vec<String> = c.relies_on.iter().map(|i| md_code(i)).collect();
            out.push_str(&format!("\n*Evidence items:* {}.\n", items.join(", ")));
        }
        out.push_str("\n## Sample audit lines\n\n");
        if e.samples.is_empty() {
            out.push_str("No allowed or refused decision in the window.\n");
        } else {
            out.push_str(&format!(
                "The latest allowed and refused decisions of the window, as `mandate audit \
                 tail` shows them:\n\n{}",
                md_block(&e.samples)
            ));
        }
        out
    }

    /// The report as one self-contained HTML page (inline style, no script), every value
    /// escaped.
    pub fn html(&self) -> String {
        let e = &self.evidence;
        let (met, partial, gap) = summary(&self.results);
        let mut out = String::new();
        out.push_str(
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>Mandate compliance report</title>\n<style>\n",
        );
        out.push_str(HTML_STYLE);
        out.push_str("</style>\n</head>\n<body>\n<h1>Mandate compliance report</h1>\n");
        out.push_str(&format!(
            "<p>Deployment <code>{}</code> · generated <code>{}</code> · activity of the last {} \
             days (since <code>{}</code>).</p>\n",
            esc(&e.issuer),
            esc(&e.generated_at),
            e.window_days,
            esc(&e.since)
        ));
        if e.dev {
            out.push_str(&format!(
                "<p class=\"note\">{}</p>\n",
                html_inline(DEV_NOTE_PLAIN)
            ));
        }
        out.push_str(&format!(
            "<p><strong>{} controls: {met} met, {partial} partial, {gap} gap.</strong> {}</p>\n",
            self.results.len(),
            html_inline(SCOPE_NOTE)
        ));
        out.push_str(
            "<table>\n<thead><tr><th>Control</th><th>Framework</th><th>Title</th>\
             <th>Status</th></tr></thead>\n<tbody>\n",
        );
        for r in &self.results {
            out.push_str(&format!(
                "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td><td>{}</td>\
                 <td class=\"{}\">{}</td></tr>\n",
                esc(r.control.id),
                esc(r.control.reference),
                esc(r.control.framework.name()),
                esc(r.control.title),
                r.status.as_str(),
                r.status.as_str()
            ));
        }
        out.push_str("</tbody>\n</table>\n");
        for r in &self.results {
            let c: &Control = r.control;
            out.push_str(&format!(
                "<section id=\"{}\">\n<h2>{} {} — {}: <span class=\"{}\">{}</span></h2>\n",
                esc(c.id),
                esc(c.framework.name()),
                esc(c.reference),
                esc(c.title),
                r.status.as_str(),
                r.status.as_str()
            ));
            out.push_str(&format!(
                "<p><strong>The control asks.</strong> {}</p>\n",
                html_inline(c.asks)
            ));
            out.push_str(&format!(
                "<p><strong>What Mandate does.</strong> {}</p>\n",
                html_inline(c.mandate_does)
            ));
            out.push_str("<h3>Evidence in this deployment</h3>\n<ul>\n");
            for line in &r.evidence {
                out.push_str(&format!("<li>{}</li>\n", html_inline(line)));
            }
            out.push_str("</ul>\n");
            if r.gaps.is_empty() {
                out.push_str("<p><strong>Gaps:</strong> none.</p>\n");
            } else {
                out.push_str("<h3>Gaps and fixes</h3>\n<ul>\n");
                for g in &r.gaps {
                    out.push_str(&format!(
                        "<li><span class=\"{}\">{}</span>: {}. <em>Fix:</em> {}.</li>\n",
                        g.severity.as_str(),
                        g.severity.as_str(),
                        html_inline(&g.problem),
                        html_inline(&g.fix)
                    ));
                }
                out.push_str("</ul>\n");
            }
            let items: Vec<String> = c
                .relies_on
                .iter()
                .map(|i| format!("<code>{}</code>", esc(i)))
                .collect();
            out.push_str(&format!(
                "<p class=\"items\">Evidence items: {}.</p>\n</section>\n",
                items.join(", ")
            ));
        }
        out.push_str("<h2>Sample audit lines</h2>\n");
        if e.samples.is_empty() {
            out.push_str("<p>No allowed or refused decision in the window.</p>\n");
        } else {
            out.push_str("<pre>");
            for s in &e.samples {
                out.push_str(&esc(s));
                out.push('\n');
            }
            out.push_str("</pre>\n");
        }
        out.push_str("</body>\n</html>\n");
        out
    }
}

const DEV_NOTE: &str = "**This is a `--dev` deployment:** throwaway demo data and a built-in \
     test identity provider. Its evidence says nothing about a production deployment.";
const DEV_NOTE_PLAIN: &str = "This is a `--dev` deployment: throwaway demo data and a built-in \
     test identity provider. Its evidence says nothing about a production deployment.";
const SCOPE_NOTE: &str = "Each control is assessed on what Mandate itself enforces and records; \
     the rest of your system (the identity provider's MFA, the tools, people and procedures) is \
     yours to evidence.";

const HTML_STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;\
padding:0 1rem;line-height:1.45;color:#1b1b1b}\n\
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}\n\
code,pre{font-family:ui-monospace,monospace;font-size:.9em;background:#f4f4f4}\n\
pre{padding:.6rem;overflow-x:auto}section{margin-top:2rem}\n\
.met{color:#176b2c;font-weight:600}.partial{color:#8a5a00;font-weight:600}\
.gap{color:#a4161a;font-weight:600}\n\
.note{background:#fff6d6;padding:.5rem .8rem}.items{color:#555;font-size:.9em}\n";

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Met => "met",
        Status::Partial => "**partial**",
        Status::Gap => "**gap**",
    }
}

/// HTML-escapes text (`&`, `<`, `>`, `"`, `'`).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a line and shows its `` `code` `` spans as `<code>`; an unpaired backtick stays as
/// it is.
pub fn html_inline(s: &str) -> String {
    let parts: Vec<&str> = s.split('`').collect();
    let paired = parts.len() % 2 == 1;
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if i % 2 == 1 && (paired || !last) {
            out.push_str("<code>");
            out.push_str(&esc(part));
            out.push_str("</code>");
        } else {
            if i % 2 == 1 {
                out.push('`');
            }
            out.push_str(&esc(part));
        }
    }
    out
}

/// A Markdown code span holding `s` whatever backticks it contains.
fn md_code(s: &str) -> String {
    let s = one_line(s);
    let longest = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    if s.starts_with('`') || s.ends_with('`') {
        format!("{fence} {s} {fence}")
    } else {
        format!("{fence}{s}{fence}")
    }
}

/// A fenced Markdown code block of `lines`, with a fence longer than any run of backticks or
/// tildes in them.
fn md_block(lines: &[String]) -> String {
    let longest = lines
        .iter()
        .flat_map(|l| l.split(|c| c != '~').map(str::len))
        .max()
        .unwrap_or(0);
    let fence = "~".repeat(longest.max(2) + 1);
    let mut out = format!("{fence}text\n");
    for l in lines {
        out.push_str(&one_line(l));
        out.push('\n');
    }
    out.push_str(&fence);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn html_escapes_and_shows_code_spans() {
        assert_eq!(
            html_inline("agent `<x>` & \"y\" 'z'"),
            "agent <code>&lt;x&gt;</code> &amp; &quot;y&quot; &#39;z&#39;"
        );
        assert_eq!(html_inline("a `b"), "a `b");
        assert_eq!(html_inline("`a` `b"), "<code>a</code> `b");
    }

    #[test]
    fn markdown_code_holds_any_backticks() {
        assert_eq!(md_code("abc"), "`abc`");
        assert_eq!(md_code("a`b"), "``a`b``");
        assert_eq!(md_code("`a"), "`` `a ``");
        assert_eq!(md_code("a\nb"), "`a b`");
        let block = md_block(&["x ~~~ y".into(), "z\nw".into()]);
        assert!(block.starts_with("~~~~text\n"), "{block}");
        assert!(block.contains("z w\n"), "{block}");
        assert!(block.ends_with("\n~~~~\n"), "{block}");
    }

    #[test]
    fn every_rendering_holds_every_control() {
        let evidence = Evidence {
            issuer: "https://m.example".into(),
            dev: true,
            samples: vec!["t user:<b> via agent:a task:t token.exchange s:read r allow".into()],
            ..Evidence::default()
        };
        let report = Report {
            results: assess(&evidence),
            evidence,
        };
        let md = report.markdown();
        let html = report.html();
        let json = report.json();
        assert!(
            md.contains("| Control | Framework | Title | Status |"),
            "{md}"
        );
        assert!(md.contains("`--dev` deployment"), "{md}");
        assert!(html.contains("user:&lt;b&gt;"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        for c in mandate_core::compliance::CONTROLS {
            assert!(md.contains(&format!("(#{})", c.id)), "{}", c.id);
            assert!(html.contains(&format!("id=\"{}\"", c.id)), "{}", c.id);
            assert!(
                json["controls"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["id"] == c.id && r["status"].is_string()),
                "{}",
                c.id
            );
        }
        assert_eq!(json["summary"]["controls"], 9);
    }
}
