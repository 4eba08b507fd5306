//! A small W3C WebDriver client, for end-to-end tests of the console in a real headless Chromium
//! (Debian's `chromium` and `chromium-driver`, which `.ci/browser` installs).
//!
//! [`Browser::start`] spawns a private chromedriver on a free loopback port and opens one session
//! with a throwaway profile. The machines are small and tests run on parallel threads, so at most
//! one browser runs at a time in the test process: a [`Browser`] holds the only permit of
//! [`BROWSERS`] until it is dropped. Every step panics with the WebDriver error when it fails —
//! this is test code, and a failed step is a failed test.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::harness::Server;

/// How long the harness waits for chromedriver, for elements and for text.
const PATIENCE: Duration = Duration::from_secs(10);
/// How often it looks again while waiting.
const POLL: Duration = Duration::from_millis(100);
/// The key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Chromium's flags (besides its profile): headless, as root, and quiet on the network.
const CHROMIUM_FLAGS: &str = "--headless=new --no-sandbox --disable-gpu --disable-quic \
    --no-first-run --disable-background-networking --disable-component-update --disable-sync \
    --disable-dev-shm-usage --window-size=1280,900";

/// One permit: at most one browser in the test process at a time.
static BROWSERS: Semaphore = Semaphore::const_new(1);

/// A WebDriver error: its `error` code (`"no such element"`, …) and its message.
#[derive(Debug)]
struct WdError(String, String);

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0, self.1)
    }
}

/// Where WebDriver commands go: chromedriver itself, or one of its sessions.
#[derive(Clone)]
struct Endpoint {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>`, or that and `/session/<id>`.
    url: String,
}

impl Endpoint {
    /// Sends a command to `<url>{path}` (with `body` unless null) and returns its `value`.
    async fn try_send(&self, method: Method, path: &str, body: Value) -> Result<Value, WdError> {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if !body.is_null() {
            req = req.json(&body);
        }
        let transport = |e: reqwest::Error| WdError("transport".into(), e.to_string());
        let resp = req.send().await.map_err(transport)?;
        let ok = resp.status().is_success();
        let value = resp.json::<Value>().await.map_err(transport)?["value"].take();
        if ok {
            return Ok(value);
        }
        let text = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
        Err(WdError(text("error"), text("message")))
    }

    /// Like [`Endpoint::try_send`]; panics on a WebDriver error.
    async fn send(&self, method: Method, path: &str, body: Value) -> Value {
        let what = format!("{method} {path}");
        let result = self.try_send(method, path, body).await;
        result.unwrap_or_else(|e| panic!("WebDriver `{what}`: {e}"))
    }

    /// `GET {path}`.
    async fn get(&self, path: &str) -> Value {
        self.send(Method::GET, path, Value::Null).await
    }

    /// `POST {path}` with `body`.
    async fn post(&self, path: &str, body: Value) -> Value {
        self.send(Method::POST, path, body).await
    }

    /// The string a `GET {path}` returns.
    async fn string(&self, path: &str) -> String {
        self.get(path).await.as_str().unwrap().to_owned()
    }

    /// An element from a WebDriver element reference.
    fn element(&self, reference: &Value) -> Element {
        let id = reference[ELEMENT_KEY].as_str();
        let id = id.unwrap_or_else(|| panic!("not an element reference: {reference}"));
        Element(self.clone(), id.to_owned())
    }

    /// The first element matching `css` under `scope` (`""`: the page; `/element/<id>`: it).
    async fn locate(&self, scope: &str, css: &str) -> Result<Element, WdError> {
        let by = json!({"using": "css selector", "value": css});
        let path = format!("{scope}/element");
        Ok(self.element(&self.try_send(Method::POST, &path, by).await?))
    }

    /// Like [`Endpoint::locate`], but waits up to [`PATIENCE`] for the element to exist.
    async fn wait_locate(&self, scope: &str, css: &str) -> Element {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.locate(scope, css).await {
                Ok(found) => return found,
                Err(e) if e.0 == "no such element" && Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => panic!("no element matches `{css}` after {PATIENCE:?}: {e}"),
            }
        }
    }
}

/// The chromedriver process, killed and reaped when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A binary's path: the environment variable `var` if set, else `default`; panics if absent.
fn binary(var: &str, default: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let name = default.rsplit('/').next().unwrap_or(default);
    let fix = "run `.ci/browser` (installs Debian's chromium and chromium-driver)";
    assert!(
        Path::new(&path).exists(),
        "{name} not found at `{path}`: {fix}"
    );
    path
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Starts chromedriver (`path`) on `port`, quietly.
fn spawn_chromedriver(path: &str, port: u16) -> Driver {
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    Driver(child.unwrap_or_else(|e| panic!("cannot run `{path}`: {e}")))
}

/// The new-session request: headless Chromium (`chromium`) with its profile in `profile`.
fn capabilities(chromium: &str, profile: &TempDir) -> Value {
    let mut args: Vec<String> = CHROMIUM_FLAGS
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    args.push(format!("--user-data-dir={}", profile.path().display()));
    let options = json!({"binary": chromium, "args": args});
    json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}})
}

/// Waits up to [`PATIENCE`] for chromedriver to report itself ready.
async fn wait_ready(chromedriver: &Endpoint, driver: &mut Driver) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = driver.0.try_wait().unwrap() {
            panic!("chromedriver exited before it was ready: {status}");
        }
        let status = chromedriver
            .try_send(Method::GET, "/status", Value::Null)
            .await;
        if status.is_ok_and(|s| s["ready"] == true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver not ready after {PATIENCE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A headless Chromium driven over WebDriver; the session ends when it is dropped.
pub struct Browser {
    session: Endpoint,
    /// chromedriver's port and the session's id, for ending the session synchronously on drop.
    port: u16,
    id: String,
    // Dropped in this order, after the session ends: chromedriver, the profile, the permit.
    _driver: Driver,
    _profile: TempDir,
    _permit: SemaphorePermit<'static>,
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium, once no other browser is running.
    pub async fn start() -> Browser {
        let permit = BROWSERS.acquire().await.unwrap();
        let chromium = binary("MANDATE_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = binary("MANDATE_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = free_port();
        let mut driver = spawn_chromedriver(&chromedriver, port);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60));
        let url = format!("http://127.0.0.1:{port}");
        let mut endpoint = Endpoint {
            http: http.build().unwrap(),
            url,
        };
        wait_ready(&endpoint, &mut driver).await;

        let profile = TempDir::new().unwrap();
        let caps = capabilities(&chromium, &profile);
        let created = endpoint.try_send(Method::POST, "/session", caps).await;
        let created =
            created.unwrap_or_else(|e| panic!("chromedriver cannot start `{chromium}`: {e}"));
        let id = created["sessionId"].as_str().unwrap().to_owned();
        endpoint.url = format!("{}/session/{id}", endpoint.url);
        Browser {
            session: endpoint,
            port,
            id,
            _driver: driver,
            _profile: profile,
            _permit: permit,
        }
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.session.post("/url", json!({"url": url})).await;
    }

    /// The current page's URL.
    pub async fn current_url(&self) -> String {
        self.session.string("/url").await
    }

    /// The current page's title.
    pub async fn title(&self) -> String {
        self.session.string("/title").await
    }

    /// The first element matching `css`, waiting up to 10 s for it to exist.
    pub async fn find(&self, css: &str) -> Element {
        self.session.wait_locate("", css).await
    }

    /// Every element matching `css` now (maybe none).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let by = json!({"using": "css selector", "value": css});
        let found = self.session.post("/elements", by).await;
        let found = found.as_array().unwrap().iter();
        found
            .map(|reference| self.session.element(reference))
            .collect()
    }

    /// The first element matching `css` now, if any (no waiting).
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        match self.session.locate("", css).await {
            Ok(found) => Some(found),
            Err(e) if e.0 == "no such element" => None,
            Err(e) => panic!("WebDriver find `{css}`: {e}"),
        }
    }

    /// The first element matching `css` whose text contains `needle`, waiting up to 10 s.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> Element {
        let script = "return [...document.querySelectorAll(arguments[0])]\
                      .find(e => e.innerText.includes(arguments[1])) || null;";
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = self.execute(script, vec![json!(css), json!(needle)]).await;
            if !found.is_null() {
                return self.session.element(&found);
            }
            if Instant::now() >= deadline {
                let (url, text) = (self.current_url().await, self.page_text().await);
                panic!(
                    "no `{css}` contains {needle:?} after {PATIENCE:?} on {url}; it reads:\n{text}"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The page's visible text (`document.body.innerText`).
    pub async fn page_text(&self) -> String {
        let script = "return document.body ? document.body.innerText : '';";
        self.execute(script, vec![])
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        let body = json!({"script": script, "args": args});
        self.session.post("/execute/sync", body).await
    }

    /// The cookies the current page sees, as WebDriver cookie objects.
    pub async fn cookies(&self) -> Vec<Value> {
        let cookies = self.session.get("/cookie").await;
        cookies.as_array().unwrap().clone()
    }

    /// Deletes the cookies the current page sees.
    pub async fn delete_cookies(&self) {
        self.session
            .send(Method::DELETE, "/cookie", Value::Null)
            .await;
    }

    /// Goes back in history.
    pub async fn back(&self) {
        self.session.post("/back", json!({})).await;
    }

    /// Reloads the page.
    pub async fn refresh(&self) {
        self.session.post("/refresh", json!({})).await;
    }

    /// Replaces the text of the field matching `css` (waiting for it) with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await;
        field.send_keys(text).await;
    }

    /// Clicks the element matching `css` (waiting for it).
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await;
    }
}

impl Drop for Browser {
    /// Ends the session, best-effort and synchronously: Chromium quits before chromedriver is
    /// killed (it would outlive it) and before its profile is removed.
    fn drop(&mut self) {
        let end = || -> std::io::Result<()> {
            let mut tcp = TcpStream::connect(("127.0.0.1", self.port))?;
            tcp.set_read_timeout(Some(PATIENCE))?;
            let (port, id) = (self.port, &self.id);
            write!(
                tcp,
                "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            )?;
            write!(tcp, "Content-Length: 0\r\nConnection: close\r\n\r\n")?;
            // chromedriver answers once Chromium has quit; it may keep the connection open.
            tcp.read(&mut [0; 64]).map(drop)
        };
        let _ = end();
    }
}

/// An element of the page: its session and WebDriver id.
pub struct Element(Endpoint, String);

impl Element {
    /// The session path of `sub` about this element: `/element/<id>{sub}`.
    fn at(&self, sub: &str) -> String {
        format!("/element/{}{sub}", self.1)
    }

    /// Clicks it.
    pub async fn click(&self) {
        self.0.post(&self.at("/click"), json!({})).await;
    }

    /// Its rendered text.
    pub async fn text(&self) -> String {
        self.0.string(&self.at("/text")).await
    }

    /// Its attribute (or, as WebDriver has it, property) `name`, if set.
    pub async fn attr(&self, name: &str) -> Option<String> {
        let value = self.0.get(&self.at(&format!("/attribute/{name}"))).await;
        value.as_str().map(str::to_owned)
    }

    /// Types `text` into it.
    pub async fn send_keys(&self, text: &str) {
        self.0.post(&self.at("/value"), json!({"text": text})).await;
    }

    /// Empties it (a field).
    pub async fn clear(&self) {
        self.0.post(&self.at("/clear"), json!({})).await;
    }

    /// The first element within it matching `css`, waiting up to 10 s for it to exist.
    pub async fn find(&self, css: &str) -> Element {
        self.0.wait_locate(&self.at(""), css).await
    }

    /// Whether it is displayed.
    pub async fn is_displayed(&self) -> bool {
        self.0.get(&self.at("/displayed")).await.as_bool().unwrap()
    }
}

/// The self-test's own little page, written over the current one: submitting its form shows
/// "hello <q>" a moment later (so waiting is needed); it also sets a cookie.
const PAGE: &str = "document.title = 'self-test';
    document.body.innerHTML = '<form><input name=q value=x><button>Go</button></form>'
        + '<p id=out></p><p id=gone hidden>gone</p>';
    document.querySelector('form').addEventListener('submit', e => {
        e.preventDefault();
        const q = e.target.q.value;
        setTimeout(() => { document.getElementById('out').innerText = 'hello ' + q; }, 300);
    });
    document.cookie = 'probe=1; path=/';";

/// The harness drives a real Chromium against the real server, and every step works.
#[tokio::test]
async fn a_real_chromium_reads_the_real_server() {
    let srv = Server::start().await;
    let browser = Browser::start().await;
    browser.goto(&srv.at("/healthz")).await;
    assert_eq!(browser.current_url().await, srv.at("/healthz"));
    assert_eq!(browser.page_text().await, "ok");
    browser
        .goto(&srv.at("/.well-known/oauth-authorization-server"))
        .await;
    let text = browser.page_text().await;
    assert!(text.contains(&srv.url), "no issuer {} in:\n{text}", srv.url);

    browser.back().await;
    assert_eq!(browser.current_url().await, srv.at("/healthz"));
    browser.execute(PAGE, vec![]).await;
    assert_eq!(browser.title().await, "self-test");
    assert!(browser.try_find("#nothing").await.is_none());
    assert_eq!(browser.find_all("p").await.len(), 2);
    let input = browser.find("form").await.find("input").await;
    assert_eq!(input.attr("name").await.as_deref(), Some("q"));
    assert!(input.is_displayed().await);
    assert!(!browser.find("#gone").await.is_displayed().await);
    browser.fill("input", "world").await;
    browser.click("button").await;
    let out = browser.wait_for_text("p", "hello").await;
    assert_eq!(out.text().await, "hello world");
    assert_eq!(browser.cookies().await[0]["name"], "probe");
    browser.delete_cookies().await;
    assert!(browser.cookies().await.is_empty());
    browser.refresh().await;
    assert_eq!(browser.page_text().await, "ok");
}
