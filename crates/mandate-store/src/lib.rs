//! Mandate's storage: one [`Store`] interface and its embedded SQLite implementation.
//!
//! Reads go straight to the database. Every write goes through [`Store::commit`]: a request's
//! writes (its token record, task, audit events, …) are one unit that lands whole or not at all,
//! and several requests' units are committed together in one transaction (group commit: one fsync
//! per batch). `commit` returns only once its unit is durable, so a handler that awaits it before
//! answering never lets a token leave without its audit event.
//!
//! The store holds no business rules: what to write is decided by the caller.
//!
//! Two implementations: [`SqliteStore`], the embedded default (one process, one file), and
//! [`PostgresStore`], for several Mandate nodes on one PostgreSQL database. Several nodes learn of
//! each other's writes through [`Store::changes`] and take turns at single-node jobs through
//! [`Store::try_lock`].

use async_trait::async_trait;
use mandate_core::agent::{Agent, AgentKey, AgentStatus};
use mandate_core::approval::{Approval, Decided, Dispatch, Status};
use mandate_core::audit::{AuditEvent, NewEvent};
pub use mandate_core::checkpoint::Checkpoint;
pub use mandate_core::posture::{Justification, Review, ReviewStatus, Usage};
use mandate_core::revocation::RevocationRecord;
pub use mandate_core::revocation::{RevocationEntry, RevokedToken};
use mandate_core::task::{Task, TaskStatus, TaskStep, TokenRecord};
use serde::{Deserialize, Serialize};

mod lease;
mod limits;
mod postgres;
mod rows;
mod shared_ops;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
pub use lease::{Change, Lease};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// A storage failure. Messages are for operators; they never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A client assertion (or other single-use value) was already used.
    #[error("single-use value `{0}` was already used")]
    Replay(String),
    /// A row with this key already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A token's parent was revoked before the token could be recorded.
    #[error("parent token `{0}` was revoked")]
    ParentRevoked(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
    /// A value cannot be stored as given (PostgreSQL refuses NUL characters in text). Nothing
    /// of the unit was written.
    #[error("{0}")]
    Unstorable(String),
    /// The writer has stopped (the server is shutting down).
    #[error("the store is closed")]
    Closed,
    // Task steps and outcomes
    /// The task is no longer active (completed or revoked): it takes no more steps and cannot
    /// be completed again.
    #[error("task `{id}` is {status}, not active")]
    TaskNotActive {
        /// The task id.
        id: String,
        /// Its status.
        status: String,
    },
    // Approvals
    /// The approval was already decided (by someone else, a moment ago perhaps).
    #[error("approval `{id}` was already {status}")]
    AlreadyDecided {
        /// The approval id.
        id: String,
        /// `approved` or `denied`.
        status: String,
    },
    // Audit retention
    /// An audit archive ([`Op::ArchiveAudit`]) was refused: the range is empty, already
    /// archived, reaches the chain head, or does not match the log. Nothing was deleted.
    #[error("{0}")]
    ArchiveRefused(String),
    // Posture and access reviews
    /// The access review was already answered.
    #[error("access review `{id}` was already {status}")]
    ReviewClosed {
        /// The review id.
        id: String,
        /// `attested` or `narrowed`.
        status: String,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        // PostgreSQL cannot hold a NUL character in text (SQLite can): that is the input's
        // fault, not the database's.
        if let sqlx::Error::Database(db) = &e
            && matches!(db.code().as_deref(), Some("22021" | "22P05"))
        {
            return StoreError::Unstorable(
                "text holding a NUL character cannot be stored".to_owned(),
            );
        }
        StoreError::Database(e.to_string())
    }
}

/// A signing key as stored: the public JWK in clear, the private key sealed under the master key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSigningKey {
    /// Key id.
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub alg: String,
    /// The public JWK (JSON text).
    pub public_jwk: String,
    /// The sealed private key (opaque bytes from `mandate-token`).
    pub sealed_private: Vec<u8>,
    /// When it was created.
    pub created_at: i64,
    /// When it stopped signing (rotated out), if it has.
    pub retired_at: Option<i64>,
    /// Until when its public key stays in the JWKS after retirement.
    pub publish_until: Option<i64>,
}

/// An admin credential as stored: only the SHA-256 of the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminCredential {
    /// Public id of the credential (appears in audit as `admin:<id>`).
    pub id: String,
    /// `admin` or `auditor`.
    pub role: String,
    /// Hex SHA-256 of the secret.
    pub secret_hash: String,
    /// When it was created.
    pub created_at: i64,
    /// When it was disabled, if it was.
    pub disabled_at: Option<i64>,
}

// Shared Signals streams

/// A Shared Signals (OpenID SSF) event stream as stored: one receiver's subscription to the
/// revocation feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsfStream {
    /// The stream id (`stream_id`).
    pub id: String,
    /// The `aud` of every SET sent on the stream.
    pub aud: Vec<String>,
    /// The delivery method URI: `urn:ietf:rfc:8935` (push) or `urn:ietf:rfc:8936` (poll).
    pub method: String,
    /// Push: the receiver's URL. Poll: `None` (the transmitter's URL is derived from the id).
    pub endpoint_url: Option<String>,
    /// Push: the `Authorization` header value to send, sealed by the caller.
    pub authorization_header: Option<Vec<u8>>,
    /// The event types the receiver asked for (`None` when it named none).
    pub events_requested: Option<Vec<String>>,
    /// The receiver's description.
    pub description: Option<String>,
    /// `enabled`, `paused` or `disabled`.
    pub status: String,
    /// Why the status is what it is.
    pub reason: Option<String>,
    /// Subject identifiers the receiver removed from the stream.
    pub removed_subjects: Vec<serde_json::Value>,
    /// The last revocation feed sequence number considered for the stream.
    pub cursor: i64,
    /// The last delivery error (JSON text), if the last attempt failed.
    pub last_error: Option<String>,
    /// When that error happened.
    pub last_error_at: Option<i64>,
    /// When the stream was created.
    pub created_at: i64,
    /// When its configuration or status last changed.
    pub updated_at: i64,
}

/// A Security Event Token waiting in a stream's outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsfQueued {
    /// Its place in the outbox (ascending in the order it was queued).
    pub seq: i64,
    /// The SET's `jti`.
    pub jti: String,
    /// The SET's claims (JSON text), signed when it leaves.
    pub claims: String,
    /// When it was queued.
    pub created_at: i64,
}

/// A SET to put into a stream's outbox: its `jti` and claims (JSON text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsfSet {
    /// The SET's `jti`.
    pub jti: String,
    /// The SET's claims (JSON text).
    pub claims: String,
}

// Gateway secrets

/// A gateway secret as stored: an upstream's real credential, sealed under the master key by the
/// caller (the store never sees the plaintext).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSecret {
    /// The name (`[a-z0-9][a-z0-9._-]{0,62}`), how routes refer to it.
    pub name: String,
    /// The sealed value (opaque bytes from `mandate-token`).
    pub sealed: Vec<u8>,
    /// What it is for.
    pub description: Option<String>,
    /// When it was first set.
    pub created_at: i64,
    /// When its value or description last changed.
    pub updated_at: i64,
    /// Who first set it (`admin:<id>`).
    pub created_by: String,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("name", &self.name)
            .field("sealed", &format_args!("<{} bytes>", self.sealed.len()))
            .field("description", &self.description)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("created_by", &self.created_by)
            .finish()
    }
}

/// What may be shown of a gateway secret: everything but its sealed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// The name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// When it was first set.
    pub created_at: i64,
    /// When its value or description last changed.
    pub updated_at: i64,
    /// Who first set it.
    pub created_by: String,
}

// Approvals

/// An approval as stored: the record, what to carry out once approved, and whether that was
/// carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredApproval {
    /// The approval (what is asked, by whom, expiry, the decision).
    pub approval: Approval,
    /// What to carry out once approved (JSON text; its shape depends on the kind).
    pub payload: String,
    /// Whether it was carried out.
    pub dispatch: Dispatch,
    /// What came of it (JSON text), once [`Dispatch::Sent`].
    pub outcome: Option<String>,
    /// When the requester last polled (CIBA), seconds since the epoch.
    pub last_poll: Option<i64>,
    /// The poll interval the requester was told, seconds.
    pub poll_interval: i64,
}

// Posture and access reviews

/// Filters for access review listings; all optional, combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewFilter {
    /// The status equals.
    pub status: Option<ReviewStatus>,
    /// The agent equals.
    pub agent: Option<String>,
    /// The owner equals.
    pub owner: Option<String>,
    /// The campaign equals.
    pub campaign: Option<String>,
    /// At most this many (default 100, capped at 1 000).
    pub limit: Option<u32>,
}

/// Filters for approval listings; all optional, combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalFilter {
    /// The status equals.
    pub status: Option<Status>,
    /// The agent equals.
    pub agent: Option<String>,
    /// The user equals.
    pub user: Option<String>,
    /// The kind equals (`escalation`, `held_write`, `agent_change`).
    pub kind: Option<String>,
    /// Only approved ones whose payload was not carried out yet.
    pub undispatched: bool,
    /// At most this many (default 100, capped at 1 000).
    pub limit: Option<u32>,
}

// Audit retention

/// An archived segment of the audit log: events `first_seq..=last_seq` left the database for a
/// file, and this record is the anchor the rest of the chain continues from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    /// The `seq` of its first event.
    pub first_seq: i64,
    /// The `seq` of its last event.
    pub last_seq: i64,
    /// The `prev_hash` of its first event (64 zeros for the first segment).
    pub first_prev_hash: String,
    /// The `hash` of its last event: the `prev_hash` of event `last_seq + 1`.
    pub last_hash: String,
    /// How many events it holds (`last_seq - first_seq + 1`).
    pub count: i64,
    /// Hex SHA-256 of the segment file.
    pub sha256: String,
    /// The segment file's name (e.g. `audit-1-5000.jsonl`).
    pub file_name: String,
    /// The signed checkpoint (compact JWS) of `last_seq`/`last_hash` and the segment's facts.
    pub checkpoint: String,
    /// When it was archived, seconds since the epoch.
    pub archived_at: i64,
}

/// One write. A request's writes are a `Vec<Op>` given to [`Store::commit`].
#[derive(Debug, Clone)]
pub enum Op {
    /// Append an audit event to the hash chain (`seq`, `time`, `prev_hash`, `hash` are assigned
    /// by the store, in commit order). Output: [`OpOutput::Audit`].
    Audit(NewEvent),
    /// Record an issued token. Fails with [`StoreError::ParentRevoked`] if its parent's
    /// `revoked_at` is set, and [`StoreError::Conflict`] if the `jti` exists.
    InsertToken(TokenRecord),
    /// Create the task if no task has its id; leave an existing one as it is.
    EnsureTask(Task),
    /// Set a task's status (and `updated_at`). [`StoreError::NotFound`] if absent.
    SetTaskStatus {
        /// Task id.
        id: String,
        /// New status.
        status: TaskStatus,
        /// When.
        at: i64,
    },
    /// Mark a single-use value (e.g. `agent-id|assertion-jti`) used until `exp`. Fails with
    /// [`StoreError::Replay`] if it is already used and not yet expired (expired ones may be
    /// purged and reused).
    UseOnce {
        /// The value.
        key: String,
        /// Until when it must stay unique.
        exp: i64,
    },
    /// Record a revocation and set `revoked_at` on every live token it reaches (expiry ≥ `at`,
    /// not yet revoked): for `token`, the token and all its descendants through `parent_jti` (at
    /// any depth); `task`, every token of the task (and the task's status becomes `revoked`);
    /// `user`, every token whose `sub_profile` is `user` and `sub` is the target; `agent`, every
    /// token whose chain contains the agent; `key`, every token whose credentials contain
    /// `kid:<target>`. The revocation gets the next feed sequence number and keeps the list of
    /// tokens it ended. If `audit` is given, it is appended in the same unit with the revocation
    /// id, the number of tokens ended and (the first 100 of) their `jti`s merged into its
    /// `detail`, so a revocation never stands without its event. Output:
    /// [`OpOutput::Revoked`].
    Revoke {
        /// What is revoked.
        record: RevocationRecord,
        /// The revocation's audit event.
        audit: Option<NewEvent>,
    },
    /// Register an agent with its keys. [`StoreError::Conflict`] if the id exists.
    InsertAgent(Agent),
    /// Replace an agent's fields (not its keys). [`StoreError::NotFound`] if absent.
    UpdateAgent(Agent),
    /// Change an agent's status. [`StoreError::NotFound`] if absent.
    SetAgentStatus {
        /// Agent id.
        id: String,
        /// New status.
        status: AgentStatus,
        /// When.
        at: i64,
    },
    /// Add a key to an agent. [`StoreError::Conflict`] if the agent already has that `kid`.
    AddAgentKey {
        /// Agent id.
        agent: String,
        /// The key.
        key: AgentKey,
    },
    /// Remove a key from an agent. [`StoreError::NotFound`] if absent.
    RemoveAgentKey {
        /// Agent id.
        agent: String,
        /// Key id.
        kid: String,
    },
    /// Set `revoked_at` on every agent key with this `kid`.
    RevokeAgentKey {
        /// Key id.
        kid: String,
        /// When.
        at: i64,
    },
    /// Store a new signing key.
    InsertSigningKey(StoredSigningKey),
    /// Retire a signing key (it stops signing; its public key is published until
    /// `publish_until`).
    RetireSigningKey {
        /// Key id.
        kid: String,
        /// When.
        at: i64,
        /// Until when the JWKS keeps it.
        publish_until: i64,
    },
    /// Store an admin credential. [`StoreError::Conflict`] if the id exists.
    InsertAdminCredential(AdminCredential),

    // Shared Signals streams
    /// Create a Shared Signals stream. [`StoreError::Conflict`] if the id exists.
    InsertSsfStream(Box<SsfStream>),
    /// Replace a stream's configuration, status and removed subjects (not its cursor, last
    /// error or creation time). [`StoreError::NotFound`] if absent.
    UpdateSsfStream(Box<SsfStream>),
    /// Delete a stream and its outbox. [`StoreError::NotFound`] if absent.
    DeleteSsfStream {
        /// Stream id.
        id: String,
    },
    /// Append SETs to a stream's outbox, in order, and advance its cursor to `cursor` (never
    /// backwards) in the same unit. [`StoreError::NotFound`] if the stream is absent.
    EnqueueSsf {
        /// Stream id.
        stream: String,
        /// The SETs.
        sets: Vec<SsfSet>,
        /// The feed sequence number they account for, if they come from the feed.
        cursor: Option<i64>,
        /// When.
        at: i64,
    },
    /// Remove SETs from a stream's outbox (delivered or acknowledged); unknown `jti`s are
    /// ignored.
    AckSsf {
        /// Stream id.
        stream: String,
        /// The SETs' `jti`s.
        jtis: Vec<String>,
    },
    /// Empty a stream's outbox (the stream was disabled).
    PurgeSsfOutbox {
        /// Stream id.
        stream: String,
    },
    /// Record (or, with `None`, clear) a stream's last delivery error; nothing if the stream
    /// is absent.
    SetSsfError {
        /// Stream id.
        stream: String,
        /// The error (JSON text).
        error: Option<String>,
        /// When.
        at: i64,
    },

    // Task steps and outcomes
    /// Create a task. [`StoreError::Conflict`] if a task has its id (unlike [`Op::EnsureTask`]).
    InsertTask(Task),
    /// Append a step to an active task. `step.seq` is ignored: the store gives the step the next
    /// number of its task. [`StoreError::NotFound`] if the task is absent,
    /// [`StoreError::TaskNotActive`] if it is not active. If `audit` is given, it is appended in
    /// the same unit with the step number merged into its `detail` (`"step": n`). Output:
    /// [`OpOutput::TaskStep`].
    AppendTaskStep {
        /// The step.
        step: TaskStep,
        /// The step's audit event.
        audit: Option<NewEvent>,
    },
    /// Mark a task `completed` with its outcome. Meant to follow the task's own [`Op::Revoke`]
    /// in the same unit (completing a task ends its tokens; that revocation leaves the status
    /// `revoked`, which this op replaces). [`StoreError::NotFound`] if the task is absent;
    /// [`StoreError::TaskNotActive`] if it was already completed, or was revoked by more than
    /// that one revocation (one that raced the completion).
    CompleteTask {
        /// Task id.
        id: String,
        /// How it ended.
        outcome: String,
        /// When.
        at: i64,
    },

    // Gateway secrets
    /// Store a secret, or replace the sealed value and description of the one with its name
    /// (keeping its `created_at` and `created_by`). Output: [`OpOutput::SecretPut`].
    PutSecret(StoredSecret),
    /// Delete a secret. [`StoreError::NotFound`] if absent.
    DeleteSecret {
        /// The secret's name.
        name: String,
    },

    // Audit checkpoints
    /// Store a signed checkpoint of the audit chain's head.
    Checkpoint(Checkpoint),

    // Audit retention
    /// Delete the audit events `segment.first_seq..=through_seq` (and their agent index rows)
    /// and record `segment` as the anchor the chain continues from. Refused with
    /// [`StoreError::ArchiveRefused`] (nothing deleted) unless `through_seq` is before the
    /// chain head (the newest event always stays), `segment.first_seq` is the first event not
    /// yet archived, `segment.last_seq` is `through_seq`, `segment.count` is the number of
    /// events deleted, and the hashes `segment.first_prev_hash`/`segment.last_hash` are those of
    /// the stored events (and link to the previous segment).
    ArchiveAudit {
        /// The last `seq` to archive.
        through_seq: i64,
        /// What was archived and where.
        segment: Box<SegmentRecord>,
    },

    // Approvals
    /// Record a new approval. [`StoreError::Conflict`] if its id exists.
    InsertApproval(Box<StoredApproval>),
    /// Record the decision on a pending approval. [`StoreError::NotFound`] if absent,
    /// [`StoreError::AlreadyDecided`] if it is not pending any more: of two racing decisions,
    /// exactly one lands.
    DecideApproval {
        /// The approval id.
        id: String,
        /// The decision.
        decided: Decided,
    },
    /// Claim an approved approval's payload for carrying out: moves `dispatch` from `not_sent`
    /// to `sending`. Output: [`OpOutput::Claimed`] — `true` for exactly one caller, `false` when
    /// it is not approved or was claimed before. [`StoreError::NotFound`] if absent.
    ClaimApproval {
        /// The approval id.
        id: String,
    },
    /// Record what came of a claimed approval: `dispatch` becomes `sent`.
    /// [`StoreError::NotFound`] if absent.
    FinishApproval {
        /// The approval id.
        id: String,
        /// The outcome (JSON text).
        outcome: String,
    },
    /// Record a CIBA poll: when, and the interval now in force. [`StoreError::NotFound`] if
    /// absent.
    PollApproval {
        /// The approval id.
        id: String,
        /// When.
        at: i64,
        /// The interval, seconds.
        interval: i64,
    },

    // Posture and access reviews
    /// Record (or replace) why an agent's ceiling holds `pattern`; with `text: None`, forget it.
    /// The agent must exist.
    SetJustification {
        /// Agent id.
        agent: String,
        /// The ceiling pattern, as written.
        pattern: String,
        /// Why; `None` deletes the record.
        text: Option<String>,
        /// Who (`admin:<id>`).
        by: String,
        /// When.
        at: i64,
    },
    /// Record a new access review item. [`StoreError::Conflict`] if its id exists.
    InsertReview(Box<Review>),
    /// Record the owner's answer to an open review. [`StoreError::NotFound`] if absent,
    /// [`StoreError::ReviewClosed`] if it was answered already: of two racing answers, exactly
    /// one lands.
    DecideReview {
        /// The review id.
        id: String,
        /// `attested` or `narrowed`.
        status: ReviewStatus,
        /// The owner who answered.
        by: String,
        /// When.
        at: i64,
        /// The patterns removed from the ceiling.
        removed: Vec<String>,
        /// The owner's note.
        note: Option<String>,
    },
}

/// What one [`Op`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "outputs are short-lived and few; boxing the event would only add an allocation"
)]
pub enum OpOutput {
    /// Nothing to report.
    Done,
    /// The appended event.
    Audit(AuditEvent),
    /// The recorded revocation, its sequence number and the tokens it ended.
    Revoked(RevocationEntry),
    // Task steps and outcomes
    /// The appended task step, with its number.
    TaskStep(TaskStep),
    // Gateway secrets
    /// A secret was stored: `replaced` if one with its name existed.
    SecretPut {
        /// Whether an existing secret was replaced (else it is new).
        replaced: bool,
    },
    // Approvals
    /// Whether this caller claimed the approval ([`Op::ClaimApproval`]).
    Claimed(bool),
}

/// Filters for audit queries; all optional, combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// `user` equals.
    pub user: Option<String>,
    /// The agent appears anywhere in the chain.
    pub agent: Option<String>,
    /// `task` equals.
    pub task: Option<String>,
    /// `action` equals.
    pub action: Option<String>,
    /// `resource` equals.
    pub resource: Option<String>,
    /// `decision` equals (`allow`, `deny`, `info`).
    pub decision: Option<String>,
    /// `kind` equals.
    pub kind: Option<String>,
    /// `time` ≥ this RFC 3339 text (compared as text; both are UTC with milliseconds).
    pub since: Option<String>,
    /// `time` < this.
    pub until: Option<String>,
    /// Only events with `seq` > this.
    pub after_seq: Option<i64>,
    /// At most this many (the store caps it at 10 000).
    pub limit: Option<u32>,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
}

// Task steps and outcomes
/// Filters for task listings; all optional, combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFilter {
    /// The task's agent equals.
    pub agent: Option<String>,
    /// The task's user equals.
    pub user: Option<String>,
    /// The status equals.
    pub status: Option<TaskStatus>,
    /// At most this many (default 100, capped at 1 000).
    pub limit: Option<u32>,
}

/// Mandate's storage interface, implemented for SQLite ([`SqliteStore`]) and PostgreSQL
/// ([`PostgresStore`]).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is: `sqlite` or `postgres` (for logs and `/readyz`).
    fn backend(&self) -> &'static str;

    /// Every change committed to the database from now on, by any process sharing it (this one
    /// included), as it commits. `None` when no other process can write the database (SQLite):
    /// then whoever writes already knows what changed. Delivery is at most once and may lag;
    /// [`Change::Resync`] says some were lost and everything should be reloaded.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }

    /// Waits for the store-wide lock `name` and holds it until the returned [`Lease`] is
    /// dropped (or this process dies). Every process sharing the database sees the same lock;
    /// with SQLite only one process can, so it is granted at once.
    async fn lock(&self, name: &str) -> Result<Lease, StoreError>;

    /// Takes the store-wide lock `name` if nobody holds it; `None` if another process does.
    async fn try_lock(&self, name: &str) -> Result<Option<Lease>, StoreError>;

    /// Lets queued writes land and closes the connections; later commits fail with
    /// [`StoreError::Closed`]. Call it once, on shutdown.
    async fn close(&self);

    /// Applies a request's writes as one unit, in order, grouped with other requests' units into
    /// one durable transaction. Returns one output per op, or the first op's error (then none of
    /// this unit's ops took effect; other units in the batch are unaffected).
    async fn commit(&self, ops: Vec<Op>) -> Result<Vec<OpOutput>, StoreError>;

    /// Every agent with its keys, ordered by id.
    async fn agents(&self) -> Result<Vec<Agent>, StoreError>;
    /// One agent with its keys.
    async fn agent(&self, id: &str) -> Result<Option<Agent>, StoreError>;
    /// One task.
    async fn task(&self, id: &str) -> Result<Option<Task>, StoreError>;
    /// One token record.
    async fn token(&self, jti: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Tokens of a task, oldest first.
    async fn tokens_of_task(&self, task: &str) -> Result<Vec<TokenRecord>, StoreError>;
    /// Every signing key, oldest first.
    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError>;
    /// Every admin credential.
    async fn admin_credentials(&self) -> Result<Vec<AdminCredential>, StoreError>;
    /// Every revocation root, oldest first.
    async fn revocations(&self) -> Result<Vec<RevocationRecord>, StoreError>;
    /// Revocation feed entries with `seq` > `after`, ascending, at most `limit` (capped at
    /// 10 000). Tokens that expired before `now` are left out of each entry's list: nobody needs
    /// to refuse them any more.
    async fn revocation_feed(
        &self,
        after: i64,
        limit: u32,
        now: i64,
    ) -> Result<Vec<RevocationEntry>, StoreError>;
    /// The highest revocation feed sequence number (0 if there is none).
    async fn revocation_head(&self) -> Result<i64, StoreError>;
    /// Calls `each` with every revoked token not expired at `now`, in no particular order. The
    /// rows are streamed, so a million of them never sit in memory at once.
    async fn revoked_tokens(
        &self,
        now: i64,
        each: &mut (dyn FnMut(RevokedToken) + Send),
    ) -> Result<(), StoreError>;
    /// Audit events matching `filter`, ordered by `seq`.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;
    /// Audit events with `seq` > `after`, ascending, at most `limit`: for walking the whole chain.
    async fn audit_after(&self, after: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError>;
    /// Whether the database answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    // Shared Signals streams
    /// Every Shared Signals stream, oldest first.
    async fn ssf_streams(&self) -> Result<Vec<SsfStream>, StoreError>;
    /// One Shared Signals stream.
    async fn ssf_stream(&self, id: &str) -> Result<Option<SsfStream>, StoreError>;
    /// The first `limit` SETs of a stream's outbox, in the order they were queued.
    async fn ssf_outbox(&self, stream: &str, limit: u32) -> Result<Vec<SsfQueued>, StoreError>;
    /// How many SETs wait in a stream's outbox.
    async fn ssf_outbox_len(&self, stream: &str) -> Result<i64, StoreError>;

    // Task steps and outcomes
    /// The steps of a task, by number.
    async fn task_steps(&self, task: &str) -> Result<Vec<TaskStep>, StoreError>;
    /// Tasks matching `filter`, newest first.
    async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError>;
    /// Every revocation that reached a task, oldest first: the task's own, revocations of one of
    /// its tokens, and any other (user, agent, key, token) whose ended tokens include one of its
    /// tokens. Each entry keeps its whole list of ended tokens.
    async fn task_revocations(&self, task: &str) -> Result<Vec<RevocationEntry>, StoreError>;

    // Gateway secrets
    /// Every gateway secret, without its sealed value, ordered by name.
    async fn secrets(&self) -> Result<Vec<SecretInfo>, StoreError>;
    /// One gateway secret, with its sealed value.
    async fn secret(&self, name: &str) -> Result<Option<StoredSecret>, StoreError>;

    // Audit checkpoints
    /// Every audit checkpoint, in the order they were written.
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError>;

    // Audit retention
    /// Every archived segment of the audit log, oldest first (empty when nothing was archived).
    async fn audit_segments(&self) -> Result<Vec<SegmentRecord>, StoreError>;
    /// The `seq` of the newest stored audit event whose `time` is before `time` (RFC 3339, as
    /// stored), found through the time index; `None` when no stored event is that old.
    async fn audit_seq_before(&self, time: &str) -> Result<Option<i64>, StoreError>;

    // Approvals
    /// One approval.
    async fn approval(&self, id: &str) -> Result<Option<StoredApproval>, StoreError>;
    /// Approvals matching `filter`, newest first, each without its payload (empty: a held
    /// write's payload is its whole request; read it with [`Store::approval`]).
    async fn approvals(&self, filter: &ApprovalFilter) -> Result<Vec<StoredApproval>, StoreError>;

    // Posture and access reviews
    /// What was used when, aggregated by the database from the issued-token records: the last
    /// use of each (agent, credential) and of each (agent, scope set) over all time, and each
    /// agent's busiest minute since `since`. Only the current actor of a token (the last agent
    /// of its chain) is counted as using it.
    async fn usage(&self, since: i64) -> Result<Usage, StoreError>;
    /// Every recorded justification, by agent and pattern.
    async fn justifications(&self) -> Result<Vec<Justification>, StoreError>;
    /// One access review.
    async fn review(&self, id: &str) -> Result<Option<Review>, StoreError>;
    /// Access reviews matching `filter`, newest first.
    async fn reviews(&self, filter: &ReviewFilter) -> Result<Vec<Review>, StoreError>;

    // Compliance reports (aggregate reads)
    /// Audit events with `time` ≥ `since` (RFC 3339, as stored) counted by kind, decision and
    /// refusal code, with the distinct users and agents they name, and the extent of the whole
    /// log. Counted by the database, not by reading the events.
    async fn audit_counts(
        &self,
        since: &str,
    ) -> Result<mandate_core::compliance::AuditCounts, StoreError>;
    /// Approvals created at or after `since` (seconds) counted by kind and status; pending ones
    /// past their expiry at `now` count as `expired`.
    async fn approval_counts(
        &self,
        since: i64,
        now: i64,
    ) -> Result<Vec<mandate_core::compliance::ApprovalCount>, StoreError>;
}
