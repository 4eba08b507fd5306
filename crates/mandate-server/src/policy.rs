//! The policy decision point as the server uses it: the last good Cedar policy set, reloaded on
//! file change or admin call (a bad set is refused, with file, line and reason, and the previous
//! one stays in force), and the `rights(U)` of issuance as Cedar decisions.
//!
//! Policies come from a directory of `*.cedar` files (`policies_dir`; in `--dev`,
//! `<data>/policies`, seeded with the demo world's policies), plus the `[rights]` table of
//! `mandate.toml`, which is shorthand for one `permit` per group and per agent.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use mandate_core::agent::Agent;
use mandate_core::grant::Permits;
use mandate_core::ids::UserPrincipal;
use mandate_core::scope::Scope;
use mandate_core::stage::Stage;
use mandate_policy::{Decision, DecisionContext, Engine, PolicyError, Principal, Request, Subject};
use serde_json::Value;

use crate::config::Rights;

/// Where policies come from.
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// The directory of `*.cedar` files, if any.
    pub dir: Option<PathBuf>,
    /// `[rights]` from the configuration, as Cedar text.
    pub rights: String,
}

/// The `[rights]` table as Cedar policies: one `permit` per group and per agent.
pub fn rights_as_cedar(rights: &Rights) -> String {
    let list = |scopes: &mandate_core::scope::PatternSet| {
        scopes
            .iter()
            .map(|s| format!("Action::\"{}\"", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    for (group, scopes) in &rights.groups {
        out.push_str(&format!(
            "@id(\"rights.groups.{group}\")\npermit(principal in Group::\"{group}\", action in [{}], resource);\n",
            list(scopes)
        ));
    }
    for (agent, scopes) in &rights.agents {
        out.push_str(&format!(
            "@id(\"rights.agents.{agent}\")\npermit(principal == Agent::\"{agent}\", action in [{}], resource);\n",
            list(scopes)
        ));
    }
    out
}

fn read_sources(source: &PolicySource) -> Result<Vec<(String, String)>, Vec<PolicyError>> {
    let mut files = Vec::new();
    if !source.rights.is_empty() {
        files.push(("mandate.toml [rights]".to_owned(), source.rights.clone()));
    }
    if let Some(dir) = &source.dir {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            vec![PolicyError {
                file: dir.display().to_string(),
                line: 0,
                message: format!("cannot read the policy directory: {e}"),
            }]
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
            .collect();
        paths.sort();
        for p in paths {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&p).map_err(|e| {
                vec![PolicyError {
                    file: name.clone(),
                    line: 0,
                    message: e.to_string(),
                }]
            })?;
            files.push((name, text));
        }
    }
    Ok(files)
}

/// A fingerprint of the policy directory: names, sizes and modification times.
fn fingerprint(source: &PolicySource) -> Vec<(String, u64, Option<SystemTime>)> {
    let Some(dir) = &source.dir else {
        return Vec::new();
    };
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cedar"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                m.len(),
                m.modified().ok(),
            ))
        })
        .collect();
    v.sort();
    v
}

/// The loaded policies and how to reload them.
pub struct PolicyPoint {
    source: PolicySource,
    engine: RwLock<Arc<Engine>>,
    /// The `(file, text)` sources of the set in force (written under the `engine` lock).
    sources: RwLock<Arc<Vec<(String, String)>>>,
    last_error: RwLock<Option<Vec<PolicyError>>>,
    seen: RwLock<Vec<(String, u64, Option<SystemTime>)>>,
}

impl PolicyPoint {
    /// Loads the policies; at start, a bad set is fatal.
    pub fn load(source: PolicySource) -> Result<PolicyPoint, Vec<PolicyError>> {
        let seen = fingerprint(&source);
        let files = read_sources(&source)?;
        let engine = mandate_policy::load_sources(&files, &BTreeSet::new())?;
        Ok(PolicyPoint {
            source,
            engine: RwLock::new(Arc::new(engine)),
            sources: RwLock::new(Arc::new(files)),
            last_error: RwLock::new(None),
            seen: RwLock::new(seen),
        })
    }

    /// The policies in force.
    pub fn engine(&self) -> Arc<Engine> {
        match self.engine.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The `(file name, text)` sources of the policies in force, the `[rights]` shorthand
    /// included as the pseudo-file `mandate.toml [rights]`: what the last successful load read
    /// (a refused reload leaves them as they were). Loading them with
    /// `mandate_policy::load_sources(&files, &BTreeSet::new())` gives the same set.
    pub fn sources(&self) -> Arc<Vec<(String, String)>> {
        match self.sources.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The errors of the last failed reload, if the last reload failed.
    pub fn last_error(&self) -> Option<Vec<PolicyError>> {
        match self.last_error.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Reads the policies again. On error the policies in force stay, and the error is kept
    /// for `GET /v1/policies`. Returns the number of policies now in force.
    pub fn reload(&self) -> Result<usize, Vec<PolicyError>> {
        let fp = fingerprint(&self.source);
        if let Ok(mut s) = self.seen.write() {
            *s = fp;
        }
        let result = read_sources(&self.source).and_then(|files| {
            mandate_policy::load_sources(&files, &BTreeSet::new()).map(|engine| (engine, files))
        });
        match result {
            Ok((engine, files)) => {
                let n = engine.policy_count();
                if let Ok(mut g) = self.engine.write() {
                    *g = Arc::new(engine);
                    // Under the engine's lock, so concurrent reloads leave a matching pair.
                    if let Ok(mut s) = self.sources.write() {
                        *s = Arc::new(files);
                    }
                }
                if let Ok(mut e) = self.last_error.write() {
                    *e = None;
                }
                Ok(n)
            }
            Err(errors) => {
                if let Ok(mut e) = self.last_error.write() {
                    *e = Some(errors.clone());
                }
                Err(errors)
            }
        }
    }

    /// Reloads when a policy file changed since the last load. Returns the outcome when it did.
    pub fn reload_if_changed(&self) -> Option<Result<usize, Vec<PolicyError>>> {
        let fp = fingerprint(&self.source);
        let changed = match self.seen.read() {
            Ok(s) => *s != fp,
            Err(_) => true,
        };
        changed.then(|| self.reload())
    }
}

/// The registered claims of a token, which are never tags.
pub const REGISTERED_CLAIMS: &[&str] = &[
    "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "azp", "scope", "act", "cnf",
];

/// Longest tag name.
const MAX_TAG_NAME: usize = 64;
/// Longest tag value.
const MAX_TAG_VALUE: usize = 256;

/// String claims of a user token that policies can read as tags (`principal.getTag("tier")`);
/// the registered JWT claims are left out.
pub fn claim_tags(claims: &Value) -> BTreeMap<String, String> {
    claims
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !REGISTERED_CLAIMS.contains(&k.as_str()))
        .filter_map(|(k, v)| string_tag(k, v))
        .collect()
}

/// String attributes of a resource (e.g. AuthZEN `resource.properties`) that policies can read
/// as tags (`resource.getTag("region")`); other values, long names and long values are left out.
pub fn resource_tags(properties: &serde_json::Map<String, Value>) -> BTreeMap<String, String> {
    properties
        .iter()
        .filter_map(|(k, v)| string_tag(k, v))
        .collect()
}

fn string_tag(k: &str, v: &Value) -> Option<(String, String)> {
    if k.is_empty() || k.len() > MAX_TAG_NAME {
        return None;
    }
    v.as_str()
        .filter(|s| s.len() <= MAX_TAG_VALUE)
        .map(|s| (k.to_owned(), s.to_owned()))
}

/// The tags a first-hop token carries as `user_tags`: those of `tags` named in `carry`
/// (`tokens.carry_claims`).
pub fn carried_tags(tags: &BTreeMap<String, String>, carry: &[String]) -> BTreeMap<String, String> {
    tags.iter()
        .filter(|(k, _)| carry.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Who a scope decision is for.
pub enum Who<'a> {
    /// A user, with their token's string claims.
    User(&'a UserPrincipal, &'a BTreeMap<String, String>),
    /// An agent on its own behalf.
    Agent(&'a Agent),
}

/// `rights(U)` for one issuance, as Cedar decisions: a scope is granted at a stage when every
/// audience is permitted. Remembers which policies decided, for the audit event.
pub struct PolicyRights<'a> {
    engine: Arc<Engine>,
    who: Who<'a>,
    audiences: &'a [String],
    context: DecisionContext,
    usage: Option<&'a crate::usage::UsageCounter>,
    decided: RefCell<BTreeSet<String>>,
}

impl<'a> PolicyRights<'a> {
    /// Rights of `who` for a token to `audiences` in `context`.
    pub fn new(
        engine: Arc<Engine>,
        who: Who<'a>,
        audiences: &'a [String],
        context: DecisionContext,
    ) -> Self {
        PolicyRights {
            engine,
            who,
            audiences,
            context,
            usage: None,
            decided: RefCell::new(BTreeSet::new()),
        }
    }

    /// Fills `context.usage` of each decision from `counter`.
    pub fn with_usage(mut self, counter: &'a crate::usage::UsageCounter) -> Self {
        self.usage = Some(counter);
        self
    }

    /// The policies that decided so far.
    pub fn policy_ids(&self) -> Vec<String> {
        self.decided.borrow().iter().cloned().collect()
    }

    fn record(&self, d: &Decision) {
        self.decided.borrow_mut().extend(d.policies.iter().cloned());
    }
}

impl Permits for PolicyRights<'_> {
    fn permits(&self, scope: &Scope, stage: Stage) -> bool {
        let mut context = self.context.clone();
        context.stage = stage;
        if let Some(counter) = self.usage {
            let now = context.now;
            let agent = context.chain.last().map(String::as_str).unwrap_or_default();
            context.usage.agent_last_hour =
                counter.last_hour(&crate::usage::agent_key(agent, scope.as_str()), now);
            if let Who::User(user, _) = &self.who {
                context.usage.user_last_hour =
                    counter.last_hour(&crate::usage::user_key(&user.subject, scope.as_str()), now);
            }
        }
        let principal = match &self.who {
            Who::User(user, claims) => Principal::User { user, claims },
            Who::Agent(agent) => Principal::Agent(agent),
        };
        // An issuance decides for an audience, which has no attributes.
        let no_tags = BTreeMap::new();
        self.audiences.iter().all(|aud| {
            let d = self.engine.decide(&Request {
                principal,
                subject: Subject::Scope {
                    scope,
                    resource: aud,
                    resource_tags: &no_tags,
                },
                context: &context,
            });
            self.record(&d);
            d.allowed
        })
    }
}
