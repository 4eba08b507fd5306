//! Scopes (`<resource>:<action>`), wildcard patterns and action classes (SPEC §1).
//!
//! A [`Scope`] is what an issued token holds: concrete, no wildcards. A [`ScopePattern`] is what a
//! ceiling or a rights rule holds: any segment may be `*`, standing for exactly one segment.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest scope string accepted, in bytes.
pub const MAX_SCOPE_LEN: usize = 200;

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Not of the form `<resource>:<action>`.
    #[error("scope `{0}` is not of the form `<resource>:<action>`")]
    Shape(String),
    /// A resource or action segment has characters outside `a-z 0-9 _ -` or is empty.
    #[error("scope `{0}` has an empty segment or a character outside `a-z`, `0-9`, `_` and `-`")]
    Segment(String),
    /// A wildcard where only concrete scopes are allowed.
    #[error("scope `{0}` holds a wildcard; requested and issued scopes must be concrete")]
    Wildcard(String),
    /// Too long.
    #[error("scope `{0}…` is longer than {MAX_SCOPE_LEN} bytes")]
    TooLong(String),
}

/// Whether an action reads or writes (SPEC §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionClass {
    /// Reads: `read`, `list`, `get`, `search`, `query`, `view`.
    Read,
    /// Everything else.
    Write,
}

impl ActionClass {
    /// The default class of an action name, before any catalog override.
    pub fn of_action(action: &str) -> ActionClass {
        match action {
            "read" | "list" | "get" | "search" | "query" | "view" => ActionClass::Read,
            _ => ActionClass::Write,
        }
    }
}

/// Overrides of the default action classes: by full scope (`crm.reports:generate`) or by action
/// (`export`). Full-scope entries win over action entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActionCatalog(pub std::collections::BTreeMap<String, ActionClass>);

impl ActionCatalog {
    /// The class of `scope` under this catalog.
    pub fn class_of(&self, scope: &Scope) -> ActionClass {
        self.0
            .get(scope.as_str())
            .or_else(|| self.0.get(scope.action()))
            .copied()
            .unwrap_or_else(|| scope.class())
    }

    /// Whether any scope of `set` writes under this catalog.
    pub fn has_write(&self, set: &ScopeSet) -> bool {
        set.iter().any(|s| self.class_of(s) == ActionClass::Write)
    }
}

fn valid_word(w: &str) -> bool {
    !w.is_empty()
        && w.len() <= 64
        && w.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn split(s: &str) -> Result<(&str, &str), ScopeError> {
    if s.len() > MAX_SCOPE_LEN {
        let cut: String = s.chars().take(40).collect();
        return Err(ScopeError::TooLong(cut));
    }
    let (resource, action) = s
        .split_once(':')
        .ok_or_else(|| ScopeError::Shape(s.to_owned()))?;
    if action.contains(':') || resource.is_empty() || action.is_empty() {
        return Err(ScopeError::Shape(s.to_owned()));
    }
    Ok((resource, action))
}

/// A concrete scope, e.g. `crm.customers:read`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    text: String,
    colon: usize,
}

impl Scope {
    /// Parses a concrete scope; wildcards are refused.
    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        let (resource, action) = split(s)?;
        if resource.split('.').any(|w| w == "*") || action == "*" {
            return Err(ScopeError::Wildcard(s.to_owned()));
        }
        if !resource.split('.').all(valid_word) || !valid_word(action) {
            return Err(ScopeError::Segment(s.to_owned()));
        }
        Ok(Scope {
            text: s.to_owned(),
            colon: resource.len(),
        })
    }

    /// The resource part, e.g. `crm.customers`.
    pub fn resource(&self) -> &str {
        &self.text[..self.colon]
    }

    /// The action part, e.g. `read`.
    pub fn action(&self) -> &str {
        &self.text[self.colon + 1..]
    }

    /// The scope as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The action's class under the default catalog.
    pub fn class(&self) -> ActionClass {
        ActionClass::of_action(self.action())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Scope {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::parse(s)
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Scope::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A scope pattern for ceilings and rights: any segment may be `*` (exactly one segment).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopePattern {
    text: String,
    resource: Vec<String>,
    action: String,
}

impl ScopePattern {
    /// Parses a pattern such as `crm.*:read` or `tickets:*`.
    pub fn parse(s: &str) -> Result<ScopePattern, ScopeError> {
        let (resource, action) = split(s)?;
        let ok = |w: &str| w == "*" || valid_word(w);
        if !resource.split('.').all(ok) || !ok(action) {
            return Err(ScopeError::Segment(s.to_owned()));
        }
        Ok(ScopePattern {
            text: s.to_owned(),
            resource: resource.split('.').map(str::to_owned).collect(),
            action: action.to_owned(),
        })
    }

    /// Whether this pattern grants the concrete `scope`.
    pub fn matches(&self, scope: &Scope) -> bool {
        // Walks both segment lists together without collecting them: this runs for every
        // pattern against every requested scope, on every issuance.
        if self.action != "*" && self.action != scope.action() {
            return false;
        }
        let mut words = scope.resource().split('.');
        let mut patterns = self.resource.iter();
        loop {
            match (patterns.next(), words.next()) {
                (None, None) => return true,
                (Some(p), Some(w)) if p == "*" || p == w => {}
                _ => return false,
            }
        }
    }

    /// Whether every scope this pattern grants is also granted by `other`.
    pub fn is_subset_of(&self, other: &ScopePattern) -> bool {
        self.resource.len() == other.resource.len()
            && self
                .resource
                .iter()
                .zip(&other.resource)
                .all(|(mine, theirs)| theirs == "*" || mine == theirs)
            && (other.action == "*" || other.action == self.action)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The pattern granting exactly the scopes both grant, if any: segment by segment, a
    /// wildcard yields to the other side's word.
    pub fn intersect(&self, other: &ScopePattern) -> Option<ScopePattern> {
        fn meet<'a>(a: &'a str, b: &'a str) -> Option<&'a str> {
            match (a, b) {
                ("*", x) | (x, "*") => Some(x),
                (x, y) if x == y => Some(x),
                _ => None,
            }
        }
        if self.resource.len() != other.resource.len() {
            return None;
        }
        let resource = self
            .resource
            .iter()
            .zip(&other.resource)
            .map(|(a, b)| meet(a, b))
            .collect::<Option<Vec<&str>>>()?;
        let action = meet(&self.action, &other.action)?;
        ScopePattern::parse(&format!("{}:{action}", resource.join("."))).ok()
    }
}

impl fmt::Display for ScopePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<Scope> for ScopePattern {
    fn from(s: Scope) -> Self {
        ScopePattern {
            resource: s.resource().split('.').map(str::to_owned).collect(),
            action: s.action().to_owned(),
            text: s.text,
        }
    }
}

impl Serialize for ScopePattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ScopePattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ScopePattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A set of patterns: a ceiling, or the rights of a user or agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PatternSet(pub Vec<ScopePattern>);

impl PatternSet {
    /// Parses each pattern.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<PatternSet, ScopeError> {
        items
            .into_iter()
            .map(ScopePattern::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(PatternSet)
    }

    /// Whether some pattern grants `scope`.
    pub fn allows(&self, scope: &Scope) -> bool {
        self.0.iter().any(|p| p.matches(scope))
    }

    /// The patterns, as written.
    pub fn iter(&self) -> impl Iterator<Item = &ScopePattern> {
        self.0.iter()
    }
}

/// A set of concrete scopes, ordered and without duplicates: what a token holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// Parses a space-separated OAuth `scope` value (RFC 6749 §3.3).
    pub fn parse_oauth(s: &str) -> Result<ScopeSet, ScopeError> {
        s.split(' ')
            .filter(|w| !w.is_empty())
            .map(Scope::parse)
            .collect::<Result<BTreeSet<_>, _>>()
            .map(ScopeSet)
    }

    /// The space-separated form used in the `scope` claim.
    pub fn to_oauth(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(s.as_str());
        }
        out
    }

    /// Whether there is no scope at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many scopes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set holds `scope`.
    pub fn contains(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }

    /// Whether every scope here is also in `other`.
    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The scopes, ordered.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    /// Splits into (the scopes `keep` accepts, the ones it refuses).
    pub fn partition(&self, keep: impl Fn(&Scope) -> bool) -> (ScopeSet, ScopeSet) {
        let (a, b): (BTreeSet<Scope>, BTreeSet<Scope>) = self.0.iter().cloned().partition(keep);
        (ScopeSet(a), ScopeSet(b))
    }

    /// Whether any scope is write-class.
    pub fn has_write(&self) -> bool {
        self.0.iter().any(|s| s.class() == ActionClass::Write)
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        ScopeSet(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Scope {
        Scope::parse(x).unwrap()
    }
    fn p(x: &str) -> ScopePattern {
        ScopePattern::parse(x).unwrap()
    }

    #[test]
    fn parses_the_spec_examples() {
        for ok in [
            "crm.customers:read",
            "tickets:create",
            "email:send",
            "mcp.crm.lookup_customer:call",
        ] {
            assert_eq!(s(ok).as_str(), ok);
        }
        assert_eq!(s("crm.customers:read").resource(), "crm.customers");
        assert_eq!(s("crm.customers:read").action(), "read");
    }

    #[test]
    fn refuses_malformed_scopes() {
        for bad in [
            "",
            "crm",
            ":read",
            "crm:",
            "crm::read",
            "CRM:read",
            "crm..x:read",
            "crm:re ad",
            "a:b:c",
            "crm.*:read",
            "tickets:*",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(Scope::parse(&"a".repeat(300)).is_err());
    }

    #[test]
    fn wildcards_stand_for_one_segment() {
        assert!(p("crm.*:read").matches(&s("crm.customers:read")));
        assert!(!p("crm.*:read").matches(&s("crm.customers:write")));
        assert!(!p("crm.*:read").matches(&s("crm:read")));
        assert!(!p("crm.*:read").matches(&s("crm.customers.notes:read")));
        assert!(p("tickets:*").matches(&s("tickets:create")));
        assert!(p("mcp.crm.*:call").matches(&s("mcp.crm.delete_customer:call")));
        assert!(!p("tickets:read").matches(&s("tickets:create")));
    }

    #[test]
    fn pattern_subsets() {
        assert!(p("crm.customers:read").is_subset_of(&p("crm.*:read")));
        assert!(p("crm.*:read").is_subset_of(&p("crm.*:*")));
        assert!(!p("crm.*:read").is_subset_of(&p("crm.customers:read")));
    }

    #[test]
    fn action_classes_follow_the_spec() {
        for r in ["read", "list", "get", "search", "query", "view"] {
            assert_eq!(ActionClass::of_action(r), ActionClass::Read);
        }
        for w in ["create", "send", "call", "delete", "update"] {
            assert_eq!(ActionClass::of_action(w), ActionClass::Write);
        }
    }

    #[test]
    fn the_catalog_overrides_action_classes() {
        let mut c = ActionCatalog::default();
        c.0.insert("export".into(), ActionClass::Read);
        c.0.insert("crm.reports:generate".into(), ActionClass::Read);
        c.0.insert("tickets:list".into(), ActionClass::Write);
        assert_eq!(c.class_of(&s("crm.customers:export")), ActionClass::Read);
        assert_eq!(c.class_of(&s("crm.reports:generate")), ActionClass::Read);
        assert_eq!(c.class_of(&s("crm.reports:delete")), ActionClass::Write);
        assert_eq!(
            c.class_of(&s("tickets:list")),
            ActionClass::Write,
            "full scope wins"
        );
        assert_eq!(c.class_of(&s("crm.customers:list")), ActionClass::Read);
    }

    #[test]
    fn pattern_intersections() {
        assert_eq!(
            p("crm.*:read").intersect(&p("*.customers:*")),
            Some(p("crm.customers:read"))
        );
        assert_eq!(
            p("tickets:*").intersect(&p("tickets:read")),
            Some(p("tickets:read"))
        );
        assert_eq!(p("crm.*:read").intersect(&p("crm.*:write")), None);
        assert_eq!(
            p("crm:read").intersect(&p("crm.x:read")),
            None,
            "segment counts differ"
        );
    }

    #[test]
    fn oauth_scope_round_trip() {
        let set = ScopeSet::parse_oauth("tickets:read  crm.customers:read tickets:read").unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.to_oauth(), "crm.customers:read tickets:read");
    }
}
