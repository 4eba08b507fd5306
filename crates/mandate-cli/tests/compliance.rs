//! `mandate compliance` end to end: the real binary against a real `serve --dev`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;
#[test]
fn the_compliance_report_maps_the_controls_to_this_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_dev(dir.path());
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let token = token.trim();

    // Some traffic: a user token exchanged by the demo agent.
    let user = mandate(
        &server,
        Some(token),
        &[
            "dev",
            "user-token",
            "alice@example.com",
            "--groups",
            "support",
        ],
    );
    assert!(user.status.success(), "{user:?}");
    let key = dir.path().join("agents/support-v2.jwk");
    let exchanged = mandate(
        &server,
        Some(token),
        &[
            "token",
            "exchange",
            "--agent",
            "support-v2",
            "--key",
            key.to_str().unwrap(),
            "--subject-token",
            stdout(&user).trim(),
            "--scope",
            "tickets:read",
            "--resource",
            "https://crm.example.com",
            "--task",
            "ticket-7",
        ],
    );
    assert!(exchanged.status.success(), "{exchanged:?}");

    // Markdown by default: the summary table, each control, the evidence, the sample line.
    let md = mandate(&server, Some(token), &["compliance", "--format", "md"]);
    assert!(md.status.success(), "{md:?}");
    let text = stdout(&md);
    assert!(text.starts_with("# Mandate compliance report"), "{text}");
    assert!(text.contains("`--dev` deployment"), "{text}");
    assert!(
        text.contains("| Control | Framework | Title | Status |"),
        "{text}"
    );
    for row in [
        "| [CC6.1](#soc2-cc6.1) | SOC 2 | Logical access security | met |",
        "| [CC6.2](#soc2-cc6.2) | SOC 2 |",
        "| [CC6.3](#soc2-cc6.3) | SOC 2 |",
        "| [§164.312(a)(1)](#hipaa-164.312-a-1) | HIPAA | Access control | met |",
        "| [§164.312(a)(2)(i)](#hipaa-164.312-a-2-i) | HIPAA |",
        "| [§164.312(b)](#hipaa-164.312-b) | HIPAA |",
        "| [§164.312(d)](#hipaa-164.312-d) | HIPAA |",
        "| [LLM06:2025](#owasp-llm06-2025) | OWASP LLM Top 10 | Excessive Agency | met |",
        "| [Art. 12](#eu-ai-act-art-12) | EU AI Act | Record-keeping | met |",
    ] {
        assert!(text.contains(row), "missing `{row}` in:\n{text}");
    }
    assert!(
        text.contains("- tokens issued in the window: 1; token requests refused: 0"),
        "{text}"
    );
    assert!(text.contains("**What Mandate does.**"), "{text}");
    assert!(text.contains("*Fix:*"), "{text}");
    assert!(
        text.contains("user:alice@example.com via agent:support-v2 task:ticket-7 token.exchange"),
        "{text}"
    );

    // JSON (also what the global `--json` asks for), over another window.
    let json = mandate(
        &server,
        Some(token),
        &["--json", "compliance", "--window-days", "7"],
    );
    assert!(json.status.success(), "{json:?}");
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["window_days"], 7);
    assert_eq!(v["controls"].as_array().unwrap().len(), 9);
    assert_eq!(v["evidence"]["activity"]["tokens_issued"], 1);

    // HTML to a file, without walking the chain.
    let out = dir.path().join("report.html");
    let html = mandate(
        &server,
        Some(token),
        &[
            "compliance",
            "--format",
            "html",
            "--no-verify",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(html.status.success(), "{html:?}");
    assert!(stdout(&html).is_empty());
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(page.contains("not verified for this report"), "{page}");

    // Without a credential, or with a bad window, it says why and fails.
    let anon = mandate(&server, None, &["compliance"]);
    assert!(!anon.status.success());
    assert!(
        String::from_utf8_lossy(&anon.stderr).contains("no admin credential"),
        "{anon:?}"
    );
    let bad = mandate(&server, Some(token), &["compliance", "--window-days", "0"]);
    assert!(!bad.status.success());
}
