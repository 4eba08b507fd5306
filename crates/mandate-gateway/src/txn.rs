//! The Transaction Token the gateway forwards upstream instead of the agent's token
//! (draft-ietf-oauth-transaction-tokens; SPEC §6: "never the agent's own token").
//!
//! The upstream learns who the action is for and who is doing it — user, agent chain, task,
//! purpose, action, resource — from a short-lived JWT (`typ: txntoken+jwt`) signed with Mandate's
//! keys, which it verifies with Mandate's JWKS. The agent's token, which could be replayed
//! elsewhere, never leaves the gateway.
//!
//! This module builds the claims; signing is the caller's (one key ring, one signing path).

use mandate_core::chain::DelegationChain;
use mandate_core::claims::{AccessClaims, SubProfile};
use serde::Serialize;

/// The JWS `typ` of a Transaction Token.
pub const TYP: &str = "txntoken+jwt";

/// The HTTP header that carries it upstream.
pub const HEADER: &str = "txn-token";

/// The longest a Transaction Token lives, seconds: it covers one upstream call.
pub const MAX_LIFETIME: i64 = 60;

/// What the gateway knows about the request when it forwards it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The verified access token's claims.
    pub token: &'a AccessClaims,
    /// Its delegation chain.
    pub chain: &'a DelegationChain,
    /// The scope the request needs (the route's or the MCP tool's).
    pub action: &'a str,
    /// The resource it touches, e.g. `customers/9821`.
    pub resource: &'a str,
    /// The task's purpose, if known.
    pub purpose: Option<&'a str>,
    /// The HTTP method.
    pub method: &'a str,
    /// The client's address, if known.
    pub client_ip: Option<String>,
    /// Mandate's issuer URL (`iss`).
    pub issuer: &'a str,
    /// The trust domain (`aud`), e.g. the upstream's name.
    pub trust_domain: &'a str,
    /// The gateway's own name (`req_wl`).
    pub gateway: &'a str,
    /// A unique id for this transaction (`txn`), also written to the audit event.
    pub txn: &'a str,
    /// Now, seconds since the epoch.
    pub now: i64,
    /// For a held write sent after approval: who approved it. The approval, not the agent's
    /// token, authorizes this one send, so the Transaction Token may outlive that token.
    pub approver: Option<&'a str>,
}

/// The request context (`rctx`): where the request came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestContext {
    /// The client's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub req_ip: Option<String>,
    /// The HTTP method.
    pub method: String,
    /// How the agent authenticated to Mandate at the last hop (`kid:…`).
    pub authn: String,
}

/// The transaction context (`tctx`): what stays true along the call chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransactionContext {
    /// The user the action is for, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The user's identity provider, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_iss: Option<String>,
    /// The agents, earliest first.
    pub agents: Vec<String>,
    /// The task.
    pub task: String,
    /// The task's purpose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The stage of the agent's token.
    pub stage: String,
    /// The action (scope) this request needs.
    pub action: String,
    /// The resource it touches.
    pub resource: String,
    /// The `jti` of the agent's token (an id, never the token), to join audit trails.
    pub token_jti: String,
    /// Who approved this request, for a held write sent after approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
}

/// The claims of a Transaction Token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TxnClaims {
    /// Mandate's issuer URL.
    pub iss: String,
    /// Issued at.
    pub iat: i64,
    /// The trust domain.
    pub aud: String,
    /// Expiry: at most [`MAX_LIFETIME`] seconds, and never after the agent's token.
    pub exp: i64,
    /// The transaction id.
    pub txn: String,
    /// The principal: the user's `sub`, or `agent:<id>` for an agent's own token.
    pub sub: String,
    /// The one scope this transaction needs.
    pub scope: String,
    /// The workload that asked for it: the gateway.
    pub req_wl: String,
    /// Where the request came from.
    pub rctx: RequestContext,
    /// What the transaction is.
    pub tctx: TransactionContext,
}

/// Builds the Transaction Token's claims for `req`.
pub fn claims(req: &Request<'_>) -> TxnClaims {
    let t = req.token;
    let user = (t.sub_profile == SubProfile::User).then(|| t.sub.clone());
    TxnClaims {
        iss: req.issuer.to_owned(),
        iat: req.now,
        aud: req.trust_domain.to_owned(),
        exp: match req.approver {
            Some(_) => req.now + MAX_LIFETIME,
            None => (req.now + MAX_LIFETIME).min(t.exp),
        },
        txn: req.txn.to_owned(),
        sub: t.sub.clone(),
        scope: req.action.to_owned(),
        req_wl: req.gateway.to_owned(),
        rctx: RequestContext {
            req_ip: req.client_ip.clone(),
            method: req.method.to_ascii_uppercase(),
            authn: t.credential.clone(),
        },
        tctx: TransactionContext {
            user_iss: user.as_ref().and(t.sub_iss.clone()),
            user,
            agents: req.chain.agent_ids(),
            task: t.task.clone(),
            purpose: req.purpose.map(str::to_owned),
            stage: t.stage.as_str().to_owned(),
            action: req.action.to_owned(),
            resource: req.resource.to_owned(),
            token_jti: t.jti.clone(),
            approver: req.approver.map(str::to_owned),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use mandate_token::sign::sign_jwt;
    use mandate_token::verify::{AudCheck, ClaimChecks, KeySet, VerifyingKey, verify};
    use mandate_token::{Alg, SigningKey};
    use serde_json::json;

    use super::*;

    fn access_claims() -> AccessClaims {
        serde_json::from_value(json!({
            "iss": "https://mandate.example", "sub": "alice@example.com", "sub_profile": "user",
            "sub_iss": "https://idp.example", "aud": "https://crm.example", "client_id": "analytics-v1",
            "iat": 1_800_000_000, "nbf": 1_800_000_000, "exp": 1_800_000_030, "jti": "j-1",
            "scope": "crm.customers:read", "task": "ticket-12847", "stage": "observe",
            "credential": "kid:analytics-v1-k1",
            "act": {"sub": "agent:analytics-v1", "sub_profile": "agent", "credential": "kid:analytics-v1-k1",
                "act": {"sub": "agent:support-v2", "sub_profile": "agent", "credential": "kid:support-v2-k1"}},
        }))
        .unwrap()
    }

    fn request<'a>(t: &'a AccessClaims, chain: &'a DelegationChain) -> Request<'a> {
        Request {
            token: t,
            chain,
            action: "crm.customers:read",
            resource: "customers/9821",
            purpose: Some("answer the customer"),
            method: "get",
            client_ip: Some("127.0.0.1".into()),
            issuer: "https://mandate.example",
            trust_domain: "crm",
            gateway: "mandate-gateway",
            txn: "txn-1",
            now: 1_800_000_010,
            approver: None,
        }
    }

    #[test]
    fn the_claims_name_user_chain_task_action_and_resource() {
        let t = access_claims();
        let chain = t.chain().unwrap();
        let c = claims(&request(&t, &chain));
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({
                "iss": "https://mandate.example", "iat": 1_800_000_010, "aud": "crm",
                "exp": 1_800_000_030, "txn": "txn-1", "sub": "alice@example.com",
                "scope": "crm.customers:read", "req_wl": "mandate-gateway",
                "rctx": {"req_ip": "127.0.0.1", "method": "GET", "authn": "kid:analytics-v1-k1"},
                "tctx": {
                    "user": "alice@example.com", "user_iss": "https://idp.example",
                    "agents": ["support-v2", "analytics-v1"], "task": "ticket-12847",
                    "purpose": "answer the customer", "stage": "observe",
                    "action": "crm.customers:read", "resource": "customers/9821", "token_jti": "j-1",
                },
            })
        );
    }

    #[test]
    fn it_never_outlives_a_minute_nor_the_agents_token() {
        let mut t = access_claims();
        let chain = t.chain().unwrap();
        t.exp = 1_800_009_999;
        assert_eq!(
            claims(&request(&t, &chain)).exp,
            1_800_000_010 + MAX_LIFETIME
        );
        t.exp = 1_800_000_011;
        assert_eq!(claims(&request(&t, &chain)).exp, 1_800_000_011);
    }

    #[test]
    fn an_agents_own_token_has_no_user() {
        let mut t = access_claims();
        t.sub = "agent:support-v2".into();
        t.sub_profile = SubProfile::Agent;
        t.act = None;
        t.client_id = "support-v2".into();
        let chain = t.chain().unwrap();
        let c = claims(&request(&t, &chain));
        assert_eq!(c.sub, "agent:support-v2");
        assert_eq!(c.tctx.user, None);
        assert_eq!(c.tctx.user_iss, None);
        assert_eq!(c.tctx.agents, ["support-v2"]);
    }

    #[test]
    fn signed_it_verifies_as_a_txn_token_with_the_issuers_keys() {
        let key = SigningKey::generate(Alg::EdDSA).unwrap();
        let keys = KeySet::new(vec![VerifyingKey::from_jwk(key.public_jwk()).unwrap()]);
        let t = access_claims();
        let chain = t.chain().unwrap();
        let jwt = sign_jwt(&key, TYP, &claims(&request(&t, &chain))).unwrap();
        let aud = vec!["crm".to_owned()];
        let checks = ClaimChecks {
            now: 1_800_000_020,
            leeway: 0,
            issuer: Some("https://mandate.example"),
            audience: AudCheck::OneOf(&aud),
            typ: Some(TYP),
            max_lifetime: Some(MAX_LIFETIME),
            require_iat: true,
        };
        let v = verify(&jwt, &keys, &checks).unwrap();
        assert_eq!(v.header.typ.as_deref(), Some(TYP));
        assert_eq!(
            v.claims["tctx"]["agents"],
            json!(["support-v2", "analytics-v1"])
        );
        // It is not an access token: a verifier that wants `at+jwt` refuses it.
        let as_access = ClaimChecks {
            typ: Some("at+jwt"),
            ..checks
        };
        assert!(verify(&jwt, &keys, &as_access).is_err());
    }
}
