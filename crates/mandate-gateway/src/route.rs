//! The route table: which action a request is, on which resource (SPEC §6, §10).
//!
//! A route maps a method and a path template to a scope and a resource template:
//!
//! ```text
//! GET  /customers/{id}  →  crm.customers:read  on  customers/{id}
//! POST /tickets         →  tickets:create      on  tickets
//! ```
//!
//! A `{name}` path segment captures exactly one segment. When several routes match, the one
//! with literal segments earliest wins (`/customers/export` over `/customers/{id}`); two routes
//! of the same method and shape are a configuration error, so the winner never depends on order.
//! A request whose path has `.` or `..` segments, an empty segment, an encoded `/` or `\`, a `;`,
//! an escaped unreserved or control character, or escapes that are not UTF-8 matches nothing:
//! such paths mean different things to different upstreams (see `safe_segment`).

use mandate_core::scope::Scope;
use mandate_core::stage::Stage;
use serde::{Deserialize, Serialize};

/// One route as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Path template, e.g. `/customers/{id}`.
    pub path: String,
    /// The scope the request needs, e.g. `crm.customers:read`.
    pub action: String,
    /// Resource template, e.g. `customers/{id}`; every `{name}` must be captured by the path.
    pub resource: String,
    /// The least stage the request needs, if more than its action class implies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// The upstream (by name) the route forwards to; may be left out when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The audience a token must carry for this route (default: its upstream's `audience`, else
    /// the gateway's URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Why a route table was refused. Messages name the route by its position (from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The method is not an HTTP method token.
    #[error("route {route}: method `{method}` is not an HTTP method")]
    Method {
        /// Position, from 1.
        route: usize,
        /// As written.
        method: String,
    },
    /// The path template is malformed.
    #[error("route {route}: path `{path}` {problem}")]
    Path {
        /// Position, from 1.
        route: usize,
        /// As written.
        path: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// The action is not a concrete scope.
    #[error("route {route}: action `{action}`: {problem}")]
    Action {
        /// Position, from 1.
        route: usize,
        /// As written.
        action: String,
        /// What is wrong.
        problem: String,
    },
    /// The resource template names a capture the path does not have, or is malformed.
    #[error("route {route}: resource `{resource}` {problem}")]
    Resource {
        /// Position, from 1.
        route: usize,
        /// As written.
        resource: String,
        /// What is wrong.
        problem: String,
    },
    /// Two routes would match the same requests.
    #[error("routes {first} and {second} both match `{method} {shape}`")]
    Ambiguous {
        /// The earlier route.
        first: usize,
        /// The later route.
        second: usize,
        /// The method.
        method: String,
        /// The path shape, captures as `{}`.
        shape: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Capture(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String),
}

#[derive(Debug, Clone)]
struct Route {
    method: String,
    segments: Vec<Segment>,
    action: Scope,
    resource: Vec<Part>,
    stage: Option<Stage>,
}

/// A request resolved to its action and resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The route's position in the table (from 1), for audit and errors.
    pub route: usize,
    /// The scope the request needs.
    pub action: Scope,
    /// The resource, with the captures filled in, e.g. `customers/9821`.
    pub resource: String,
    /// The least stage the route asks for, if any.
    pub stage: Option<Stage>,
    /// The captured path segments, by name, in path order.
    pub params: Vec<(String, String)>,
}

/// Why a request matched no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRoute {
    /// No route has this path.
    #[error("no route for `{0}`")]
    NotFound(String),
    /// Routes have this path, but not with this method.
    #[error("`{method}` is not allowed on `{path}` (allowed: {})", .allowed.join(", "))]
    MethodNotAllowed {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
        /// The methods that are routed for this path.
        allowed: Vec<String>,
    },
    /// The path has segments that are refused before any matching.
    #[error(
        "path `{0}` has an empty, `.` or `..` segment, an encoded `/` or `\\`, a `;`, or an escape that upstreams may read differently"
    )]
    Unsafe(String),
}

/// The compiled route table.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn parse_path(route: usize, path: &str) -> Result<Vec<Segment>, RouteError> {
    let err = |problem| RouteError::Path {
        route,
        path: path.to_owned(),
        problem,
    };
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| err("must start with `/`"))?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let mut names: Vec<&str> = Vec::new();
    rest.split('/')
        .map(|seg| {
            if seg.is_empty() {
                return Err(err("has an empty segment"));
            }
            if let Some(inner) = seg.strip_prefix('{') {
                let name = inner
                    .strip_suffix('}')
                    .ok_or_else(|| err("has a `{` without its `}`"))?;
                if !is_name(name) {
                    return Err(err("has a capture whose name is not `a-z`, `0-9`, `_`"));
                }
                if names.contains(&name) {
                    return Err(err("captures the same name twice"));
                }
                names.push(name);
                Ok(Segment::Capture(name.to_owned()))
            } else if seg.contains(['{', '}']) {
                Err(err("mixes text and a capture in one segment"))
            } else if seg == "." || seg == ".." || !safe_segment(seg) {
                Err(err("has a `.`/`..` segment or an encoded `/` or `\\`"))
            } else {
                Ok(Segment::Literal(seg.to_owned()))
            }
        })
        .collect()
}

fn parse_resource(
    route: usize,
    resource: &str,
    segments: &[Segment],
) -> Result<Vec<Part>, RouteError> {
    let err = |problem: String| RouteError::Resource {
        route,
        resource: resource.to_owned(),
        problem,
    };
    if resource.is_empty() {
        return Err(err("is empty".into()));
    }
    let mut parts = Vec::new();
    let mut rest = resource;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| err("has a `{` without its `}`".into()))?;
        let name = &after[..close];
        if !segments.contains(&Segment::Capture(name.to_owned())) {
            return Err(err(format!(
                "uses `{{{name}}}`, which the path does not capture"
            )));
        }
        parts.push(Part::Var(name.to_owned()));
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(err("has a `}` without its `{`".into()));
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(parts)
}

/// Whether a raw (still percent-encoded) path segment is safe to route on: whether it means the
/// same to the gateway and to any upstream. Refused: a `\\` or an encoded `/` or `\\`; a `;`
/// (matrix parameters, which some servers strip before routing, so `..;` is `..` and `1;x` is
/// `1` to them); a `%` that does not start an escape; an escaped unreserved character (`%2e`,
/// `%31`: the upstream decodes it and sees another spelling of what was matched, `.` and `..`
/// included); an escaped control character (`%00`, `%0a`); and escapes that do not decode to
/// UTF-8 (overlong forms such as `%c0%ae`).
fn safe_segment(seg: &str) -> bool {
    if seg.contains(['\\', ';']) {
        return false;
    }
    let bytes = seg.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'%' {
            if b.is_ascii_control() {
                return false;
            }
            decoded.push(b);
            i += 1;
            continue;
        }
        let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
            return false;
        };
        let (Some(h), Some(l)) = (hex(h), hex(l)) else {
            return false;
        };
        let v = h * 16 + l;
        if v.is_ascii_alphanumeric() || b"-._~/\\".contains(&v) || v.is_ascii_control() {
            return false;
        }
        decoded.push(v);
        i += 3;
    }
    // Raw or escaped C1 controls (`U+0080`–`U+009F`, e.g. `%c2%9b`, an 8-bit CSI) are UTF-8 but
    // still control characters: they would reach resources, policy and the audit log.
    std::str::from_utf8(&decoded).is_ok_and(|text| !text.chars().any(char::is_control))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The route's shape, captures as `{}`, for ambiguity errors.
fn shape(segments: &[Segment]) -> String {
    let mut s = String::new();
    for seg in segments {
        s.push('/');
        match seg {
            Segment::Literal(l) => s.push_str(l),
            Segment::Capture(_) => s.push_str("{}"),
        }
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

impl RouteTable {
    /// Compiles `routes`, refusing malformed or ambiguous ones.
    pub fn new(routes: &[RouteConfig]) -> Result<RouteTable, RouteError> {
        let mut compiled: Vec<Route> = Vec::with_capacity(routes.len());
        for (i, r) in routes.iter().enumerate() {
            let n = i + 1;
            if !is_token(&r.method) {
                return Err(RouteError::Method {
                    route: n,
                    method: r.method.clone(),
                });
            }
            let method = r.method.to_ascii_uppercase();
            let segments = parse_path(n, &r.path)?;
            let action = Scope::parse(&r.action).map_err(|e| RouteError::Action {
                route: n,
                action: r.action.clone(),
                problem: e.to_string(),
            })?;
            let resource = parse_resource(n, &r.resource, &segments)?;
            let this_shape = shape(&segments);
            if let Some(first) = compiled
                .iter()
                .position(|c| c.method == method && shape(&c.segments) == this_shape)
            {
                return Err(RouteError::Ambiguous {
                    first: first + 1,
                    second: n,
                    method,
                    shape: this_shape,
                });
            }
            compiled.push(Route {
                method,
                segments,
                action,
                resource,
                stage: r.stage,
            });
        }
        Ok(RouteTable { routes: compiled })
    }

    /// How many routes the table has.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table has no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The scopes the routes need, in route order (with repeats).
    pub fn actions(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.action.as_str())
    }

    /// Resolves `method` and `path` (without the query; still percent-encoded) to an action and
    /// a resource.
    pub fn resolve(&self, method: &str, path: &str) -> Result<Resolved, NoRoute> {
        let segs: Vec<&str> = match path.strip_prefix('/') {
            Some("") => Vec::new(),
            Some(rest) => rest.split('/').collect(),
            None => return Err(NoRoute::Unsafe(path.to_owned())),
        };
        if segs
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == ".." || !safe_segment(s))
        {
            return Err(NoRoute::Unsafe(path.to_owned()));
        }
        // The best match for the path, per method: literal segments earliest win.
        let mut best: Option<(usize, Vec<bool>)> = None;
        let mut allowed: Vec<String> = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let Some(rank) = matches(&r.segments, &segs) else {
                continue;
            };
            if !r.method.eq_ignore_ascii_case(method) {
                if !allowed.contains(&r.method) {
                    allowed.push(r.method.clone());
                }
                continue;
            }
            if best.as_ref().is_none_or(|(_, b)| rank > *b) {
                best = Some((i, rank));
            }
        }
        let Some((i, _)) = best else {
            if allowed.is_empty() {
                return Err(NoRoute::NotFound(path.to_owned()));
            }
            allowed.sort();
            return Err(NoRoute::MethodNotAllowed {
                method: method.to_owned(),
                path: path.to_owned(),
                allowed,
            });
        };
        let Some(r) = self.routes.get(i) else {
            return Err(NoRoute::NotFound(path.to_owned()));
        };
        let params: Vec<(String, String)> = r
            .segments
            .iter()
            .zip(&segs)
            .filter_map(|(seg, value)| match seg {
                Segment::Capture(name) => Some((name.clone(), (*value).to_owned())),
                Segment::Literal(_) => None,
            })
            .collect();
        let mut resource = String::new();
        for part in &r.resource {
            match part {
                Part::Text(t) => resource.push_str(t),
                Part::Var(v) => {
                    if let Some((_, value)) = params.iter().find(|(n, _)| n == v) {
                        resource.push_str(value);
                    }
                }
            }
        }
        Ok(Resolved {
            route: i + 1,
            action: r.action.clone(),
            resource,
            stage: r.stage,
            params,
        })
    }
}

/// If `segments` match `path`, the rank: one flag per segment, `true` where it is literal.
fn matches(segments: &[Segment], path: &[&str]) -> Option<Vec<bool>> {
    if segments.len() != path.len() {
        return None;
    }
    segments
        .iter()
        .zip(path)
        .map(|(seg, p)| match seg {
            Segment::Literal(l) => (l == p).then_some(true),
            Segment::Capture(_) => Some(false),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn route(method: &str, path: &str, action: &str, resource: &str) -> RouteConfig {
        RouteConfig {
            method: method.into(),
            path: path.into(),
            action: action.into(),
            resource: resource.into(),
            stage: None,
            upstream: None,
            audience: None,
        }
    }

    /// The `--dev` sample CRM of SPEC §10.
    fn crm() -> RouteTable {
        RouteTable::new(&[
            route(
                "GET",
                "/customers/{id}",
                "crm.customers:read",
                "customers/{id}",
            ),
            route("GET", "/tickets/{id}", "tickets:read", "tickets/{id}"),
            route("POST", "/tickets", "tickets:create", "tickets"),
            route("POST", "/email/send", "email:send", "email"),
            route(
                "GET",
                "/customers/export",
                "crm.customers:export",
                "customers",
            ),
        ])
        .unwrap()
    }

    #[test]
    fn the_sample_crm_resolves_as_the_spec_says() {
        let t = crm();
        let r = t.resolve("GET", "/customers/9821").unwrap();
        assert_eq!(r.action.as_str(), "crm.customers:read");
        assert_eq!(r.resource, "customers/9821");
        assert_eq!(r.params, [("id".to_owned(), "9821".to_owned())]);
        assert_eq!(r.route, 1);
        assert_eq!(
            t.resolve("get", "/tickets/7").unwrap().action.as_str(),
            "tickets:read"
        );
        assert_eq!(t.resolve("POST", "/tickets").unwrap().resource, "tickets");
        assert_eq!(
            t.resolve("POST", "/email/send").unwrap().action.as_str(),
            "email:send"
        );
    }

    #[test]
    fn a_literal_segment_beats_a_capture_whatever_the_order() {
        let r = crm().resolve("GET", "/customers/export").unwrap();
        assert_eq!(r.action.as_str(), "crm.customers:export");
        assert!(r.params.is_empty());
    }

    #[test]
    fn unknown_paths_and_methods_are_told_apart() {
        let t = crm();
        assert_eq!(
            t.resolve("GET", "/invoices/1"),
            Err(NoRoute::NotFound("/invoices/1".into()))
        );
        let e = t.resolve("DELETE", "/customers/1").unwrap_err();
        assert_eq!(
            e,
            NoRoute::MethodNotAllowed {
                method: "DELETE".into(),
                path: "/customers/1".into(),
                allowed: vec!["GET".into()],
            }
        );
        assert_eq!(
            e.to_string(),
            "`DELETE` is not allowed on `/customers/1` (allowed: GET)"
        );
        // A capture is one segment, never more or fewer.
        assert!(t.resolve("GET", "/customers/1/notes").is_err());
        assert!(t.resolve("GET", "/customers").is_err());
    }

    #[test]
    fn traversal_and_encoded_separators_match_nothing() {
        let t = crm();
        for p in [
            "/customers/..",
            "/customers/.",
            "/customers/%2e%2e",
            "/customers/1%2F..%2Fadmin",
            "/customers/1%5cadmin",
            "/customers//1",
            "/customers/1/",
            "customers/1",
        ] {
            assert!(
                matches!(t.resolve("GET", p), Err(NoRoute::Unsafe(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn spellings_an_upstream_may_read_differently_match_nothing() {
        let t = crm();
        for p in [
            // Matrix parameters: `..;` is `..` and `4410;x` is `4410` to servers that strip them.
            "/customers/..;/tickets",
            "/customers/4410;x=1",
            "/customers/;/1",
            // Escaped unreserved characters: another spelling of `.`, `..` or of the id itself.
            "/customers/%2E%2e",
            "/customers/.%2E",
            "/customers/%2e%2e%2e",
            "/customers/%39821",
            "/customers/98%2d21",
            "/%63ustomers/export",
            // Encoded control characters, NUL included.
            "/customers/%00",
            "/customers/1%00.json",
            "/customers/1%0d%0aX-Injected:%201",
            "/customers/%7F",
            // Overlong UTF-8 for `.` and `/`, and escapes that are not UTF-8.
            "/customers/%c0%ae%c0%ae",
            "/customers/1%c0%afadmin",
            "/customers/%ff",
            // A `%` that starts no escape.
            "/customers/%",
            "/customers/1%2",
            "/customers/%+1",
            "/customers/%zz",
            // Backslashes, raw or encoded.
            "/customers/1\\..\\admin",
            "/customers/1%5C..%5Cadmin",
        ] {
            assert!(
                matches!(t.resolve("GET", p), Err(NoRoute::Unsafe(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn c1_control_characters_raw_or_escaped_match_nothing() {
        // Found by `fuzz/fuzz_targets/route.rs`: a raw U+0098 in a path `http` accepts reached
        // the resource.
        let t = crm();
        for p in [
            "/customers/1\u{98}df",
            "/customers/\u{9b}31m",
            "/customers/%c2%98",
            "/customers/1%C2%9B2J",
            "/customers/%c2%85",
        ] {
            assert!(
                matches!(t.resolve("GET", p), Err(NoRoute::Unsafe(_))),
                "{p}"
            );
        }
        // Other non-ASCII text, raw or escaped, still routes.
        assert!(t.resolve("GET", "/customers/j%C3%BCrgen").is_ok());
        assert!(t.resolve("GET", "/customers/j\u{fc}rgen").is_ok());
    }

    #[test]
    fn ordinary_escapes_still_route_and_the_resource_is_the_literal_segment() {
        let t = crm();
        for (p, resource) in [
            ("/customers/acme%20corp", "customers/acme%20corp"),
            (
                "/customers/alice%40example.com",
                "customers/alice%40example.com",
            ),
            ("/customers/caf%C3%A9", "customers/caf%C3%A9"),
            ("/customers/a%2Bb", "customers/a%2Bb"),
        ] {
            assert_eq!(t.resolve("GET", p).unwrap().resource, resource, "{p}");
        }
    }

    #[test]
    fn the_resource_template_can_reorder_and_add_text() {
        let t = RouteTable::new(&[route(
            "GET",
            "/orgs/{org}/customers/{id}",
            "crm.customers:read",
            "org:{org}/customers/{id}",
        )])
        .unwrap();
        assert_eq!(
            t.resolve("GET", "/orgs/acme/customers/42")
                .unwrap()
                .resource,
            "org:acme/customers/42"
        );
    }

    #[test]
    fn bad_tables_are_refused_with_the_route_named() {
        let cases: Vec<(RouteConfig, &str)> = vec![
            (
                route("GE T", "/a", "a:read", "a"),
                "route 1: method `GE T` is not an HTTP method",
            ),
            (
                route("GET", "a", "a:read", "a"),
                "route 1: path `a` must start with `/`",
            ),
            (
                route("GET", "/a/{id", "a:read", "a"),
                "route 1: path `/a/{id` has a `{` without its `}`",
            ),
            (
                route("GET", "/a/x{id}", "a:read", "a"),
                "route 1: path `/a/x{id}` mixes text and a capture in one segment",
            ),
            (
                route("GET", "/a/{id}/{id}", "a:read", "a"),
                "route 1: path `/a/{id}/{id}` captures the same name twice",
            ),
            (
                route("GET", "/a/../b", "a:read", "a"),
                "route 1: path `/a/../b` has a `.`/`..` segment or an encoded `/` or `\\`",
            ),
            (
                route("GET", "/a", "crm.*:read", "a"),
                "route 1: action `crm.*:read`: scope `crm.*:read` holds a wildcard; requested and issued scopes must be concrete",
            ),
            (
                route("GET", "/a/{id}", "a:read", "a/{ref}"),
                "route 1: resource `a/{ref}` uses `{ref}`, which the path does not capture",
            ),
            (
                route("GET", "/a", "a:read", ""),
                "route 1: resource `` is empty",
            ),
        ];
        for (r, msg) in cases {
            assert_eq!(RouteTable::new(&[r]).unwrap_err().to_string(), msg);
        }
        let e = RouteTable::new(&[
            route("GET", "/a/{id}", "a:read", "a/{id}"),
            route("POST", "/a/{id}", "a:update", "a/{id}"),
            route("get", "/a/{key}", "a:read", "a/{key}"),
        ])
        .unwrap_err();
        assert_eq!(e.to_string(), "routes 1 and 3 both match `GET /a/{}`");
    }

    #[test]
    fn routes_parse_from_configuration() {
        let r: RouteConfig = serde_json::from_value(serde_json::json!({
            "method": "POST", "path": "/email/send", "action": "email:send",
            "resource": "email", "stage": "execute"
        }))
        .unwrap();
        assert_eq!(r.stage, Some(Stage::Execute));
        let typo = serde_json::from_value::<RouteConfig>(serde_json::json!({
            "method": "GET", "path": "/", "action": "a:read", "resource": "a", "stag": "draft"
        }));
        assert!(typo.unwrap_err().to_string().contains("stag"));
    }
}
