//! Test support: which backend a test run uses, and scratch PostgreSQL databases.
//!
//! Compiled only with the `testing` feature, for this crate's tests and the test harnesses of
//! the crates that use it (as a dev-dependency: `mandate-store = { workspace = true, features =
//! ["testing"] }`).
//!
//! A test run is on SQLite unless [`DATABASE_URL_ENV`] names a PostgreSQL server, e.g.
//! `MANDATE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test`. Then every
//! test that asks for a store gets its own [`ScratchDatabase`] on that server, created for it
//! and dropped after it.

// Test support must fail loudly: a CI job that was given a PostgreSQL server it cannot use has
// to fail, not quietly skip or fall back to SQLite. Panicking with a clear message is this
// module's way of reporting, so the workspace's bans on unwrap/expect/panic are lifted here
// (and only here: the module is not compiled without the `testing` feature).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};

/// The environment variable naming the PostgreSQL server tests run on, as a URL of a database
/// the tests may connect to in order to create others (e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`). Unset or empty: tests run on SQLite.
pub const DATABASE_URL_ENV: &str = "MANDATE_TEST_DATABASE_URL";

/// How long creating or dropping a scratch database may take before the test fails.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The PostgreSQL server URL of [`DATABASE_URL_ENV`], when it is set and not empty.
pub fn postgres_url() -> Option<String> {
    std::env::var(DATABASE_URL_ENV)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The storage backend a test run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file in a temporary directory (the default).
    Sqlite,
    /// A [`ScratchDatabase`] on the server named by [`DATABASE_URL_ENV`].
    Postgres,
}

/// The backend of this test run: [`Backend::Postgres`] when [`DATABASE_URL_ENV`] is set (see
/// [`postgres_url`]), else [`Backend::Sqlite`].
pub fn backend() -> Backend {
    if postgres_url().is_some() {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

/// A fresh, uniquely named PostgreSQL database (`mandate_test_<random hex>`) for one test,
/// dropped with everything in it (connections still open to it included) when this value is
/// dropped.
///
/// Creating one panics, with a message saying what went wrong, if the server cannot be reached
/// or refuses: test support fails loudly.
pub struct ScratchDatabase {
    /// The URL of the database it was created from (and is dropped from).
    base_url: String,
    /// Its name.
    name: String,
    /// Its URL.
    url: String,
}

impl ScratchDatabase {
    /// Connects to `base_url` (e.g. `postgres://postgres@127.0.0.1:5432/postgres`) and creates a
    /// new database there. Its URL ([`ScratchDatabase::url`]) is `base_url` with the database
    /// name replaced.
    ///
    /// # Panics
    ///
    /// If the server cannot be reached in time or refuses to create the database.
    pub async fn create(base_url: &str) -> ScratchDatabase {
        let name = format!("mandate_test_{}", random_hex());
        let shown = without_password(base_url);
        let mut conn = admin_connection(base_url).await.unwrap_or_else(|e| {
            panic!(
                "cannot reach the PostgreSQL server of {DATABASE_URL_ENV} ({shown}) to create \
                 a scratch database: {e}"
            )
        });
        let created = tokio::time::timeout(
            ADMIN_TIMEOUT,
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn),
        )
        .await;
        match created {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("cannot create the scratch database {name} on {shown}: {e}"),
            Err(_) => panic!(
                "creating the scratch database {name} on {shown} took more than {ADMIN_TIMEOUT:?}"
            ),
        }
        let _ = conn.close().await;
        ScratchDatabase {
            url: with_database(base_url, &name),
            base_url: base_url.to_owned(),
            name,
        }
    }

    /// The URL of the database: the base URL given to [`ScratchDatabase::create`] with the
    /// database name replaced (user, password, host, port and query parameters kept).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name (`mandate_test_<random hex>`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Debug for ScratchDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password the URLs may hold.
        f.debug_struct("ScratchDatabase")
            .field("name", &self.name)
            .field("url", &without_password(&self.url))
            .finish()
    }
}

impl Drop for ScratchDatabase {
    /// Drops the database, forcing its remaining connections closed. `Drop` cannot await and
    /// may run on a Tokio runtime's thread (where blocking on another runtime is refused), so
    /// the work is done on a thread of its own with its own runtime, and waited for.
    fn drop(&mut self) {
        let base_url = self.base_url.clone();
        let name = self.name.clone();
        let outcome = std::thread::Builder::new()
            .name(format!("drop {name}"))
            .spawn(move || -> Result<(), String> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start a runtime: {e}"))?;
                runtime.block_on(drop_database(&base_url, &name))
            })
            .map_err(|e| format!("cannot start a thread: {e}"))
            .and_then(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|_| Err("the thread panicked".to_owned()))
            });
        if let Err(e) = outcome {
            let message = format!(
                "the scratch database {} on {} was not dropped: {e}",
                self.name,
                without_password(&self.base_url)
            );
            // A second panic while unwinding would abort the whole test binary: only say it.
            if std::thread::panicking() {
                eprintln!("{message}");
            } else {
                panic!("{message}");
            }
        }
    }
}

/// `DROP DATABASE IF EXISTS name WITH (FORCE)` through a connection to `base_url`.
async fn drop_database(base_url: &str, name: &str) -> Result<(), String> {
    let mut conn = admin_connection(base_url).await?;
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    tokio::time::timeout(
        ADMIN_TIMEOUT,
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn),
    )
    .await
    .map_err(|_| format!("DROP DATABASE took more than {ADMIN_TIMEOUT:?}"))?
    .map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}

/// A connection to `url`, or why there is none (without the URL: it may hold a password).
async fn admin_connection(url: &str) -> Result<PgConnection, String> {
    match tokio::time::timeout(ADMIN_TIMEOUT, PgConnection::connect(url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string().replace(url, "<url>")),
        Err(_) => Err(format!("no connection within {ADMIN_TIMEOUT:?}")),
    }
}

/// 16 hex digits, different for every call (in this process and, with overwhelming
/// probability, in any other).
fn random_hex() -> String {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    // `RandomState` is seeded from the operating system's randomness.
    let mut h = RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:016x}", h.finish())
}

/// The index in `url` where its authority (`user:password@host:port`) starts, after `://`.
fn authority_start(url: &str) -> usize {
    url.find("://").map_or(0, |i| i + 3)
}

/// `url` with its path (the database name) replaced by `/name`; everything else kept.
fn with_database(url: &str, name: &str) -> String {
    let start = authority_start(url);
    // The authority ends at the path, the query or the fragment (none of which characters may
    // appear unencoded in a user name or password).
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let rest = &url[authority_end..];
    let query = rest.find(['?', '#']).map_or("", |i| &rest[i..]);
    format!("{}/{name}{query}", &url[..authority_end])
}

/// `url` with the password (if any) replaced by `***`, for messages.
fn without_password(url: &str) -> String {
    let start = authority_start(url);
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..start],
                &authority[..colon],
                &url[start + at..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced_and_the_rest_kept() {
        for (base, want) in [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/x",
            ),
            (
                "postgres://u:p%2Fw@db.example:6543/main?sslmode=require&application_name=t",
                "postgres://u:p%2Fw@db.example:6543/x?sslmode=require&application_name=t",
            ),
            ("postgresql://localhost", "postgresql://localhost/x"),
            (
                "postgres://localhost?sslmode=disable",
                "postgres://localhost/x?sslmode=disable",
            ),
            (
                "postgres:///postgres?host=/var/run/postgresql",
                "postgres:///x?host=/var/run/postgresql",
            ),
        ] {
            assert_eq!(with_database(base, "x"), want, "{base}");
        }
    }

    #[test]
    fn passwords_are_hidden_in_messages() {
        assert_eq!(
            without_password("postgres://u:s3cret@h:1/d?sslmode=require"),
            "postgres://u:***@h:1/d?sslmode=require"
        );
        assert_eq!(without_password("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(without_password("postgres://h/d"), "postgres://h/d");
    }

    #[test]
    fn names_are_unique_hex() {
        let a = random_hex();
        let b = random_hex();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}
