//! The gateway's route matching (`mandate_gateway::route::RouteTable::resolve`) over a fixed,
//! realistic route table. The input is `METHOD path` (split at the first space).
//!
//! Properties of a resolved request: every captured value is one non-empty segment that is not
//! `.` or `..` and holds no `/` or `\`, also once percent-decoded; the resource has no `.` or
//! `..` segment; for a path a client can send (one `http` accepts), the resource has no control
//! characters; methods match case-insensitively.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mandate_gateway::route::{RouteConfig, RouteTable};

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

/// The `--dev` sample CRM's routes plus a few shapes real tool APIs have.
static TABLE: LazyLock<RouteTable> = LazyLock::new(|| {
    RouteTable::new(&[
        route(
            "GET",
            "/customers/{id}",
            "crm.customers:read",
            "customers/{id}",
        ),
        route(
            "GET",
            "/regions/{region}/customers/{id}",
            "crm.customers:read",
            "customers/{id}",
        ),
        route(
            "GET",
            "/customers/export",
            "crm.customers:export",
            "customers",
        ),
        route("GET", "/tickets/{id}", "tickets:read", "tickets/{id}"),
        route("DELETE", "/tickets/{id}", "tickets:delete", "tickets/{id}"),
        route("POST", "/tickets", "tickets:create", "tickets"),
        route("POST", "/email/send", "email:send", "email"),
        route("GET", "/", "home:read", "home"),
        route(
            "GET",
            "/repos/{owner}/{repo}/issues/{n}",
            "github.issues:read",
            "repos/{owner}/{repo}/issues/{n}",
        ),
        route("PUT", "/files/{name}", "files:write", "files/{name}"),
        route(
            "GET",
            "/reports/{year}/{month}",
            "reports:read",
            "reports/{year}-{month}",
        ),
        route(
            "patch",
            "/users/{user}/tags/{tag}",
            "users.tags:update",
            "users/{user}#{tag}",
        ),
    ])
    .expect("the fuzz route table compiles")
});

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn check(method: &str, path: &str, client_path: bool) {
    let Ok(r) = TABLE.resolve(method, path) else {
        return;
    };
    for (name, value) in &r.params {
        assert!(!value.is_empty(), "empty `{name}`");
        assert!(value != "." && value != "..", "dot segment in `{name}`");
        assert!(!value.contains(['/', '\\']), "separator in `{name}`");
        let decoded = percent_decode(value);
        assert!(
            decoded != b"." && decoded != b"..",
            "encoded dot segment in `{name}`"
        );
        assert!(
            !decoded.contains(&b'/') && !decoded.contains(&b'\\'),
            "encoded separator in `{name}`"
        );
    }
    assert!(
        r.resource.split('/').all(|s| s != "." && s != ".."),
        "dot segment in resource `{}`",
        r.resource
    );
    if client_path {
        assert!(
            !r.resource.chars().any(char::is_control),
            "control character in resource"
        );
    }
    let again = TABLE.resolve(&method.to_ascii_lowercase(), path);
    assert_eq!(again.as_ref(), Ok(&r));
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (method, path) = text.split_once(' ').unwrap_or(("GET", text));
    check(method, path, false);
    // What the gateway actually receives: the path of a URI `http` (under hyper) accepted.
    if let Ok(pq) = http::uri::PathAndQuery::try_from(path) {
        check(method, pq.path(), true);
    }
});
