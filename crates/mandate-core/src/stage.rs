//! Stages: how far an agent may act (SPEC §1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::scope::ScopeSet;

/// `observe` < `draft` < `execute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Read-class only.
    Observe,
    /// Read-class; write-class requests are held as proposals for a human to approve.
    Draft,
    /// Read and scoped write.
    Execute,
}

impl Stage {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Observe => "observe",
            Stage::Draft => "draft",
            Stage::Execute => "execute",
        }
    }

    /// The most restrictive stage under which `scopes` can be held: `observe` for read-only sets,
    /// `draft` as soon as one scope writes (writes are then held for approval).
    pub fn least_for(scopes: &ScopeSet) -> Stage {
        Stage::least_with(scopes, &crate::scope::ActionCatalog::default())
    }

    /// [`Stage::least_for`] under an action catalog.
    pub fn least_with(scopes: &ScopeSet, catalog: &crate::scope::ActionCatalog) -> Stage {
        if catalog.has_write(scopes) {
            Stage::Draft
        } else {
            Stage::Observe
        }
    }

    /// Whether a token of this stage may hold a write-class scope at all.
    pub fn allows_write_scopes(self) -> bool {
        self != Stage::Observe
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "observe" => Ok(Stage::Observe),
            "draft" => Ok(Stage::Draft),
            "execute" => Ok(Stage::Execute),
            other => Err(format!(
                "stage `{other}` is not one of `observe`, `draft`, `execute`"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_ordered_and_least_stage_follows_the_classes() {
        assert!(Stage::Observe < Stage::Draft && Stage::Draft < Stage::Execute);
        let read = ScopeSet::parse_oauth("crm.customers:read tickets:list").unwrap();
        let write = ScopeSet::parse_oauth("crm.customers:read tickets:create").unwrap();
        assert_eq!(Stage::least_for(&read), Stage::Observe);
        assert_eq!(Stage::least_for(&write), Stage::Draft);
        assert!("admin".parse::<Stage>().is_err());
    }
}
