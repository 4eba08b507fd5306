//! Shared fixtures: every test gets a [`TestStore`] on the backend of the run (SQLite, or
//! PostgreSQL when `MANDATE_TEST_DATABASE_URL` is set).

mod agents;
mod approvals;
mod archive;
mod audit;
mod lifecycle;
mod postgres;
mod posture;
mod records;
mod revocation;
mod secrets;
mod tasks;
mod units;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use mandate_core::agent::{Agent, AgentKey, AgentStatus};
use mandate_core::audit::{AuditEvent, Decision, NewEvent};
use mandate_core::ids::AgentId;
use mandate_core::scope::PatternSet;
use mandate_core::stage::Stage;
use mandate_core::task::{Task, TaskStatus, TokenRecord};
use mandate_store::testing::{self, Backend, ScratchDatabase};
use mandate_store::{Op, OpOutput, PostgresStore, SqliteStore, Store, StoreError};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection};
use tempfile::TempDir;

/// A store for one test, on the backend of the run ([`testing::backend`]): a fresh SQLite file
/// in a temporary directory, or a fresh PostgreSQL [`ScratchDatabase`]. Derefs to the store
/// (helpers taking `&dyn Store` are given `&*store`); dropping it removes the file or the
/// database.
pub struct TestStore {
    /// The open store (dropped before the database it is on).
    store: Arc<dyn Store>,
    /// Where its data lives.
    place: Place,
}

/// Where a [`TestStore`]'s data lives.
enum Place {
    Sqlite { _dir: TempDir, path: PathBuf },
    Postgres { db: ScratchDatabase },
}

impl Deref for TestStore {
    type Target = dyn Store;

    fn deref(&self) -> &(dyn Store + 'static) {
        &*self.store
    }
}

impl TestStore {
    /// Which backend it is on.
    pub fn backend(&self) -> Backend {
        match self.place {
            Place::Sqlite { .. } => Backend::Sqlite,
            Place::Postgres { .. } => Backend::Postgres,
        }
    }

    /// The store, to share with spawned tasks.
    pub fn shared(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// The SQLite file, when on SQLite.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.place {
            Place::Sqlite { path, .. } => Some(path),
            Place::Postgres { .. } => None,
        }
    }

    /// Another read-write store on the same database (as a restarted process would open it).
    pub async fn open_again(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(match &self.place {
            Place::Sqlite { path, .. } => Box::new(SqliteStore::open(path).await?),
            Place::Postgres { db } => Box::new(PostgresStore::connect(db.url()).await?),
        })
    }

    /// A read-only store on the same database (as `mandate audit verify --data` opens it).
    pub async fn open_read_only(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(match &self.place {
            Place::Sqlite { path, .. } => Box::new(SqliteStore::open_read_only(path).await?),
            Place::Postgres { db } => Box::new(PostgresStore::connect_read_only(db.url()).await?),
        })
    }

    /// Closes the store and opens the same database again: what a restart does.
    pub async fn reopen(&mut self) {
        self.store.close().await;
        self.store = Arc::from(self.open_again().await.unwrap());
    }

    /// Runs `sql` on the database through a connection of its own, beside the store.
    pub async fn execute(&self, sql: String) {
        match &self.place {
            Place::Sqlite { path, .. } => {
                let mut conn = sqlite_connection(path).await;
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
            }
            Place::Postgres { db } => {
                let mut conn = PgConnection::connect(db.url()).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
            }
        }
    }

    /// The `BIGINT`/`INTEGER` column that `sql` selects, read beside the store.
    pub async fn integers(&self, sql: String) -> Vec<i64> {
        match &self.place {
            Place::Sqlite { path, .. } => {
                let mut conn = sqlite_connection(path).await;
                let v = sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                v
            }
            Place::Postgres { db } => {
                let mut conn = PgConnection::connect(db.url()).await.unwrap();
                let v = sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                v
            }
        }
    }

    /// The one `BIGINT`/`INTEGER` that `sql` selects, read beside the store.
    pub async fn scalar(&self, sql: String) -> i64 {
        let v = self.integers(sql).await;
        assert_eq!(v.len(), 1, "one value expected, got {v:?}");
        v[0]
    }
}

/// A raw connection to an SQLite file.
pub async fn sqlite_connection(path: &Path) -> sqlx::SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

/// A store on a fresh database of the run's backend: an SQLite file, or a PostgreSQL scratch
/// database when `MANDATE_TEST_DATABASE_URL` is set.
pub async fn fresh() -> TestStore {
    fresh_on(testing::backend()).await
}

/// A store on a fresh SQLite file, whatever the run's backend: for the tests of what only SQLite
/// has (files, read-only opening of a path, its own migration history).
pub async fn fresh_sqlite() -> TestStore {
    fresh_on(Backend::Sqlite).await
}

/// A store on a fresh database of `backend`.
async fn fresh_on(backend: Backend) -> TestStore {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("mandate.db");
            let store = SqliteStore::open(&path).await.unwrap();
            TestStore {
                store: Arc::new(store),
                place: Place::Sqlite { _dir: dir, path },
            }
        }
        Backend::Postgres => {
            let db = scratch().await.unwrap();
            let store = PostgresStore::connect(db.url())
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", db.name()));
            TestStore {
                store: Arc::new(store),
                place: Place::Postgres { db },
            }
        }
    }
}

/// A fresh, empty PostgreSQL database, when the run has a server.
pub async fn scratch() -> Option<ScratchDatabase> {
    match testing::postgres_url() {
        Some(url) => Some(ScratchDatabase::create(&url).await),
        None => None,
    }
}

/// Now, in seconds, by the system clock.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn key(kid: &str) -> AgentKey {
    AgentKey {
        kid: kid.to_owned(),
        jwk: serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": format!("x-of-{kid}"), "kid": kid}),
        expires_at: Some(2_000_000_000),
        created_at: 100,
        revoked_at: None,
    }
}

pub fn agent(id: &str, kids: &[&str]) -> Agent {
    Agent {
        id: AgentId::parse(id).unwrap(),
        name: format!("Agent {id}"),
        owner: "alice@example.com".to_owned(),
        description: "answers tickets".to_owned(),
        ceiling: PatternSet::parse(["crm.*:read", "tickets:*"]).unwrap(),
        tags: vec!["ops".into(), "pii".into()],
        max_stage: Stage::Draft,
        status: AgentStatus::Active,
        keys: kids.iter().map(|k| key(k)).collect(),
        workloads: Vec::new(),
        require_dpop: false,
        created_at: 100,
        updated_at: 100,
    }
}

pub fn task(id: &str) -> Task {
    Task {
        id: id.to_owned(),
        agent: "support-v2".to_owned(),
        user: Some("alice".to_owned()),
        user_issuer: Some("https://idp.example.com".to_owned()),
        purpose: "refund".to_owned(),
        input: "ticket #12847".to_owned(),
        status: TaskStatus::Active,
        created_at: 100,
        updated_at: 100,
        outcome: None,
        completed_at: None,
    }
}

/// A user token of `task` for alice through `support-v2` (kid `s1`), alive for an hour.
pub fn token(jti: &str, parent: Option<&str>, task: &str) -> TokenRecord {
    TokenRecord {
        jti: jti.to_owned(),
        parent_jti: parent.map(str::to_owned),
        task: task.to_owned(),
        sub: "alice".to_owned(),
        sub_profile: "user".to_owned(),
        sub_iss: Some("https://idp.example.com".to_owned()),
        chain: vec!["support-v2".to_owned()],
        credentials: vec!["kid:s1".to_owned()],
        scope: "crm.customers:read tickets:create".to_owned(),
        aud: vec!["https://crm.example.com".to_owned()],
        stage: "draft".to_owned(),
        iat: now(),
        exp: now() + 3600,
        revoked_at: None,
    }
}

pub fn event(kind: &str) -> NewEvent {
    NewEvent {
        kind: kind.to_owned(),
        user: Some("alice".to_owned()),
        chain: vec!["support-v2".to_owned()],
        task: Some("t1".to_owned()),
        action: Some("crm.customers:read".to_owned()),
        resource: Some("https://crm.example.com".to_owned()),
        decision: Some(Decision::Allow),
        reason: String::new(),
        policy_ids: vec!["p1".to_owned()],
        request_id: Some("req-1".to_owned()),
        credential: Some("kid:s1".to_owned()),
        jti: Some("j1".to_owned()),
        detail: String::new(),
    }
}

/// Commits one op that must succeed.
pub async fn commit1(store: &dyn Store, op: Op) -> OpOutput {
    let mut out = store.commit(vec![op]).await.unwrap();
    assert_eq!(out.len(), 1);
    out.remove(0)
}

/// Appends an event and returns it as sealed.
pub async fn append(store: &dyn Store, e: NewEvent) -> AuditEvent {
    match commit1(store, Op::Audit(e)).await {
        OpOutput::Audit(e) => e,
        other => panic!("expected an audit event, got {other:?}"),
    }
}

/// The whole audit log.
pub async fn all_events(store: &dyn Store) -> Vec<AuditEvent> {
    store.audit_after(0, u32::MAX).await.unwrap()
}
