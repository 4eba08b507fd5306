//! Mutual TLS with X.509-SVIDs (SPEC §3, RFC 8705 §2.1 `tls_client_auth`): `mandate serve`
//! with `[tls]`, a trust domain's X.509 authorities in `x509_bundle_file`, and agents bound to
//! SPIFFE IDs. Certificates are made here with `rcgen`; the clients are real rustls clients
//! (reqwest) presenting them.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::json;

use super::harness::*;
use mandate_server::config::{SpiffeTrustDomain, Tls};

const PROD: &str = "prod.example";
const SUPPORT_ID: &str = "spiffe://prod.example/ns/support/sa/agent";

/// A certificate authority.
struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca(CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap())
    }

    fn pem(&self) -> String {
        self.0.pem()
    }

    /// A leaf for `sans` with `eku`, valid from an hour ago for `valid_secs` from now.
    fn leaf(&self, sans: Vec<SanType>, eku: ExtendedKeyUsagePurpose, valid_secs: i64) -> Leaf {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "leaf");
        p.subject_alt_names = sans;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![eku];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::seconds(valid_secs);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.0).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// An X.509-SVID for `id`, valid for an hour.
    fn svid(&self, id: &str) -> Leaf {
        self.leaf(
            vec![SanType::URI(id.try_into().unwrap())],
            ExtendedKeyUsagePurpose::ClientAuth,
            3600,
        )
    }
}

struct Leaf {
    cert: String,
    key: String,
}

/// A `--dev` server with `[tls]` whose trust domain `prod.example` has X.509 authorities, and
/// `support-v2` bound to [`SUPPORT_ID`].
struct World {
    srv: Server,
    server_ca: Ca,
    prod: Ca,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server CA");
    let tls = server_ca.leaf(
        vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::DnsName("localhost".try_into().unwrap()),
        ],
        ExtendedKeyUsagePurpose::ServerAuth,
        3600,
    );
    let prod = Ca::new("prod.example X.509 authority");
    let (cert_file, key_file, bundle) = (
        dir.path().join("server.pem"),
        dir.path().join("server.key"),
        dir.path().join("prod.example.x509.pem"),
    );
    std::fs::write(&cert_file, &tls.cert).unwrap();
    std::fs::write(&key_file, &tls.key).unwrap();
    std::fs::write(&bundle, prod.pem()).unwrap();
    let mut srv = Server::start_configured(|c| {
        c.tls = Some(Tls {
            cert_file,
            key_file,
        });
        c.workload.spiffe = vec![SpiffeTrustDomain {
            trust_domain: PROD.into(),
            bundle_file: None,
            bundle_endpoint: None,
            x509_bundle_file: Some(bundle),
        }];
    })
    .await;
    assert!(srv.url.starts_with("https://127.0.0.1:"), "{}", srv.url);
    // The harness's own requests: TLS, no client certificate.
    srv.http = client(&server_ca, None);
    srv.admin_patch(
        "/v1/agents/support-v2",
        &json!({"workloads": [{"kind": "spiffe", "id": SUPPORT_ID}]}),
    )
    .await;
    World {
        srv,
        server_ca,
        prod,
        _dir: dir,
    }
}

/// A rustls client trusting `ca`, presenting `identity` when given.
fn client(ca: &Ca, identity: Option<&Leaf>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()]);
    if let Some(leaf) = identity {
        let pem = format!("{}{}", leaf.cert, leaf.key);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

fn cc_form() -> Vec<(String, String)> {
    vec![
        ("grant_type".into(), "client_credentials".into()),
        ("scope".into(), "tickets:read".into()),
        ("resource".into(), CRM.into()),
    ]
}

impl World {
    async fn post(&self, with: &reqwest::Client, path: &str, form: &[(String, String)]) -> Reply {
        self.srv.send(with.post(self.srv.at(path)).form(form)).await
    }

    /// Whether a TLS connection presenting `leaf` is refused in the handshake.
    async fn handshake_refused(&self, leaf: &Leaf) -> bool {
        let c = client(&self.server_ca, Some(leaf));
        c.post(self.srv.at("/oauth2/token"))
            .form(&cc_form())
            .send()
            .await
            .is_err()
    }
}

#[tokio::test]
async fn an_x509_svid_in_mutual_tls_proves_its_agent_without_any_assertion() {
    let w = world().await;
    let srv = &w.srv;
    let credential = format!("spiffe:{SUPPORT_ID}");
    let meta = srv
        .send(
            srv.http
                .get(srv.at("/.well-known/oauth-authorization-server")),
        )
        .await
        .body;
    assert_eq!(
        meta["token_endpoint_auth_methods_supported"],
        json!(["private_key_jwt", "tls_client_auth"])
    );
    let mtls = client(&w.server_ca, Some(&w.prod.svid(SUPPORT_ID)));

    // client_credentials with nothing but the certificate: the one agent bound to its ID.
    let r = w.post(&mtls, "/oauth2/token", &cc_form()).await;
    let token = r.access_token();
    let seen = srv.introspect(&token).await;
    assert_eq!(seen["client_id"], "support-v2", "{seen}");
    assert_eq!(seen["credential"], credential.as_str(), "{seen}");
    let e = srv.allow_event(&r).await;
    assert_eq!(e["credential"], credential.as_str(), "{e}");
    // With `client_id`, on the same connection again: not single-use.
    let mut form = cc_form();
    form.push(("client_id".into(), "support-v2".into()));
    w.post(&mtls, "/oauth2/token", &form).await.expect(200);

    // Token exchange on behalf of Alice: the actor names the instance.
    let form = exchange_form(&srv.alice(), TYPE_JWT, "crm.customers:read", &[]);
    let r = w.post(&mtls, "/oauth2/token", &form).await;
    let seen = srv.introspect(&r.access_token()).await;
    assert_eq!(seen["act"]["sub"], "agent:support-v2", "{seen}");
    assert_eq!(seen["act"]["credential"], credential.as_str(), "{seen}");

    // Introspection and revocation authenticate the agent the same way.
    let form = vec![("token".to_owned(), token.clone())];
    let r = w.post(&mtls, "/oauth2/introspect", &form).await;
    r.expect(200);
    assert_eq!(r.body["active"], true, "{}", r.body);
    w.post(&mtls, "/oauth2/revoke", &form).await.expect(200);
    assert!(!srv.active(&token).await);

    // A TLS client without a certificate still authenticates with its key…
    let support = srv.agent("support-v2");
    srv.token_as(&support, cc_form()).await.expect(200);
    // …and without either gets a clear refusal.
    let r = srv.token(&cc_form()).await;
    r.expect_oauth_error(401, "invalid_client");
    assert!(r.description().contains("X.509-SVID"), "{}", r.body);
    w.srv.shutdown().await;
}

#[tokio::test]
async fn unbound_foreign_expired_and_non_svid_certificates_are_refused() {
    let w = world().await;
    let srv = &w.srv;

    // A valid SVID of the trust domain that no agent is bound to.
    let other = client(
        &w.server_ca,
        Some(&w.prod.svid("spiffe://prod.example/ns/other")),
    );
    let r = w.post(&other, "/oauth2/token", &cc_form()).await;
    r.expect_oauth_error(401, "invalid_client");
    assert!(
        r.description()
            .contains("no active agent is bound to SPIFFE ID `spiffe://prod.example/ns/other`"),
        "{}",
        r.body
    );
    let mut form = cc_form();
    form.push(("client_id".into(), "support-v2".into()));
    let r = w.post(&other, "/oauth2/token", &form).await;
    r.expect_oauth_error(401, "invalid_client");
    assert!(
        r.description()
            .contains("is not bound to agent `support-v2`"),
        "{}",
        r.body
    );
    assert_eq!(srv.deny_event(&r).await["chain"], json!([]));

    // Refused in the handshake, before any request:
    // the bound ID, from an authority that is not prod.example's;
    let rogue = Ca::new("rogue");
    assert!(w.handshake_refused(&rogue.svid(SUPPORT_ID)).await);
    // prod.example's authority vouching for another trust domain's ID;
    assert!(
        w.handshake_refused(&w.prod.svid("spiffe://files.example/ns/support/sa/agent"))
            .await
    );
    // expired;
    let expired = w.prod.leaf(
        vec![SanType::URI(SUPPORT_ID.try_into().unwrap())],
        ExtendedKeyUsagePurpose::ClientAuth,
        -60,
    );
    assert!(w.handshake_refused(&expired).await);
    // not an SVID: no URI SAN, or two;
    let dns = w.prod.leaf(
        vec![SanType::DnsName("agent.prod.example".try_into().unwrap())],
        ExtendedKeyUsagePurpose::ClientAuth,
        3600,
    );
    assert!(w.handshake_refused(&dns).await);
    let two = w.prod.leaf(
        vec![
            SanType::URI(SUPPORT_ID.try_into().unwrap()),
            SanType::URI("spiffe://prod.example/ns/admin".try_into().unwrap()),
        ],
        ExtendedKeyUsagePurpose::ClientAuth,
        3600,
    );
    assert!(w.handshake_refused(&two).await);
    // a server certificate (no clientAuth usage).
    let server_only = w.prod.leaf(
        vec![SanType::URI(SUPPORT_ID.try_into().unwrap())],
        ExtendedKeyUsagePurpose::ServerAuth,
        3600,
    );
    assert!(w.handshake_refused(&server_only).await);

    // None of it touched the server: the bound SVID still works.
    let good = client(&w.server_ca, Some(&w.prod.svid(SUPPORT_ID)));
    w.post(&good, "/oauth2/token", &cc_form()).await.expect(200);
    // A plain-HTTP request to the TLS port is not served.
    let plain = reqwest::Client::new()
        .get(srv.at("/healthz").replace("https://", "http://"))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    w.srv.shutdown().await;
}
