//! Criterion micro-benchmark of one Cedar policy decision, as the token endpoint makes it for
//! each requested scope: a support user asking for `crm.customers:read` at stage `observe`,
//! with the demo's four policies, and with the same plus 1,000 policies that do not apply
//! (other teams' permits, some conditional, and forbids), built as the `decide` bench builds
//! them. `…/deny` asks for a scope no policy permits (`billing.invoices:read`).
//!
//! `cargo bench -p mandate-policy --bench policy` (add `-- --warm-up-time 1 --measurement-time 2`
//! for a quick run). Percentiles over many single decisions, and 10,000 policies, are in the
//! plain-timing `decide` bench of this crate.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mandate_core::ids::UserPrincipal;
use mandate_core::scope::Scope;
use mandate_core::stage::Stage;
use mandate_policy::{DecisionContext, Principal, Request, Subject, load_sources};

/// The demo's policies plus `extra` others that do not apply to the request (as in `decide`).
fn policies(extra: usize) -> String {
    let mut text = String::from(
        "@id(\"support-group\") permit(principal in Group::\"support\", action in [Action::\"crm.customers:read\", Action::\"tickets:read\"], resource);\n\
         @id(\"finance-group\") permit(principal in Group::\"finance\", action in Action::\"billing.*:read\", resource);\n\
         @id(\"gold\") forbid(principal is User, action == Action::\"billing.payments:create\", resource) unless { principal.hasTag(\"tier\") };\n\
         @id(\"night\") forbid(principal, action == Action::\"tickets:create\", resource) when { context.now < 0 };\n",
    );
    for i in 0..extra {
        match i % 3 {
            0 => text.push_str(&format!(
                "@id(\"team-{i}\") permit(principal in Group::\"team-{i}\", action == Action::\"svc{i}.records:read\", resource);\n"
            )),
            1 => text.push_str(&format!(
                "@id(\"stage-{i}\") permit(principal in Group::\"team-{i}\", action in Action::\"svc{i}.*:write\", resource) when {{ context.stage == \"execute\" }};\n"
            )),
            _ => text.push_str(&format!(
                "@id(\"deny-{i}\") forbid(principal, action == Action::\"svc{i}.admin:delete\", resource) unless {{ context.chain.contains(\"ops-{i}\") }};\n"
            )),
        }
    }
    text
}

fn bench_policy(c: &mut Criterion) {
    let user = UserPrincipal {
        issuer: "https://idp".into(),
        subject: "alice@example.com".into(),
        groups: vec!["support".into()],
    };
    let claims = BTreeMap::new();
    let read = Scope::parse("crm.customers:read").unwrap();
    let billing = Scope::parse("billing.invoices:read").unwrap();
    let context = DecisionContext {
        stage: Stage::Observe,
        task: "ticket-12847".into(),
        purpose: "answer the customer".into(),
        delegation_depth: 1,
        chain: vec!["support-v2".into()],
        now: 1_800_000_000,
        usage: Default::default(),
    };
    let request = |scope| Request {
        principal: Principal::User {
            user: &user,
            claims: &claims,
        },
        subject: Subject::Scope {
            scope,
            resource: "https://crm.example.com",
            resource_tags: &claims,
        },
        context: &context,
    };

    let mut g = c.benchmark_group("policy");
    for (label, extra) in [("demo", 0usize), ("demo+1000", 1000)] {
        let engine =
            load_sources(&[("bench.cedar".into(), policies(extra))], &BTreeSet::new()).unwrap();
        assert_eq!(engine.policy_count(), 4 + extra);
        let allow = request(&read);
        let deny = request(&billing);
        assert!(engine.decide(&allow).allowed);
        assert!(!engine.decide(&deny).allowed);
        g.bench_function(format!("decide/{label}/allow"), |b| {
            b.iter(|| engine.decide(black_box(&allow)))
        });
        g.bench_function(format!("decide/{label}/deny"), |b| {
            b.iter(|| engine.decide(black_box(&deny)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_policy);
criterion_main!(benches);
