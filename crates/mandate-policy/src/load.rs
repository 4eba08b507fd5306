//! Loading and validating policy files.
//!
//! Every `*.cedar` file of the policy directory is parsed; each policy is named by its `@id("…")`
//! annotation or by `<file>:<line>`; the whole set is validated (strict mode) against the schema,
//! whose actions are the scopes the policies and the catalog name. Any error refuses the whole
//! set and is reported as `` `file` line N: reason ``, so the caller keeps the last good set.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, EntityUid, PolicyId, PolicySet, Schema, ValidationMode, Validator,
};
use mandate_core::scope::{Scope, ScopePattern};
use miette::Diagnostic;

use crate::schema::{self, DELEGATE, GroupIndex};

/// Largest policy file read.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// A problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file (name within the policy directory).
    pub file: String,
    /// 1-based line, 0 when the problem is not in one place.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "`{}` line {}: {}", self.file, self.line, self.message)
        } else {
            write!(f, "`{}`: {}", self.file, self.message)
        }
    }
}

/// The policies that can apply to one action, and the action groups it is in.
#[derive(Debug)]
pub(crate) struct Slice {
    pub(crate) policies: PolicySet,
    pub(crate) groups: Vec<String>,
}

/// Most per-action policy slices kept.
const MAX_SLICES: usize = 10_000;

/// A validated policy set, ready to decide.
///
/// Cedar evaluates every policy of the set it is given, so a decision only gets the policies that
/// can apply to its action: those with no action constraint, and those naming the action or an
/// action group it is in. Slices are built on first use per action and cached.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) policies: PolicySet,
    any_action: Vec<PolicyId>,
    by_action: BTreeMap<String, Vec<PolicyId>>,
    slices: std::sync::Arc<std::sync::Mutex<BTreeMap<String, std::sync::Arc<Slice>>>>,
    groups: GroupIndex,
    origins: BTreeMap<String, (String, usize)>,
    files: Vec<String>,
    warnings: Vec<String>,
    schema_text: String,
}

impl Engine {
    /// The policies that can apply to `action`, and the action groups a scope action is in.
    pub(crate) fn slice(&self, action: &str, scope: Option<&Scope>) -> std::sync::Arc<Slice> {
        let mut cache = match self.slices.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(s) = cache.get(action) {
            return s.clone();
        }
        let groups: Vec<String> = scope
            .map(|s| {
                self.groups
                    .of(s)
                    .into_iter()
                    .map(|g| g.as_str().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let mut set = PolicySet::new();
        let named = std::iter::once(action).chain(groups.iter().map(String::as_str));
        let ids = self
            .any_action
            .iter()
            .chain(named.filter_map(|a| self.by_action.get(a)).flatten());
        for id in ids {
            if let Some(p) = self.policies.policy(id) {
                // A policy named twice (action and group) is added once.
                let _ = set.add(p.clone());
            }
        }
        let slice = std::sync::Arc::new(Slice {
            policies: set,
            groups,
        });
        if cache.len() >= MAX_SLICES {
            cache.clear();
        }
        cache.insert(action.to_owned(), slice.clone());
        slice
    }

    /// How many policies.
    pub fn policy_count(&self) -> usize {
        self.policies.policies().count()
    }

    /// The files the set was read from.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Where the policy `id` is written: (file, line).
    pub fn origin(&self, id: &str) -> Option<(&str, usize)> {
        self.origins.get(id).map(|(f, l)| (f.as_str(), *l))
    }

    /// Validator warnings (e.g. a policy that can never apply).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The generated schema, in Cedar schema syntax.
    pub fn schema_text(&self) -> &str {
        &self.schema_text
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map_or(1, |t| t.bytes().filter(|b| *b == b'\n').count() + 1)
}

/// The 1-based line of each of the ascending byte `offsets` in `text`, counted in one pass (a
/// [`line_of`] per policy would read the file once per policy).
fn lines_of(text: &str, offsets: &[usize]) -> Vec<usize> {
    let b = text.as_bytes();
    let (mut line, mut at) = (1, 0);
    offsets
        .iter()
        .map(|o| {
            let o = (*o).clamp(at, b.len());
            line += b
                .get(at..o)
                .map_or(0, |t| t.iter().filter(|c| **c == b'\n').count());
            at = o;
            line
        })
        .collect()
}

/// Byte offsets where each top-level policy starts (its first annotation or `permit`/`forbid`),
/// skipping comments and string literals.
fn policy_starts(text: &str) -> Vec<usize> {
    let b = text.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    let mut at_start = true;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            c => {
                if at_start {
                    starts.push(i);
                    at_start = false;
                }
                if c == b';' {
                    at_start = true;
                }
                i += 1;
            }
        }
    }
    starts
}

fn actions_of(c: ActionConstraint) -> Vec<EntityUid> {
    match c {
        ActionConstraint::Any => Vec::new(),
        ActionConstraint::Eq(a) => vec![a],
        ActionConstraint::In(v) => v,
    }
}

/// Policies validated against one schema at a time.
const VALIDATION_CHUNK: usize = 200;

/// (policy id, byte offset, message) of each validation error, and the warnings.
type Findings = (Vec<(String, Option<usize>, String)>, Vec<String>);

fn run_validator(set: &PolicySet, schema_text: &str, out: &mut Findings) {
    let schema = match Schema::from_cedarschema_str(schema_text) {
        Ok((s, _)) => s,
        Err(e) => {
            out.0.push((String::new(), None, format!("schema: {e}")));
            return;
        }
    };
    let result = Validator::new(schema).validate(set, ValidationMode::Strict);
    for e in result.validation_errors() {
        let offset = e.labels().and_then(|mut ls| ls.next()).map(|l| l.offset());
        out.0
            .push((e.policy_id().to_string(), offset, e.to_string()));
    }
    out.1
        .extend(result.validation_warnings().map(ToString::to_string));
}

/// Validates `set` in strict mode. Cedar's validator costs (policies × actions in the schema),
/// so policies that name their actions are validated in chunks, each against a schema holding
/// only the actions the chunk names (with every scope of each group it names); policies with no
/// action constraint are validated against the whole schema.
fn validate(
    set: &PolicySet,
    any_action: &[PolicyId],
    scopes: &BTreeSet<Scope>,
    groups: &BTreeSet<ScopePattern>,
    full_schema: &str,
) -> Findings {
    let mut out: Findings = (Vec::new(), Vec::new());
    let mut any = PolicySet::new();
    let mut named: Vec<&cedar_policy::Policy> = Vec::new();
    let any_action: HashSet<&PolicyId> = any_action.iter().collect();
    for p in set.policies() {
        if any_action.contains(p.id()) {
            let _ = any.add(p.clone());
        } else {
            named.push(p);
        }
    }
    if any.policies().next().is_some() {
        run_validator(&any, full_schema, &mut out);
    }
    // Each group's scopes, and each scope's groups, looked up once rather than matched per chunk.
    let index = GroupIndex::new(groups);
    let mut members: HashMap<&str, Vec<&Scope>> = HashMap::new();
    for s in scopes {
        for g in index.of(s) {
            members.entry(g.as_str()).or_default().push(s);
        }
    }
    for chunk in named.chunks(VALIDATION_CHUNK) {
        let mut part = PolicySet::new();
        let mut chunk_scopes = BTreeSet::new();
        let mut chunk_groups = BTreeSet::new();
        for p in chunk {
            let _ = part.add((*p).clone());
            for a in actions_of(p.action_constraint()) {
                let name = a.id().unescaped();
                if let Ok(s) = Scope::parse(name) {
                    chunk_scopes.insert(s);
                } else if let Ok(g) = ScopePattern::parse(name) {
                    if groups.contains(&g) {
                        let of_g = members.get(g.as_str()).map_or(&[][..], Vec::as_slice);
                        chunk_scopes.extend(of_g.iter().map(|s| (*s).clone()));
                    } else {
                        chunk_scopes.extend(scopes.iter().filter(|s| g.matches(s)).cloned());
                    }
                    chunk_groups.insert(g);
                }
            }
        }
        // Groups the chunk's scopes are in must be declared for the hierarchy to match.
        let of_scopes: Vec<&ScopePattern> = chunk_scopes.iter().flat_map(|s| index.of(s)).collect();
        chunk_groups.extend(of_scopes.into_iter().cloned());
        run_validator(
            &part,
            &schema::with_actions(&chunk_scopes, &chunk_groups),
            &mut out,
        );
    }
    out.1.sort();
    out.1.dedup();
    out
}

/// Parses, names and validates policy sources: `(file name, text)` pairs. `catalog` adds
/// concrete scopes to the schema beyond those the policies name.
pub fn load_sources(
    files: &[(String, String)],
    catalog: &BTreeSet<Scope>,
) -> Result<Engine, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let mut set = PolicySet::new();
    let mut origins = BTreeMap::new();
    // The file (index into `files`) each policy is read from, for the lines of validation
    // errors: the text is kept once per file, not once per policy.
    let mut file_of: BTreeMap<String, usize> = BTreeMap::new();
    let mut scopes = catalog.clone();
    let mut groups = BTreeSet::new();
    let mut any_action = Vec::new();
    let mut by_action: BTreeMap<String, Vec<PolicyId>> = BTreeMap::new();
    for (index, (file, text)) in files.iter().enumerate() {
        let parsed = match PolicySet::from_str(text) {
            Ok(p) => p,
            Err(e) => {
                let offsets: Vec<usize> = e
                    .labels()
                    .map(|ls| ls.map(|l| l.offset()).collect())
                    .unwrap_or_default();
                let messages: Vec<String> = e.iter().map(ToString::to_string).collect();
                let line = offsets.first().map_or(0, |o| line_of(text, *o));
                errors.push(PolicyError {
                    file: file.clone(),
                    line,
                    message: format!("cannot parse: {}", messages.join("; ")),
                });
                continue;
            }
        };
        let lines = lines_of(text, &policy_starts(text));
        for (n, policy) in parsed.policies().enumerate() {
            let line = lines.get(n).copied().unwrap_or(0);
            let id = policy
                .annotation("id")
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{file}:{line}"));
            let constraint = policy.action_constraint();
            let named = actions_of(constraint.clone());
            if matches!(constraint, ActionConstraint::Any) {
                any_action.push(PolicyId::new(&id));
            }
            for a in &named {
                by_action
                    .entry(a.id().unescaped().to_owned())
                    .or_default()
                    .push(PolicyId::new(&id));
            }
            for a in named {
                let name = a.id().unescaped().to_owned();
                if a.type_name().to_string() != "Action" {
                    continue;
                }
                if name == DELEGATE {
                    continue;
                }
                if let Ok(s) = Scope::parse(&name) {
                    scopes.insert(s);
                } else if let Ok(p) = ScopePattern::parse(&name) {
                    groups.insert(p);
                } else {
                    errors.push(PolicyError {
                        file: file.clone(),
                        line,
                        message: format!("action `{name}` is neither a scope (`<resource>:<action>`) nor `delegate`"),
                    });
                }
            }
            if origins.contains_key(&id) {
                errors.push(PolicyError {
                    file: file.clone(),
                    line,
                    message: format!("policy id `{id}` is used twice"),
                });
                continue;
            }
            if let Err(e) = set.add(policy.new_id(PolicyId::new(&id))) {
                errors.push(PolicyError {
                    file: file.clone(),
                    line,
                    message: e.to_string(),
                });
                continue;
            }
            origins.insert(id.clone(), (file.clone(), line));
            file_of.insert(id, index);
        }
    }
    let schema_text = schema::with_actions(&scopes, &groups);
    if let Err(e) = Schema::from_cedarschema_str(&schema_text) {
        errors.push(PolicyError {
            file: "<schema>".into(),
            line: 0,
            message: e.to_string(),
        });
        return Err(errors);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (validation_errors, warnings) = validate(&set, &any_action, &scopes, &groups, &schema_text);
    for (id, offset, message) in validation_errors {
        let (file, text) = file_of
            .get(&id)
            .and_then(|i| files.get(*i))
            .map_or(("", ""), |(f, t)| (f.as_str(), t.as_str()));
        let line = offset.map_or_else(|| origins.get(&id).map_or(0, |o| o.1), |o| line_of(text, o));
        errors.push(PolicyError {
            file: file.to_owned(),
            line,
            message,
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Engine {
        policies: set,
        any_action,
        by_action,
        slices: Default::default(),
        groups: GroupIndex::new(&groups),
        origins,
        files: files.iter().map(|(f, _)| f.clone()).collect(),
        warnings,
        schema_text,
    })
}

/// Reads every `*.cedar` file of `dir` (in name order) and loads them.
pub fn load_dir(dir: &Path, catalog: &BTreeSet<Scope>) -> Result<Engine, Vec<PolicyError>> {
    let fail = |file: String, message: String| {
        vec![PolicyError {
            file,
            line: 0,
            message,
        }]
    };
    let entries = std::fs::read_dir(dir).map_err(|e| {
        fail(
            dir.display().to_string(),
            format!("cannot read the policy directory: {e}"),
        )
    })?;
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    paths.sort();
    let mut files = Vec::new();
    for p in paths {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        if size > MAX_FILE_BYTES {
            return Err(fail(name, format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let text = std::fs::read_to_string(&p).map_err(|e| fail(name.clone(), e.to_string()))?;
        files.push((name, text));
    }
    if files.is_empty() {
        return Err(fail(
            dir.display().to_string(),
            "no `*.cedar` policy file".into(),
        ));
    }
    load_sources(&files, catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(name: &str, text: &str) -> Vec<(String, String)> {
        vec![(name.to_owned(), text.to_owned())]
    }

    #[test]
    fn policies_are_named_by_id_or_place() {
        let e = load_sources(
            &src(
                "team.cedar",
                "// support may read customers\n@id(\"support-read\")\npermit(principal in Group::\"support\", action == Action::\"crm.customers:read\", resource);\n\nforbid(principal, action in Action::\"crm.*:read\", resource) when { context.stage == \"execute\" };\n",
            ),
            &BTreeSet::new(),
        )
        .unwrap();
        assert_eq!(e.policy_count(), 2);
        assert_eq!(e.origin("support-read"), Some(("team.cedar", 2)));
        assert_eq!(e.origin("team.cedar:5"), Some(("team.cedar", 5)));
    }

    #[test]
    fn a_syntax_error_names_file_and_line() {
        let errs = load_sources(
            &src("bad.cedar", "permit(principal, action == Action::\"a:read\", resource);\n\npermit(principal, action, resource)\nwhen { 1 + };\n"),
            &BTreeSet::new(),
        )
        .unwrap_err();
        assert_eq!(errs[0].file, "bad.cedar");
        assert_eq!(errs[0].line, 4, "{}", errs[0]);
        assert!(
            errs[0]
                .to_string()
                .starts_with("`bad.cedar` line 4: cannot parse"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn a_schema_error_names_file_line_and_reason() {
        let errs = load_sources(
            &src("ctx.cedar", "permit(principal, action == Action::\"a:read\", resource)\n  when { context.stag == \"observe\" };\n"),
            &BTreeSet::new(),
        )
        .unwrap_err();
        assert_eq!(
            (errs[0].file.as_str(), errs[0].line),
            ("ctx.cedar", 2),
            "{}",
            errs[0]
        );
        assert!(errs[0].message.contains("stag"), "{}", errs[0]);
    }

    #[test]
    fn actions_must_be_scopes() {
        let errs = load_sources(
            &src(
                "x.cedar",
                "permit(principal, action == Action::\"Read Stuff\", resource);",
            ),
            &BTreeSet::new(),
        )
        .unwrap_err();
        assert!(errs[0].message.contains("neither a scope"), "{}", errs[0]);
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let text = "@id(\"a\") permit(principal, action == Action::\"a:read\", resource);\n@id(\"a\") permit(principal, action == Action::\"b:read\", resource);";
        let errs = load_sources(&src("d.cedar", text), &BTreeSet::new()).unwrap_err();
        assert!(errs[0].message.contains("used twice"), "{}", errs[0]);
    }

    #[test]
    fn lines_of_counts_in_one_pass_as_line_of_does() {
        let t = "a\nb\n\nc;\nd";
        let offsets: Vec<usize> = (0..=t.len() + 2).collect();
        let expected: Vec<usize> = offsets.iter().map(|o| line_of(t, *o)).collect();
        assert_eq!(lines_of(t, &offsets), expected);
    }

    /// Many policies (several validation chunks): other teams' scopes, action groups, conditions,
    /// forbids, a policy with no action constraint, and `bad` invalid ones.
    fn many(n: usize, bad: &[usize]) -> String {
        let mut text = String::from(
            "@id(\"any\") forbid(principal, action, resource) when { context.stage == \"execute\" };\n",
        );
        for i in 0..n {
            let cond = if bad.contains(&i) {
                "context.stag"
            } else {
                "context.stage"
            };
            text.push_str(&match i % 4 {
                0 => format!("@id(\"p{i}\") permit(principal in Group::\"t{i}\", action == Action::\"svc{i}.records:read\", resource) when {{ {cond} == \"observe\" }};\n"),
                1 => format!("@id(\"p{i}\") permit(principal, action in Action::\"svc{}.*:read\", resource) when {{ {cond} == \"draft\" }};\n", i - 1),
                2 => format!("@id(\"p{i}\") forbid(principal is Agent, action in [Action::\"svc{}.records:read\", Action::\"shared.*:*\"], resource) unless {{ {cond} == \"x\" }};\n", i - 2),
                _ => format!("@id(\"p{i}\") permit(principal is User, action == Action::\"shared.s{i}:write\", resource) when {{ {cond} != \"execute\" && principal.hasTag(\"tier\") }};\n"),
            });
        }
        text
    }

    /// Errors and warnings of one validation of the whole set against the whole schema.
    fn unchunked(text: &str) -> (Vec<String>, Vec<String>) {
        let mut set = PolicySet::new();
        let mut scopes = BTreeSet::new();
        let mut groups = BTreeSet::new();
        for p in PolicySet::from_str(text).unwrap().policies() {
            let id = p.annotation("id").unwrap().to_owned();
            for a in actions_of(p.action_constraint()) {
                let name = a.id().unescaped();
                if let Ok(s) = Scope::parse(name) {
                    scopes.insert(s);
                } else {
                    groups.insert(ScopePattern::parse(name).unwrap());
                }
            }
            set.add(p.new_id(PolicyId::new(id))).unwrap();
        }
        let schema = Schema::from_cedarschema_str(&schema::with_actions(&scopes, &groups))
            .unwrap()
            .0;
        let result = Validator::new(schema).validate(&set, ValidationMode::Strict);
        let mut errors: Vec<String> = result
            .validation_errors()
            .map(ToString::to_string)
            .collect();
        let mut warnings: Vec<String> = result
            .validation_warnings()
            .map(ToString::to_string)
            .collect();
        errors.sort();
        warnings.sort();
        warnings.dedup();
        (errors, warnings)
    }

    #[test]
    fn chunked_validation_finds_what_one_whole_validation_finds() {
        for bad in [&[][..], &[3, 250, 251, 598][..]] {
            let text = many(600, bad);
            let (errors, warnings) = unchunked(&text);
            match load_sources(&src("many.cedar", &text), &BTreeSet::new()) {
                Ok(e) => {
                    assert!(errors.is_empty(), "{errors:?}");
                    assert_eq!(e.warnings(), warnings);
                    assert_eq!(e.policy_count(), 601);
                }
                Err(errs) => {
                    let mut got: Vec<String> = errs.iter().map(|e| e.message.clone()).collect();
                    got.sort();
                    assert_eq!(got, errors);
                    let named: BTreeSet<usize> = errs
                        .iter()
                        .filter_map(|e| {
                            e.message.split('`').nth(1)?.strip_prefix('p')?.parse().ok()
                        })
                        .collect();
                    assert_eq!(
                        named,
                        bad.iter().copied().collect(),
                        "every bad policy, only those"
                    );
                    assert!(errs.iter().all(|e| e.file == "many.cedar" && e.line > 1));
                }
            }
        }
    }

    #[test]
    fn a_slice_holds_exactly_the_policies_that_can_apply_to_its_action() {
        let e = load_sources(&src("many.cedar", &many(40, &[])), &BTreeSet::new()).unwrap();
        for scope in [
            "svc4.records:read",
            "shared.s7:write",
            "shared.x:read",
            "crm.customers:read",
        ] {
            let s = Scope::parse(scope).unwrap();
            let slice = e.slice(scope, Some(&s));
            let mut got: Vec<String> = slice
                .policies
                .policies()
                .map(|p| p.id().to_string())
                .collect();
            got.sort();
            let mut expected: Vec<String> = e
                .policies
                .policies()
                .filter(|p| {
                    let named = actions_of(p.action_constraint());
                    named.is_empty()
                        || named.iter().any(|a| {
                            let n = a.id().unescaped();
                            n == scope || ScopePattern::parse(n).is_ok_and(|g| g.matches(&s))
                        })
                })
                .map(|p| p.id().to_string())
                .collect();
            expected.sort();
            assert_eq!(got, expected, "{scope}");
            assert!(got.contains(&"any".to_owned()));
        }
        let delegate = e.slice(DELEGATE, None);
        let ids: Vec<String> = delegate
            .policies
            .policies()
            .map(|p| p.id().to_string())
            .collect();
        assert_eq!(ids, vec!["any"]);
    }

    #[test]
    fn policy_starts_skip_comments_and_strings() {
        let t = "// permit; \"x\"\n@id(\"a;b\")\npermit(principal, action, resource) when { \"x;y\" == \"z\" };\nforbid(principal, action, resource);";
        let s = policy_starts(t);
        assert_eq!(s.len(), 2);
        assert_eq!(line_of(t, s[0]), 2);
        assert_eq!(line_of(t, s[1]), 4);
    }
}
