//! `--dev`: a throwaway world to try Mandate in — the built-in test IdP, the demo users, groups
//! and agents of SPEC §10, with the agents' private keys written to the data directory.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mandate_core::agent::{Agent, AgentKey, AgentStatus};
use mandate_core::audit::{Decision, NewEvent};
use mandate_core::ids::AgentId;
use mandate_core::scope::PatternSet;
use mandate_core::stage::Stage;
use mandate_store::{Op, Store};
use mandate_token::sign::sign_jwt;
use mandate_token::verify::VerifyingKey;
use mandate_token::{Alg, KeySet, MasterKey, SealedKey, SigningKey};
use serde_json::{Value, json};

use crate::config::TrustedIssuerConfig;
use crate::files::write_private;

/// A demo user: subject, groups and region.
#[derive(Debug)]
pub struct DemoUser {
    /// The subject.
    pub sub: &'static str,
    /// Groups.
    pub groups: &'static [&'static str],
    /// The `region` claim of their tokens from the test IdP.
    pub region: &'static str,
}

/// The demo users of SPEC §10.
pub const DEMO_USERS: &[DemoUser] = &[
    DemoUser {
        sub: "alice@example.com",
        groups: &["support"],
        region: "emea",
    },
    DemoUser {
        sub: "bob@example.com",
        groups: &["finance"],
        region: "amer",
    },
    DemoUser {
        sub: "carol@example.com",
        groups: &["support", "approver"],
        region: "emea",
    },
];

impl DemoUser {
    /// The user's region, if they have one (an empty `region` means none).
    pub fn region(&self) -> Option<&'static str> {
        Some(self.region).filter(|r| !r.is_empty())
    }

    /// The user's groups, owned.
    pub fn group_list(&self) -> Vec<String> {
        self.groups.iter().map(|g| (*g).to_owned()).collect()
    }
}

/// The test IdP's built-in operator, who signs in to the console as an admin (group `admin`).
/// Not a demo user of SPEC §10: [`demo_groups`] and [`demo_region`] do not know it, and it has
/// no region.
pub static DEV_ADMIN: DemoUser = DemoUser {
    sub: "admin@example.com",
    groups: &["admin"],
    region: "",
};

/// Everyone who can sign in at the test IdP's sign-in page: the demo users, then [`DEV_ADMIN`].
pub fn sign_in_users() -> impl Iterator<Item = &'static DemoUser> {
    DEMO_USERS.iter().chain(std::iter::once(&DEV_ADMIN))
}

/// The user of the test IdP's sign-in page whose subject is exactly `sub`.
pub fn sign_in_user(sub: &str) -> Option<&'static DemoUser> {
    sign_in_users().find(|u| u.sub == sub)
}

/// `tokens.carry_claims` in `--dev` when not configured: the demo users' `region`.
pub const DEV_CARRY_CLAIMS: &[&str] = &["region"];

/// The demo world's policies (SPEC §10), written to `<data>/policies/demo.cedar` in `--dev`.
pub const DEMO_POLICIES: &str = r#"// Mandate demo world (SPEC §10). Edit and save: the server reloads this directory.

@id("support-group")
permit(
  principal in Group::"support",
  action in [Action::"crm.customers:read", Action::"tickets:read", Action::"tickets:create",
             Action::"email:send", Action::"mcp.crm.lookup_customer:call"],
  resource
);

@id("admin-group")
permit(principal in Group::"admin", action == Action::"mcp.crm.delete_customer:call", resource);

@id("finance-group")
permit(
  principal in Group::"finance",
  action in [Action::"billing.invoices:read", Action::"billing.payments:create",
             Action::"crm.customers:read"],
  resource
);

// A workflow restricted to a user tier: payments need a gold-tier user, whatever the group.
@id("payments-need-gold-tier")
forbid(principal is User, action == Action::"billing.payments:create", resource)
unless { principal.hasTag("tier") && principal.getTag("tier") == "gold" };

// A record-level rule, enforced at the gateway: where a customer's region is known (the route
// `/regions/{region}/customers/{id}` names it), a user reads only customers of their own region.
@id("customers-of-own-region")
forbid(principal is User, action == Action::"crm.customers:read", resource)
when { resource.hasTag("region") &&
       !(principal.hasTag("region") && principal.getTag("region") == resource.getTag("region")) };

// support-v2's own, autonomous work.
@id("support-v2-own-work")
permit(principal == Agent::"support-v2", action == Action::"tickets:read", resource);

// Who may hand a user's delegation on to whom.
@id("support-v2-delegates-to-analytics-v1")
permit(principal == Agent::"support-v2", action == Action::"delegate", resource == Agent::"analytics-v1");
"#;

/// Writes the demo policies into `dir` unless it already holds policy files.
pub fn seed_policies(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("`{}`: {e}", dir.display()))?;
    let has_any = std::fs::read_dir(dir)
        .map_err(|e| format!("`{}`: {e}", dir.display()))?
        .filter_map(Result::ok)
        .any(|e| e.path().extension().is_some_and(|x| x == "cedar"));
    if !has_any {
        std::fs::write(dir.join("demo.cedar"), DEMO_POLICIES)
            .map_err(|e| format!("`{}`: {e}", dir.display()))?;
    }
    Ok(())
}

fn demo_user(sub: &str) -> Option<&'static DemoUser> {
    DEMO_USERS
        .iter()
        .find(|u| u.sub == sub || u.sub.split('@').next() == Some(sub))
}

/// The groups a demo user has, by full subject or by the part before `@`.
pub fn demo_groups(sub: &str) -> Option<Vec<String>> {
    demo_user(sub).map(|u| u.groups.iter().map(|g| (*g).to_owned()).collect())
}

/// The region a demo user has, by full subject or by the part before `@`.
pub fn demo_region(sub: &str) -> Option<&'static str> {
    demo_user(sub).map(|u| u.region)
}

/// How long an authorization code of the test IdP stays valid, in seconds.
pub const CODE_TTL: i64 = 60;
/// Most authorization codes outstanding at once; past it, sign-ins are refused until some are
/// used or expire.
pub const MAX_CODES: usize = 1000;
/// Lifetime of the ID and access tokens the test IdP's token endpoint issues, in seconds.
pub const OIDC_TOKEN_TTL: i64 = 300;

/// What an authorization code of the test IdP stands for (see `dev_oidc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeGrant {
    /// The client it was issued to.
    pub client_id: String,
    /// The redirect URI of the authorization request.
    pub redirect_uri: String,
    /// The PKCE `code_challenge` (S256).
    pub code_challenge: String,
    /// The `nonce` to echo in the ID token.
    pub nonce: String,
    /// The subject of the user who signed in.
    pub sub: String,
    /// When the user signed in (Unix seconds).
    pub auth_time: i64,
}

/// Why the test IdP could not issue an authorization code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeError {
    /// [`MAX_CODES`] are outstanding.
    Full,
    /// The system random source failed.
    Random,
}

/// The built-in test identity provider.
pub struct DevIdp {
    /// Its issuer URL (`<mandate>/dev-idp`).
    pub issuer: String,
    /// The audience its tokens carry (Mandate's issuer).
    pub audience: String,
    key: SigningKey,
    /// Outstanding authorization codes with their expiry.
    codes: Mutex<HashMap<String, (CodeGrant, i64)>>,
}

impl DevIdp {
    /// Loads the IdP key from `dir/dev-idp.key` (sealed), creating it on first use.
    pub fn load_or_create(
        dir: &Path,
        master: &MasterKey,
        mandate_issuer: &str,
    ) -> Result<DevIdp, String> {
        let path = dir.join("dev-idp.key");
        let key = if path.exists() {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("`{}`: {e}", path.display()))?;
            let v: Value =
                serde_json::from_str(&text).map_err(|e| format!("`{}`: {e}", path.display()))?;
            let sealed = SealedKey {
                kid: v["kid"].as_str().unwrap_or_default().to_owned(),
                alg: Alg::EdDSA,
                public_jwk: v["public_jwk"].clone(),
                sealed_private: STANDARD
                    .decode(v["sealed"].as_str().unwrap_or_default())
                    .map_err(|_| format!("`{}` is damaged", path.display()))?,
            };
            SigningKey::unseal(&sealed, master).map_err(|e| e.to_string())?
        } else {
            let key = SigningKey::generate(Alg::EdDSA).map_err(|e| e.to_string())?;
            let sealed = key.seal(master).map_err(|e| e.to_string())?;
            let doc = json!({"kid": sealed.kid, "public_jwk": sealed.public_jwk, "sealed": STANDARD.encode(&sealed.sealed_private)});
            write_private(&path, doc.to_string().as_bytes())
                .map_err(|e| format!("`{}`: {e}", path.display()))?;
            key
        };
        Ok(DevIdp {
            issuer: format!("{mandate_issuer}/dev-idp"),
            audience: mandate_issuer.to_owned(),
            key,
            codes: Mutex::new(HashMap::new()),
        })
    }

    /// The trusted-issuer entry for this IdP.
    pub fn trusted_issuer(&self) -> (TrustedIssuerConfig, KeySet) {
        let keys = KeySet::new(
            VerifyingKey::from_jwk(self.key.public_jwk())
                .into_iter()
                .collect(),
        );
        (
            TrustedIssuerConfig {
                name: "dev".into(),
                issuer: self.issuer.clone(),
                audiences: vec![self.audience.clone()],
                jwks_url: None,
                jwks_file: None,
                user_claim: "sub".into(),
                groups_claim: "groups".into(),
            },
            keys,
        )
    }

    /// The JWKS of the test IdP.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.key.public_jwk()]})
    }

    /// The JOSE algorithm of the IdP's signing key (e.g. `EdDSA`).
    pub fn alg(&self) -> &'static str {
        self.key.alg().as_str()
    }

    fn codes(&self) -> MutexGuard<'_, HashMap<String, (CodeGrant, i64)>> {
        match self.codes.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Issues a one-time authorization code for `grant`, valid [`CODE_TTL`] seconds. Expired
    /// codes are purged first; with [`MAX_CODES`] still outstanding, none is issued.
    pub fn issue_code(&self, grant: CodeGrant, now: i64) -> Result<String, CodeError> {
        let code = mandate_token::random_id::<24>().map_err(|_| CodeError::Random)?;
        let mut codes = self.codes();
        codes.retain(|_, (_, exp)| *exp > now);
        if codes.len() >= MAX_CODES {
            return Err(CodeError::Full);
        }
        codes.insert(code.clone(), (grant, now + CODE_TTL));
        Ok(code)
    }

    /// Takes `code` out of the store (a code is used once, whatever comes of it); `None` when it
    /// is unknown, already used or expired.
    pub fn take_code(&self, code: &str, now: i64) -> Option<CodeGrant> {
        let (grant, exp) = self.codes().remove(code)?;
        (exp > now).then_some(grant)
    }

    /// Mints an OpenID Connect ID token for `user`, for the client `audience`, valid
    /// [`OIDC_TOKEN_TTL`] seconds: `iss`, `sub`, `aud`, `iat`, `exp`, `auth_time`, `nonce`,
    /// `groups`, and `region` where the user has one.
    pub fn id_token(
        &self,
        user: &DemoUser,
        audience: &str,
        nonce: &str,
        auth_time: i64,
        now: i64,
    ) -> Result<String, String> {
        let mut claims = json!({
            "iss": self.issuer,
            "sub": user.sub,
            "aud": audience,
            "iat": now,
            "exp": now + OIDC_TOKEN_TTL,
            "auth_time": auth_time,
            "nonce": nonce,
            "groups": user.groups,
        });
        if let (Some(region), Some(obj)) = (user.region(), claims.as_object_mut()) {
            obj.insert("region".into(), json!(region));
        }
        sign_jwt(&self.key, "JWT", &claims).map_err(|e| e.to_string())
    }

    /// Mints a user token. A negative `ttl` gives an already-expired token.
    pub fn user_token(
        &self,
        sub: &str,
        groups: &[String],
        ttl: i64,
        now: i64,
    ) -> Result<String, String> {
        self.user_token_with(sub, groups, ttl, now, &serde_json::Map::new())
    }

    /// Mints a user token with extra claims (e.g. `{"tier": "gold"}`), which policies read as
    /// the user's tags. Registered claims cannot be overridden this way.
    pub fn user_token_with(
        &self,
        sub: &str,
        groups: &[String],
        ttl: i64,
        now: i64,
        extra: &serde_json::Map<String, Value>,
    ) -> Result<String, String> {
        let iat = if ttl < 0 { now + ttl - 60 } else { now };
        let mut claims = extra.clone();
        for (k, v) in [
            ("iss", json!(self.issuer)),
            ("sub", json!(sub)),
            ("aud", json!(self.audience)),
            ("iat", json!(iat)),
            ("nbf", json!(iat)),
            ("exp", json!(now + ttl)),
            ("groups", json!(groups)),
            (
                "jti",
                json!(mandate_token::random_id::<12>().map_err(|e| e.to_string())?),
            ),
        ] {
            claims.insert(k.to_owned(), v);
        }
        sign_jwt(&self.key, "JWT", &Value::Object(claims)).map_err(|e| e.to_string())
    }
}

struct DemoAgent {
    id: &'static str,
    name: &'static str,
    owner: &'static str,
    description: &'static str,
    ceiling: &'static [&'static str],
    max_stage: Stage,
}

const DEMO_AGENTS: &[DemoAgent] = &[
    DemoAgent {
        id: "support-v2",
        name: "Support assistant v2",
        owner: "carol@example.com",
        description: "answers support tickets: reads customers and tickets, drafts replies",
        ceiling: &[
            "crm.customers:read",
            "tickets:*",
            "email:send",
            "mcp.crm.*:call",
        ],
        max_stage: Stage::Draft,
    },
    DemoAgent {
        id: "analytics-v1",
        name: "Analytics v1",
        owner: "bob@example.com",
        description: "summarises customer and billing data; read-only",
        ceiling: &["crm.*:read", "billing.invoices:read"],
        max_stage: Stage::Observe,
    },
];

/// Registers the demo agents that are missing, each with a fresh Ed25519 key whose private JWK is
/// written to `dir/agents/<id>.jwk` (mode 0600).
pub async fn seed_agents(store: &dyn Store, dir: &Path, now: i64) -> Result<(), String> {
    let agents_dir = dir.join("agents");
    std::fs::create_dir_all(&agents_dir).map_err(|e| format!("`{}`: {e}", agents_dir.display()))?;
    for d in DEMO_AGENTS {
        if store
            .agent(d.id)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            continue;
        }
        let kid = format!("{}-k1", d.id);
        let key = SigningKey::generate(Alg::EdDSA)
            .map_err(|e| e.to_string())?
            .with_kid(&kid);
        let private = key
            .private_jwk()
            .ok_or("cannot export the demo agent key")?;
        write_private(
            &agents_dir.join(format!("{}.jwk", d.id)),
            private.as_bytes(),
        )
        .map_err(|e| format!("`{}`: {e}", agents_dir.display()))?;
        let agent = Agent {
            id: AgentId::parse(d.id).map_err(|e| e.to_string())?,
            name: d.name.into(),
            owner: d.owner.into(),
            description: d.description.into(),
            ceiling: PatternSet::parse(d.ceiling.iter().copied()).map_err(|e| e.to_string())?,
            tags: Vec::new(),
            max_stage: d.max_stage,
            status: AgentStatus::Active,
            keys: vec![AgentKey {
                kid,
                jwk: key.public_jwk().clone(),
                expires_at: None,
                created_at: now,
                revoked_at: None,
            }],
            workloads: Vec::new(),
            require_dpop: false,
            created_at: now,
            updated_at: now,
        };
        let event = NewEvent {
            kind: "agent.register".into(),
            chain: vec![d.id.into()],
            action: Some("agent.register".into()),
            resource: Some(format!("agent:{}", d.id)),
            decision: Some(Decision::Info),
            reason: "demo world (--dev)".into(),
            ..Default::default()
        };
        store
            .commit(vec![Op::InsertAgent(agent), Op::Audit(event)])
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
