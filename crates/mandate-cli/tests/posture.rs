//! `mandate posture` and `mandate review …` end to end: the real binary against a real
//! `serve --dev`, whose demo world has findings of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;

fn has_finding(report: &Value, id: &str, agent: &str, subject: &str) -> bool {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["id"] == id && f["agent"] == agent && f["subject"] == subject)
}

#[test]
fn posture_reports_the_demo_world_and_owners_answer_reviews() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_dev(dir.path());
    let admin = std::fs::read_to_string(dir.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let as_admin = [("MANDATE_TOKEN", admin.as_str())];

    // The readable report: findings with their fixes, inventory, blast radius; exit 2 because
    // the demo keys never expire (high).
    let o = mandate_env(&server, &as_admin, &["posture"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let text = stdout(&o);
    for want in [
        "INVENTORY",
        "support-v2    carol@example.com",
        "support-v2-k1 (0d old, never expires, never used)",
        "[HIGH] key-never-expires  agent `support-v2`  support-v2-k1",
        "[MEDIUM] write-scope-unjustified  agent `support-v2`  tickets:*",
        "fix:     record why: `mandate agents update support-v2 --justify 'tickets:*=",
        "BLAST RADIUS",
        "scope weight      6 = crm.customers:read 1 + tickets:* 2 + email:send 1 + mcp.crm.*:call 2",
        "velocity          600/min",
        "OPEN ACCESS REVIEWS",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
    // Findings are most severe first.
    let high = text.find("[HIGH]").unwrap();
    let medium = text.find("[MEDIUM]").unwrap();
    assert!(high < medium);

    // The threshold is the caller's; bad ones are refused.
    let o = mandate_env(&server, &as_admin, &["posture", "--fail-on", "critical"]);
    assert!(o.status.success(), "{o:?}");
    let o = mandate_env(&server, &as_admin, &["posture", "--fail-on", "bogus"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr(&o).contains("`--fail-on`"), "{}", stderr(&o));

    // JSON for scripts; a justification recorded from the CLI clears its finding.
    let report = json(&mandate_env(
        &server,
        &as_admin,
        &[
            "--json",
            "posture",
            "--fail-on",
            "none",
            "--unused-days",
            "7",
        ],
    ));
    assert_eq!(report["settings"]["unused_days"], 7);
    assert!(has_finding(
        &report,
        "write-scope-unjustified",
        "support-v2",
        "tickets:*"
    ));
    let o = mandate_env(
        &server,
        &as_admin,
        &[
            "agents",
            "update",
            "support-v2",
            "--justify",
            "tickets:*=files and updates support tickets",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let report = json(&mandate_env(
        &server,
        &as_admin,
        &["--json", "posture", "--fail-on", "none"],
    ));
    assert!(!has_finding(
        &report,
        "write-scope-unjustified",
        "support-v2",
        "tickets:*"
    ));
    assert!(has_finding(
        &report,
        "write-scope-unjustified",
        "support-v2",
        "email:send"
    ));

    // A review round; the owners answer with their own tokens.
    let o = mandate_env(&server, &as_admin, &["review", "start", "--due-days", "7"]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("2 review(s) opened"), "{}", stdout(&o));
    let listed = json(&mandate_env(
        &server,
        &as_admin,
        &["--json", "review", "list", "--status", "open"],
    ));
    let id_of = |agent: &str| {
        listed["reviews"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["agent"] == agent)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (support, analytics) = (id_of("support-v2"), id_of("analytics-v1"));
    let user_token = |sub: &str| {
        let o = mandate_env(&server, &as_admin, &["dev", "user-token", sub]);
        assert!(o.status.success(), "{o:?}");
        stdout(&o).trim().to_owned()
    };
    let (carol, bob) = (
        user_token("carol@example.com"),
        user_token("bob@example.com"),
    );

    // Without a human's token, attest is refused before anything is sent.
    let o = mandate_env(&server, &as_admin, &["review", "attest", &analytics]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("MANDATE_USER_TOKEN"), "{}", stderr(&o));
    // Not the owner: refused by the server.
    let o = mandate_env(
        &server,
        &[("MANDATE_USER_TOKEN", carol.as_str())],
        &["review", "attest", &analytics],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("only the owner"), "{}", stderr(&o));
    // The owner, through the environment.
    let o = mandate_env(
        &server,
        &[("MANDATE_USER_TOKEN", bob.as_str())],
        &["review", "attest", &analytics, "--note", "still needed"],
    );
    assert!(o.status.success(), "{o:?}");
    assert!(
        stdout(&o).contains("attested by bob@example.com"),
        "{}",
        stdout(&o)
    );
    let o = mandate_env(
        &server,
        &[],
        &[
            "review",
            "remove",
            &support,
            "--scope",
            "email:send",
            "--as-token",
            &carol,
        ],
    );
    assert!(o.status.success(), "{o:?}");
    assert!(
        stdout(&o).contains("`email:send` removed"),
        "{}",
        stdout(&o)
    );
    let agent = json(&mandate_env(
        &server,
        &as_admin,
        &["--json", "agents", "show", "support-v2"],
    ));
    assert!(
        !agent["ceiling"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "email:send"),
        "{agent}"
    );
    // Carol sees only her own reviews.
    let mine = json(&mandate_env(
        &server,
        &[],
        &["--json", "review", "list", "--as-token", &carol],
    ));
    let agents: Vec<&str> = mine["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["agent"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["support-v2"]);
}
