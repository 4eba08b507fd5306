//! Audit retention: the oldest audit events leave the database as **segment** files that still
//! verify, and the chain in the database continues from the last segment's anchor.
//!
//! A segment is `<data_dir>/audit-archive/audit-<first>-<last>.jsonl` — the events exactly as
//! `GET /v1/audit?format=jsonl` renders them, one per line — and its manifest
//! `audit-<first>-<last>.manifest.json`: first and last `seq`, the first event's `prev_hash`, the
//! last event's `hash`, the count, the file's SHA-256 and a signed checkpoint (the audit
//! checkpoint JWS, with the segment's facts among its claims). Both files are fsynced before the
//! events are deleted; the deletion, the anchor record ([`mandate_store::SegmentRecord`]) and an
//! `audit.archive` event are one store unit.
//!
//! Verification: [`check_records`] and [`split_checkpoints`] let `verify_store` walk the database
//! from the anchor; [`verify_segments`] checks segment files offline (`mandate audit verify
//! --segment`), naming the file, line and `seq` of each problem.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Weak;

use axum::http::StatusCode;
use mandate_core::audit::{AuditEvent, ChainVerifier, Decision, GENESIS_HASH, NewEvent};
use mandate_core::checkpoint::{CHECKPOINT_TYP, Checkpoint, CheckpointFinding};
use mandate_store::{AuditFilter, Op, SegmentRecord, StoreError};
use mandate_token::verify::KeySet;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::admin::audit_export::jsonl_line;
use crate::error::ApiError;
use crate::state::AppState;

/// The directory under the data directory that holds segment files.
pub const ARCHIVE_DIR: &str = "audit-archive";
/// The most events one segment file holds; a longer range is archived as several segments.
pub const SEGMENT_MAX_EVENTS: i64 = 100_000;
/// The `format` of a manifest.
pub const MANIFEST_FORMAT: &str = "mandate-audit-segment/1";
/// How often the retention task looks at the clock (it archives at most once an hour).
const RETENTION_TICK: std::time::Duration = std::time::Duration::from_secs(1);
/// Seconds between two retention runs, by the server's clock.
const RETENTION_EVERY: i64 = 3600;
/// Events read per page while writing a segment.
const PAGE: u32 = 5_000;
/// Problems reported per segment file before the rest are only counted.
const MAX_FINDINGS_PER_FILE: usize = 100;

/// One archive at a time in this process: the ranges and file names of two would collide.
static ARCHIVING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The segment file's name for `first..=last`.
pub fn segment_file_name(first: i64, last: i64) -> String {
    format!("audit-{first}-{last}.jsonl")
}

/// The manifest's name for `first..=last`.
pub fn manifest_file_name(first: i64, last: i64) -> String {
    format!("audit-{first}-{last}.manifest.json")
}

/// The manifest written beside a segment file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// The segment file's name.
    pub file: String,
    /// The `seq` of its first event.
    pub first_seq: i64,
    /// The `seq` of its last event.
    pub last_seq: i64,
    /// The first event's `prev_hash`.
    pub first_prev_hash: String,
    /// The last event's `hash`.
    pub last_hash: String,
    /// How many events (lines) it holds.
    pub count: i64,
    /// Hex SHA-256 of the segment file.
    pub sha256: String,
    /// When it was written (RFC 3339 UTC).
    pub created_at: String,
    /// The signed checkpoint (compact JWS, `typ` `audit-checkpoint+jwt`) of `last_seq` and
    /// `last_hash`, whose `segment` claim states the other facts.
    pub checkpoint: String,
}

/// The facts of a segment that its checkpoint signs, besides `seq` and `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentFacts {
    /// The `seq` of its first event.
    pub first_seq: i64,
    /// The first event's `prev_hash`.
    pub first_prev_hash: String,
    /// How many events it holds.
    pub count: i64,
    /// Hex SHA-256 of the segment file.
    pub sha256: String,
    /// The segment file's name.
    pub file: String,
}

/// The claims of a segment's checkpoint: an audit checkpoint (`iss`, `iat`, `seq`, `hash`) plus
/// `segment`, so that a checkpoint of the head cannot pass for a segment's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentClaims {
    /// The server.
    pub iss: String,
    /// When it was signed (seconds).
    pub iat: i64,
    /// The segment's last `seq`.
    pub seq: i64,
    /// The last event's hash.
    pub hash: String,
    /// The rest of the segment.
    pub segment: SegmentFacts,
}

/// Checks a segment checkpoint's signature with `keys` and reads its claims.
pub fn verify_segment_checkpoint(jws: &str, keys: &KeySet) -> Result<SegmentClaims, String> {
    let claims = mandate_token::verify::verify_signature(jws, keys, Some(CHECKPOINT_TYP))
        .map_err(|e| e.to_string())?
        .claims;
    serde_json::from_value(claims)
        .map_err(|_| "its claims are not a segment checkpoint's (`seq`, `hash`, `segment`)".into())
}

/// A segment record as the admin API shows it.
pub fn segment_json(data_dir: &Path, r: &SegmentRecord) -> Value {
    json!({
        "first_seq": r.first_seq,
        "last_seq": r.last_seq,
        "count": r.count,
        "first_prev_hash": r.first_prev_hash,
        "last_hash": r.last_hash,
        "sha256": r.sha256,
        "file": r.file_name,
        "manifest": manifest_file_name(r.first_seq, r.last_seq),
        "path": data_dir.join(ARCHIVE_DIR).join(&r.file_name),
        "archived_at": r.archived_at,
        "checkpoint": r.checkpoint,
    })
}

// Archiving

/// How far to archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Through {
    /// Through this `seq` (inclusive); it must be before the chain head.
    Seq(i64),
    /// Every event older than this time (the audit log's text form), but never the head.
    Before(String),
}

/// Why an archive did not happen.
#[derive(Debug)]
pub enum ArchiveError {
    /// The range is empty: nothing to archive (409).
    Nothing(String),
    /// The range cannot be archived: already archived, the head, a broken chain (409).
    Refused(String),
    /// Anything else.
    Api(ApiError),
}

impl From<ArchiveError> for ApiError {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::Nothing(m) | ArchiveError::Refused(m) => ApiError::conflict(m),
            ArchiveError::Api(e) => e,
        }
    }
}

impl From<StoreError> for ArchiveError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ArchiveRefused(m) => ArchiveError::Refused(m),
            other => ArchiveError::Api(other.into()),
        }
    }
}

fn io_failed(what: &str, path: &Path, e: &std::io::Error) -> ArchiveError {
    tracing::error!(error = %e, path = %path.display(), "audit archive: {what}");
    ArchiveError::Api(ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "server_error",
        message: format!("the audit archive could not be written ({what}); see the server log"),
    })
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

/// Creates (or truncates) `path`, readable and writable by the owner only.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Archives the events `through` says to `<data_dir>/audit-archive/`, in segments of at most
/// [`SEGMENT_MAX_EVENTS`], each committed with an `audit.archive` event whose reason is `why`.
/// Returns the new segments, oldest first.
pub async fn archive(
    state: &AppState,
    through: Through,
    why: &str,
) -> Result<Vec<SegmentRecord>, ArchiveError> {
    let _one_at_a_time = ARCHIVING.lock().await;
    let store = state.store.as_ref();
    let records = store.audit_segments().await?;
    let (start, mut link) = match records.last() {
        Some(s) => (s.last_seq.saturating_add(1), s.last_hash.clone()),
        None => (1, GENESIS_HASH.to_owned()),
    };
    let head = store
        .audit(&AuditFilter {
            limit: Some(1),
            newest_first: true,
            ..AuditFilter::default()
        })
        .await?;
    let Some(head) = head.into_iter().next() else {
        return Err(ArchiveError::Nothing(
            "the audit log is empty: there is nothing to archive".into(),
        ));
    };
    let through_seq = match &through {
        Through::Seq(n) => {
            if *n >= head.seq {
                return Err(ArchiveError::Refused(format!(
                    "`through_seq` {n} is not before the chain head (seq {}): the newest event \
                     always stays in the database",
                    head.seq
                )));
            }
            *n
        }
        Through::Before(t) => match store.audit_seq_before(t).await? {
            None => {
                return Err(ArchiveError::Nothing(format!(
                    "no audit event in the database is older than `{t}`: there is nothing to \
                     archive"
                )));
            }
            Some(n) => n.min(head.seq - 1),
        },
    };
    if through_seq < start {
        return Err(ArchiveError::Nothing(if start == 1 {
            "only the newest event is older than that, and it always stays: there is nothing \
             to archive"
                .to_owned()
        } else {
            format!(
                "events through seq {through_seq} are already archived (the archive ends at seq \
                 {}): there is nothing to archive",
                start - 1
            )
        }));
    }
    let dir = state.config.data_dir.join(ARCHIVE_DIR);
    let d = dir.clone();
    blocking(move || crate::files::create_private_dir(&d))
        .await
        .map_err(|e| io_failed("cannot create the archive directory", &dir, &e))?;
    let mut made = Vec::new();
    let mut first = start;
    while first <= through_seq {
        let last = through_seq.min(first.saturating_add(SEGMENT_MAX_EVENTS - 1));
        let (record, paths) = write_segment(state, &dir, first, last, &link).await?;
        let event = NewEvent {
            kind: "audit.archive".into(),
            action: Some("audit.archive".into()),
            resource: Some(format!("{ARCHIVE_DIR}/{}", record.file_name)),
            decision: Some(Decision::Info),
            reason: format!("seq {first}–{last} archived {why}"),
            detail: json!({
                "first_seq": record.first_seq,
                "last_seq": record.last_seq,
                "count": record.count,
                "file": record.file_name,
                "sha256": record.sha256,
                "last_hash": record.last_hash,
            })
            .to_string(),
            ..NewEvent::default()
        };
        let committed = store
            .commit(vec![
                Op::ArchiveAudit {
                    through_seq: last,
                    segment: Box::new(record.clone()),
                },
                Op::Audit(event),
            ])
            .await;
        if let Err(e) = committed {
            // The events are still in the database: the files must not pretend otherwise.
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
            return Err(e.into());
        }
        tracing::info!(
            first_seq = first,
            last_seq = last,
            file = %record.file_name,
            sha256 = %record.sha256,
            "audit events archived"
        );
        link = record.last_hash.clone();
        made.push(record);
        first = last + 1;
    }
    Ok(made)
}

/// Writes, fsyncs and renames into place the segment `first..=last` and its manifest, checking
/// on the way that the events form a chain continuing from `link`. Returns the record to commit
/// and the two files' paths.
async fn write_segment(
    state: &AppState,
    dir: &Path,
    first: i64,
    last: i64,
    link: &str,
) -> Result<(SegmentRecord, [PathBuf; 2]), ArchiveError> {
    let name = segment_file_name(first, last);
    let manifest_name = manifest_file_name(first, last);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let manifest_path = dir.join(&manifest_name);
    let manifest_tmp = dir.join(format!("{manifest_name}.tmp"));
    let cleanup = |paths: [&Path; 2]| {
        for p in paths {
            let _ = std::fs::remove_file(p);
        }
    };

    let t = tmp.clone();
    let mut file = blocking(move || create_private(&t))
        .await
        .map_err(|e| io_failed("cannot create the segment file", &tmp, &e))?;
    let mut hasher = Sha256::new();
    let mut chain = ChainVerifier::after_anchor(first - 1, link.to_owned(), Vec::new());
    let mut count = 0_i64;
    let mut first_prev = None;
    let mut last_hash = None;
    let mut after = first - 1;
    while after < last {
        let want = u32::try_from((last - after).min(i64::from(PAGE))).unwrap_or(PAGE);
        let page = match state.store.audit_after(after, want).await {
            Ok(p) => p,
            Err(e) => {
                cleanup([&tmp, &manifest_tmp]);
                return Err(e.into());
            }
        };
        if page.is_empty() {
            break;
        }
        let mut buf = String::new();
        let mut progressed = false;
        for e in page.iter().take_while(|e| e.seq <= last) {
            progressed = true;
            chain.push(e);
            if chain.is_broken() {
                cleanup([&tmp, &manifest_tmp]);
                let b = chain.clone().report().first_break;
                let (seq, problem) = b.map(|b| (b.seq, b.problem)).unwrap_or_default();
                return Err(ArchiveError::Refused(format!(
                    "the audit chain is broken at seq {seq} ({problem}): archiving would hide \
                     it; see `mandate audit verify`"
                )));
            }
            first_prev.get_or_insert_with(|| e.prev_hash.clone());
            buf.push_str(&jsonl_line(e));
            buf.push('\n');
            last_hash = Some(e.hash.clone());
            count += 1;
            after = e.seq;
        }
        hasher.update(buf.as_bytes());
        file = write_all(file, buf, &tmp).await?;
        if !progressed {
            break;
        }
    }
    let (Some(first_prev_hash), Some(last_hash)) = (first_prev, last_hash) else {
        cleanup([&tmp, &manifest_tmp]);
        return Err(ArchiveError::Refused(format!(
            "seq {first}–{last} holds no events: there is nothing to archive"
        )));
    };
    if count != last - first + 1 || after != last {
        cleanup([&tmp, &manifest_tmp]);
        return Err(ArchiveError::Refused(format!(
            "seq {first}–{last} should hold {} events, the database has {count}: events are \
             missing; see `mandate audit verify`",
            last - first + 1
        )));
    }
    let t = tmp.clone();
    if let Err(e) = blocking(move || file.sync_all()).await {
        cleanup([&tmp, &manifest_tmp]);
        return Err(io_failed("cannot sync the segment file", &t, &e));
    }
    let sha256 = hex::encode(hasher.finalize());

    let now_ms = state.clock.now_ms();
    let claims = SegmentClaims {
        iss: state.issuer.clone(),
        iat: now_ms.div_euclid(1000),
        seq: last,
        hash: last_hash.clone(),
        segment: SegmentFacts {
            first_seq: first,
            first_prev_hash: first_prev_hash.clone(),
            count,
            sha256: sha256.clone(),
            file: name.clone(),
        },
    };
    let checkpoint =
        match mandate_token::sign::sign_jwt(&state.keys.keys().current, CHECKPOINT_TYP, &claims) {
            Ok(jws) => jws,
            Err(e) => {
                cleanup([&tmp, &manifest_tmp]);
                tracing::error!(error = %e, "segment checkpoint could not be signed");
                return Err(ArchiveError::Api(ApiError::server_error()));
            }
        };
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        file: name.clone(),
        first_seq: first,
        last_seq: last,
        first_prev_hash: first_prev_hash.clone(),
        last_hash: last_hash.clone(),
        count,
        sha256: sha256.clone(),
        created_at: mandate_core::time::rfc3339_millis(now_ms),
        checkpoint: checkpoint.clone(),
    };
    let mut text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
    text.push('\n');
    let (mt, t, p, mp, d) = (
        manifest_tmp.clone(),
        tmp.clone(),
        path.clone(),
        manifest_path.clone(),
        dir.to_owned(),
    );
    // Both files durable under their final names before the events may be deleted.
    let placed = blocking(move || {
        let mut f = create_private(&mt)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&t, &p)?;
        std::fs::rename(&mt, &mp)?;
        // The renames themselves durable.
        #[cfg(unix)]
        std::fs::File::open(&d)?.sync_all()?;
        #[cfg(not(unix))]
        let _ = &d;
        Ok(())
    })
    .await;
    if let Err(e) = placed {
        cleanup([&tmp, &manifest_tmp]);
        cleanup([&path, &manifest_path]);
        return Err(io_failed("cannot write the manifest", &manifest_path, &e));
    }
    let record = SegmentRecord {
        first_seq: first,
        last_seq: last,
        first_prev_hash,
        last_hash,
        count,
        sha256,
        file_name: name,
        checkpoint,
        archived_at: now_ms.div_euclid(1000),
    };
    Ok((record, [path, manifest_path]))
}

/// Appends `buf` to `file` off the async workers.
async fn write_all(
    file: std::fs::File,
    buf: String,
    path: &Path,
) -> Result<std::fs::File, ArchiveError> {
    let mut file = file;
    blocking(move || {
        file.write_all(buf.as_bytes())?;
        Ok(file)
    })
    .await
    .map_err(|e| {
        let _ = std::fs::remove_file(path);
        io_failed("cannot write the segment file", path, &e)
    })
}

/// The retention cut at `now` (seconds): the UTC midnight at or before `now - days`, so that
/// retention archives whole days, one segment a day, whichever hour it runs.
pub fn retention_cutoff(now: i64, days: u64) -> i64 {
    let age = i64::try_from(days)
        .unwrap_or(i64::MAX / 86_400)
        .saturating_mul(86_400);
    now.saturating_sub(age)
        .div_euclid(86_400)
        .saturating_mul(86_400)
}

/// One retention run: archives the events older than `audit_retention_days` before `now`
/// (from the UTC midnight at or before that moment: whole days).
pub async fn run_retention(state: &AppState, now: i64) {
    let days = state.config.audit_retention_days;
    if days == 0 {
        return;
    }
    let cutoff = retention_cutoff(now, days);
    let before = mandate_core::time::rfc3339_millis(cutoff.saturating_mul(1000));
    let why = format!("by retention (older than {days} days)");
    match archive(state, Through::Before(before), &why).await {
        Ok(made) => {
            let events: i64 = made.iter().map(|s| s.count).sum();
            tracing::info!(
                segments = made.len(),
                events,
                "audit retention archived events"
            );
        }
        Err(ArchiveError::Nothing(m)) => tracing::debug!(reason = %m, "audit retention: nothing"),
        Err(ArchiveError::Refused(m)) => tracing::warn!(reason = %m, "audit retention refused"),
        Err(ArchiveError::Api(e)) => tracing::error!(error = ?e, "audit retention failed"),
    }
}

/// Runs [`run_retention`] at start and then at most once an hour by the server's clock, while
/// the server lives, when `audit_retention_days` is set: the job, or `None` when it is off.
pub fn spawn_retention(weak: Weak<AppState>) -> Option<tokio::task::JoinHandle<()>> {
    let state = weak.upgrade()?;
    if state.config.audit_retention_days == 0 {
        return None;
    }
    drop(state);
    Some(tokio::spawn(async move {
        // One node archives: segments are numbered by what is left in the shared log.
        let Some(_lease) = crate::cluster::lead(&weak, "audit-retention").await else {
            return;
        };
        let mut tick = tokio::time::interval(RETENTION_TICK);
        let mut last_run: Option<i64> = None;
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else { break };
            let now = state.clock.now();
            if last_run.is_some_and(|t| now.saturating_sub(t) < RETENTION_EVERY) {
                continue;
            }
            last_run = Some(now);
            run_retention(&state, now).await;
        }
    }))
}

// Verifying the database's side

/// What the archive adds to a verification of the database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ArchiveSummary {
    /// Archived segments recorded in the database.
    pub segments: usize,
    /// Events they hold.
    pub events: i64,
    /// The last archived `seq`: the database's chain starts after it.
    pub through_seq: Option<i64>,
    /// The last archived hash: the `prev_hash` the database's first event must have.
    pub anchor_hash: Option<String>,
    /// Checkpoints of archived events that could only be checked against the segment files
    /// (`mandate audit verify --segment … --data …` does).
    pub checkpoints_archived: u64,
}

impl ArchiveSummary {
    /// The summary of `records`.
    pub fn of(records: &[SegmentRecord], checkpoints_archived: u64) -> ArchiveSummary {
        ArchiveSummary {
            segments: records.len(),
            events: records.iter().map(|r| r.count).sum(),
            through_seq: records.last().map(|r| r.last_seq),
            anchor_hash: records.last().map(|r| r.last_hash.clone()),
            checkpoints_archived,
        }
    }
}

fn short(h: &str) -> &str {
    h.get(..16).unwrap_or(h)
}

fn segment_finding(seq: i64, problem: String) -> CheckpointFinding {
    CheckpointFinding {
        kind: "segment".into(),
        seq,
        problem,
    }
}

/// Checks the archive records in the database: the first starts at seq 1 from the genesis
/// hash, each continues the one before, counts its events, and carries a checkpoint that
/// verifies with `keys` and states exactly the record. One `segment` finding per problem.
pub fn check_records(records: &[SegmentRecord], keys: &KeySet) -> Vec<CheckpointFinding> {
    let mut out = Vec::new();
    let mut prev: Option<&SegmentRecord> = None;
    for r in records {
        let name = &r.file_name;
        let (want_first, want_link) = match prev {
            Some(p) => (p.last_seq.saturating_add(1), p.last_hash.as_str()),
            None => (1, GENESIS_HASH),
        };
        if r.first_seq != want_first {
            out.push(segment_finding(
                r.first_seq,
                match prev {
                    Some(p) => format!(
                        "archived segment `{name}` starts at seq {}, but `{}` ends at seq {}: \
                         the archive records are not contiguous",
                        r.first_seq, p.file_name, p.last_seq
                    ),
                    None => format!(
                        "the archive starts at seq {} (segment `{name}`), not at seq 1: the \
                         record of an earlier segment is missing",
                        r.first_seq
                    ),
                },
            ));
        } else if r.first_prev_hash != want_link {
            out.push(segment_finding(
                r.first_seq,
                format!(
                    "archived segment `{name}` does not continue the chain: its first prev_hash \
                     is {}…, the previous hash is {}…",
                    short(&r.first_prev_hash),
                    short(want_link)
                ),
            ));
        }
        if r.count != r.last_seq - r.first_seq + 1 {
            out.push(segment_finding(
                r.last_seq,
                format!(
                    "archived segment `{name}` covers seq {}–{} but counts {} events",
                    r.first_seq, r.last_seq, r.count
                ),
            ));
        }
        match verify_segment_checkpoint(&r.checkpoint, keys) {
            Err(why) => out.push(segment_finding(
                r.last_seq,
                format!("the checkpoint of archived segment `{name}` does not verify: {why}"),
            )),
            Ok(c) => {
                let signed = (
                    c.segment.first_seq,
                    c.seq,
                    &c.segment.first_prev_hash,
                    &c.hash,
                    c.segment.count,
                    &c.segment.sha256,
                );
                let stored = (
                    r.first_seq,
                    r.last_seq,
                    &r.first_prev_hash,
                    &r.last_hash,
                    r.count,
                    &r.sha256,
                );
                if signed != stored {
                    out.push(segment_finding(
                        r.last_seq,
                        format!(
                            "the record of archived segment `{name}` (seq {}–{}, last hash {}…) \
                             differs from what its checkpoint signed (seq {}–{}, last hash {}…): \
                             the record was altered",
                            r.first_seq,
                            r.last_seq,
                            short(&r.last_hash),
                            c.segment.first_seq,
                            c.seq,
                            short(&c.hash)
                        ),
                    ));
                }
            }
        }
        prev = Some(r);
    }
    out
}

/// Checkpoints sorted by where they are checked.
#[derive(Debug, Clone, Default)]
pub struct SplitCheckpoints {
    /// Checkpoints of events after the archive: checked against the database.
    pub live: Vec<Checkpoint>,
    /// Checkpoints of a segment's last event, checked against its record here.
    pub checked: u64,
    /// Checkpoints of other archived events: only the segment files can confirm them.
    pub archived: u64,
    /// Checkpoints that contradict a segment record.
    pub findings: Vec<CheckpointFinding>,
}

/// Splits verified checkpoints at the archive's end; those of a segment's last event must
/// record its `last_hash`.
pub fn split_checkpoints(
    checkpoints: Vec<Checkpoint>,
    records: &[SegmentRecord],
) -> SplitCheckpoints {
    let through = records.last().map_or(0, |r| r.last_seq);
    let ends: HashMap<i64, &SegmentRecord> = records.iter().map(|r| (r.last_seq, r)).collect();
    let mut out = SplitCheckpoints::default();
    for cp in checkpoints {
        if cp.seq > through {
            out.live.push(cp);
            continue;
        }
        match ends.get(&cp.seq) {
            Some(r) if r.last_hash == cp.hash => out.checked += 1,
            Some(r) => out.findings.push(CheckpointFinding {
                kind: "rewritten".into(),
                seq: cp.seq,
                problem: format!(
                    "the archive was rewritten at or before seq {n}: checkpoint of seq {n} \
                     (signed at {t}) recorded hash {}…, archived segment `{}` ends with hash {}…",
                    short(&cp.hash),
                    r.file_name,
                    short(&r.last_hash),
                    n = cp.seq,
                    t = cp.time,
                ),
            }),
            None => out.archived += 1,
        }
    }
    out
}

// Verifying segment files offline

/// What `--data` adds to a check of segment files: the database's own view.
#[derive(Debug, Clone, Default)]
pub struct DbView {
    /// The archive records.
    pub records: Vec<SegmentRecord>,
    /// The first event still in the database.
    pub first_event: Option<AuditEvent>,
    /// The database's checkpoints whose signatures verified.
    pub checkpoints: Vec<Checkpoint>,
}

/// One problem in segment files, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentFinding {
    /// The file (its name).
    pub file: String,
    /// The line (from 1), when the problem is on one.
    pub line: Option<u64>,
    /// The `seq` concerned, when there is one.
    pub seq: Option<i64>,
    /// What is wrong.
    pub problem: String,
}

/// One segment file as checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentSummary {
    /// The file's name.
    pub file: String,
    /// Its path as given.
    pub path: PathBuf,
    /// The `seq` of its first event.
    pub first_seq: Option<i64>,
    /// The `seq` of its last event.
    pub last_seq: Option<i64>,
    /// Events read.
    pub events: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Whether its manifest's checkpoint verified.
    pub signed: bool,
}

/// The result of [`verify_segments`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentReport {
    /// No finding.
    pub ok: bool,
    /// The files, in `seq` order.
    pub segments: Vec<SegmentSummary>,
    /// Events read from all of them.
    pub events_checked: u64,
    /// Every problem, by file.
    pub findings: Vec<SegmentFinding>,
    /// Segments the database records that were not given (with `--data`).
    pub not_given: Vec<String>,
}

/// Findings, at most [`MAX_FINDINGS_PER_FILE`] per file.
#[derive(Default)]
struct Findings {
    list: Vec<SegmentFinding>,
    per_file: HashMap<String, usize>,
}

impl Findings {
    fn add(&mut self, file: &str, line: Option<u64>, seq: Option<i64>, problem: String) {
        let n = self.per_file.entry(file.to_owned()).or_insert(0);
        *n += 1;
        if *n <= MAX_FINDINGS_PER_FILE {
            self.list.push(SegmentFinding {
                file: file.to_owned(),
                line,
                seq,
                problem,
            });
        }
    }

    fn finish(mut self) -> Vec<SegmentFinding> {
        let mut over: Vec<(&String, &usize)> = self
            .per_file
            .iter()
            .filter(|(_, n)| **n > MAX_FINDINGS_PER_FILE)
            .collect();
        over.sort();
        for (file, n) in over {
            self.list.push(SegmentFinding {
                file: file.clone(),
                line: None,
                seq: None,
                problem: format!(
                    "{} more problems in this file are not shown",
                    n - MAX_FINDINGS_PER_FILE
                ),
            });
        }
        self.list
    }
}

/// What a segment should be, and who says so.
struct Facts {
    first_seq: i64,
    last_seq: i64,
    first_prev_hash: String,
    last_hash: String,
    count: i64,
    sha256: String,
    source: &'static str,
}

/// One file, read.
struct Scanned {
    summary: SegmentSummary,
    /// `seq` and `prev_hash` of the first event read.
    first: Option<(i64, String)>,
    /// `seq` and `hash` of the last event read.
    last: Option<(i64, String)>,
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The segment file and the manifest that `given` names (either may be given).
fn segment_paths(given: &Path) -> (PathBuf, PathBuf) {
    let name = file_name(given);
    let dir = given.parent().map(Path::to_path_buf).unwrap_or_default();
    if let Some(stem) = name.strip_suffix(".manifest.json") {
        (dir.join(format!("{stem}.jsonl")), given.to_path_buf())
    } else {
        let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
        (
            given.to_path_buf(),
            dir.join(format!("{stem}.manifest.json")),
        )
    }
}

/// Reads and checks one segment file and its manifest.
fn scan(
    given: &Path,
    keys: &KeySet,
    checkpoints: &BTreeMap<i64, Vec<&Checkpoint>>,
    f: &mut Findings,
) -> Option<Scanned> {
    let (path, manifest_path) = segment_paths(given);
    let name = file_name(&path);
    let manifest_name = file_name(&manifest_path);
    let manifest: Option<Manifest> = match std::fs::read_to_string(&manifest_path) {
        Err(e) => {
            f.add(
                &manifest_name,
                None,
                None,
                format!("the manifest cannot be read: {e}"),
            );
            None
        }
        Ok(text) => match serde_json::from_str(&text) {
            Ok(m) => Some(m),
            Err(e) => {
                f.add(
                    &manifest_name,
                    None,
                    None,
                    format!("the manifest is not a segment manifest: {e}"),
                );
                None
            }
        },
    };
    let mut signed = false;
    let facts = match &manifest {
        None => None,
        Some(m) => match verify_segment_checkpoint(&m.checkpoint, keys) {
            Err(why) => {
                f.add(
                    &manifest_name,
                    None,
                    Some(m.last_seq),
                    format!(
                        "the manifest's checkpoint does not verify: {why}: it was not signed by \
                         this server's keys, or it was altered"
                    ),
                );
                Some(Facts {
                    first_seq: m.first_seq,
                    last_seq: m.last_seq,
                    first_prev_hash: m.first_prev_hash.clone(),
                    last_hash: m.last_hash.clone(),
                    count: m.count,
                    sha256: m.sha256.clone(),
                    source: "its manifest (unsigned)",
                })
            }
            Ok(c) => {
                signed = true;
                let pairs: [(&str, String, String); 6] = [
                    (
                        "first_seq",
                        m.first_seq.to_string(),
                        c.segment.first_seq.to_string(),
                    ),
                    ("last_seq", m.last_seq.to_string(), c.seq.to_string()),
                    (
                        "first_prev_hash",
                        m.first_prev_hash.clone(),
                        c.segment.first_prev_hash.clone(),
                    ),
                    ("last_hash", m.last_hash.clone(), c.hash.clone()),
                    ("count", m.count.to_string(), c.segment.count.to_string()),
                    ("sha256", m.sha256.clone(), c.segment.sha256.clone()),
                ];
                for (field, said, sig) in pairs {
                    if said != sig {
                        f.add(
                            &manifest_name,
                            None,
                            Some(c.seq),
                            format!(
                                "the manifest says {field} {said}, its signed checkpoint says \
                                 {sig}: the manifest was altered"
                            ),
                        );
                    }
                }
                if c.segment.file != name {
                    f.add(
                        &manifest_name,
                        None,
                        Some(c.seq),
                        format!(
                            "its signed checkpoint is for `{}`, not `{name}`",
                            c.segment.file
                        ),
                    );
                }
                Some(Facts {
                    first_seq: c.segment.first_seq,
                    last_seq: c.seq,
                    first_prev_hash: c.segment.first_prev_hash,
                    last_hash: c.hash,
                    count: c.segment.count,
                    sha256: c.segment.sha256,
                    source: "its signed checkpoint",
                })
            }
        },
    };

    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) => {
            f.add(
                &name,
                None,
                None,
                format!("the segment file cannot be read: {e}"),
            );
            return None;
        }
    };
    let mut reader = std::io::BufReader::new(file);
    let mut hasher = Sha256::new();
    let mut buf = Vec::new();
    let mut line_no = 0_u64;
    let mut events = 0_u64;
    let mut expected: Option<i64> = facts.as_ref().map(|x| x.first_seq);
    let mut prev: Option<String> = facts.as_ref().map(|x| x.first_prev_hash.clone());
    let mut first: Option<(i64, String)> = None;
    let mut last: Option<(i64, String)> = None;
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                f.add(
                    &name,
                    Some(line_no + 1),
                    None,
                    format!("the file cannot be read past this line: {e}"),
                );
                break;
            }
        }
        hasher.update(&buf);
        line_no += 1;
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let e: AuditEvent = match serde_json::from_slice(text) {
            Ok(e) => e,
            Err(err) => {
                f.add(
                    &name,
                    Some(line_no),
                    None,
                    format!("the line is not an audit event: {err}"),
                );
                continue;
            }
        };
        events += 1;
        let at = Some(line_no);
        match expected {
            Some(want) if e.seq != want => f.add(
                &name,
                at,
                Some(e.seq),
                format!(
                    "expected seq {want}, found {}: lines missing or reordered",
                    e.seq
                ),
            ),
            _ => match &prev {
                Some(p) if *p != e.prev_hash => f.add(
                    &name,
                    at,
                    Some(e.seq),
                    if first.is_none() {
                        format!(
                            "prev_hash {}… is not the first prev_hash {} states ({}…)",
                            short(&e.prev_hash),
                            facts.as_ref().map_or("", |x| x.source),
                            short(p)
                        )
                    } else {
                        "prev_hash does not match the previous line's hash: a line before it \
                         was removed or replaced"
                            .to_owned()
                    },
                ),
                _ => {}
            },
        }
        if e.compute_hash() != e.hash {
            f.add(
                &name,
                at,
                Some(e.seq),
                "hash does not match the event's content: the line was altered".into(),
            );
        }
        for cp in checkpoints.get(&e.seq).into_iter().flatten() {
            if cp.hash != e.hash {
                f.add(
                    &name,
                    at,
                    Some(e.seq),
                    format!(
                        "the database's checkpoint of seq {} (signed at {}) recorded hash {}…, \
                         this line has hash {}…: the segment was rewritten",
                        cp.seq,
                        cp.time,
                        short(&cp.hash),
                        short(&e.hash)
                    ),
                );
            }
        }
        first.get_or_insert_with(|| (e.seq, e.prev_hash.clone()));
        // A line that moved back does not move the expectation: the lines after it are still
        // checked against the chain as it was going.
        if expected.is_none_or(|want| e.seq >= want) {
            expected = Some(e.seq.saturating_add(1));
            prev = Some(e.hash.clone());
        }
        last = Some((e.seq, e.hash));
    }
    let sha256 = hex::encode(hasher.finalize());
    if let Some(x) = &facts {
        if sha256 != x.sha256 {
            f.add(
                &name,
                None,
                None,
                format!(
                    "its SHA-256 is {sha256}, {} says {}: the file changed after it was \
                     archived",
                    x.source, x.sha256
                ),
            );
        }
        if i64::try_from(events).ok() != Some(x.count) {
            f.add(
                &name,
                None,
                None,
                format!("it holds {events} events, {} says {}", x.source, x.count),
            );
        }
        match &last {
            Some((seq, _)) if *seq != x.last_seq => f.add(
                &name,
                Some(line_no),
                Some(*seq),
                format!("it ends at seq {seq}, {} says {}", x.source, x.last_seq),
            ),
            Some((seq, hash)) if *hash != x.last_hash => f.add(
                &name,
                Some(line_no),
                Some(*seq),
                format!(
                    "its last event has hash {}…, {} says {}…",
                    short(hash),
                    x.source,
                    short(&x.last_hash)
                ),
            ),
            _ => {}
        }
    }
    if events == 0 {
        f.add(&name, None, None, "it holds no audit event".into());
    }
    Some(Scanned {
        summary: SegmentSummary {
            file: name,
            path,
            first_seq: first
                .as_ref()
                .map(|x| x.0)
                .or(facts.as_ref().map(|x| x.first_seq)),
            last_seq: last
                .as_ref()
                .map(|x| x.0)
                .or(facts.as_ref().map(|x| x.last_seq)),
            events,
            sha256,
            signed,
        },
        first,
        last,
    })
}

/// Checks segment files (each `*.jsonl` with its `*.manifest.json` beside it; either name may
/// be given, in any order): every line's hash, the chain inside each file, the file's SHA-256
/// and its manifest against the manifest's signed checkpoint (verified with `keys`), and the
/// continuity between consecutive segments. With `db`, also that each file is the one the
/// database recorded, that the database's first event continues the last one, and that the
/// database's checkpoints of archived events agree with the files.
pub fn verify_segments(given: &[PathBuf], keys: &KeySet, db: Option<&DbView>) -> SegmentReport {
    let mut f = Findings::default();
    let mut by_seq: BTreeMap<i64, Vec<&Checkpoint>> = BTreeMap::new();
    for cp in db.map(|d| d.checkpoints.as_slice()).unwrap_or_default() {
        by_seq.entry(cp.seq).or_default().push(cp);
    }
    let mut scanned: Vec<Scanned> = given
        .iter()
        .filter_map(|p| scan(p, keys, &by_seq, &mut f))
        .collect();
    scanned.sort_by_key(|s| s.summary.first_seq.unwrap_or(i64::MAX));

    for (i, cur) in scanned.iter().enumerate() {
        let name = &cur.summary.file;
        let Some((first_seq, first_prev)) = &cur.first else {
            continue;
        };
        if *first_seq == 1 && first_prev != GENESIS_HASH {
            f.add(
                name,
                Some(1),
                Some(1),
                "the log's first event must have prev_hash 64 zeros".into(),
            );
        }
        let before = i.checked_sub(1).and_then(|j| scanned.get(j));
        match before.and_then(|p| p.last.as_ref().map(|l| (p, l))) {
            Some((p, (last_seq, last_hash))) => {
                let pname = &p.summary.file;
                if *first_seq > last_seq + 1 {
                    f.add(
                        name,
                        None,
                        Some(last_seq + 1),
                        format!(
                            "seq {}–{} are in no segment given: a segment between `{pname}` and \
                             `{name}` is missing",
                            last_seq + 1,
                            first_seq - 1
                        ),
                    );
                } else if *first_seq <= *last_seq {
                    f.add(
                        name,
                        Some(1),
                        Some(*first_seq),
                        format!(
                            "it starts at seq {first_seq}, inside `{pname}` (which ends at seq \
                             {last_seq}): segments overlap"
                        ),
                    );
                } else if first_prev != last_hash {
                    f.add(
                        name,
                        Some(1),
                        Some(*first_seq),
                        format!(
                            "it does not continue `{pname}`: its first prev_hash is {}…, \
                             `{pname}` ends with hash {}…",
                            short(first_prev),
                            short(last_hash)
                        ),
                    );
                }
            }
            None => {
                // The first file given: does it continue the database's record before it?
                if let Some(r) = db
                    .into_iter()
                    .flat_map(|d| d.records.iter())
                    .find(|r| r.last_seq + 1 == *first_seq)
                    && r.last_hash != *first_prev
                {
                    f.add(
                        name,
                        Some(1),
                        Some(*first_seq),
                        format!(
                            "it does not continue archived segment `{}` that the database \
                             records: its first prev_hash is {}…, that one ends with hash {}…",
                            r.file_name,
                            short(first_prev),
                            short(&r.last_hash)
                        ),
                    );
                }
            }
        }
    }

    let mut not_given = Vec::new();
    if let Some(db) = db {
        for s in &scanned {
            let name = &s.summary.file;
            let (Some((first_seq, _)), Some((last_seq, last_hash))) = (&s.first, &s.last) else {
                continue;
            };
            match db.records.iter().find(|r| r.first_seq == *first_seq) {
                None => f.add(
                    name,
                    None,
                    Some(*first_seq),
                    format!("the database records no archived segment starting at seq {first_seq}"),
                ),
                Some(r) => {
                    let differs: Vec<String> = [
                        ("last_seq", r.last_seq.to_string(), last_seq.to_string()),
                        ("last_hash", r.last_hash.clone(), last_hash.clone()),
                        ("sha256", r.sha256.clone(), s.summary.sha256.clone()),
                        ("count", r.count.to_string(), s.summary.events.to_string()),
                    ]
                    .into_iter()
                    .filter(|(_, a, b)| a != b)
                    .map(|(k, a, b)| format!("{k} {a} (the file: {b})"))
                    .collect();
                    if !differs.is_empty() {
                        f.add(
                            name,
                            None,
                            Some(*first_seq),
                            format!(
                                "it is not the segment the database recorded: the record says {}",
                                differs.join(", ")
                            ),
                        );
                    }
                }
            }
        }
        // The newest file given, when it is (or reaches) the archive's last segment, and the
        // database's own events.
        let newest = db.records.last();
        if let Some(s) = scanned.last()
            && let Some((last_seq, last_hash)) = &s.last
            && newest.is_none_or(|r| {
                r.last_seq <= *last_seq || s.first.as_ref().is_some_and(|f| f.0 == r.first_seq)
            })
        {
            let name = &s.summary.file;
            match &db.first_event {
                None => f.add(
                    name,
                    None,
                    Some(last_seq + 1),
                    "the database holds no event after it".into(),
                ),
                Some(e) if e.seq != last_seq + 1 => f.add(
                    name,
                    None,
                    Some(last_seq + 1),
                    format!(
                        "the database's first event is seq {}, not {}: events between the archive \
                         and the database are missing",
                        e.seq,
                        last_seq + 1
                    ),
                ),
                Some(e) if e.prev_hash != *last_hash => f.add(
                    name,
                    None,
                    Some(e.seq),
                    format!(
                        "the database's first event (seq {}) does not continue it: its prev_hash \
                         is {}…, the segment ends with hash {}…",
                        e.seq,
                        short(&e.prev_hash),
                        short(last_hash)
                    ),
                ),
                Some(_) => {}
            }
        }
        for r in &db.records {
            if !scanned
                .iter()
                .any(|s| s.first.as_ref().is_some_and(|(seq, _)| *seq == r.first_seq))
            {
                not_given.push(r.file_name.clone());
            }
        }
    }

    let findings = f.finish();
    let events_checked = scanned.iter().map(|s| s.summary.events).sum();
    SegmentReport {
        ok: findings.is_empty(),
        segments: scanned.into_iter().map(|s| s.summary).collect(),
        events_checked,
        findings,
        not_given,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_cuts_at_a_utc_midnight() {
        // 2026-03-14T14:32:00Z, 30 days: 2026-02-12T00:00:00Z.
        let now = 1_773_498_720;
        assert_eq!(retention_cutoff(now, 30), 1_770_854_400);
        assert_eq!(
            retention_cutoff(1_770_854_400 + 30 * 86_400, 30),
            1_770_854_400
        );
        assert!(retention_cutoff(now, u64::MAX) < 0, "no overflow");
    }

    #[test]
    fn either_file_of_a_segment_names_both() {
        let (j, m) = segment_paths(Path::new("/a/audit-1-9.manifest.json"));
        assert_eq!(j, Path::new("/a/audit-1-9.jsonl"));
        assert_eq!(m, Path::new("/a/audit-1-9.manifest.json"));
        let (j, m) = segment_paths(Path::new("audit-1-9.jsonl"));
        assert_eq!(
            (j.as_path(), m.as_path()),
            (
                Path::new("audit-1-9.jsonl"),
                Path::new("audit-1-9.manifest.json")
            )
        );
    }
}
