//! The delegation chain: who acts for the user, hop by hop, and its RFC 8693 `act` encoding.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::ids::AgentId;

/// One agent in a chain and the credential that proved it (a key's `kid`, or a workload identity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The agent.
    pub agent: AgentId,
    /// What proved the agent at that hop, e.g. `kid:support-key-1`.
    pub credential: String,
}

/// The agents between the user and the token's holder, earliest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DelegationChain(Vec<Actor>);

/// Why an `act` claim could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`act` claim is malformed: {0}")]
pub struct ActError(pub &'static str);

/// Deepest `act` nesting ever read, whatever the configured depth limit.
const MAX_ACT_NESTING: usize = 32;

impl DelegationChain {
    /// A chain of the given actors, earliest first.
    pub fn new(actors: Vec<Actor>) -> Self {
        DelegationChain(actors)
    }

    /// The actors, earliest first.
    pub fn actors(&self) -> &[Actor] {
        &self.0
    }

    /// The agent ids, earliest first (the audit event's `chain`).
    pub fn agent_ids(&self) -> Vec<String> {
        self.0.iter().map(|a| a.agent.as_str().to_owned()).collect()
    }

    /// The current actor: the last one.
    pub fn current(&self) -> Option<&Actor> {
        self.0.last()
    }

    /// Number of agents.
    pub fn depth(&self) -> usize {
        self.0.len()
    }

    /// Whether `agent` appears anywhere in the chain.
    pub fn contains(&self, agent: &AgentId) -> bool {
        self.0.iter().any(|a| &a.agent == agent)
    }

    /// The chain one hop longer.
    pub fn extended(&self, actor: Actor) -> DelegationChain {
        let mut v = self.0.clone();
        v.push(actor);
        DelegationChain(v)
    }

    /// RFC 8693 §4.1 `act`: the current actor outermost, the earliest deepest.
    pub fn to_act_claim(&self) -> Option<Value> {
        let mut inner: Option<Value> = None;
        for actor in &self.0 {
            let mut obj = Map::new();
            obj.insert("sub".into(), json!(actor.agent.subject()));
            obj.insert("sub_profile".into(), json!("agent"));
            obj.insert("credential".into(), json!(actor.credential));
            if let Some(prev) = inner.take() {
                obj.insert("act".into(), prev);
            }
            inner = Some(Value::Object(obj));
        }
        inner
    }

    /// Reads an `act` claim back into a chain (earliest first).
    pub fn from_act_claim(act: &Value) -> Result<DelegationChain, ActError> {
        let mut actors = Vec::new();
        let mut cur = Some(act);
        while let Some(v) = cur {
            if actors.len() >= MAX_ACT_NESTING {
                return Err(ActError("nested too deeply"));
            }
            let obj = v.as_object().ok_or(ActError("not an object"))?;
            let sub = obj
                .get("sub")
                .and_then(Value::as_str)
                .ok_or(ActError("an actor has no `sub`"))?;
            let agent = AgentId::from_subject(sub).ok_or(ActError("an actor is not an agent"))?;
            let credential = obj
                .get("credential")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            actors.push(Actor { agent, credential });
            cur = obj.get("act");
        }
        actors.reverse();
        Ok(DelegationChain(actors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(id: &str) -> Actor {
        Actor {
            agent: AgentId::parse(id).unwrap(),
            credential: format!("kid:{id}-k1"),
        }
    }

    #[test]
    fn act_claim_nests_current_actor_outermost() {
        let chain = DelegationChain::new(vec![actor("support-v2"), actor("analytics-v1")]);
        let act = chain.to_act_claim().unwrap();
        assert_eq!(act["sub"], "agent:analytics-v1");
        assert_eq!(act["sub_profile"], "agent");
        assert_eq!(act["act"]["sub"], "agent:support-v2");
        assert!(act["act"].get("act").is_none());
        assert_eq!(DelegationChain::from_act_claim(&act).unwrap(), chain);
        assert_eq!(chain.agent_ids(), vec!["support-v2", "analytics-v1"]);
    }

    #[test]
    fn malformed_act_is_refused() {
        assert!(DelegationChain::from_act_claim(&json!("x")).is_err());
        assert!(DelegationChain::from_act_claim(&json!({"sub": "user:alice"})).is_err());
        let mut deep = json!({"sub": "agent:a"});
        for _ in 0..40 {
            deep = json!({"sub": "agent:a", "act": deep});
        }
        assert!(DelegationChain::from_act_claim(&deep).is_err());
    }
}
