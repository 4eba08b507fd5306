//! Scope parsing (`mandate_core::scope`): concrete scopes, patterns, OAuth scope lists.
//!
//! Properties: parse → display → parse is the identity; a scope's own pattern matches it; a
//! pattern is a subset of itself; the intersection of two patterns is a subset of both and
//! matches exactly the scopes both match. Two inputs are split at the first newline.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::scope::{PatternSet, Scope, ScopePattern, ScopeSet};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = text.split_once('\n').unwrap_or((text, ""));
    for s in [a, b, text] {
        if let Ok(scope) = Scope::parse(s) {
            assert_eq!(scope.to_string(), s);
            assert_eq!(Scope::parse(&scope.to_string()).as_ref(), Ok(&scope));
            assert_eq!(format!("{}:{}", scope.resource(), scope.action()), s);
            let own = ScopePattern::from(scope.clone());
            assert!(own.matches(&scope));
            assert_eq!(ScopePattern::parse(s).as_ref(), Ok(&own));
        }
        if let Ok(p) = ScopePattern::parse(s) {
            assert_eq!(p.to_string(), s);
            assert_eq!(ScopePattern::parse(&p.to_string()).as_ref(), Ok(&p));
            assert!(p.is_subset_of(&p));
            assert_eq!(p.intersect(&p).as_ref(), Some(&p));
        }
        if let Ok(set) = ScopeSet::parse_oauth(s) {
            let again = ScopeSet::parse_oauth(&set.to_oauth());
            assert_eq!(again.as_ref(), Ok(&set));
            assert!(set.len() <= s.len());
        }
    }
    if let (Ok(p), Ok(q)) = (ScopePattern::parse(a), ScopePattern::parse(b)) {
        let both = p.intersect(&q);
        if let Some(i) = &both {
            assert!(i.is_subset_of(&p) && i.is_subset_of(&q));
        }
        // A concrete scope made from either pattern (wildcards filled in) is granted by the
        // intersection exactly when both grant it.
        for candidate in [a, b] {
            let concrete = candidate.replace('*', "x");
            if let Ok(scope) = Scope::parse(&concrete) {
                let by_both = p.matches(&scope) && q.matches(&scope);
                assert_eq!(both.as_ref().is_some_and(|i| i.matches(&scope)), by_both);
            }
        }
        if let Ok(set) = PatternSet::parse([a, b]) {
            assert_eq!(set.iter().count(), 2);
        }
    }
});
