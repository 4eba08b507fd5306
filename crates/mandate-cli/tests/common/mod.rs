//! What every end-to-end test of the `mandate` binary needs: a real `mandate serve` child
//! process, and running the CLI against it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mandate");

/// A `mandate serve` child process, killed on drop.
pub struct Server {
    child: Child,
    /// Its URL, as printed.
    pub url: String,
    /// The admin credential the server printed at start.
    pub printed_credential: Option<String>,
    /// In `--dev`: the gateway's URL, as printed.
    pub gateway: Option<String>,
    /// In `--dev`: the sample CRM's URL, as printed.
    pub sample: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mandate serve --data DATA --listen 127.0.0.1:0 EXTRA…` with `ENV` set (and no `MANDATE_URL`,
/// `MANDATE_TOKEN` or `MANDATE_USER_TOKEN` of the caller's); returns once it is listening.
pub fn serve_with(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--data"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("MANDATE_URL")
        .env_remove("MANDATE_TOKEN")
        .env_remove("MANDATE_USER_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
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
    let mut cmd = Command::new(BIN);
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
