//! `mandate approvals …` end to end: the real binary against a real `serve --dev` whose agent
//! changes need a human's approval.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;

#[test]
fn an_agent_change_waits_for_its_owner_and_nobody_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(
        dir.path(),
        &["--dev"],
        &[("MANDATE_APPROVALS__AGENT_CHANGES", "true")],
    );
    let admin = std::fs::read_to_string(dir.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let as_admin = [("MANDATE_TOKEN", admin.as_str())];
    let user_token = |sub: &str| {
        let o = mandate_env(&server, &as_admin, &["dev", "user-token", sub]);
        assert!(o.status.success(), "{o:?}");
        stdout(&o).trim().to_owned()
    };

    // Raising the max stage is held: nothing changes yet.
    let held = mandate_env(
        &server,
        &as_admin,
        &[
            "agents",
            "update",
            "support-v2",
            "--max-stage",
            "execute",
            "--justification",
            "refunds without a human in the loop",
        ],
    );
    assert!(held.status.success(), "{held:?}");
    let text = stdout(&held);
    assert!(
        text.contains(
            "change held for approval: agent `support-v2` changes: max stage `draft` → `execute`"
        ),
        "{text}"
    );
    assert!(text.contains("mandate approvals approve ap-"), "{text}");
    let agent = json(&mandate_env(
        &server,
        &as_admin,
        &["--json", "agents", "show", "support-v2"],
    ));
    assert_eq!(agent["max_stage"], "draft");

    // The admin sees it, as a table and as JSON.
    let list = mandate_env(&server, &as_admin, &["approvals", "list"]);
    assert!(list.status.success(), "{list:?}");
    let table = stdout(&list);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for col in [
        "ID",
        "KIND",
        "STATUS",
        "AGENT",
        "USER",
        "EXPIRES IN",
        "BINDING MESSAGE",
    ] {
        assert!(header.contains(col), "{table}");
    }
    let row = lines.next().unwrap();
    for cell in ["ap-", "agent_change", "pending", "support-v2", "max stage"] {
        assert!(row.contains(cell), "{table}");
    }
    assert!(row.contains("14m") || row.contains("15m"), "{table}");
    let listed = json(&mandate_env(
        &server,
        &as_admin,
        &[
            "approvals",
            "list",
            "--json",
            "--status",
            "pending",
            "--kind",
            "agent_change",
            "--agent",
            "support-v2",
        ],
    ));
    let approvals = listed["approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 1, "{listed}");
    let id = approvals[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(approvals[0]["ask"]["max_stage"], "execute");

    let shown = mandate_env(&server, &as_admin, &["approvals", "show", &id]);
    assert!(shown.status.success(), "{shown:?}");
    let text = stdout(&shown);
    for want in [
        format!("approval {id}  (pending)"),
        "asks:            agent `support-v2`: max stage → `execute`".to_owned(),
        "justification:   refunds without a human in the loop".to_owned(),
        "decision:        none yet".to_owned(),
    ] {
        assert!(text.contains(&want), "{want}\n{text}");
    }

    // A bad filter is the server's message, and a non-zero exit.
    let bad = mandate_env(
        &server,
        &as_admin,
        &["approvals", "list", "--status", "maybe"],
    );
    assert!(!bad.status.success());
    let err = stderr(&bad);
    assert!(
        err.contains("400")
            && err.contains("`status` must be `pending`")
            && err.contains("not `maybe`"),
        "{err}"
    );

    // Deciding needs a human's own token: none given is refused before any call…
    let none = mandate_env(&server, &as_admin, &["approvals", "approve", &id]);
    assert!(!none.status.success());
    let err = stderr(&none);
    assert!(
        err.contains("--as-token") && err.contains("MANDATE_USER_TOKEN"),
        "{err}"
    );
    assert!(err.contains("an admin credential cannot decide"), "{err}");
    // …and the admin credential passed as one is refused by the server.
    let admin_as_user = mandate_env(
        &server,
        &[],
        &["approvals", "approve", &id, "--as-token", &admin],
    );
    assert!(!admin_as_user.status.success());
    assert!(
        stderr(&admin_as_user).contains("403")
            && stderr(&admin_as_user).contains("an admin credential cannot decide"),
        "{}",
        stderr(&admin_as_user)
    );
    assert!(
        !stderr(&admin_as_user).contains(&admin),
        "the credential is never printed"
    );

    // Bob is neither support-v2's owner nor an approver.
    let bob = user_token("bob@example.com");
    let refused = mandate_env(
        &server,
        &[],
        &["approvals", "approve", &id, "--as-token", &bob],
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("403")
            && stderr(&refused)
                .contains("`bob@example.com` may not approve for agent `support-v2`"),
        "{}",
        stderr(&refused)
    );
    // Bob, looking with his own token, does not even see it.
    let bob_list = json(&mandate_env(
        &server,
        &[],
        &["approvals", "list", "--json", "--as-token", &bob],
    ));
    assert_eq!(bob_list["approvals"].as_array().unwrap().len(), 0);

    // Carol owns support-v2: she approves, and the change is applied.
    let carol = user_token("carol@example.com");
    let carol_list = mandate_env(
        &server,
        &[("MANDATE_USER_TOKEN", carol.as_str())],
        &["approvals", "list", "--status", "pending"],
    );
    assert!(stdout(&carol_list).contains(&id), "{carol_list:?}");
    let approved = mandate_env(
        &server,
        &[],
        &[
            "approvals",
            "approve",
            &id,
            "--reason",
            "refund volume justifies it",
            "--as-token",
            &carol,
        ],
    );
    assert!(approved.status.success(), "{approved:?}");
    let text = stdout(&approved);
    assert!(
        text.starts_with(&format!("approval {id} approved by carol@example.com\n")),
        "{text}"
    );
    assert!(
        text.contains("reason: refund volume justifies it"),
        "{text}"
    );
    assert!(
        text.contains("the change is applied to the agent"),
        "{text}"
    );
    let agent = json(&mandate_env(
        &server,
        &as_admin,
        &["--json", "agents", "show", "support-v2"],
    ));
    assert_eq!(agent["max_stage"], "execute");

    // Decided once: a second decision is refused.
    let again = mandate_env(
        &server,
        &[],
        &["approvals", "deny", &id, "--as-token", &carol],
    );
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains(&format!("approval `{id}` was already approved")),
        "{}",
        stderr(&again)
    );
    let shown = json(&mandate_env(
        &server,
        &as_admin,
        &["--json", "approvals", "show", &id],
    ));
    assert_eq!(shown["status"], "approved");
    assert_eq!(shown["decided"]["by"], "carol@example.com");

    // A widened ceiling, denied by Carol with her token from `MANDATE_USER_TOKEN`.
    let held = mandate_env(
        &server,
        &as_admin,
        &[
            "--json",
            "agents",
            "update",
            "support-v2",
            "--ceiling",
            "crm.customers:read,tickets:*,email:send,mcp.crm.*:call,billing.invoices:read",
        ],
    );
    let second = json(&held)["approval"]["id"].as_str().unwrap().to_owned();
    let denied = mandate_env(
        &server,
        &[("MANDATE_USER_TOKEN", carol.as_str())],
        &["approvals", "deny", &second, "--reason", "no billing"],
    );
    assert!(denied.status.success(), "{denied:?}");
    assert!(
        stdout(&denied).starts_with(&format!("approval {second} denied by carol@example.com")),
        "{}",
        stdout(&denied)
    );
    let agent = json(&mandate_env(
        &server,
        &as_admin,
        &["--json", "agents", "show", "support-v2"],
    ));
    let ceiling: Vec<&str> = agent["ceiling"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!ceiling.contains(&"billing.invoices:read"), "{agent}");

    // Every step is in the audit log.
    let tail = mandate_env(&server, &as_admin, &["audit", "tail", "-n", "50"]);
    let log = stdout(&tail);
    for kind in [
        "approval.requested",
        "approval.refused",
        "approval.approved",
        "approval.denied",
    ] {
        assert!(log.contains(kind), "{kind}\n{log}");
    }
    let decided = json(&mandate_env(
        &server,
        &as_admin,
        &["approvals", "list", "--json", "--status", "denied"],
    ));
    assert_eq!(decided["approvals"][0]["id"], second.as_str());
}
