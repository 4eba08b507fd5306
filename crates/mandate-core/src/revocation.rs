//! What has been revoked, and whether a token is still alive (SPEC §5).
//!
//! The index holds revoked tokens (each revoked `jti` and every `jti` derived from it, computed
//! when the revocation is made) and revoked roots with a "not before" time: tasks, users, agents,
//! agent keys. A token is dead if its own `jti` is revoked, its task is, or its user, any agent
//! of its chain, or any credential of its chain was revoked at or after the token was issued.
//!
//! Revoked tokens are by far the most numerous entries (a task or user revocation ends every
//! token it reaches), so they are kept small: a 128-bit digest of the `jti` and the expiry as
//! seconds, 24 bytes a slot instead of an owned string. Two `jti`s sharing a digest would need
//! a SHA-256 collision in its first 128 bits; `jti`s are minted by the issuer, not chosen by
//! callers.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chain::DelegationChain;

/// What a revocation names (SPEC §10: `POST /v1/revocations` `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationKind {
    /// One token (by `jti`) and everything derived from it.
    Token,
    /// A task and every token bound to it.
    Task,
    /// An agent: it is suspended, and every token it appears in ends.
    Agent,
    /// A user: every delegation on their behalf ends.
    User,
    /// An agent key (by `kid`): the key is revoked and every token it proved ends.
    Key,
}

impl RevocationKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Token => "token",
            RevocationKind::Task => "task",
            RevocationKind::Agent => "agent",
            RevocationKind::User => "user",
            RevocationKind::Key => "key",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<RevocationKind> {
        match s {
            "token" => Some(RevocationKind::Token),
            "task" => Some(RevocationKind::Task),
            "agent" => Some(RevocationKind::Agent),
            "user" => Some(RevocationKind::User),
            "key" => Some(RevocationKind::Key),
            _ => None,
        }
    }
}

/// The facts of a token that revocation is checked against.
#[derive(Debug, Clone, Copy)]
pub struct TokenFacts<'a> {
    /// `jti`.
    pub jti: &'a str,
    /// `task`.
    pub task: &'a str,
    /// The user's subject, for user tokens.
    pub user: Option<&'a str>,
    /// The agents and credentials.
    pub chain: &'a DelegationChain,
    /// `iat`.
    pub iat: i64,
}

/// Why a token is no longer alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// What was revoked.
    pub kind: RevocationKind,
    /// Its id.
    pub id: String,
}

/// The first 128 bits of SHA-256 of a `jti`: the key of a revoked token in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct JtiDigest([u64; 2]);

impl JtiDigest {
    fn of(jti: &str) -> JtiDigest {
        let full = Sha256::digest(jti.as_bytes());
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&full[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        // Two words rather than a `u128`, whose 16-byte alignment would pad each slot to 32.
        JtiDigest([word(0), word(1)])
    }
}

/// The in-memory revocation state; rebuilt from the store at start.
#[derive(Debug, Clone, Default)]
pub struct RevocationIndex {
    /// Revoked tokens by digest, each with its expiry (after which it can be forgotten).
    tokens: HashMap<JtiDigest, i64>,
    tasks: HashMap<String, i64>,
    users: HashMap<String, i64>,
    agents: HashMap<String, i64>,
    keys: HashMap<String, i64>,
}

impl RevocationIndex {
    /// Records a revocation of `kind` `id` made at `at`. For tokens, `at` is the token's `exp`
    /// (after which the entry can be forgotten).
    pub fn insert(&mut self, kind: RevocationKind, id: &str, at: i64) {
        let map = match kind {
            RevocationKind::Token => {
                let exp = self.tokens.entry(JtiDigest::of(id)).or_insert(at);
                *exp = (*exp).max(at);
                return;
            }
            RevocationKind::Task => &mut self.tasks,
            RevocationKind::User => &mut self.users,
            RevocationKind::Agent => &mut self.agents,
            RevocationKind::Key => &mut self.keys,
        };
        let entry = map.entry(id.to_owned()).or_insert(at);
        *entry = (*entry).max(at);
    }

    /// Whether the token with `jti` was revoked directly or through an ancestor.
    pub fn token_revoked(&self, jti: &str) -> bool {
        self.tokens.contains_key(&JtiDigest::of(jti))
    }

    /// Why the token is dead, or `None` if no revocation reaches it.
    pub fn check(&self, t: &TokenFacts<'_>) -> Option<Revoked> {
        let hit = |kind, id: &str| Revoked {
            kind,
            id: id.to_owned(),
        };
        // Roots first, so the answer names the cause (the task, not each token it ended).
        if self.tasks.contains_key(t.task) {
            return Some(hit(RevocationKind::Task, t.task));
        }
        if let Some(user) = t.user
            && self.users.get(user).is_some_and(|&at| t.iat <= at)
        {
            return Some(hit(RevocationKind::User, user));
        }
        for actor in t.chain.actors() {
            let agent = actor.agent.as_str();
            if self.agents.get(agent).is_some_and(|&at| t.iat <= at) {
                return Some(hit(RevocationKind::Agent, agent));
            }
            let kid = actor
                .credential
                .strip_prefix("kid:")
                .unwrap_or(&actor.credential);
            if self.keys.get(kid).is_some_and(|&at| t.iat <= at) {
                return Some(hit(RevocationKind::Key, kid));
            }
        }
        if self.token_revoked(t.jti) {
            return Some(hit(RevocationKind::Token, t.jti));
        }
        None
    }

    /// Records a revocation feed entry: its root (for every kind but `token`) and each token it
    /// ended. The server and every verifier build their index through this one function.
    pub fn apply(&mut self, entry: &RevocationEntry) {
        let r = &entry.record;
        if r.kind != RevocationKind::Token {
            self.insert(r.kind, &r.target, r.at);
        }
        for t in &entry.tokens {
            self.insert(RevocationKind::Token, &t.jti, t.exp);
        }
    }

    /// Forgets revoked tokens that expired before `now`.
    pub fn prune(&mut self, now: i64) {
        self.tokens.retain(|_, exp| *exp >= now);
        // A mass revocation that has since expired should give its memory back.
        if self.tokens.capacity() > 4 * self.tokens.len().max(1024) {
            self.tokens.shrink_to_fit();
        }
    }

    /// Number of revoked-token entries held.
    pub fn revoked_tokens(&self) -> usize {
        self.tokens.len()
    }
}

/// A revocation as recorded: the root that was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    /// Generated id of the revocation.
    pub id: String,
    /// What kind of thing was revoked.
    pub kind: RevocationKind,
    /// The bare id of what was revoked (jti, task id, agent id, user sub, kid).
    pub target: String,
    /// Who revoked it (`admin:<name>`, `agent:<id>`, `system`).
    pub by: String,
    /// Why.
    pub reason: String,
    /// When, seconds since the epoch.
    pub at: i64,
}

/// A token ended by a revocation: what verifiers need to refuse it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedToken {
    /// `jti`.
    pub jti: String,
    /// Its expiry: after it, the entry can be forgotten.
    pub exp: i64,
}

/// One entry of the revocation feed: a revocation, its place in the feed, and what it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationEntry {
    /// Gapless sequence number, from 1, in commit order: the event id verifiers resume from.
    pub seq: i64,
    /// The revocation.
    pub record: RevocationRecord,
    /// The live tokens it ended (each `jti` with its `exp`).
    pub tokens: Vec<RevokedToken>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Actor;
    use crate::ids::AgentId;

    fn chain() -> DelegationChain {
        DelegationChain::new(vec![
            Actor {
                agent: AgentId::parse("support-v2").unwrap(),
                credential: "kid:s1".into(),
            },
            Actor {
                agent: AgentId::parse("analytics-v1").unwrap(),
                credential: "kid:a1".into(),
            },
        ])
    }

    #[test]
    fn each_root_reaches_its_tokens() {
        let c = chain();
        let t = TokenFacts {
            jti: "j1",
            task: "t1",
            user: Some("alice"),
            chain: &c,
            iat: 100,
        };
        let cases = [
            (RevocationKind::Token, "j1"),
            (RevocationKind::Task, "t1"),
            (RevocationKind::User, "alice"),
            (RevocationKind::Agent, "support-v2"),
            (RevocationKind::Agent, "analytics-v1"),
            (RevocationKind::Key, "a1"),
        ];
        for (kind, id) in cases {
            let mut idx = RevocationIndex::default();
            assert!(idx.check(&t).is_none());
            idx.insert(kind, id, 100);
            assert_eq!(idx.check(&t).map(|r| r.kind), Some(kind), "{id}");
        }
    }

    #[test]
    fn roots_spare_tokens_issued_after_the_revocation() {
        let c = chain();
        let mut idx = RevocationIndex::default();
        idx.insert(RevocationKind::User, "alice", 100);
        let later = TokenFacts {
            jti: "j2",
            task: "t2",
            user: Some("alice"),
            chain: &c,
            iat: 101,
        };
        assert!(idx.check(&later).is_none());
        idx.insert(RevocationKind::User, "bob", 100);
        assert!(idx.check(&later).is_none());
    }

    #[test]
    fn revoked_tokens_are_kept_until_their_latest_expiry() {
        let mut idx = RevocationIndex::default();
        idx.insert(RevocationKind::Token, "j1", 200);
        idx.insert(RevocationKind::Token, "j1", 150);
        idx.insert(RevocationKind::Token, "j2", 120);
        assert!(idx.token_revoked("j1") && idx.token_revoked("j2"));
        assert!(!idx.token_revoked("j3") && !idx.token_revoked("j"));
        idx.prune(121);
        assert_eq!(idx.revoked_tokens(), 1);
        assert!(idx.token_revoked("j1"), "kept until 200, not 150");
        assert!(!idx.token_revoked("j2"));
        idx.prune(201);
        assert_eq!(idx.revoked_tokens(), 0);
    }

    #[test]
    fn a_revoked_token_entry_is_small() {
        // The key and the expiry: what the ≤ 100 bytes per revoked token budget is spent on,
        // besides the table's spare capacity and its one control byte per slot.
        assert_eq!(std::mem::size_of::<(JtiDigest, i64)>(), 24);
    }
}
