//! Registered agents: owned, non-human identities (SPEC §1).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::AgentId;
use crate::scope::PatternSet;
use crate::stage::Stage;

/// An agent's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// May obtain tokens.
    Active,
    /// Temporarily refused; can be resumed.
    Suspended,
    /// Permanently refused.
    Retired,
}

impl AgentStatus {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::Suspended => "suspended",
            AgentStatus::Retired => "retired",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<AgentStatus> {
        match s {
            "active" => Some(AgentStatus::Active),
            "suspended" => Some(AgentStatus::Suspended),
            "retired" => Some(AgentStatus::Retired),
            _ => None,
        }
    }
}

/// A public key registered for an agent's `private_key_jwt` client assertions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentKey {
    /// The key id (`kid` of the JWK and of the assertions it signs).
    pub kid: String,
    /// The public JWK.
    pub jwk: Value,
    /// When the key stops being accepted (seconds since the epoch), if ever.
    pub expires_at: Option<i64>,
    /// When it was registered.
    pub created_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

impl AgentKey {
    /// Whether the key may prove the agent at `now`.
    pub fn usable_at(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    /// Slug id.
    pub id: AgentId,
    /// Display name.
    pub name: String,
    /// The accountable human (required).
    pub owner: String,
    /// What the agent is for.
    pub description: String,
    /// The most scopes it may ever hold.
    pub ceiling: PatternSet,
    /// Labels policies can test (`principal.tags.contains("pii")`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The highest stage it may act in without an approval.
    pub max_stage: Stage,
    /// Lifecycle state.
    pub status: AgentStatus,
    /// Registered public keys.
    pub keys: Vec<AgentKey>,
    /// Workload identities that prove this agent without a registered key (SPEC §3): SPIFFE IDs
    /// and OIDC workload issuers' subjects.
    #[serde(default)]
    pub workloads: Vec<WorkloadBinding>,
    /// Whether every token issued to this agent must be DPoP-bound (RFC 9449): a token request
    /// without a DPoP proof is refused.
    #[serde(default)]
    pub require_dpop: bool,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

/// A workload identity bound to an agent: the credential its platform already gives every running
/// instance. The token and audit event of a request record which instance it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkloadBinding {
    /// A SPIFFE JWT-SVID whose `sub` matches `id`: an exact SPIFFE ID
    /// (`spiffe://prod.example/ns/support/sa/agent`) or a pattern in which a `*` path segment
    /// matches one segment and a final `**` matches one or more.
    Spiffe {
        /// The SPIFFE ID or pattern.
        id: String,
    },
    /// A JWT from a configured OIDC workload issuer (a Kubernetes service-account token, a CI
    /// OIDC token) whose `iss` is `issuer` and whose `sub` matches `subject` (exact, or a pattern
    /// ending in `*` that matches any suffix).
    Oidc {
        /// The issuer, exactly as in the token's `iss`.
        issuer: String,
        /// The subject or subject pattern.
        subject: String,
    },
}

/// The longest SPIFFE ID, issuer or subject accepted (the SPIFFE ID standard's limit).
const MAX_WORKLOAD_NAME: usize = 2048;

impl WorkloadBinding {
    /// Checks the binding is well formed: a SPIFFE ID (or pattern) with a trust domain and a
    /// path, or an `https` issuer and a non-empty subject.
    pub fn check(&self) -> Result<(), String> {
        match self {
            WorkloadBinding::Spiffe { id } => {
                if id.len() > MAX_WORKLOAD_NAME || id.chars().any(char::is_control) {
                    return Err("a SPIFFE ID is at most 2048 printable characters".to_owned());
                }
                let Some((domain, path)) = spiffe_parts(id) else {
                    return Err(format!(
                        "`{id}` is not a SPIFFE ID: write `spiffe://<trust domain>/<path>`"
                    ));
                };
                if domain.contains('*') {
                    return Err(format!(
                        "`{id}`: the trust domain cannot be a pattern, only path segments"
                    ));
                }
                let segs: Vec<&str> = path.split('/').collect();
                for (i, seg) in segs.iter().enumerate() {
                    if seg.is_empty() || *seg == "." || *seg == ".." {
                        return Err(format!(
                            "`{id}`: empty, `.` and `..` path segments are not allowed"
                        ));
                    }
                    if *seg == "**" && i + 1 != segs.len() {
                        return Err(format!("`{id}`: `**` may only be the last segment"));
                    }
                    if seg.contains('*') && *seg != "*" && *seg != "**" {
                        return Err(format!("`{id}`: `*` must be a whole path segment"));
                    }
                }
                Ok(())
            }
            WorkloadBinding::Oidc { issuer, subject } => {
                if issuer.len() > MAX_WORKLOAD_NAME
                    || subject.len() > MAX_WORKLOAD_NAME
                    || issuer.chars().chain(subject.chars()).any(char::is_control)
                {
                    return Err(
                        "an issuer or subject is at most 2048 printable characters".to_owned()
                    );
                }
                if !issuer.starts_with("https://") && !issuer.starts_with("http://") {
                    return Err(format!("issuer `{issuer}` must be an `https` URL"));
                }
                if subject.is_empty() || subject == "*" {
                    return Err(format!(
                        "subject `{subject}` would match every workload of `{issuer}`: name one"
                    ));
                }
                if subject.find('*').is_some_and(|i| i + 1 != subject.len()) {
                    return Err(format!("subject `{subject}`: `*` may only end the pattern"));
                }
                Ok(())
            }
        }
    }

    /// Whether a verified SPIFFE ID matches this binding.
    pub fn matches_spiffe(&self, spiffe_id: &str) -> bool {
        let WorkloadBinding::Spiffe { id } = self else {
            return false;
        };
        let (Some((want_domain, want_path)), Some((domain, path))) =
            (spiffe_parts(id), spiffe_parts(spiffe_id))
        else {
            return false;
        };
        if want_domain != domain {
            return false;
        }
        let want: Vec<&str> = want_path.split('/').collect();
        let got: Vec<&str> = path.split('/').collect();
        if got.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
            return false;
        }
        for (i, w) in want.iter().enumerate() {
            match *w {
                "**" => return got.len() > i,
                "*" if i < got.len() => {}
                w if got.get(i) == Some(&w) => {}
                _ => return false,
            }
        }
        want.len() == got.len()
    }

    /// Whether a verified OIDC workload token's `iss` and `sub` match this binding.
    pub fn matches_oidc(&self, iss: &str, sub: &str) -> bool {
        let WorkloadBinding::Oidc { issuer, subject } = self else {
            return false;
        };
        if issuer != iss || sub.is_empty() {
            return false;
        }
        match subject.strip_suffix('*') {
            Some(prefix) => sub.starts_with(prefix) && sub.len() > prefix.len(),
            None => subject == sub,
        }
    }
}

/// The trust domain and path of `spiffe://<domain>/<path>` (both non-empty), or `None`.
fn spiffe_parts(id: &str) -> Option<(&str, &str)> {
    let rest = id.strip_prefix("spiffe://")?;
    let (domain, path) = rest.split_once('/')?;
    let domain_ok = !domain.is_empty()
        && domain.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_' | '*')
        });
    (domain_ok && !path.is_empty()).then_some((domain, path))
}

impl Agent {
    /// The key with `kid`, if registered and usable at `now`.
    pub fn usable_key(&self, kid: &str, now: i64) -> Option<&AgentKey> {
        self.keys.iter().find(|k| k.kid == kid && k.usable_at(now))
    }
}

#[cfg(test)]
mod workload_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::WorkloadBinding;

    fn spiffe(id: &str) -> WorkloadBinding {
        WorkloadBinding::Spiffe { id: id.to_owned() }
    }

    #[test]
    fn spiffe_patterns_match_whole_segments_in_one_trust_domain() {
        let exact = spiffe("spiffe://prod.example/ns/support/sa/agent");
        assert!(exact.matches_spiffe("spiffe://prod.example/ns/support/sa/agent"));
        assert!(!exact.matches_spiffe("spiffe://prod.example/ns/support/sa/agent/x"));
        assert!(!exact.matches_spiffe("spiffe://evil.example/ns/support/sa/agent"));
        let one = spiffe("spiffe://prod.example/ns/*/sa/agent");
        assert!(one.matches_spiffe("spiffe://prod.example/ns/blue/sa/agent"));
        assert!(!one.matches_spiffe("spiffe://prod.example/ns/a/b/sa/agent"));
        let rest = spiffe("spiffe://prod.example/agents/support/**");
        assert!(rest.matches_spiffe("spiffe://prod.example/agents/support/pod/7"));
        assert!(!rest.matches_spiffe("spiffe://prod.example/agents/support"));
        assert!(!rest.matches_spiffe("spiffe://prod.example/agents/support/../admin"));
        assert!(!rest.matches_spiffe("spiffe://prod.example/agents/supportx/1"));
    }

    #[test]
    fn malformed_bindings_are_refused() {
        for bad in [
            "spiffe://prod.example",
            "spiffe://*.example/x",
            "spiffe://prod.example/a/**/b",
            "spiffe://prod.example/a*",
            "spiffe://prod.example//a",
            "spiffe://prod.example/../a",
            "https://prod.example/a",
        ] {
            assert!(spiffe(bad).check().is_err(), "{bad}");
        }
        assert!(spiffe("spiffe://prod.example/a/*/**").check().is_ok());
        let oidc = |i: &str, s: &str| WorkloadBinding::Oidc {
            issuer: i.to_owned(),
            subject: s.to_owned(),
        };
        assert!(oidc("https://k8s.example", "*").check().is_err());
        assert!(oidc("https://k8s.example", "a*b").check().is_err());
        assert!(oidc("k8s", "system:serviceaccount:a:b").check().is_err());
        let ci = oidc("https://ci.example", "repo:acme/support:*");
        assert!(ci.check().is_ok());
        assert!(ci.matches_oidc("https://ci.example", "repo:acme/support:ref:main"));
        assert!(!ci.matches_oidc("https://ci.example", "repo:acme/supporter:x"));
        assert!(!ci.matches_oidc("https://other.example", "repo:acme/support:x"));
    }
}
