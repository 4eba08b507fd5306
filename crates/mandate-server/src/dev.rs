//! `--dev`: a throwaway world to try Mandate in — the built-in test IdP, the demo users, groups
//! and agents of SPEC §10, with the agents' private keys written to the data directory.

use std::path::Path;

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

/// The built-in test identity provider.
pub struct DevIdp {
    /// Its issuer URL (`<mandate>/dev-idp`).
    pub issuer: String,
    /// The audience its tokens carry (Mandate's issuer).
    pub audience: String,
    key: SigningKey,
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
