//! What every end-to-end test of the `mandate` binary needs: a real `mandate serve` child
//! process, and running the CLI against it.
//!
//! The server keeps its state in `<data>/mandate.db`, or, when `MANDATE_TEST_DATABASE_URL`
//! names a PostgreSQL server ([`mandate_store::testing::DATABASE_URL_ENV`]), in a scratch
//! PostgreSQL database of its own, given to it as `MANDATE_DATABASE_URL` ([`Storage`]).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsString;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mandate_store::testing::{DATABASE_URL_ENV, ScratchDatabase};
use serde_json::Value;
use sqlx::{ConnectOptions, Connection};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mandate");

/// The environment variable `mandate serve` reads its PostgreSQL URL from.
pub const SERVE_DATABASE_URL_ENV: &str = "MANDATE_DATABASE_URL";

/// `mandate` as a command, without the test run's [`DATABASE_URL_ENV`] (which is no setting of
/// the program's: `serve` and `gateway` would refuse it as an unknown `MANDATE_*` key).
pub fn command() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove(DATABASE_URL_ENV);
    cmd
}

/// Runs `future` to completion on a runtime of its own, on a thread of its own (so that it
/// works whether or not the caller is inside a runtime).
fn block_on<T: Send>(future: impl Future<Output = T> + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(future)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Where a `mandate serve` child keeps its state: `<data>/mandate.db`, or, when the test run is
/// on PostgreSQL, a scratch database of its own. Clones share the database; a scratch database
/// is dropped with the last of them, so keep one to start a server again on the same state or
/// to look into it after the server is gone.
#[derive(Debug, Clone)]
pub struct Storage {
    /// The data directory (`--data`): keys, credentials, and the SQLite file.
    data: PathBuf,
    /// The scratch PostgreSQL database, on a PostgreSQL run.
    scratch: Option<Arc<ScratchDatabase>>,
}

impl Storage {
    /// The storage of servers with data directory `data`: a new scratch PostgreSQL database
    /// when the run is on PostgreSQL, else the SQLite file the server makes there.
    pub fn new(data: &Path) -> Storage {
        let scratch = mandate_store::testing::postgres_url()
            .map(|base| Arc::new(block_on(ScratchDatabase::create(&base))));
        Storage {
            data: data.to_owned(),
            scratch,
        }
    }

    /// The PostgreSQL URL the server is given, on a PostgreSQL run.
    pub fn url(&self) -> Option<&str> {
        self.scratch.as_deref().map(ScratchDatabase::url)
    }

    /// The arguments that name this database to an offline `mandate audit verify`:
    /// `--data DIR` (SQLite) or `--database-url URL` (PostgreSQL).
    pub fn offline_args(&self) -> Vec<OsString> {
        match self.url() {
            Some(url) => vec!["--database-url".into(), url.into()],
            None => vec!["--data".into(), self.data.clone().into()],
        }
    }

    /// Runs `statements` (one, or several separated by `;`; no parameters, so they must be
    /// valid on both backends) directly on the database; returns how many rows they changed.
    pub fn sql(&self, statements: &str) -> u64 {
        let sql = || sqlx::raw_sql(sqlx::AssertSqlSafe(statements.to_owned()));
        let failed = |e: sqlx::Error| -> u64 { panic!("`{statements}` fails: {e}") };
        block_on(async {
            match self.url() {
                Some(url) => {
                    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                    let n = sql()
                        .execute(&mut conn)
                        .await
                        .map_or_else(failed, |r| r.rows_affected());
                    conn.close().await.unwrap();
                    n
                }
                None => {
                    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
                        .filename(self.data.join("mandate.db"))
                        .connect()
                        .await
                        .unwrap();
                    let n = sql()
                        .execute(&mut conn)
                        .await
                        .map_or_else(failed, |r| r.rows_affected());
                    conn.close().await.unwrap();
                    n
                }
            }
        })
    }
}

/// A `mandate serve` child process, killed on drop.
pub struct Server {
    child: Child,
    /// Its database, dropped (on PostgreSQL) after the process is killed unless a clone is kept.
    storage: Storage,
    /// Its URL, as printed.
    pub url: String,
    /// The admin credential the server printed at start.
    pub printed_credential: Option<String>,
    /// In `--dev`: the gateway's URL, as printed.
    pub gateway: Option<String>,
    /// In `--dev`: the sample CRM's URL, as printed.
    pub sample: Option<String>,
}

impl Server {
    /// Its storage: clone it to start a server again on the same state ([`serve_on`]) or to
    /// look into the database after this one is gone.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mandate serve --data DATA --listen 127.0.0.1:0 EXTRA…` with `ENV` set (and no `MANDATE_URL`,
/// `MANDATE_TOKEN` or `MANDATE_USER_TOKEN` of the caller's), on new storage in `data` (see
/// [`Storage::new`]); returns once it is listening.
pub fn serve_with(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    serve_on(&Storage::new(data), extra, env)
}

/// [`serve_with`] on the given storage: its data directory, and its PostgreSQL database (as
/// `MANDATE_DATABASE_URL`) on a PostgreSQL run.
pub fn serve_on(storage: &Storage, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut cmd = command();
    cmd.args(["serve", "--data"])
        .arg(&storage.data)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("MANDATE_URL")
        .env_remove("MANDATE_TOKEN")
        .env_remove("MANDATE_USER_TOKEN")
        .env_remove(SERVE_DATABASE_URL_ENV)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(url) = storage.url() {
        cmd.env(SERVE_DATABASE_URL_ENV, url);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start mandate serve");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut url, mut printed_credential, mut gateway, mut sample) = (None, None, None, None);
    loop {
        assert!(Instant::now() < deadline, "server did not print its banner");
        let line = lines.next().expect("server exited early").unwrap();
        if let Some(rest) = line.strip_prefix("Mandate is listening on ") {
            url = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line.strip_prefix("Gateway is listening on ") {
            gateway = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(rest) = line.trim().strip_prefix("the sample CRM itself: ") {
            sample = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some((_, cred)) = line.split_once("credential")
            && let Some(t) = cred
                .split_whitespace()
                .find(|w| w.starts_with("mnd_admin_"))
        {
            printed_credential = Some(t.to_owned());
        }
        if line.starts_with("Press Ctrl-C to stop") {
            break;
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        storage: storage.clone(),
        url: url.unwrap(),
        printed_credential,
        gateway,
        sample,
    }
}

/// `mandate serve --dev` in `data`.
pub fn serve_dev(data: &Path) -> Server {
    serve_with(data, &["--dev"], &[])
}

/// Runs `mandate ARGS` against `server` with only the given `MANDATE_*` credentials set.
pub fn mandate_env(server: &Server, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = command();
    cmd.env("MANDATE_URL", &server.url)
        .env_remove("MANDATE_TOKEN")
        .env_remove("MANDATE_USER_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().expect("run mandate")
}

/// Runs `mandate ARGS` against `server`, with `MANDATE_TOKEN` = `token` if given.
pub fn mandate(server: &Server, token: Option<&str>, args: &[&str]) -> Output {
    match token {
        Some(t) => mandate_env(server, &[("MANDATE_TOKEN", t)], args),
        None => mandate_env(server, &[], args),
    }
}

/// Standard output, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Standard output as JSON; the command must have succeeded.
pub fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice(&o.stdout).unwrap()
}
