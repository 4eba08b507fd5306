//! End-to-end tests of the `mandate` binary: the real program, started as a person would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

#[test]
fn dev_server_writes_the_admin_credential_and_the_cli_drives_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(dir.path(), &["--dev"], &[]);
    let token_file = dir.path().join("admin.token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "admin.token must be 0600");
    }
    let list = mandate(&server, Some(&token), &["agents", "list"]);
    assert!(list.status.success(), "{list:?}");
    let text = stdout(&list);
    assert!(
        text.contains("support-v2") && text.contains("carol@example.com"),
        "{text}"
    );
    assert!(
        text.contains("analytics-v1") && text.contains("observe"),
        "{text}"
    );

    // A user token from the test IdP, exchanged by the demo agent with its key file.
    let user = mandate(
        &server,
        Some(&token),
        &[
            "dev",
            "user-token",
            "alice@example.com",
            "--groups",
            "support",
        ],
    );
    assert!(user.status.success(), "{user:?}");
    let user_token = stdout(&user).trim().to_owned();
    assert_eq!(user_token.split('.').count(), 3);
    let key = dir.path().join("agents/support-v2.jwk");
    let exchanged = mandate(
        &server,
        Some(&token),
        &[
            "token",
            "exchange",
            "--agent",
            "support-v2",
            "--key",
            key.to_str().unwrap(),
            "--subject-token",
            &user_token,
            "--scope",
            "tickets:read",
            "--resource",
            "https://crm.example.com",
            "--task",
            "ticket-1",
        ],
    );
    assert!(exchanged.status.success(), "{exchanged:?}");
    let access = stdout(&exchanged).trim().to_owned();
    let intro = mandate(&server, Some(&token), &["token", "introspect", &access]);
    assert!(intro.status.success(), "{intro:?}");
    assert!(stdout(&intro).contains("\"agent:support-v2\""));

    // Revoke the task through the CLI: introspection now says inactive (exit 1).
    let revoked = mandate(
        &server,
        Some(&token),
        &["revoke", "task", "ticket-1", "--reason", "test"],
    );
    assert!(revoked.status.success(), "{revoked:?}");
    assert!(
        stdout(&revoked).contains("1 live token(s) ended"),
        "{}",
        stdout(&revoked)
    );
    let intro = mandate(&server, Some(&token), &["token", "introspect", &access]);
    assert_eq!(intro.status.code(), Some(1));
    assert!(stdout(&intro).contains("\"active\": false"));

    let tail = mandate(&server, Some(&token), &["audit", "tail", "-n", "50"]);
    let text = stdout(&tail);
    assert!(
        text.contains("user:alice@example.com via agent:support-v2 task:ticket-1 token.exchange tickets:read https://crm.example.com allow"),
        "{text}"
    );
    let task = mandate(&server, Some(&token), &["task", "show", "ticket-1"]);
    assert!(stdout(&task).contains("REVOKED"), "{}", stdout(&task));

    // Admin commands refuse without a credential.
    let anon = mandate(&server, None, &["agents", "list"]);
    assert!(!anon.status.success());
}

#[test]
fn outside_dev_the_bootstrap_credential_is_shown_once_and_user_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(dir.path(), &[], &[]);
    assert!(
        !dir.path().join("admin.token").exists(),
        "only --dev writes the credential file"
    );
    let token = server
        .printed_credential
        .clone()
        .expect("first start prints the bootstrap credential");
    let list = mandate(&server, Some(&token), &["agents", "list"]);
    assert!(list.status.success(), "{list:?}");
    assert!(
        !stdout(&list).contains("support-v2"),
        "no demo world outside --dev"
    );
    let out = mandate(&server, Some(&token), &["dev", "user-token", "alice"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only in `--dev`"),
        "{out:?}"
    );
    let bad = mandate(
        &server,
        Some("mnd_admin_not-a-real-one"),
        &["agents", "list"],
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("401"),
        "{bad:?}"
    );
    let storage = server.storage().clone();
    drop(server);
    // Second start on the same data: the credential is not shown again, and still works.
    let again = serve_on(&storage, &[], &[]);
    assert!(again.printed_credential.is_none());
    let list = mandate(&again, Some(&token), &["agents", "list"]);
    assert!(list.status.success(), "{list:?}");
}

#[test]
fn audit_verify_offline_names_the_altered_row() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::new(dir.path());
    {
        let server = serve_on(&storage, &["--dev"], &[]);
        let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
        for sub in ["alice@example.com", "bob@example.com", "carol@example.com"] {
            let o = mandate(&server, Some(&token), &["dev", "user-token", sub]);
            assert!(o.status.success());
        }
        let ok = mandate(&server, Some(&token), &["audit", "verify"]);
        assert!(ok.status.success(), "{ok:?}");
        assert!(stdout(&ok).contains("audit chain intact"));
    }
    // Server gone: verify offline (`--data DIR`, or `--database-url URL` on PostgreSQL), then
    // tamper with one row and verify again.
    let offline = command()
        .args(["audit", "verify"])
        .args(storage.offline_args())
        .output()
        .unwrap();
    assert!(offline.status.success(), "{offline:?}");
    let changed = storage.sql("UPDATE audit_events SET reason = 'nothing to see' WHERE seq = 3");
    assert_eq!(changed, 1);
    let broken = command()
        .args(["audit", "verify"])
        .args(storage.offline_args())
        .output()
        .unwrap();
    assert_eq!(broken.status.code(), Some(2), "{broken:?}");
    let text = stdout(&broken);
    assert!(text.contains("BROKEN at seq 3"), "{text}");
}

#[test]
fn the_demo_tells_the_whole_story() {
    // `mandate demo` starts its own server in-process on a temporary data directory and reads
    // no `MANDATE_DATABASE_URL`: it runs on SQLite on a PostgreSQL run too.
    let out = command().arg("demo").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    for expected in [
        "act   = agent:support-v2",
        "decided by Cedar policy: support-group",
        "allowed by Cedar policy: support-v2-delegates-to-analytics-v1",
        "act   = agent:analytics-v1 ← agent:support-v2",
        "invalid_scope",
        "active = false",
        "the CRM (mandate-verify, following the revocation stream) accepts analytics-v1's token: user:alice@example.com via agent:support-v2 > agent:analytics-v1",
        "✓ the CRM refuses it",
        "after the revoke call returned: token has been revoked (task `ticket-12847`)",
        "token has been revoked (task `ticket-12847`)",
        "via agent:support-v2 > agent:analytics-v1 task:ticket-12847 token.exchange crm.customers:read",
        "intact = true",
        "6. The gateway: the agent never holds the CRM's key",
        "GET /customers/9821 → 200 Acme Corp (the CRM served it for alice@example.com",
        "the CRM received: x-api-key, txn-token",
        "✓ GET /regions/amer/customers/4410 → 403: user `alice@example.com` `crm.customers:read` on `customers/4410` is forbidden by `customers-of-own-region`",
        "through the gateway support-v2 sees [\"lookup_customer\"]",
        "✓ tools/call delete_customer → 403 insufficient_scope",
        "gets a token bound to its key (token_type DPoP, cnf.jkt",
        "GET /customers/9821 with a fresh proof by that key → 200",
        "✓ the same token copied out of the agent's memory, without the key → 401",
        "✓ with the agent's proof replayed → 401 invalid_dpop_proof",
        "workload identity: support-v2 is bound to SPIFFE ID spiffe://demo.example/ns/support/sa/support-agent",
        "→ 200: a token whose credential names the running instance: spiffe:spiffe://demo.example/ns/support/sa/support-agent",
        "✓ an SVID for the same ID signed by a key outside the trust domain's bundle → 401 invalid_client",
        "gateway.request crm.customers:read customers/9821 allow",
        "7. Human approval: a higher stage, and a write held in draft stage",
        "asks for an `execute` token → 400 authorization_pending, auth_req_id ap-",
        "polls again at once: slow_down (interval now 10 s)",
        "✓ the next poll → 200: a token at stage `execute`",
        "POST /tickets → 202: held as proposal ap-",
        "the CRM has 0 new tickets",
        "✓ alice approves her own request → 403",
        "support-v2 polls its proposal → 201 ticket",
        "(sent once; the CRM now has 1 new ticket)",
        "already approved",
        "the console shows people the same: /console/approvals/ap-",
        "gateway.request tickets:create tickets allow approver:carol@example.com",
        "8. Posture and compliance: what is wrong today, and the evidence",
        "key-never-expires: key `support-v2-k1`",
        "blast radius of support-v2: ",
        "mandate compliance: 9 controls",
        "9. The audit trail",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

#[test]
fn a_typo_in_the_configuration_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mandate.toml");
    std::fs::write(
        &cfg,
        "listen = \"127.0.0.1:0\"\n[tokens]\ndefault_tll = 5\n",
    )
    .unwrap();
    let out = command()
        .args(["serve", "--config"])
        .arg(&cfg)
        .args(["--data"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("default_tll") && err.contains("mandate.toml"),
        "{err}"
    );
}

#[test]
fn policy_files_are_validated_and_tested_offline() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("team.cedar"),
        "@id(\"support\")\npermit(principal in Group::\"support\", action == Action::\"tickets:read\", resource);\n",
    )
    .unwrap();
    let ok = command()
        .args(["policy", "validate", "--dir"])
        .arg(&policies)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    assert!(
        stdout(&ok).contains("1 policies in 1 file(s)"),
        "{}",
        stdout(&ok)
    );

    let cases = dir.path().join("cases.json");
    std::fs::write(
        &cases,
        r#"[{"name": "support reads", "principal": {"user": "alice", "groups": ["support"]},
             "action": "tickets:read", "resource": "https://t", "expect": "allow"},
            {"name": "others do not", "principal": {"user": "bob"},
             "action": "tickets:read", "resource": "https://t", "expect": "allow"}]"#,
    )
    .unwrap();
    let t = command()
        .args(["policy", "test"])
        .arg(&cases)
        .arg("--dir")
        .arg(&policies)
        .output()
        .unwrap();
    assert_eq!(t.status.code(), Some(1));
    let text = stdout(&t);
    assert!(
        text.contains("ok   support reads: expected allow, decided allow by support"),
        "{text}"
    );
    assert!(
        text.contains("FAIL others do not: expected allow, decided deny"),
        "{text}"
    );
    assert!(text.contains("1 passed, 1 failed"), "{text}");

    std::fs::write(
        policies.join("broken.cedar"),
        "permit(principal, action, resource)\nwhen { context.nope };\n",
    )
    .unwrap();
    let bad = command()
        .args(["policy", "validate", "--dir"])
        .arg(&policies)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("`broken.cedar` line 2"), "{err}");
}

#[test]
fn a_dev_user_token_carries_claims_that_policies_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(dir.path(), &["--dev"], &[]);
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let explain = |claims: &[&str]| {
        let mut args = vec![
            "policy",
            "explain",
            "--user",
            "bob@example.com",
            "--groups",
            "finance",
            "--action",
            "billing.payments:create",
            "--resource",
            "https://pay.example.com",
        ];
        for c in claims {
            args.push("--claim");
            args.push(c);
        }
        stdout(&mandate(&server, Some(&token), &args))
    };
    assert!(
        explain(&[]).starts_with("deny: forbidden by payments-need-gold-tier"),
        "{}",
        explain(&[])
    );
    assert!(
        explain(&["tier=gold"]).starts_with("allow: permitted by finance-group"),
        "{}",
        explain(&["tier=gold"])
    );
    let user = mandate(
        &server,
        Some(&token),
        &[
            "dev",
            "user-token",
            "bob@example.com",
            "--claim",
            "tier=gold",
        ],
    );
    let claims = mandate(&server, None, &["token", "decode", stdout(&user).trim()]);
    assert!(
        stdout(&claims).contains("\"tier\": \"gold\""),
        "{}",
        stdout(&claims)
    );
}

#[test]
fn a_task_is_created_worked_on_completed_and_shown_as_one_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(dir.path(), &["--dev"], &[]);
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let run = |args: &[&str]| {
        let out = mandate(&server, Some(&token), args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        stdout(&out)
    };
    let created = run(&[
        "task",
        "create",
        "--id",
        "ticket-7",
        "--purpose",
        "answer the billing question",
        "--input",
        "I was charged twice for invoice 77",
        "--agent",
        "support-v2",
        "--user",
        "alice@example.com",
    ]);
    assert!(created.contains("task ticket-7 created"), "{created}");

    // The agent works on it with a token bound to the task.
    let user_token = run(&["dev", "user-token", "alice@example.com"]);
    let key = dir.path().join("agents/support-v2.jwk");
    let access = run(&[
        "token",
        "exchange",
        "--agent",
        "support-v2",
        "--key",
        key.to_str().unwrap(),
        "--subject-token",
        user_token.trim(),
        "--scope",
        "crm.customers:read",
        "--resource",
        "https://crm.example.com",
        "--task",
        "ticket-7",
    ]);
    let access = access.trim();
    let claims: serde_json::Value =
        serde_json::from_str(&run(&["token", "decode", access])).unwrap();
    let jti = claims["jti"].as_str().unwrap();
    let step = run(&[
        "task",
        "step",
        "ticket-7",
        "--decision",
        "look up the customer",
        "--summary",
        "the invoice belongs to an account; read it first",
        "--action",
        "crm.customers:read",
        "--resource",
        "customers/9821",
        "--access-token",
        access,
    ]);
    assert!(step.contains("step 1 recorded on task ticket-7"), "{step}");
    let done = run(&[
        "task",
        "complete",
        "ticket-7",
        "--outcome",
        "refund of the duplicate charge issued",
        "--access-token",
        access,
    ]);
    assert!(done.contains("1 live token(s) ended"), "{done}");
    // Its token ended with it.
    let intro = mandate(&server, Some(&token), &["token", "introspect", access]);
    assert_eq!(intro.status.code(), Some(1));

    let text = run(&["task", "show", "ticket-7"]);
    for expected in [
        "task ticket-7  (completed)",
        "  purpose: answer the billing question",
        "  I was charged twice for invoice 77",
        "step 1 by agent:support-v2: look up the customer",
        "the invoice belongs to an account; read it first",
        "intends: crm.customers:read customers/9821",
        &format!("token {}  via support-v2  crm.customers:read", &jti[..8]),
        "REVOKED",
        "user:alice@example.com via agent:support-v2 task:ticket-7 token.exchange crm.customers:read https://crm.example.com allow",
        "of task `ticket-7` by agent:support-v2: task completed",
        "refund of the duplicate charge issued",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    // One timeline, in order: input, then the token, the step, the revocation, the outcome.
    let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("`{s}` in:\n{text}"));
    assert!(at("input:") < at("timeline:"));
    assert!(at("token.exchange") < at("step 1 by"));
    assert!(at("step 1 by") < at("task completed"));
    assert!(at("task completed") < at("outcome"));

    let json: serde_json::Value =
        serde_json::from_str(&run(&["--json", "task", "show", "ticket-7"])).unwrap();
    assert_eq!(json["steps"][0]["decision"], "look up the customer");
    assert_eq!(
        json["task"]["outcome"],
        "refund of the duplicate charge issued"
    );
    let list = run(&["task", "list", "--status", "completed"]);
    assert!(
        list.contains("ticket-7") && list.contains("completed"),
        "{list}"
    );
    // A further step is refused: the token ended, and the task is no longer active.
    let late = mandate(
        &server,
        Some(&token),
        &["task", "step", "ticket-7", "--decision", "again"],
    );
    assert!(!late.status.success());
    assert!(
        String::from_utf8_lossy(&late.stderr).contains("409"),
        "{late:?}"
    );
}

/// Runs `mandate` with `input` on its standard input.
fn mandate_with_stdin(server: &Server, token: &str, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = command()
        .env("MANDATE_URL", &server.url)
        .env("MANDATE_TOKEN", token)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mandate");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().expect("mandate finishes")
}

#[test]
fn a_secret_is_set_from_stdin_listed_without_its_value_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(dir.path(), &["--dev"], &[]);
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let token = token.trim();
    let value = "sk_cli_Rq7vX2mN9pL4kT8wZ3yB";

    let set = mandate_with_stdin(
        &server,
        token,
        &["secret", "set", "crm-api", "--description", "crm key"],
        &format!("{value}\n"),
    );
    assert!(set.status.success(), "{set:?}");
    let said = format!("{}{}", stdout(&set), String::from_utf8_lossy(&set.stderr));
    assert!(said.contains("crm-api"), "{said}");
    assert!(!said.contains(value), "set printed the value: {said}");

    // Nothing on stdin: refused, nothing stored.
    let empty = mandate_with_stdin(&server, token, &["secret", "set", "empty-one"], "");
    assert!(!empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no value"));

    for args in [&["secret", "list"][..], &["--json", "secret", "list"][..]] {
        let list = mandate(&server, Some(token), args);
        assert!(list.status.success(), "{list:?}");
        let text = stdout(&list);
        assert!(
            text.contains("crm-api") && text.contains("crm key"),
            "{text}"
        );
        assert!(!text.contains(value), "list printed the value: {text}");
        assert!(!text.contains("empty-one"), "{text}");
    }

    // Setting it again replaces it; the value shows neither there nor in the audit log.
    let again = mandate_with_stdin(
        &server,
        token,
        &["--json", "secret", "set", "crm-api"],
        value,
    );
    assert!(again.status.success(), "{again:?}");
    assert!(!stdout(&again).contains(value));
    let tail = mandate(&server, Some(token), &["audit", "tail", "-n", "50"]);
    assert!(
        !stdout(&tail).contains(value),
        "the audit log holds the value"
    );

    let rm = mandate(&server, Some(token), &["secret", "rm", "crm-api"]);
    assert!(rm.status.success(), "{rm:?}");
    let rm = mandate(&server, Some(token), &["secret", "rm", "crm-api"]);
    assert!(!rm.status.success());
    assert!(String::from_utf8_lossy(&rm.stderr).contains("not found"));
    let list = mandate(&server, Some(token), &["secret", "list"]);
    assert!(!stdout(&list).contains("crm-api"));
}

#[test]
fn audit_who_answers_who_read_a_resource_on_a_day_and_export_writes_the_lines() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(dir.path(), &["--dev"], &[]);
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let key = dir.path().join("agents/support-v2.jwk");
    let crm = "https://crm.example.com";
    let exchange = |sub: &str, groups: &str, scope: &str| {
        let user = mandate(
            &server,
            Some(&token),
            &["dev", "user-token", sub, "--groups", groups],
        );
        assert!(user.status.success(), "{user:?}");
        let user_token = stdout(&user).trim().to_owned();
        mandate(
            &server,
            Some(&token),
            &[
                "token",
                "exchange",
                "--agent",
                "support-v2",
                "--key",
                key.to_str().unwrap(),
                "--subject-token",
                &user_token,
                "--scope",
                scope,
                "--resource",
                crm,
            ],
        )
    };
    for (sub, groups) in [
        ("alice@example.com", "support"),
        ("alice@example.com", "support"),
        ("carol@example.com", "support,approver"),
    ] {
        let o = exchange(sub, groups, "crm.customers:read");
        assert!(o.status.success(), "{o:?}");
    }
    let over = exchange("alice@example.com", "support", "billing.invoices:read");
    assert!(!over.status.success(), "{over:?}");

    let tail = mandate(
        &server,
        Some(&token),
        &["--json", "audit", "tail", "-n", "1"],
    );
    let last: serde_json::Value = serde_json::from_str(stdout(&tail).trim()).unwrap();
    let day = last["time"].as_str().unwrap()[..10].to_owned();

    let who = mandate(
        &server,
        Some(&token),
        &["audit", "who", "--resource", crm, "--on", &day],
    );
    assert!(who.status.success(), "{who:?}");
    let text = stdout(&who);
    let line = |user: &str, action: &str, decision: &str| {
        text.lines()
            .find(|l| l.starts_with(user) && l.contains(action) && l.contains(decision))
            .unwrap_or_else(|| panic!("no line for {user} {action} {decision} in\n{text}"))
            .to_owned()
    };
    let alice = line("alice@example.com", "crm.customers:read", "allow");
    assert!(alice.contains("support-v2"), "{alice}");
    assert!(alice.contains(" 2 "), "{alice}");
    assert!(alice.contains(&day), "{alice}");
    line("carol@example.com", "crm.customers:read", "allow");
    line("alice@example.com", "billing.invoices:read", "deny");
    assert!(text.contains("total: 4 events"), "{text}");

    // Nothing on another day; `--on` with `--since` is refused by the server.
    let none = mandate(
        &server,
        Some(&token),
        &["audit", "who", "--resource", crm, "--on", "2000-01-01"],
    );
    assert!(stdout(&none).contains("total: 0 events"), "{none:?}");
    let mixed = mandate(
        &server,
        Some(&token),
        &["audit", "who", "--on", &day, "--since", &day],
    );
    assert!(!mixed.status.success());
    assert!(String::from_utf8_lossy(&mixed.stderr).contains("`on`"));

    // The export file is exactly the events, one per line, as the API returns them.
    let file = dir.path().join("export.jsonl");
    let export = mandate(
        &server,
        Some(&token),
        &[
            "audit",
            "export",
            "--format",
            "jsonl",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(export.status.success(), "{export:?}");
    let exported = std::fs::read_to_string(&file).unwrap();
    let query = mandate(
        &server,
        Some(&token),
        &["--json", "audit", "query", "--limit", "10000"],
    );
    assert_eq!(exported, stdout(&query));
    assert!(exported.lines().count() >= 4);

    let ocsf = mandate(
        &server,
        Some(&token),
        &["audit", "export", "--format", "ocsf", "--resource", crm],
    );
    assert!(ocsf.status.success(), "{ocsf:?}");
    let lines: Vec<serde_json::Value> = stdout(&ocsf)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().all(|o| o["class_uid"] == 6003));
    assert_eq!(lines[0]["actor"]["user"]["uid"], "alice@example.com");
    assert_eq!(lines[3]["status"], "Failure");
}

#[test]
fn audit_verify_offline_names_a_cut_tail_through_the_signed_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("kept-jwks.json");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let storage = Storage::new(dir.path());
    let cp = {
        let server = serve_on(&storage, &["--dev"], &[]);
        let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
        let http = reqwest::Client::new();
        let (cp, jwks) = rt.block_on(async {
            let cp: serde_json::Value = http
                .post(format!("{}/v1/audit/checkpoint", server.url))
                .bearer_auth(token.trim())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let jwks = http
                .get(format!("{}/.well-known/jwks.json", server.url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            (
                cp["checkpoint"]["seq"].as_i64().expect("a checkpoint"),
                jwks,
            )
        });
        std::fs::write(&jwks_file, jwks).unwrap();
        // Activity after the checkpoint.
        let o = mandate(&server, Some(&token), &["keys", "rotate"]);
        assert!(o.status.success(), "{o:?}");
        let ok = mandate(&server, Some(&token), &["audit", "verify"]);
        assert!(ok.status.success(), "{ok:?}");
        assert!(
            stdout(&ok).contains("1 signed checkpoints checked"),
            "{ok:?}"
        );
        cp
    };
    assert!(cp >= 2);
    // Offline: `--data DIR`, or `--database-url URL` on PostgreSQL.
    let verify = |extra: &[&str]| {
        command()
            .args(["audit", "verify"])
            .args(storage.offline_args())
            .args(extra)
            .output()
            .unwrap()
    };
    let intact = verify(&[]);
    assert!(intact.status.success(), "{intact:?}");
    // The checkpointed event and everything after it are deleted: the rest is consistent.
    storage.sql(&format!(
        "DELETE FROM audit_event_agents WHERE seq >= {cp}; DELETE FROM audit_events WHERE seq >= {cp};"
    ));
    let jwks_arg = jwks_file.to_str().unwrap();
    for extra in [&[][..], &["--jwks", jwks_arg][..]] {
        let cut = verify(extra);
        assert_eq!(cut.status.code(), Some(2), "{cut:?}");
        let text = stdout(&cut);
        assert!(
            text.contains(&format!(
                "checkpoint finding at seq {cp}: events after seq {} are missing: checkpoint of seq {cp} (signed at ",
                cp - 1
            )),
            "{text}"
        );
    }
    // A JWKS that does not hold the server's key: the checkpoint is not trusted.
    let foreign = dir.path().join("foreign-jwks.json");
    std::fs::write(&foreign, r#"{"keys": []}"#).unwrap();
    let untrusted = verify(&["--jwks", foreign.to_str().unwrap()]);
    assert_eq!(untrusted.status.code(), Some(2), "{untrusted:?}");
    assert!(
        stdout(&untrusted).contains("does not verify: no trusted key has kid"),
        "{untrusted:?}"
    );
}

/// A plain HTTP/1.1 GET over loopback: (status, body).
fn http_get(url: &str, bearer: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {bearer}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A one-thread upstream: answers every request 200 with the request's head as its body.
fn echo_upstream() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                head.len()
            );
            let _ = stream.write_all(&head);
        }
    });
    format!("http://{addr}")
}

#[test]
fn a_standalone_gateway_follows_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(dir.path(), &["--dev"], &[]);
    assert!(server.gateway.is_some(), "--dev prints its gateway");
    assert!(server.sample.is_some(), "--dev prints the sample CRM");
    // The standalone gateway fronts its own upstream, with the key `--dev` stored as `crm-api`.
    let sample = echo_upstream();
    let crm_key = std::fs::read_to_string(dir.path().join("sample-crm.key")).unwrap();
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let token = token.trim();
    let cred = mandate(
        &server,
        Some(token),
        &["credentials", "create", "--id", "gw1", "--role", "gateway"],
    );
    assert!(cred.status.success(), "{cred:?}");
    let credential = stdout(&cred).lines().nth(1).unwrap().trim().to_owned();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[gateway]
[[gateway.upstreams]]
name = "crm"
url = "{sample}"
secret = "crm-api"
credential = {{ header = {{ name = "x-api-key" }} }}

[[gateway.routes]]
method = "GET"
path = "/customers/{{id}}"
action = "crm.customers:read"
resource = "customers/{{id}}"
"#
        ),
    )
    .unwrap();
    let mut child = command()
        .args(["gateway", "--config"])
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0", "--mandate-url", &server.url])
        .env("MANDATE_GATEWAY_CREDENTIAL", &credential)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout_pipe = child.stdout.take().unwrap();
    // Killed on drop, even when an assertion below fails.
    let _gateway = Killed(child);
    let mut lines = BufReader::new(stdout_pipe).lines();
    let mut gw = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("Gateway is listening on ") {
            gw = rest.split_whitespace().next().map(str::to_owned);
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let gw = gw.expect("the gateway prints its URL");
    std::thread::spawn(move || for _ in lines {});

    let user = mandate(
        &server,
        Some(token),
        &["dev", "user-token", "alice@example.com"],
    );
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
            "crm.customers:read",
            "--resource",
            &gw,
        ],
    );
    assert!(exchanged.status.success(), "{exchanged:?}");
    let access = stdout(&exchanged).trim().to_owned();
    let (status, body) = http_get(&format!("{gw}/customers/9821"), &access);
    assert_eq!(status, 200, "{body}");
    // What the upstream received: the real key and a Transaction Token, not the agent's token.
    let body = body.to_ascii_lowercase();
    assert!(
        body.contains(&format!(
            "x-api-key: {}",
            crm_key.trim().to_ascii_lowercase()
        )),
        "{body}"
    );
    assert!(body.contains("txn-token: ey"), "{body}");
    assert!(!body.contains(&access.to_ascii_lowercase()), "{body}");
    assert!(!body.contains("authorization"), "{body}");
    let (status, _) = http_get(&format!("{gw}/customers/9821"), "not-a-token");
    assert_eq!(status, 401);
    // The standalone gateway's audit line reaches the server's log.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tail = mandate(&server, Some(token), &["audit", "tail", "-n", "20"]);
        if stdout(&tail).contains("gateway.request crm.customers:read customers/9821 allow") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no gateway audit line: {}",
            stdout(&tail)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_standalone_gateway_names_what_it_is_missing() {
    let out = command()
        .args(["gateway", "--listen", "127.0.0.1:0"])
        .current_dir(tempfile::tempdir().unwrap().path())
        .env_remove("MANDATE_CONFIG")
        .env_remove("MANDATE_GATEWAY_CREDENTIAL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no Mandate server to follow"), "{err}");
}

#[test]
fn a_tls_server_with_a_private_ca_is_reached_through_mandate_ca_file() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
    let dir = tempfile::tempdir().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::default();
    leaf.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let (cert_file, key_file, ca_file) = (
        dir.path().join("server.pem"),
        dir.path().join("server.key"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let data = dir.path().join("data");
    let server = serve_with(
        &data,
        &["--dev"],
        &[
            ("MANDATE_TLS__CERT_FILE", cert_file.to_str().unwrap()),
            ("MANDATE_TLS__KEY_FILE", key_file.to_str().unwrap()),
        ],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let token = token.trim();
    // The system's roots do not know the private CA.
    let o = mandate(&server, Some(token), &["agents", "list"]);
    assert!(!o.status.success(), "{o:?}");
    // MANDATE_CA_FILE adds it.
    let ca_path = ca_file.to_str().unwrap();
    let o = mandate_env(
        &server,
        &[("MANDATE_TOKEN", token), ("MANDATE_CA_FILE", ca_path)],
        &["agents", "list"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("support-v2"), "{}", stdout(&o));
    // A file that holds no certificate is a clear error.
    let o = mandate_env(
        &server,
        &[
            ("MANDATE_TOKEN", token),
            ("MANDATE_CA_FILE", key_file.to_str().unwrap()),
        ],
        &["agents", "list"],
    );
    assert!(
        stderr(&o).contains("holds no PEM certificate"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn agents_are_bound_to_workload_identities_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_dev(dir.path());
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let run = |args: &[&str]| {
        let o = mandate(&server, Some(&token), args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    run(&[
        "agents",
        "register",
        "--id",
        "k8s-agent",
        "--owner",
        "erin@example.com",
        "--ceiling",
        "tickets:read",
        "--workload",
        "spiffe://prod.example/ns/support/sa/*",
        "--workload-oidc",
        "https://k8s.example=system:serviceaccount:support:agent",
    ]);
    let shown = run(&["agents", "show", "k8s-agent"]);
    assert!(
        shown.contains("spiffe://prod.example/ns/support/sa/*")
            && shown.contains("https://k8s.example system:serviceaccount:support:agent"),
        "{shown}"
    );
    run(&[
        "agents",
        "update",
        "k8s-agent",
        "--workload",
        "spiffe://prod.example/agent",
    ]);
    let shown = run(&["agents", "show", "k8s-agent"]);
    assert!(
        shown.contains("spiffe://prod.example/agent") && !shown.contains("k8s.example"),
        "{shown}"
    );
    run(&["agents", "update", "k8s-agent", "--no-workloads"]);
    assert!(!run(&["agents", "show", "k8s-agent"]).contains("workload:"));
    // A binding without a subject is refused before it is sent.
    let bad = mandate(
        &server,
        Some(&token),
        &[
            "agents",
            "update",
            "k8s-agent",
            "--workload-oidc",
            "https://k8s.example",
        ],
    );
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("ISSUER=SUBJECT"), "{}", stderr(&bad));
}
