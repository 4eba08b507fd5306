//! The OAuth form parser of the token, introspection and revocation endpoints
//! (`mandate_server::oauth::form::parse`).
//!
//! Properties: a parsed form never holds a parameter twice unless it may repeat (`resource`,
//! `audience`), never more than 64 parameters, and no NUL outside a `token` to check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_server::oauth::form::parse;

const SINGLE: &[&str] = &[
    "grant_type",
    "scope",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "client_id",
    "client_assertion",
    "client_assertion_type",
    "token",
    "token_type_hint",
    "auth_req_id",
];

fuzz_target!(|data: &[u8]| {
    let Ok(form) = parse(data) else {
        return;
    };
    let pairs: Vec<_> = form_urlencoded::parse(data).collect();
    assert!(pairs.len() <= 64);
    for name in SINGLE {
        assert!(form.all(name).len() <= 1, "`{name}` twice");
        assert_eq!(form.get(name), form.all(name).first().copied());
    }
    for (k, v) in &pairs {
        assert!(!k.contains('\0'));
        if k != "token" {
            assert!(!v.contains('\0'));
        }
        if !v.is_empty() {
            assert!(form.all(k).contains(&v.as_ref()));
        }
    }
    for name in ["resource", "audience"] {
        let n = pairs
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .count();
        assert_eq!(form.all(name).len(), n);
    }
});
