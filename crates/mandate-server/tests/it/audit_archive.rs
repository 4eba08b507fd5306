//! Audit retention: archiving the oldest events to segment files (`POST /v1/audit/archive`),
//! the database's log verifying from the archive's anchor, the segment files verifying offline
//! (what `mandate audit verify --segment` runs), tampering with them named by file, line and
//! `seq`, refusals, a restart, and the retention task.

use std::path::{Path, PathBuf};

use mandate_core::audit::AuditEvent;
use mandate_server::admin::audit as verify;
use mandate_server::archive::{self, DbView, SegmentReport};
use mandate_token::verify::KeySet;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::audit::{activity, verify_report};
use super::harness::*;

async fn head(srv: &Server) -> i64 {
    srv.audit("limit=1&order=desc").await[0]["seq"]
        .as_i64()
        .unwrap()
}

/// `n` more events (token exchanges).
async fn more(srv: &Server, n: usize) {
    let support = srv.agent("support-v2");
    for _ in 0..n {
        srv.exchange(&support, &srv.alice(), "tickets:read")
            .await
            .access_token();
    }
}

/// Archives through `seq`; returns the one new segment.
async fn archive_through(srv: &Server, seq: i64) -> Value {
    let r = srv
        .admin_post("/v1/audit/archive", &json!({ "through_seq": seq }))
        .await;
    r.expect(200);
    let segs = r.body["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 1, "{}", r.body);
    segs[0].clone()
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// The trusted keys and the database's view, read offline from a stopped server's database
/// (SQLite or PostgreSQL).
async fn offline_view(db: &Database) -> (KeySet, DbView, Value) {
    let store = db.open_read_only().await;
    let keys = verify::stored_key_set(&store.signing_keys().await.unwrap());
    let (r, latest, archived) = verify::verify_store_archived(&*store, &keys).await.unwrap();
    let view = DbView {
        records: store.audit_segments().await.unwrap(),
        first_event: store.audit_after(0, 1).await.unwrap().into_iter().next(),
        checkpoints: verify::check_signatures(&store.checkpoints().await.unwrap(), &keys).0,
    };
    store.close().await;
    let mut report = verify::report_json(&r, latest.as_ref());
    report["archived"] = json!(archived);
    (keys, view, report)
}

fn finding<'a>(r: &'a SegmentReport, file: &str, words: &str) -> &'a archive::SegmentFinding {
    r.findings
        .iter()
        .find(|f| f.file == file && f.problem.contains(words))
        .unwrap_or_else(|| panic!("no finding in `{file}` saying `{words}`: {r:#?}"))
}

#[tokio::test]
async fn an_archived_log_still_verifies_and_a_restart_still_chains() {
    let mut srv = Server::start().await;
    activity(&srv).await;
    // A checkpoint inside the range to archive, and one at its very end.
    let inside = srv.admin_post("/v1/audit/checkpoint", &json!({})).await;
    inside.expect(200);
    more(&srv, 2).await;
    let end = srv.admin_post("/v1/audit/checkpoint", &json!({})).await;
    let k = end.body["checkpoint"]["seq"].as_i64().unwrap();
    more(&srv, 3).await;
    let before = srv.audit("limit=10000").await;
    let total = before.len() as i64;
    assert_eq!(before[0]["seq"], 1);

    let seg = archive_through(&srv, k).await;
    assert_eq!(
        (seg["first_seq"].as_i64(), seg["last_seq"].as_i64()),
        (Some(1), Some(k))
    );
    assert_eq!(seg["count"].as_i64(), Some(k));
    let file = format!("audit-1-{k}.jsonl");
    assert_eq!(seg["file"], file);
    let dir = srv.data_dir().join("audit-archive");
    let path = dir.join(&file);
    assert_eq!(PathBuf::from(seg["path"].as_str().unwrap()), path);
    // The events exactly as `format=jsonl` renders them.
    let lines = std::fs::read_to_string(&path).unwrap();
    assert_eq!(lines.lines().count() as i64, k);
    for (line, event) in lines.lines().zip(&before) {
        assert_eq!(serde_json::from_str::<Value>(line).unwrap(), *event);
    }
    assert_eq!(seg["sha256"].as_str().unwrap(), sha256_of(&path));
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("audit-1-{k}.manifest.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["sha256"], seg["sha256"]);
    assert_eq!(manifest["last_hash"], before[k as usize - 1]["hash"]);
    assert_eq!(manifest["first_prev_hash"], "0".repeat(64));
    assert_eq!(manifest["count"].as_i64(), Some(k));

    // The archive is itself an audit event, and the rest of the log answers queries.
    let ev = srv.audit("kind=audit.archive").await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["resource"], format!("audit-archive/{file}"));
    let detail: Value = serde_json::from_str(ev[0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["sha256"], seg["sha256"]);
    assert_eq!(
        (detail["first_seq"].as_i64(), detail["last_seq"].as_i64()),
        (Some(1), Some(k))
    );
    let kept = srv.audit("limit=10000").await;
    assert_eq!(kept[0]["seq"].as_i64(), Some(k + 1));
    assert_eq!(
        kept.len() as i64,
        total - k + 1,
        "the kept ones and the archive's event"
    );
    let by_agent = srv.audit("agent=support-v2&limit=10000").await;
    assert!(!by_agent.is_empty());
    assert!(by_agent.iter().all(|e| e["seq"].as_i64().unwrap() > k));
    let listed = srv.admin_get("/v1/audit/segments").await;
    listed.expect(200);
    assert_eq!(listed.body["segments"][0]["sha256"], seg["sha256"]);

    // The database's log verifies from the anchor; the checkpoint at the anchor is checked
    // against the segment record, the one inside the segment is only counted.
    let report = verify_report(&srv).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["checked"].as_i64(), Some(total - k + 1), "{report}");
    assert_eq!(report["archived"]["segments"], 1);
    assert_eq!(report["archived"]["through_seq"].as_i64(), Some(k));
    assert_eq!(report["archived"]["checkpoints_archived"], 1, "{report}");
    assert_eq!(report["checkpoints_checked"], 1, "{report}");

    // A restart, then new events: they continue the chain after the kept head.
    let last = head(&srv).await;
    let last_hash = srv.audit("limit=1&order=desc").await[0]["hash"].clone();
    srv.restart().await;
    more(&srv, 2).await;
    let after = srv.audit(&format!("after={last}&limit=10")).await;
    assert_eq!(after[0]["seq"].as_i64(), Some(last + 1));
    assert_eq!(after[0]["prev_hash"], last_hash);
    let report = verify_report(&srv).await;
    assert_eq!(report["ok"], true, "{report}");

    // The segment verifies offline, alone (keys only, like `--jwks`) and with the database.
    srv.stop().await;
    let (keys, view, db_report) = offline_view(srv.database()).await;
    assert_eq!(db_report["ok"], true, "{db_report}");
    let r = archive::verify_segments(std::slice::from_ref(&path), &keys, None);
    assert!(r.ok, "{r:#?}");
    assert_eq!(r.events_checked as i64, k);
    assert!(r.segments[0].signed);
    // Given by its manifest's name too.
    let r = archive::verify_segments(
        &[dir.join(format!("audit-1-{k}.manifest.json"))],
        &keys,
        Some(&view),
    );
    assert!(r.ok, "{r:#?}");
    // The wrong keys: the checkpoint does not verify.
    let foreign = mandate_token::SigningKey::generate(mandate_token::Alg::EdDSA).unwrap();
    let other = KeySet::new(vec![
        mandate_token::verify::VerifyingKey::from_jwk(foreign.public_jwk()).unwrap(),
    ]);
    let r = archive::verify_segments(std::slice::from_ref(&path), &other, None);
    assert!(!r.ok);
    finding(
        &r,
        &format!("audit-1-{k}.manifest.json"),
        "the manifest's checkpoint does not verify",
    );
}

#[tokio::test]
async fn empty_repeated_or_head_reaching_ranges_are_refused_and_change_nothing() {
    let srv = Server::start().await;
    more(&srv, 3).await;
    let h = head(&srv).await;
    let refuse = |body: Value, status: u16, words: &'static str| {
        let srv = &srv;
        async move {
            let r = srv.admin_post("/v1/audit/archive", &body).await;
            assert_eq!(r.status, status, "{body}: {}", r.body);
            let msg = r.body["message"].as_str().unwrap_or_default().to_owned();
            assert!(msg.contains(words), "{body}: {msg}");
        }
    };
    refuse(json!({"through_seq": h}), 409, "not before the chain head").await;
    refuse(
        json!({"through_seq": h + 100}),
        409,
        "the newest event always stays",
    )
    .await;
    refuse(
        json!({"before": "2001-01-01"}),
        409,
        "no audit event in the database is older than `2001-01-01T00:00:00.000Z`",
    )
    .await;
    refuse(
        json!({"before": "2026-01-01", "through_seq": 2}),
        400,
        "not both",
    )
    .await;
    refuse(json!({}), 400, "give `before`").await;
    refuse(json!({"through_seq": 0}), 400, "at least 1").await;
    refuse(json!({"through_seq": -5}), 400, "at least 1").await;
    refuse(
        json!({"before": "last tuesday"}),
        400,
        "`before` must be an RFC 3339 time",
    )
    .await;
    refuse(json!({"through": 3}), 400, "unknown field").await;
    refuse(
        json!({"through_seq": "3"}),
        400,
        "request body does not fit",
    )
    .await;
    let auditor = srv
        .admin_post(
            "/v1/credentials",
            &json!({"id": "aud-archive", "role": "auditor"}),
        )
        .await;
    auditor.expect(201);
    let r = srv
        .send(
            srv.http
                .post(srv.at("/v1/audit/archive"))
                .bearer_auth(auditor.body["secret"].as_str().unwrap())
                .json(&json!({"through_seq": 2})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(srv.audit("kind=audit.archive").await.is_empty());
    assert_eq!(
        srv.audit("limit=1").await[0]["seq"],
        1,
        "nothing was archived"
    );
    assert!(
        !srv.data_dir()
            .join("audit-archive")
            .join("audit-1-2.jsonl")
            .exists()
    );

    archive_through(&srv, 3).await;
    refuse(
        json!({"through_seq": 3}),
        409,
        "events through seq 3 are already archived",
    )
    .await;
    refuse(json!({"through_seq": 2}), 409, "the archive ends at seq 3").await;
    // Only the newest event is older than a far future date: everything but it goes.
    let r = srv
        .admin_post("/v1/audit/archive", &json!({"before": "2999-01-01"}))
        .await;
    r.expect(200);
    let h = head(&srv).await;
    let seg = &r.body["segments"][0];
    assert_eq!(seg["first_seq"], 4);
    assert_eq!(seg["last_seq"].as_i64(), Some(h - 2), "{}", r.body);
    let report = verify_report(&srv).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["archived"]["segments"], 2);
    srv.shutdown().await;
}

/// Three segments and the database after them, on a stopped server.
struct Scene {
    _srv: Server,
    dir: PathBuf,
    db: Database,
    files: Vec<String>,
    /// A checkpoint of the database inside the first segment.
    inside: i64,
    keys: KeySet,
    view: DbView,
}

async fn scene() -> Scene {
    let mut srv = Server::start().await;
    activity(&srv).await;
    let inside = srv
        .admin_post("/v1/audit/checkpoint", &json!({}))
        .await
        .body["checkpoint"]["seq"]
        .as_i64()
        .unwrap();
    more(&srv, 3).await;
    let mut files = Vec::new();
    for _ in 0..3 {
        let h = head(&srv).await;
        files.push(
            archive_through(&srv, h - 1).await["file"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        more(&srv, 6).await;
    }
    assert_eq!(verify_report(&srv).await["ok"], true);
    srv.stop().await;
    let db = srv.database().clone();
    let (keys, view, report) = offline_view(&db).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["archived"]["segments"], 3, "{report}");
    Scene {
        dir: srv.data_dir().join("audit-archive"),
        _srv: srv,
        db,
        files,
        inside,
        keys,
        view,
    }
}

/// A fresh copy of the archive, changed by `change`, checked with `which` of its segments.
fn case(s: &Scene, which: &[usize], change: impl FnOnce(&Path)) -> SegmentReport {
    let copy = tempfile::tempdir().unwrap().keep();
    for entry in std::fs::read_dir(&s.dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    change(&copy);
    let given: Vec<PathBuf> = which.iter().map(|i| copy.join(&s.files[*i])).collect();
    let r = archive::verify_segments(&given, &s.keys, Some(&s.view));
    let _ = std::fs::remove_dir_all(&copy);
    r
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

fn manifest_of(file: &str) -> String {
    file.replace(".jsonl", ".manifest.json")
}

fn edit_manifest(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(path, m.to_string()).unwrap();
}

#[tokio::test]
async fn tampered_segments_are_named_by_file_line_and_seq() {
    let s = scene().await;
    let [f1, f2, f3] = [&s.files[0], &s.files[1], &s.files[2]];

    // Intact: all three, any order, with the database; and one alone.
    let r = case(&s, &[2, 0, 1], |_| {});
    assert!(r.ok, "{r:#?}");
    assert!(r.not_given.is_empty());
    assert_eq!(r.segments[0].file, *f1, "checked in seq order");
    let r = case(&s, &[2], |_| {});
    assert!(r.ok, "{r:#?}");
    assert_eq!(r.not_given, [f1.clone(), f2.clone()]);

    // An altered line.
    let r = case(&s, &[0, 1, 2], |d| {
        let p = d.join(f1);
        let mut l = lines(&p);
        let mut e: Value = serde_json::from_str(&l[2]).unwrap();
        e["reason"] = json!("nothing to see here");
        l[2] = e.to_string();
        write_lines(&p, &l);
    });
    assert!(!r.ok);
    let f = finding(&r, f1, "the line was altered");
    assert_eq!((f.line, f.seq), (Some(3), Some(3)));
    finding(&r, f1, "the file changed after it was archived");

    // A deleted line.
    let r = case(&s, &[0, 1, 2], |d| {
        let p = d.join(f1);
        let mut l = lines(&p);
        l.remove(3);
        write_lines(&p, &l);
    });
    let f = finding(
        &r,
        f1,
        "expected seq 4, found 5: lines missing or reordered",
    );
    assert_eq!((f.line, f.seq), (Some(4), Some(5)));

    // Reordered lines.
    let r = case(&s, &[0, 1, 2], |d| {
        let p = d.join(f1);
        let mut l = lines(&p);
        l.swap(1, 2);
        write_lines(&p, &l);
    });
    let f = finding(&r, f1, "expected seq 2, found 3");
    assert_eq!((f.line, f.seq), (Some(2), Some(3)));
    assert!(
        r.findings
            .iter()
            .filter(|f| f.file == *f1 && f.line.is_some())
            .count()
            == 2,
        "the two moved lines, no noise after them: {r:#?}"
    );

    // A missing segment between two.
    let r = case(&s, &[0, 2], |_| {});
    let f = finding(
        &r,
        f3,
        &format!("a segment between `{f1}` and `{f3}` is missing"),
    );
    assert_eq!(f.seq, Some(s.view.records[1].first_seq));
    assert!(f.problem.starts_with(&format!(
        "seq {}–{} are in no segment given",
        s.view.records[1].first_seq, s.view.records[1].last_seq
    )));

    // A wrong hash in a manifest.
    let r = case(&s, &[0, 1, 2], |d| {
        edit_manifest(&d.join(manifest_of(f2)), |m| {
            m["sha256"] = json!("0".repeat(64))
        })
    });
    let f = finding(
        &r,
        &manifest_of(f2),
        &format!(
            "the manifest says sha256 {}, its signed checkpoint says",
            "0".repeat(64)
        ),
    );
    assert!(f.problem.ends_with("the manifest was altered"), "{f:?}");

    // A forged checkpoint: the manifest signed by another key.
    let r = case(&s, &[0, 1, 2], |d| {
        let p = d.join(manifest_of(f2));
        edit_manifest(&p, |m| {
            let claims = peek(m["checkpoint"].as_str().unwrap());
            let forger = mandate_token::SigningKey::generate(mandate_token::Alg::EdDSA).unwrap();
            m["checkpoint"] = json!(
                mandate_token::sign::sign_jwt(&forger, "audit-checkpoint+jwt", &claims).unwrap()
            );
        })
    });
    let f = finding(
        &r,
        &manifest_of(f2),
        "the manifest's checkpoint does not verify",
    );
    assert_eq!(f.seq, Some(s.view.records[1].last_seq));
    assert!(!r.segments[1].signed);

    // A rewritten segment: an event changed, every hash after it and the manifest recomputed;
    // only the signed checkpoints (the manifest's and the database's) show it.
    let inside = s.inside;
    let r = case(&s, &[0, 1, 2], |d| {
        let p = d.join(f1);
        let mut prev = String::new();
        let mut out = Vec::new();
        for line in lines(&p) {
            let mut e: AuditEvent = serde_json::from_str(&line).unwrap();
            if e.seq == 2 {
                e.reason = "nothing to see here".into();
            } else if e.seq > 2 {
                e.prev_hash = prev.clone();
            }
            e.hash = e.compute_hash();
            prev = e.hash.clone();
            out.push(serde_json::to_string(&e).unwrap());
        }
        write_lines(&p, &out);
        let sha = sha256_of(&p);
        edit_manifest(&d.join(manifest_of(f1)), |m| {
            m["sha256"] = json!(sha);
            m["last_hash"] = json!(prev);
        });
    });
    assert!(!r.ok);
    let f = finding(&r, f1, "the segment was rewritten");
    assert_eq!(f.seq, Some(inside));
    finding(&r, f1, "its signed checkpoint says");
    finding(&r, &manifest_of(f1), "the manifest says last_hash");
    finding(&r, f2, &format!("it does not continue `{f1}`"));

    // A segment that is not the one the database recorded (the last one given, the first of
    // the database then not continuing it).
    let r = case(&s, &[2], |d| {
        let p = d.join(f3);
        let mut l = lines(&p);
        l.pop();
        write_lines(&p, &l);
    });
    finding(&r, f3, "it is not the segment the database recorded");
    finding(
        &r,
        f3,
        "events between the archive and the database are missing",
    );
}

/// The offline report of a copy of the scene's database after `sql` (a copied SQLite file, or
/// a PostgreSQL database created from the scene's as its template).
async fn db_case(s: &Scene, sql: &str) -> Value {
    let copy = s.db.copy().await;
    copy.sql(sql).await;
    offline_view(&copy).await.2
}

fn db_finding<'a>(r: &'a Value, kind: &str, words: &str) -> &'a Value {
    r["checkpoint_findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind && f["problem"].as_str().unwrap().contains(words))
        .unwrap_or_else(|| panic!("no `{kind}` finding saying `{words}`: {r}"))
}

#[tokio::test]
async fn tampered_archive_records_and_the_events_after_them_are_named() {
    let s = scene().await;
    let r3 = &s.view.records[2];
    // The anchor's hash changed: its signed checkpoint says otherwise, and the database's first
    // event no longer links to it.
    let r = db_case(
        &s,
        &format!(
            "UPDATE audit_segments SET last_hash = '{}' WHERE first_seq = {}",
            "a".repeat(64),
            r3.first_seq
        ),
    )
    .await;
    assert_eq!(r["ok"], false);
    let f = db_finding(&r, "segment", "differs from what its checkpoint signed");
    assert_eq!(f["seq"].as_i64(), Some(r3.last_seq));
    assert_eq!(
        r["first_break"]["seq"].as_i64(),
        Some(r3.last_seq + 1),
        "{r}"
    );
    // The record of the first segment deleted.
    let r = db_case(&s, "DELETE FROM audit_segments WHERE first_seq = 1").await;
    db_finding(
        &r,
        "segment",
        &format!("the archive starts at seq {}", s.view.records[1].first_seq),
    );
    // The first event after the archive deleted.
    let k = r3.last_seq + 1;
    let r = db_case(
        &s,
        &format!("DELETE FROM audit_event_agents WHERE seq = {k}; DELETE FROM audit_events WHERE seq = {k};"),
    )
    .await;
    assert_eq!(r["first_break"]["seq"].as_i64(), Some(k), "{r}");
    // The first segment's anchor edited: the record contradicts its checkpoint, and the next
    // record no longer continues it.
    let r = db_case(
        &s,
        &format!(
            "UPDATE audit_segments SET last_hash = '{}' WHERE first_seq = 1",
            "b".repeat(64)
        ),
    )
    .await;
    db_finding(&r, "segment", "differs from what its checkpoint signed");
    let f = db_finding(&r, "segment", "does not continue the chain");
    assert_eq!(f["seq"].as_i64(), Some(s.view.records[1].first_seq));
}

#[tokio::test]
async fn the_retention_task_archives_what_is_older_than_the_retention_period() {
    let srv = Server::start_configured(|c| c.audit_retention_days = 30).await;
    activity(&srv).await;
    let h = head(&srv).await;
    // Nothing is 30 days old yet.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        srv.admin_get("/v1/audit/segments").await.body["segments"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    srv.clock.advance(31 * 86_400);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let segs = loop {
        let r = srv.admin_get("/v1/audit/segments").await;
        let segs = r.body["segments"].as_array().unwrap().clone();
        if !segs.is_empty() {
            break segs;
        }
        assert!(std::time::Instant::now() < deadline, "nothing archived");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0]["first_seq"], 1);
    assert_eq!(
        segs[0]["last_seq"].as_i64(),
        Some(h - 1),
        "everything but the head"
    );
    let ev = srv.audit("kind=audit.archive").await;
    assert!(
        ev[0]["reason"]
            .as_str()
            .unwrap()
            .contains("by retention (older than 30 days)")
    );
    let kept = srv.audit("limit=10000").await;
    assert_eq!(kept[0]["seq"].as_i64(), Some(h));
    let report = verify_report(&srv).await;
    assert_eq!(report["ok"], true, "{report}");
    // At most once an hour: events old enough now wait for the next run, an hour later.
    more(&srv, 2).await;
    let segments = || async {
        srv.admin_get("/v1/audit/segments").await.body["segments"]
            .as_array()
            .unwrap()
            .len()
    };
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(segments().await, 1, "not within the hour");
    srv.clock.advance(3600);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while segments().await < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no second run an hour later"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(verify_report(&srv).await["ok"], true);
    srv.shutdown().await;
}
