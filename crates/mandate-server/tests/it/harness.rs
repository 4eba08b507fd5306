//! The harness: a real Mandate server in-process on an ephemeral loopback port with a temporary
//! data directory, an HTTP client that never leaves 127.0.0.1, agents' client assertions, a test
//! identity provider of our own, and verification of issued tokens through a generic JWT library
//! (`jsonwebtoken` with the published JWKS) — never through the server's own verify code.
//!
//! Every server keeps its state in SQLite (`<data_dir>/mandate.db`), or, when
//! `MANDATE_TEST_DATABASE_URL` names a PostgreSQL server
//! ([`mandate_store::testing::DATABASE_URL_ENV`]), in a scratch PostgreSQL database of its own
//! that lives as long as the [`Server`] (restarts included). Tests that look into or tamper with
//! the database go through [`Database`], which speaks to whichever of the two it is.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use mandate_server::clock::{Clock, OffsetClock};
use mandate_server::config::{DatabaseUrl, TrustedIssuerConfig};
use mandate_server::{Config, Options, Running};
use mandate_store::Store;
use mandate_store::testing::{Backend, ScratchDatabase};
use serde_json::{Value, json};
use sqlx::{ConnectOptions, Connection, Row};
use tempfile::TempDir;

/// The resource most tests ask tokens for.
pub const CRM: &str = "https://crm.example";
/// RFC 8693 grant type.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 token type of a JWT (a user's token).
pub const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// RFC 8693 token type of an access token (a Mandate token, for the next hop).
pub const TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 7523 client assertion type.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Alice, of group `support`.
pub const ALICE: &str = "alice@example.com";
/// Bob, of group `finance`.
pub const BOB: &str = "bob@example.com";
/// Carol, of groups `support` and `approver`.
pub const CAROL: &str = "carol@example.com";
/// The issuer of the test IdP that [`Server::start_with_idp`] trusts.
pub const TEST_IDP_ISSUER: &str = "https://idp.test.example";
/// The audience the test IdP's tokens must carry.
pub const TEST_IDP_AUDIENCE: &str = "mandate";

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A value unique within this test process (request ids, `jti`s, task ids).
pub fn unique(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{n}-{nanos}")
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS over `header` and `claims`, signed by `sign` (which gets the signing input).
pub fn jws(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let mut input = b64(header.to_string().as_bytes());
    input.push('.');
    input.push_str(&b64(claims.to_string().as_bytes()));
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

/// A JWT with `alg: none` and an empty signature.
pub fn unsigned(claims: &Value) -> String {
    let mut input = b64(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes());
    input.push('.');
    input.push_str(&b64(claims.to_string().as_bytes()));
    input.push('.');
    input
}

/// The payload of a JWT, read without any verification (for choosing what to check next).
pub fn peek(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

enum Pair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(aws_lc_rs::rsa::KeyPair),
}

/// A private key the test holds: an agent's, or a test IdP's.
pub struct TestKey {
    /// Its `kid`.
    pub kid: String,
    pair: Pair,
}

/// Ed25519 PKCS#8 v1 prefix; the 32-byte seed follows.
const ED25519_PKCS8_V1_PREFIX: &str = "302e020100300506032b657004220420";

impl TestKey {
    /// A fresh Ed25519 key.
    pub fn ed25519(kid: &str) -> TestKey {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        TestKey {
            kid: kid.to_owned(),
            pair: Pair::Ed(Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap()),
        }
    }

    /// The Ed25519 key of a private JWK (with `d`).
    pub fn from_private_jwk(jwk: &Value) -> TestKey {
        let seed = URL_SAFE_NO_PAD
            .decode(jwk["d"].as_str().expect("private JWK has `d`"))
            .unwrap();
        assert_eq!(seed.len(), 32);
        let mut pkcs8 = hex::decode(ED25519_PKCS8_V1_PREFIX).unwrap();
        pkcs8.extend_from_slice(&seed);
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).unwrap();
        let key = TestKey {
            kid: jwk["kid"].as_str().unwrap().to_owned(),
            pair: Pair::Ed(pair),
        };
        assert_eq!(
            key.public_jwk()["x"],
            jwk["x"],
            "the seed in `d` must belong to the public key `x`"
        );
        key
    }

    /// A fresh P-256 key.
    pub fn p256(kid: &str) -> TestKey {
        TestKey {
            kid: kid.to_owned(),
            pair: Pair::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap()),
        }
    }

    /// A fresh RSA-2048 key.
    pub fn rsa(kid: &str) -> TestKey {
        TestKey {
            kid: kid.to_owned(),
            pair: Pair::Rsa(
                aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap(),
            ),
        }
    }

    /// The JOSE algorithm.
    pub fn alg(&self) -> &'static str {
        match self.pair {
            Pair::Ed(_) => "EdDSA",
            Pair::Ec(_) => "ES256",
            Pair::Rsa(_) => "RS256",
        }
    }

    /// The public JWK, with `kid`.
    pub fn public_jwk(&self) -> Value {
        match &self.pair {
            Pair::Ed(p) => json!({
                "kty": "OKP", "crv": "Ed25519", "x": b64(p.public_key().as_ref()),
                "kid": self.kid, "use": "sig", "alg": "EdDSA",
            }),
            Pair::Ec(p) => {
                let point = p.public_key().as_ref();
                json!({
                    "kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65]),
                    "kid": self.kid, "use": "sig", "alg": "ES256",
                })
            }
            Pair::Rsa(p) => {
                let public = p.public_key();
                json!({
                    "kty": "RSA",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                    "kid": self.kid, "use": "sig", "alg": "RS256",
                })
            }
        }
    }

    /// The raw public key bytes (what an attacker might use as an HMAC secret).
    pub fn public_bytes(&self) -> Vec<u8> {
        match &self.pair {
            Pair::Ed(p) => p.public_key().as_ref().to_vec(),
            Pair::Ec(p) => p.public_key().as_ref().to_vec(),
            Pair::Rsa(p) => p
                .public_key()
                .modulus()
                .big_endian_without_leading_zero()
                .to_vec(),
        }
    }

    fn sign_bytes(&self, msg: &[u8]) -> Vec<u8> {
        match &self.pair {
            Pair::Ed(p) => p.sign(msg).as_ref().to_vec(),
            Pair::Ec(p) => p.sign(&SystemRandom::new(), msg).unwrap().as_ref().to_vec(),
            Pair::Rsa(p) => {
                let mut sig = vec![0; p.public_modulus_len()];
                p.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
                    .unwrap();
                sig
            }
        }
    }

    /// Signs `claims` with header `{alg, kid, typ: JWT}`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg(), "kid": self.kid, "typ": "JWT"});
        self.sign_with_header(&header, claims)
    }

    /// Signs `claims` under exactly `header`.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        jws(header, claims, |m| self.sign_bytes(m))
    }
}

/// An agent as the test drives it: its id and a key registered for it.
pub struct Agent {
    /// The agent id.
    pub id: String,
    /// Its key.
    pub key: TestKey,
}

impl Agent {
    /// A client assertion (RFC 7523) for `aud`, valid for a minute, with a fresh `jti`.
    pub fn assertion_for(&self, aud: &str, now: i64) -> String {
        self.key.sign(&json!({
            "iss": self.id, "sub": self.id, "aud": aud,
            "iat": now, "exp": now + 60, "jti": unique("assertion"),
        }))
    }
}

/// An HTTP answer: status, body (JSON when it parses, else a JSON string), and the request id
/// the harness sent (to find the request's audit event).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Value,
    /// The `x-request-id` sent.
    pub request_id: String,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// The OAuth `error` code, or `""`.
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    /// The OAuth `error_description` (or the admin API's `message`), or `""`.
    pub fn description(&self) -> &str {
        self.body["error_description"]
            .as_str()
            .or_else(|| self.body["message"].as_str())
            .unwrap_or_default()
    }

    /// A response header as text, or `""`.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts a status, printing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Reply {
        assert_eq!(
            self.status, status,
            "expected HTTP {status}, got {}: {}",
            self.status, self.body
        );
        self
    }

    /// Asserts an OAuth error: status and `error` code.
    #[track_caller]
    pub fn expect_oauth_error(&self, status: u16, error: &str) -> &Reply {
        assert_eq!(
            (self.status, self.error()),
            (status, error),
            "expected {status} `{error}`, got: {}",
            self.body
        );
        self
    }

    /// The access token of a successful token response.
    #[track_caller]
    pub fn access_token(&self) -> String {
        self.expect(200);
        self.body["access_token"]
            .as_str()
            .expect("a token response has `access_token`")
            .to_owned()
    }
}

/// A token verified by the generic path: its header and claims.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The JWS header.
    pub header: Header,
    /// The claims.
    pub claims: Value,
}

// ---- The database ----

/// The database a test server keeps its state in: the SQLite file of its data directory, or,
/// when the run is on PostgreSQL (`MANDATE_TEST_DATABASE_URL`), its scratch PostgreSQL database.
///
/// Cloning gives another handle to the same database. A scratch database is dropped with its
/// last handle, so a test that keeps a handle can still look into it after the server is gone.
/// Statements given to the helpers are test-only text and must be valid on both backends: quote
/// the column `user` as `"user"`, write values as literals (placeholders differ), and use
/// [`Database::bytes_literal`] for binary values.
#[derive(Debug, Clone)]
pub enum Database {
    /// An SQLite file.
    Sqlite {
        /// `<data_dir>/mandate.db`, or a copy's file ([`Database::copy`]).
        file: PathBuf,
        /// The temporary directory holding a copy, removed with the last handle.
        _copy_dir: Option<Arc<TempDir>>,
    },
    /// A scratch PostgreSQL database, dropped with the last handle.
    Postgres(Arc<ScratchDatabase>),
}

/// One connection to a [`Database`].
enum Conn {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

/// Evaluates `body` with `c` bound to a new connection to `db` (`&mut c` is an executor of
/// either backend: the body is compiled once for each), then closes the connection.
macro_rules! on_connection {
    ($db:expr, |$c:ident| $body:expr) => {
        match $db.connect().await {
            Conn::Sqlite(mut $c) => {
                let value = $body;
                $c.close().await.unwrap();
                value
            }
            Conn::Postgres(mut $c) => {
                let value = $body;
                $c.close().await.unwrap();
                value
            }
        }
    };
}

impl Database {
    /// The database of a new server whose data directory is `data_dir`: a new scratch
    /// PostgreSQL database when the run is on PostgreSQL, else `<data_dir>/mandate.db` (which the
    /// server creates).
    pub async fn for_data_dir(data_dir: &Path) -> Database {
        match mandate_store::testing::postgres_url() {
            Some(base) => Database::Postgres(Arc::new(ScratchDatabase::create(&base).await)),
            None => Database::Sqlite {
                file: data_dir.join("mandate.db"),
                _copy_dir: None,
            },
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Database::Sqlite { .. } => Backend::Sqlite,
            Database::Postgres(_) => Backend::Postgres,
        }
    }

    /// The PostgreSQL URL a server is configured with (`database_url`); `None` for SQLite, which
    /// the server finds in its data directory.
    pub fn url(&self) -> Option<&str> {
        match self {
            Database::Sqlite { .. } => None,
            Database::Postgres(db) => Some(db.url()),
        }
    }

    async fn connect(&self) -> Conn {
        match self {
            Database::Sqlite { file, .. } => Conn::Sqlite(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(file)
                    .connect()
                    .await
                    .unwrap_or_else(|e| panic!("`{}` opens: {e}", file.display())),
            ),
            Database::Postgres(db) => Conn::Postgres(
                sqlx::PgConnection::connect(db.url())
                    .await
                    .unwrap_or_else(|e| panic!("the scratch database {} opens: {e}", db.name())),
            ),
        }
    }

    /// Runs `statements` (one, or several separated by `;`; no parameters) and returns how many
    /// rows they changed. For tampering, mostly on a stopped server's database.
    pub async fn sql(&self, statements: &str) -> u64 {
        on_connection!(self, |c| sqlx::raw_sql(sqlx::AssertSqlSafe(
            statements.to_owned()
        ))
        .execute(&mut c)
        .await
        .unwrap_or_else(|e| panic!("`{statements}` fails: {e}"))
        .rows_affected())
    }

    /// The first column of every row `query` returns, as text (`None` for NULL). Cast what is
    /// not text: `CAST(x AS TEXT)`.
    pub async fn texts(&self, query: &str) -> Vec<Option<String>> {
        on_connection!(self, |c| sqlx::query(sqlx::AssertSqlSafe(query.to_owned()))
            .fetch_all(&mut c)
            .await
            .unwrap_or_else(|e| panic!("`{query}` fails: {e}"))
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    /// The one integer `query` (one row, one column) gives, read as a 64-bit integer on both
    /// backends (`SELECT CAST((query) AS BIGINT)`); `None` for NULL.
    pub async fn i64(&self, query: &str) -> Option<i64> {
        let query = format!("SELECT CAST(({query}) AS BIGINT)");
        on_connection!(self, |c| sqlx::query_scalar::<_, Option<i64>>(
            sqlx::AssertSqlSafe(query.clone())
        )
        .fetch_one(&mut c)
        .await
        .unwrap_or_else(|e| panic!("`{query}` fails: {e}")))
    }

    /// The one binary value (BLOB, BYTEA) `query` (one row, one column) gives.
    pub async fn bytes(&self, query: &str) -> Vec<u8> {
        on_connection!(self, |c| sqlx::query_scalar::<_, Vec<u8>>(
            sqlx::AssertSqlSafe(query.to_owned())
        )
        .fetch_one(&mut c)
        .await
        .unwrap_or_else(|e| panic!("`{query}` fails: {e}")))
    }

    /// `bytes` as an SQL literal of this backend: `X'…'` (SQLite BLOB) or `'\x…'::bytea`.
    pub fn bytes_literal(&self, bytes: &[u8]) -> String {
        match self {
            Database::Sqlite { .. } => format!("X'{}'", hex::encode(bytes)),
            Database::Postgres(_) => format!("'\\x{}'::bytea", hex::encode(bytes)),
        }
    }

    /// The store read-only, the way `mandate audit verify --data DIR` (SQLite) or
    /// `--database-url URL` (PostgreSQL) opens it offline. Close it when done.
    pub async fn open_read_only(&self) -> Box<dyn Store> {
        match self {
            Database::Sqlite { file, .. } => Box::new(
                mandate_store::SqliteStore::open_read_only(file)
                    .await
                    .expect("the database opens read-only"),
            ),
            Database::Postgres(db) => Box::new(
                mandate_store::PostgresStore::connect_read_only(db.url())
                    .await
                    .expect("the database opens read-only"),
            ),
        }
    }

    /// A copy of this database (of a stopped server: nothing may be connected to it), to change
    /// without touching the original: the SQLite file copied to a temporary directory, or a
    /// scratch PostgreSQL database created from this one as its template.
    pub async fn copy(&self) -> Database {
        match self {
            Database::Sqlite { file, .. } => {
                let dir = tempfile::tempdir().unwrap();
                let copy = dir.path().join("mandate.db");
                std::fs::copy(file, &copy).unwrap();
                Database::Sqlite {
                    file: copy,
                    _copy_dir: Some(Arc::new(dir)),
                }
            }
            Database::Postgres(original) => {
                let base = mandate_store::testing::postgres_url()
                    .expect("a scratch database exists only on a PostgreSQL run");
                // A scratch database of its own (dropped with it), its contents replaced by the
                // original's.
                let copy = ScratchDatabase::create(&base).await;
                let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
                let (name, from) = (copy.name(), original.name());
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .unwrap_or_else(|e| panic!("DROP DATABASE {name}: {e}"));
                let copied = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "CREATE DATABASE {name} TEMPLATE {from}"
                )))
                .execute(&mut admin)
                .await;
                if let Err(e) = copied {
                    // PostgreSQL copies only a database nobody is connected to: say who is.
                    let sessions: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT concat_ws(' | ', pid::text, application_name, state, \
                         backend_start::text, query) FROM pg_stat_activity WHERE datname = '{from}'"
                    )))
                    .fetch_all(&mut admin)
                    .await
                    .unwrap_or_default();
                    panic!("copying {from} to {name}: {e}; sessions on {from}: {sessions:#?}");
                }
                admin.close().await.unwrap();
                Database::Postgres(Arc::new(copy))
            }
        }
    }
}

/// A running Mandate server with everything a test needs to talk to it.
pub struct Server {
    running: Option<Running>,
    /// Holds the data directory (and the test IdP's JWKS file) for the server's lifetime.
    _root: TempDir,
    /// The server's database, kept across restarts (a scratch PostgreSQL database lives as long
    /// as this handle and its clones).
    database: Database,
    config: Config,
    /// The server's clock; tests move it instead of sleeping.
    pub clock: Arc<OffsetClock>,
    /// An HTTP client that talks to loopback only (no proxies).
    pub http: reqwest::Client,
    /// The issuer URL (`http://127.0.0.1:<port>`).
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// The admin credential.
    pub admin: String,
    /// The test IdP, when started with [`Server::start_with_idp`].
    pub idp: Option<TestKey>,
    dev: bool,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

impl Server {
    /// A `--dev` server with default configuration.
    pub async fn start() -> Server {
        Server::launch(None, true).await
    }

    /// A server without `--dev`: no test IdP, no demo world.
    pub async fn start_production() -> Server {
        Server::launch(None, false).await
    }

    /// A `--dev` server that also trusts our own test IdP ([`TEST_IDP_ISSUER`], audience
    /// [`TEST_IDP_AUDIENCE`], keys from a JWKS file).
    pub async fn start_with_idp() -> Server {
        Server::launch(Some(TestKey::ed25519("test-idp-k1")), true).await
    }

    /// A `--dev` server whose configuration `tune` adjusts first.
    pub async fn start_configured(tune: impl FnOnce(&mut Config)) -> Server {
        Server::launch_with(None, true, tune).await
    }

    /// A server without `--dev` whose configuration `tune` adjusts first.
    pub async fn start_production_configured(tune: impl FnOnce(&mut Config)) -> Server {
        Server::launch_with(None, false, tune).await
    }

    async fn launch(idp: Option<TestKey>, dev: bool) -> Server {
        Server::launch_with(idp, dev, |_| {}).await
    }

    async fn launch_with(
        idp: Option<TestKey>,
        dev: bool,
        tune: impl FnOnce(&mut Config),
    ) -> Server {
        let root = tempfile::tempdir().unwrap();
        let mut config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: root.path().join("data"),
            ..Config::default()
        };
        tune(&mut config);
        let database = Database::for_data_dir(&config.data_dir).await;
        config.database_url = database.url().map(|url| DatabaseUrl(url.to_owned()));
        if let Some(idp) = &idp {
            let jwks = root.path().join("test-idp-jwks.json");
            std::fs::write(&jwks, json!({"keys": [idp.public_jwk()]}).to_string()).unwrap();
            config.issuers.push(TrustedIssuerConfig {
                name: "test".into(),
                issuer: TEST_IDP_ISSUER.into(),
                audiences: vec![TEST_IDP_AUDIENCE.into()],
                jwks_url: None,
                jwks_file: Some(jwks),
                user_claim: "sub".into(),
                groups_claim: "groups".into(),
            });
        }
        let clock = Arc::new(OffsetClock::default());
        let running = mandate_server::start(Options {
            config: config.clone(),
            dev,
            master_key: None,
            clock: clock.clone(),
            gateway_listen: None,
        })
        .await
        .expect("the server starts");
        let admin = running
            .admin_token
            .clone()
            .expect("a first start shows the bootstrap admin credential");
        Server {
            url: running.url.clone(),
            addr: running.addr,
            running: Some(running),
            _root: root,
            database,
            config,
            clock,
            http: client(),
            admin,
            idp,
            dev,
        }
    }

    /// The running server.
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("the server is running")
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// The server's database (SQLite or scratch PostgreSQL), for looking into it or tampering
    /// with it directly. Clone it to keep it beyond the server.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Runs `statements` directly on the server's database: see [`Database::sql`].
    pub async fn sql(&self, statements: &str) -> u64 {
        self.database.sql(statements).await
    }

    /// Stops the server gracefully (the store is flushed and closed).
    pub async fn stop(&mut self) {
        self.http = client();
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Starts the server again on the same address with the same data directory and database.
    pub async fn start_again(&mut self) {
        assert!(self.running.is_none(), "stop the server first");
        assert!(
            self.dev,
            "only --dev servers read their admin credential back"
        );
        let mut config = self.config.clone();
        config.listen = self.addr;
        let running = mandate_server::start(Options {
            config,
            dev: true,
            master_key: None,
            clock: self.clock.clone(),
            gateway_listen: None,
        })
        .await
        .expect("the server starts again on the same port");
        assert_eq!(running.addr, self.addr);
        assert_eq!(running.url, self.url);
        self.admin = running
            .admin_token
            .clone()
            .expect("a --dev server reads its admin credential back");
        self.running = Some(running);
        self.http = client();
    }

    /// Stops and starts again on the same port, data directory and database.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Stops the server for good.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    /// Now, by the server's clock.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// A user token from the built-in dev IdP, minted in-process.
    pub fn user_token(&self, sub: &str, groups: &[&str], ttl: i64) -> String {
        let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        self.running()
            .state
            .dev
            .as_ref()
            .expect("--dev has a test IdP")
            .user_token(sub, &groups, ttl, self.now())
            .unwrap()
    }

    /// A user token with extra claims.
    pub fn user_token_with(&self, sub: &str, groups: &[&str], ttl: i64, extra: Value) -> String {
        let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        let extra = extra.as_object().cloned().unwrap_or_default();
        self.running()
            .state
            .dev
            .as_ref()
            .expect("--dev has a test IdP")
            .user_token_with(sub, &groups, ttl, self.now(), &extra)
            .unwrap()
    }

    /// The `allow` audit event of the request `reply` answered.
    pub async fn allow_event(&self, reply: &Reply) -> Value {
        let events = self.audit("decision=allow&limit=10000").await;
        events
            .into_iter()
            .find(|e| e["request_id"] == reply.request_id.as_str())
            .unwrap_or_else(|| panic!("no allow audit event for request {}", reply.request_id))
    }

    /// Alice's token (group `support`), valid for an hour.
    pub fn alice(&self) -> String {
        self.user_token(ALICE, &["support"], 3600)
    }

    /// A user token from our own test IdP with the given claims merged over sensible defaults.
    pub fn idp_token(&self, overrides: Value) -> String {
        let idp = self.idp.as_ref().expect("started with start_with_idp");
        let now = self.now();
        let mut claims = json!({
            "iss": TEST_IDP_ISSUER, "aud": TEST_IDP_AUDIENCE, "sub": "dave@test.example",
            "groups": ["support"], "iat": now, "nbf": now, "exp": now + 600,
            "jti": unique("idp"),
        });
        for (k, v) in overrides.as_object().unwrap() {
            claims[k] = v.clone();
        }
        idp.sign(&claims)
    }

    /// A demo agent, with the private key `--dev` wrote to `<data>/agents/<id>.jwk`.
    pub fn agent(&self, id: &str) -> Agent {
        let path = self.data_dir().join("agents").join(format!("{id}.jwk"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("`{}`: {e}", path.display()));
        let jwk: Value = serde_json::from_str(&text).unwrap();
        let key = TestKey::from_private_jwk(&jwk);
        assert_eq!(key.kid, format!("{id}-k1"));
        Agent {
            id: id.to_owned(),
            key,
        }
    }

    /// A client assertion for `agent`, addressed to the issuer.
    pub fn assertion(&self, agent: &Agent) -> String {
        agent.assertion_for(&self.url, self.now())
    }

    /// Client authentication form fields for `agent`.
    pub fn client_auth(&self, agent: &Agent) -> Vec<(String, String)> {
        vec![
            ("client_assertion_type".into(), JWT_BEARER.into()),
            ("client_assertion".into(), self.assertion(agent)),
        ]
    }

    // ---- HTTP ----

    /// Sends `req` with a fresh `x-request-id` and reads the answer.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let request_id = unique("rid").replace('-', "_");
        let resp = req
            .header("x-request-id", &request_id)
            .send()
            .await
            .expect("the server answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            body,
            request_id,
            headers,
        }
    }

    /// `url + path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// POSTs a form to `path`.
    pub async fn post_form(&self, path: &str, form: &[(String, String)]) -> Reply {
        self.send(self.http.post(self.at(path)).form(form)).await
    }

    /// POSTs a form to the token endpoint.
    pub async fn token(&self, form: &[(String, String)]) -> Reply {
        self.post_form("/oauth2/token", form).await
    }

    /// POSTs `form` to the token endpoint, authenticated as `agent`.
    pub async fn token_as(&self, agent: &Agent, form: Vec<(String, String)>) -> Reply {
        let mut form = form;
        form.extend(self.client_auth(agent));
        self.token(&form).await
    }

    /// Exchanges `subject` (a user token) through `agent` for `scope` on [`CRM`].
    pub async fn exchange(&self, agent: &Agent, subject: &str, scope: &str) -> Reply {
        self.token_as(agent, exchange_form(subject, TYPE_JWT, scope, &[]))
            .await
    }

    /// Exchanges a Mandate token (next hop) through `agent` for `scope` on [`CRM`].
    pub async fn hop(&self, agent: &Agent, parent: &str, scope: &str) -> Reply {
        self.token_as(agent, exchange_form(parent, TYPE_ACCESS_TOKEN, scope, &[]))
            .await
    }

    /// An admin request with the bootstrap credential.
    pub fn admin_req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.at(path))
            .bearer_auth(&self.admin)
    }

    /// `GET path` as admin.
    pub async fn admin_get(&self, path: &str) -> Reply {
        self.send(self.admin_req(reqwest::Method::GET, path)).await
    }

    /// `POST path` with a JSON body as admin.
    pub async fn admin_post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.admin_req(reqwest::Method::POST, path).json(body))
            .await
    }

    /// `PATCH path` with a JSON body as admin; asserts 200.
    pub async fn admin_patch(&self, path: &str, body: &Value) -> Reply {
        let r = self
            .send(self.admin_req(reqwest::Method::PATCH, path).json(body))
            .await;
        assert_eq!(r.status, 200, "PATCH {path}: {}", r.body);
        r
    }

    /// `POST /v1/revocations {kind, id}`.
    pub async fn revoke(&self, kind: &str, id: &str) -> Reply {
        self.admin_post("/v1/revocations", &json!({"kind": kind, "id": id}))
            .await
    }

    /// Introspects `token` with the admin credential; returns the answer body.
    pub async fn introspect(&self, token: &str) -> Value {
        let r = self
            .send(
                self.admin_req(reqwest::Method::POST, "/oauth2/introspect")
                    .form(&[("token", token)]),
            )
            .await;
        r.expect(200);
        r.body
    }

    /// Whether introspection calls `token` active.
    pub async fn active(&self, token: &str) -> bool {
        let v = self.introspect(token).await;
        v["active"].as_bool().expect("introspection has `active`")
    }

    /// `GET /v1/audit?<query>` → the events.
    pub async fn audit(&self, query: &str) -> Vec<Value> {
        let r = self.admin_get(&format!("/v1/audit?{query}")).await;
        r.expect(200);
        r.body["events"].as_array().expect("`events` array").clone()
    }

    /// The `deny` audit event of the request `reply` answered; panics if there is none.
    pub async fn deny_event(&self, reply: &Reply) -> Value {
        let events = self.audit("decision=deny&limit=10000").await;
        events
            .into_iter()
            .find(|e| e["request_id"] == reply.request_id.as_str())
            .unwrap_or_else(|| {
                panic!(
                    "no deny audit event for request {} ({})",
                    reply.request_id, reply.body
                )
            })
    }

    /// The published JWKS.
    pub async fn jwks(&self) -> JwkSet {
        let r = self
            .send(self.http.get(self.at("/.well-known/jwks.json")))
            .await;
        r.expect(200);
        serde_json::from_value(r.body).expect("the JWKS parses as a JWK set")
    }

    /// Verifies `token` the way any relying party would: the key named by `kid` from
    /// `/.well-known/jwks.json`, EdDSA, this issuer, audience `aud`, `exp`/`nbf` checked.
    pub async fn verify(&self, token: &str, aud: &str) -> Result<Verified, String> {
        self.verify_alg(token, aud, Algorithm::EdDSA).await
    }

    /// [`Server::verify`] for a relying party pinned to `alg`.
    pub async fn verify_alg(
        &self,
        token: &str,
        aud: &str,
        alg: Algorithm,
    ) -> Result<Verified, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let kid = header.kid.clone().ok_or("no `kid` in the header")?;
        let jwks = self.jwks().await;
        let jwk = jwks
            .find(&kid)
            .ok_or_else(|| format!("kid `{kid}` is not in the JWKS"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut v = Validation::new(alg);
        v.set_audience(&[aud]);
        v.set_issuer(&[&self.url]);
        v.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = 5;
        let data = jsonwebtoken::decode::<Value>(token, &key, &v).map_err(|e| e.to_string())?;
        Ok(Verified {
            header: data.header,
            claims: data.claims,
        })
    }

    /// Adds a policy file to the `--dev` policy directory and reloads; asserts the reload took.
    pub async fn add_policy(&self, file: &str, text: &str) {
        let dir = self.data_dir().join("policies");
        std::fs::write(dir.join(file), text).unwrap();
        let r = self.admin_post("/v1/policies/reload", &json!({})).await;
        assert_eq!(r.status, 200, "reload: {}", r.body);
    }

    /// Registers an agent with `keys` and `ceiling`; asserts 201.
    pub async fn register_agent(
        &self,
        id: &str,
        ceiling: &[&str],
        max_stage: &str,
        keys: &[&TestKey],
    ) -> Value {
        let body = json!({
            "id": id, "name": id, "owner": "erin@example.com", "description": "test agent",
            "ceiling": ceiling, "max_stage": max_stage,
            "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>(),
        });
        let r = self.admin_post("/v1/agents", &body).await;
        r.expect(201);
        r.body
    }

    /// Whether `/healthz` answers 200.
    pub async fn healthy(&self) -> bool {
        self.send(self.http.get(self.at("/healthz"))).await.status == 200
    }
}

/// A token-exchange form for `subject` and `scope` on [`CRM`], plus `extra` fields.
pub fn exchange_form(
    subject: &str,
    subject_type: &str,
    scope: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut f = vec![
        ("grant_type".to_owned(), TOKEN_EXCHANGE.to_owned()),
        ("subject_token".to_owned(), subject.to_owned()),
        ("subject_token_type".to_owned(), subject_type.to_owned()),
        ("scope".to_owned(), scope.to_owned()),
        ("resource".to_owned(), CRM.to_owned()),
    ];
    f.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    f
}

/// `form` without the fields named in `drop`.
pub fn without(form: Vec<(String, String)>, drop: &[&str]) -> Vec<(String, String)> {
    form.into_iter()
        .filter(|(k, _)| !drop.contains(&k.as_str()))
        .collect()
}

/// A space-separated scope as a sorted list.
pub fn scopes(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
    v.sort();
    v
}

/// Whether every scope of `inner` is in `outer`.
pub fn subset(inner: &str, outer: &str) -> bool {
    let outer = scopes(outer);
    scopes(inner).iter().all(|s| outer.contains(s))
}
