//! The issuance decision (SPEC §2): what a token may hold.
//!
//! `effective = S ∩ rights(U) ∩ ceiling(A) ∩ stage_limit(stage) ∩ parent_scope (each hop)`;
//! lifetime `min(requested, stage max, parent's remaining life, subject's remaining life)`.
//! Every refusal names each scope it refused and why.

use serde::Serialize;

use crate::scope::{ActionCatalog, ActionClass, PatternSet, Scope, ScopeSet};
use crate::stage::Stage;

/// How to treat requested scopes that are not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScopeMode {
    /// Any denied scope fails the request (the default).
    #[default]
    Strict,
    /// Denied scopes are dropped (`scope_mode=intersect`); an empty result still fails.
    Intersect,
}

/// Lifetime limits, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    /// When the request names no lifetime.
    pub default_ttl: i64,
    /// The longest lifetime of any token.
    pub max_ttl: i64,
    /// Default and maximum for `execute`-stage tokens that hold a write scope.
    pub execute_write_ttl: i64,
    /// The longest lifetime at each stage: `observe`, `draft`, `execute`.
    pub stage_max: [i64; 3],
}

impl TtlPolicy {
    /// The longest lifetime of a token at `stage` holding `scope` (default action classes).
    pub fn max_for(&self, stage: Stage, scope: &ScopeSet) -> i64 {
        self.max_with(stage, scope, &ActionCatalog::default())
    }

    /// [`TtlPolicy::max_for`] under an action catalog.
    pub fn max_with(&self, stage: Stage, scope: &ScopeSet, catalog: &ActionCatalog) -> i64 {
        let per_stage = match stage {
            Stage::Observe => self.stage_max[0],
            Stage::Draft => self.stage_max[1],
            Stage::Execute => self.stage_max[2],
        };
        let mut max = self.max_ttl.min(per_stage);
        if stage == Stage::Execute && catalog.has_write(scope) {
            max = max.min(self.execute_write_ttl);
        }
        max
    }
}

impl Default for TtlPolicy {
    fn default() -> Self {
        TtlPolicy {
            default_ttl: 300,
            max_ttl: 3600,
            execute_write_ttl: 60,
            stage_max: [3600, 900, 300],
        }
    }
}

/// The parent token of a hop: what the new token can never exceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    /// The parent's scopes.
    pub scope: ScopeSet,
    /// The parent's stage.
    pub stage: Stage,
    /// The parent's expiry.
    pub exp: i64,
    /// The parent's audiences.
    pub aud: Vec<String>,
}

/// `rights(U)`: whether the principal may hold `scope` at `stage`. A policy engine implements it;
/// so does a plain [`PatternSet`] (stage-blind).
pub trait Permits {
    /// Whether `scope` is granted at `stage`.
    fn permits(&self, scope: &Scope, stage: Stage) -> bool;
}

impl Permits for PatternSet {
    fn permits(&self, scope: &Scope, _stage: Stage) -> bool {
        self.allows(scope)
    }
}

/// Everything the issuance decision needs, already parsed and looked up.
#[derive(Clone, Copy)]
pub struct GrantRequest<'a> {
    /// Requested scopes (`S`).
    pub requested: &'a ScopeSet,
    /// Requested audiences; a hop may only name audiences its parent holds.
    pub aud: &'a [String],
    /// Strict or intersect.
    pub mode: ScopeMode,
    /// What the principal may do directly: the user's rights, or the agent's own for autonomous
    /// tokens (a policy decision point, or a plain pattern set).
    pub rights: &'a dyn Permits,
    /// The requesting agent's ceiling.
    pub ceiling: &'a PatternSet,
    /// The requesting agent's `max_stage`.
    pub max_stage: Stage,
    /// The parent token, for a hop in a chain.
    pub parent: Option<&'a Parent>,
    /// The stage asked for, if any.
    pub stage: Option<Stage>,
    /// The lifetime asked for, if any.
    pub ttl: Option<i64>,
    /// Expiry of the subject (the user's token or the parent); the new token never outlives it.
    pub subject_exp: i64,
    /// Now, seconds since the epoch.
    pub now: i64,
    /// Lifetime limits.
    pub ttl_policy: TtlPolicy,
    /// Overrides of action classes.
    pub catalog: &'a ActionCatalog,
}

/// What the token will hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Effective scopes (never empty).
    pub scope: ScopeSet,
    /// The stage.
    pub stage: Stage,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Scopes dropped in intersect mode, with reasons.
    pub dropped: Vec<DeniedScope>,
}

/// Why one requested scope was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeniedScope {
    /// The scope.
    pub scope: String,
    /// Which term of the intersection refused it.
    pub reason: ScopeDenial,
}

/// The term of the intersection that refused a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeDenial {
    /// Not in the agent's ceiling.
    NotInCeiling,
    /// The user (or, for autonomous tokens, the agent's own policy) lacks it.
    PrincipalLacks,
    /// Not held by the parent token.
    NotInParent,
    /// A write-class scope under `observe`.
    StageForbidsWrite,
}

impl ScopeDenial {
    /// A short human reason.
    pub fn describe(self) -> &'static str {
        match self {
            ScopeDenial::NotInCeiling => "outside the agent's ceiling",
            ScopeDenial::PrincipalLacks => "not granted to the user",
            ScopeDenial::NotInParent => "not held by the parent token",
            ScopeDenial::StageForbidsWrite => "a write scope at stage `observe`",
        }
    }
}

/// Why nothing is issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantDenial {
    /// No scope was requested.
    #[error("no scope requested: ask for the scopes this task needs")]
    NoScope,
    /// Some requested scopes are denied (strict mode), or none is left (intersect mode).
    #[error("{}", describe_denied(.0))]
    Scopes(Vec<DeniedScope>),
    /// The stage asked for is above what the agent may have.
    #[error("stage `{requested}` exceeds the agent's max stage `{max}`")]
    StageAboveMax {
        /// Asked for.
        requested: Stage,
        /// The agent's maximum.
        max: Stage,
    },
    /// The stage asked for is above the parent token's stage.
    #[error("stage `{requested}` exceeds the parent token's stage `{parent}`")]
    StageAboveParent {
        /// Asked for.
        requested: Stage,
        /// The parent's.
        parent: Stage,
    },
    /// The requested lifetime is not positive.
    #[error("requested lifetime must be a positive number of seconds")]
    BadTtl,
    /// The subject has no life left.
    #[error("the subject token has expired")]
    SubjectExpired,
    /// A hop named an audience its parent does not hold.
    #[error("audience `{0}` is not among the subject token's audiences")]
    AudienceNotInParent(String),
}

fn describe_denied(d: &[DeniedScope]) -> String {
    let parts: Vec<String> = d
        .iter()
        .map(|d| format!("`{}` ({})", d.scope, d.reason.describe()))
        .collect();
    format!("scope denied: {}", parts.join(", "))
}

impl GrantDenial {
    /// The OAuth error code (RFC 6749 §5.2) this denial answers with.
    pub fn oauth_error(&self) -> &'static str {
        match self {
            GrantDenial::NoScope
            | GrantDenial::Scopes(_)
            | GrantDenial::StageAboveMax { .. }
            | GrantDenial::StageAboveParent { .. } => "invalid_scope",
            GrantDenial::BadTtl => "invalid_request",
            GrantDenial::SubjectExpired => "invalid_grant",
            GrantDenial::AudienceNotInParent(_) => "invalid_target",
        }
    }
}

fn refusal(scope: &Scope, req: &GrantRequest<'_>, stage: Stage) -> Option<ScopeDenial> {
    if !req.ceiling.allows(scope) {
        Some(ScopeDenial::NotInCeiling)
    } else if req.parent.is_some_and(|p| !p.scope.contains(scope)) {
        Some(ScopeDenial::NotInParent)
    } else if !req.rights.permits(scope, stage) {
        Some(ScopeDenial::PrincipalLacks)
    } else if req.catalog.class_of(scope) == ActionClass::Write && !stage.allows_write_scopes() {
        Some(ScopeDenial::StageForbidsWrite)
    } else {
        None
    }
}

/// Decides what a token may hold. Pure: the same inputs always give the same answer.
pub fn decide(req: &GrantRequest<'_>) -> Result<Grant, GrantDenial> {
    if req.requested.is_empty() {
        return Err(GrantDenial::NoScope);
    }
    if let Some(parent) = req.parent
        && let Some(bad) = req.aud.iter().find(|a| !parent.aud.contains(a))
    {
        return Err(GrantDenial::AudienceNotInParent(
            bad.chars().take(100).collect(),
        ));
    }
    let least = Stage::least_with(req.requested, req.catalog);
    let stage = req.stage.unwrap_or(least);
    if stage > req.max_stage {
        // An implicit stage that the agent cannot reach falls back to its max: the write scopes
        // are then refused by the stage limit below, naming them.
        if req.stage.is_some() {
            return Err(GrantDenial::StageAboveMax {
                requested: stage,
                max: req.max_stage,
            });
        }
    }
    let mut stage = stage.min(req.max_stage);
    if let Some(parent) = req.parent
        && stage > parent.stage
    {
        if req.stage.is_some() {
            return Err(GrantDenial::StageAboveParent {
                requested: stage,
                parent: parent.stage,
            });
        }
        stage = parent.stage;
    }

    let mut granted = Vec::new();
    let mut denied = Vec::new();
    for scope in req.requested.iter() {
        match refusal(scope, req, stage) {
            None => granted.push(scope.clone()),
            Some(reason) => denied.push(DeniedScope {
                scope: scope.as_str().to_owned(),
                reason,
            }),
        }
    }
    if !denied.is_empty() && (req.mode == ScopeMode::Strict || granted.is_empty()) {
        return Err(GrantDenial::Scopes(denied));
    }
    let scope: ScopeSet = granted.into_iter().collect();

    if req.ttl.is_some_and(|t| t <= 0) {
        return Err(GrantDenial::BadTtl);
    }
    let stage_max = req.ttl_policy.max_with(stage, &scope, req.catalog);
    let wanted = req.ttl.unwrap_or(req.ttl_policy.default_ttl.min(stage_max));
    let mut exp = req.now.saturating_add(wanted.min(stage_max));
    exp = exp.min(req.subject_exp);
    if let Some(parent) = req.parent {
        exp = exp.min(parent.exp);
    }
    if exp <= req.now {
        return Err(GrantDenial::SubjectExpired);
    }
    Ok(Grant {
        scope,
        stage,
        exp,
        dropped: denied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    static NO_OVERRIDES: ActionCatalog = ActionCatalog(std::collections::BTreeMap::new());

    fn set(s: &str) -> ScopeSet {
        ScopeSet::parse_oauth(s).unwrap()
    }
    fn pats(s: &str) -> PatternSet {
        PatternSet::parse(s.split(' ')).unwrap()
    }

    fn base<'a>(
        requested: &'a ScopeSet,
        rights: &'a PatternSet,
        ceiling: &'a PatternSet,
    ) -> GrantRequest<'a> {
        GrantRequest {
            requested,
            aud: &[],
            mode: ScopeMode::Strict,
            rights,
            ceiling,
            max_stage: Stage::Draft,
            parent: None,
            stage: None,
            ttl: None,
            subject_exp: 10_000,
            now: 1_000,
            ttl_policy: TtlPolicy::default(),
            catalog: &NO_OVERRIDES,
        }
    }

    #[test]
    fn effective_is_the_intersection_and_defaults_hold() {
        let req = set("crm.customers:read tickets:read");
        let rights = pats("crm.customers:read tickets:read tickets:create email:send");
        let ceiling = pats("crm.customers:read tickets:* email:send mcp.crm.*:call");
        let g = decide(&base(&req, &rights, &ceiling)).unwrap();
        assert_eq!(g.scope, req);
        assert_eq!(g.stage, Stage::Observe);
        assert_eq!(g.exp, 1_300);
    }

    #[test]
    fn strict_mode_names_every_denied_scope() {
        let req = set("crm.customers:read billing.invoices:read email:send");
        let rights = pats("crm.customers:read email:send");
        let ceiling = pats("crm.customers:read tickets:*");
        let err = decide(&base(&req, &rights, &ceiling)).unwrap_err();
        assert_eq!(err.oauth_error(), "invalid_scope");
        let text = err.to_string();
        assert!(
            text.contains("`billing.invoices:read` (outside the agent's ceiling)"),
            "{text}"
        );
        assert!(
            text.contains("`email:send` (outside the agent's ceiling)"),
            "{text}"
        );
        assert!(!text.contains("crm.customers"), "{text}");
    }

    #[test]
    fn intersect_mode_trims_but_never_issues_nothing() {
        let req = set("crm.customers:read billing.invoices:read");
        let rights = pats("crm.customers:read");
        let ceiling = pats("crm.*:read");
        let mut r = base(&req, &rights, &ceiling);
        r.mode = ScopeMode::Intersect;
        let g = decide(&r).unwrap();
        assert_eq!(g.scope, set("crm.customers:read"));
        assert_eq!(g.dropped.len(), 1);
        let none = set("billing.invoices:read");
        let mut r = base(&none, &rights, &ceiling);
        r.mode = ScopeMode::Intersect;
        assert!(matches!(decide(&r), Err(GrantDenial::Scopes(_))));
    }

    #[test]
    fn stages_are_capped_by_max_stage() {
        let req = set("tickets:create");
        let all = pats("tickets:*");
        let mut r = base(&req, &all, &all);
        assert_eq!(decide(&r).unwrap().stage, Stage::Draft);
        r.stage = Some(Stage::Execute);
        assert!(matches!(decide(&r), Err(GrantDenial::StageAboveMax { .. })));
        r.max_stage = Stage::Execute;
        let g = decide(&r).unwrap();
        assert_eq!(g.stage, Stage::Execute);
        assert_eq!(
            g.exp - 1_000,
            60,
            "execute-stage writes live 60 s by default"
        );
        r.max_stage = Stage::Observe;
        r.stage = None;
        let err = decide(&r).unwrap_err();
        assert!(err.to_string().contains("stage `observe`"), "{err}");
    }

    #[test]
    fn lifetime_never_exceeds_subject_or_parent() {
        let req = set("tickets:read");
        let all = pats("tickets:*");
        let mut r = base(&req, &all, &all);
        r.subject_exp = 1_100;
        assert_eq!(decide(&r).unwrap().exp, 1_100);
        r.subject_exp = 999;
        assert_eq!(decide(&r), Err(GrantDenial::SubjectExpired));
        r.subject_exp = 10_000;
        r.ttl = Some(0);
        assert_eq!(decide(&r), Err(GrantDenial::BadTtl));
        r.ttl = Some(99_999);
        assert_eq!(
            decide(&r).unwrap().exp,
            1_000 + 3_600,
            "observe: at most an hour"
        );
        let write = set("tickets:create");
        let mut w = base(&write, &all, &all);
        w.ttl = Some(99_999);
        assert_eq!(
            decide(&w).unwrap().exp,
            1_000 + 900,
            "draft: at most 15 minutes"
        );
        w.ttl_policy.stage_max[1] = 120;
        assert_eq!(
            decide(&w).unwrap().exp,
            1_000 + 120,
            "the per-stage maximum is configurable"
        );
    }

    #[test]
    fn a_hop_cannot_widen_its_parent() {
        let parent = Parent {
            scope: set("tickets:read"),
            stage: Stage::Observe,
            exp: 1_200,
            aud: vec!["https://crm".into()],
        };
        let req = set("tickets:read tickets:list");
        let all = pats("tickets:*");
        let mut r = base(&req, &all, &all);
        r.parent = Some(&parent);
        let err = decide(&r).unwrap_err().to_string();
        assert!(
            err.contains("`tickets:list` (not held by the parent token)"),
            "{err}"
        );
        let req = set("tickets:read");
        let mut r = base(&req, &all, &all);
        r.parent = Some(&parent);
        r.stage = Some(Stage::Draft);
        assert!(matches!(
            decide(&r),
            Err(GrantDenial::StageAboveParent { .. })
        ));
        r.stage = None;
        assert_eq!(decide(&r).unwrap().exp, 1_200);
        let wider = ["https://crm".to_owned(), "https://mail".to_owned()];
        r.aud = &wider;
        let err = decide(&r).unwrap_err();
        assert_eq!(err, GrantDenial::AudienceNotInParent("https://mail".into()));
        assert_eq!(err.oauth_error(), "invalid_target");
    }

    const WORDS: &[&str] = &["crm.customers", "tickets", "email", "billing.invoices"];
    const ACTIONS: &[&str] = &["read", "create", "send", "list"];

    fn scope_strategy() -> impl Strategy<Value = Scope> {
        (0..WORDS.len(), 0..ACTIONS.len())
            .prop_map(|(w, a)| Scope::parse(&format!("{}:{}", WORDS[w], ACTIONS[a])).unwrap())
    }
    fn set_strategy() -> impl Strategy<Value = ScopeSet> {
        proptest::collection::vec(scope_strategy(), 0..6).prop_map(|v| v.into_iter().collect())
    }
    fn stage_strategy() -> impl Strategy<Value = Stage> {
        prop_oneof![
            Just(Stage::Observe),
            Just(Stage::Draft),
            Just(Stage::Execute)
        ]
    }
    fn to_patterns(s: &ScopeSet) -> PatternSet {
        PatternSet(s.iter().cloned().map(Into::into).collect())
    }

    const AUDS: &[&str] = &["https://crm", "https://mail", "https://billing"];

    fn aud_strategy() -> impl Strategy<Value = Vec<String>> {
        proptest::sample::subsequence(AUDS, 1..=AUDS.len())
            .prop_map(|v| v.into_iter().map(str::to_owned).collect())
    }

    proptest! {
        /// SPEC §2: along any chain of hops, a derived token never holds a scope, stage,
        /// audience or lifetime that its parent, any earlier hop, or its user lacks; and an
        /// empty intersection is a refusal, never an empty token.
        #[test]
        fn delegated_never_amplified(
            user in set_strategy(),
            hops in proptest::collection::vec(
                (set_strategy(), set_strategy(), stage_strategy(), proptest::option::of(stage_strategy()),
                 proptest::option::of(1i64..5_000), proptest::bool::ANY, aud_strategy()), 1..=4),
            user_exp in 1_001i64..20_000,
        ) {
            let rights = to_patterns(&user);
            let mut earlier: Vec<(Parent, Stage)> = Vec::new();
            for (ceiling, requested, max_stage, stage, ttl, intersect, aud) in hops {
                let ceiling = to_patterns(&ceiling);
                let parent = earlier.last().map(|(p, _)| p.clone());
                let req = GrantRequest {
                    requested: &requested,
                    aud: &aud,
                    mode: if intersect { ScopeMode::Intersect } else { ScopeMode::Strict },
                    rights: &rights,
                    ceiling: &ceiling,
                    max_stage,
                    parent: parent.as_ref(),
                    stage,
                    ttl,
                    subject_exp: parent.as_ref().map_or(user_exp, |p| p.exp),
                    now: 1_000,
                    ttl_policy: TtlPolicy::default(),
                    catalog: &NO_OVERRIDES,
                };
                let g = match decide(&req) {
                    Ok(g) => g,
                    Err(GrantDenial::Scopes(denied)) => {
                        prop_assert!(!denied.is_empty());
                        break;
                    }
                    Err(_) => break,
                };
                prop_assert!(!g.scope.is_empty(), "never an empty token");
                for s in g.scope.iter() {
                    prop_assert!(requested.contains(s));
                    prop_assert!(user.contains(s), "user lacks {}", s);
                    prop_assert!(ceiling.allows(s));
                    for (e, _) in &earlier {
                        prop_assert!(e.scope.contains(s), "an earlier hop lacks {}", s);
                    }
                }
                prop_assert!(g.stage <= max_stage);
                prop_assert!(g.exp <= user_exp);
                prop_assert!(g.exp > 1_000);
                for (e, e_max) in &earlier {
                    prop_assert!(g.stage <= e.stage && g.stage <= *e_max);
                    prop_assert!(g.exp <= e.exp);
                    prop_assert!(aud.iter().all(|a| e.aud.contains(a)), "an earlier hop lacks an audience");
                }
                if g.stage == Stage::Observe { prop_assert!(!g.scope.has_write()); }
                earlier.push((Parent { scope: g.scope, stage: g.stage, exp: g.exp, aud }, max_stage));
            }
        }
    }
}
