//! May this verified token make this request? The checks that need no policy engine: the token
//! holds the action's scope, and its stage lets the action's class through — or, in `draft`
//! stage, lets it through to be held for a human's approval.
//!
//! Stages (SPEC §1): `observe` reads only; `draft` may hold write scopes, but its writes are
//! held for a human's approval rather than sent ([`Admitted::Hold`], see [`crate::hold`]);
//! `execute` writes. A route may ask for more than its class implies (`stage = "execute"` on a
//! read that costs money, say).

use mandate_core::scope::{ActionClass, Scope, ScopeSet};
use mandate_core::stage::Stage;

/// What the request is, as far as admission cares.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The scope it needs.
    pub action: &'a Scope,
    /// Read or write.
    pub class: ActionClass,
    /// The least stage the route asks for, beyond its class.
    pub least_stage: Option<Stage>,
}

/// How an admitted request goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Send it (after policy and breakers).
    Forward,
    /// It needs `execute` and the token is `draft`: hold it for a human's approval (after
    /// policy and breakers) instead of sending it.
    Hold,
}

/// Why a request is not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAdmitted {
    /// The token does not hold the scope.
    Scope {
        /// The scope needed.
        scope: String,
    },
    /// The token's stage is below what the request needs.
    Stage {
        /// The stage needed.
        needed: Stage,
        /// The token's.
        have: Stage,
        /// The action.
        action: String,
    },
}

impl NotAdmitted {
    /// A sentence for the client and the audit event.
    pub fn reason(&self) -> String {
        match self {
            NotAdmitted::Scope { scope } => format!("the token does not hold scope `{scope}`"),
            NotAdmitted::Stage {
                needed,
                have,
                action,
            } => format!("`{action}` needs stage `{needed}`; the token's stage is `{have}`"),
        }
    }
}

/// The stage a request needs: `execute` for writes, `observe` for reads, raised by the route.
pub fn needed_stage(target: &Target<'_>) -> Stage {
    let by_class = match target.class {
        ActionClass::Read => Stage::Observe,
        ActionClass::Write => Stage::Execute,
    };
    match target.least_stage {
        Some(s) if s > by_class => s,
        _ => by_class,
    }
}

/// Admits a request by a token holding `scopes` at `stage`.
pub fn admit(
    scopes: &ScopeSet,
    stage: Stage,
    target: &Target<'_>,
) -> Result<Admitted, NotAdmitted> {
    if !scopes.contains(target.action) {
        return Err(NotAdmitted::Scope {
            scope: target.action.as_str().to_owned(),
        });
    }
    let needed = needed_stage(target);
    if stage == Stage::Draft && needed == Stage::Execute {
        return Ok(Admitted::Hold);
    }
    if stage < needed {
        return Err(NotAdmitted::Stage {
            needed,
            have: stage,
            action: target.action.as_str().to_owned(),
        });
    }
    Ok(Admitted::Forward)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn scope(s: &str) -> Scope {
        Scope::parse(s).unwrap()
    }

    fn target<'a>(action: &'a Scope, least_stage: Option<Stage>) -> Target<'a> {
        Target {
            action,
            class: action.class(),
            least_stage,
        }
    }

    #[test]
    fn the_scope_must_be_held() {
        let held = ScopeSet::parse_oauth("crm.customers:read").unwrap();
        let want = scope("tickets:create");
        let err = admit(&held, Stage::Draft, &target(&want, None)).unwrap_err();
        assert_eq!(
            err,
            NotAdmitted::Scope {
                scope: "tickets:create".into()
            }
        );
        assert_eq!(
            err.reason(),
            "the token does not hold scope `tickets:create`"
        );
    }

    #[test]
    fn reads_pass_at_every_stage_writes_only_at_execute() {
        let held = ScopeSet::parse_oauth("crm.customers:read tickets:create").unwrap();
        let read = scope("crm.customers:read");
        let write = scope("tickets:create");
        for stage in [Stage::Observe, Stage::Draft, Stage::Execute] {
            assert_eq!(
                admit(&held, stage, &target(&read, None)),
                Ok(Admitted::Forward)
            );
        }
        assert_eq!(
            admit(&held, Stage::Execute, &target(&write, None)),
            Ok(Admitted::Forward)
        );
        assert_eq!(
            admit(&held, Stage::Draft, &target(&write, None)),
            Ok(Admitted::Hold),
            "a draft token's write is held, not refused"
        );
        let observe = admit(&held, Stage::Observe, &target(&write, None)).unwrap_err();
        assert_eq!(
            observe.reason(),
            "`tickets:create` needs stage `execute`; the token's stage is `observe`"
        );
    }

    #[test]
    fn a_route_can_raise_the_stage_of_a_read() {
        let held = ScopeSet::parse_oauth("billing.invoices:read").unwrap();
        let read = scope("billing.invoices:read");
        let t = target(&read, Some(Stage::Draft));
        assert_eq!(needed_stage(&t), Stage::Draft);
        assert!(admit(&held, Stage::Observe, &t).is_err());
        assert_eq!(admit(&held, Stage::Draft, &t), Ok(Admitted::Forward));
        // A read a route raises to `execute` is held in draft stage, like a write.
        let costly = target(&read, Some(Stage::Execute));
        assert_eq!(admit(&held, Stage::Draft, &costly), Ok(Admitted::Hold));
        // A route cannot lower a write's stage.
        let write = scope("tickets:create");
        assert_eq!(
            needed_stage(&target(&write, Some(Stage::Observe))),
            Stage::Execute
        );
    }
}
