//! Policy evaluation cost per decision with 10, 1,000 and 10,000 policies: p50/p99 in µs.
//!
//! `cargo bench -p mandate-policy --bench decide` — a plain timing loop (no criterion) because
//! the numbers that matter are percentiles of single decisions, as the token endpoint makes them.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use mandate_core::ids::UserPrincipal;
use mandate_core::scope::Scope;
use mandate_core::stage::Stage;
use mandate_policy::{DecisionContext, Principal, Request, Subject, load_sources};

/// The demo's policies plus `n - 4` others: permits for other teams' scopes, some conditional.
fn policies(n: usize) -> String {
    let mut text = String::from(
        "@id(\"support-group\") permit(principal in Group::\"support\", action in [Action::\"crm.customers:read\", Action::\"tickets:read\"], resource);\n\
         @id(\"finance-group\") permit(principal in Group::\"finance\", action in Action::\"billing.*:read\", resource);\n\
         @id(\"gold\") forbid(principal is User, action == Action::\"billing.payments:create\", resource) unless { principal.hasTag(\"tier\") };\n\
         @id(\"night\") forbid(principal, action == Action::\"tickets:create\", resource) when { context.now < 0 };\n",
    );
    for i in 0..n.saturating_sub(4) {
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

/// A `/proc/self/status` field (`VmRSS:`, `VmHWM:`) in MiB; 0 where there is none (not Linux).
/// The peak (`VmHWM`) is the process's so far: run one size per process for a size's own peak.
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn main() {
    let user = UserPrincipal {
        issuer: "https://idp".into(),
        subject: "alice@example.com".into(),
        groups: vec!["support".into()],
    };
    let claims = BTreeMap::new();
    let scope = Scope::parse("crm.customers:read").unwrap();
    let context = DecisionContext {
        stage: Stage::Observe,
        task: "ticket-12847".into(),
        purpose: "answer the customer".into(),
        delegation_depth: 1,
        chain: vec!["support-v2".into()],
        now: 1_800_000_000,
        usage: Default::default(),
    };
    println!(
        "| policies | load + validate ms | RSS after load MiB | peak RSS MiB | decisions | p50 µs | p99 µs | mean µs |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let sizes: Vec<usize> = std::env::var("BENCH_POLICIES")
        .unwrap_or_else(|_| "10,1000,10000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    for n in sizes {
        let text = policies(n);
        let t = Instant::now();
        let engine = load_sources(&[("bench.cedar".into(), text)], &BTreeSet::new()).unwrap();
        let load_ms = t.elapsed().as_secs_f64() * 1000.0;
        let (rss, peak) = (status_mib("VmRSS:"), status_mib("VmHWM:"));
        assert_eq!(engine.policy_count(), n);
        let runs = if n >= 10_000 { 2_000 } else { 20_000 };
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..200 {
            engine.decide(&Request {
                principal: Principal::User {
                    user: &user,
                    claims: &claims,
                },
                subject: Subject::Scope {
                    scope: &scope,
                    resource: "https://crm.example.com",
                    resource_tags: &claims,
                },
                context: &context,
            });
        }
        for _ in 0..runs {
            let t = Instant::now();
            let d = engine.decide(&Request {
                principal: Principal::User {
                    user: &user,
                    claims: &claims,
                },
                subject: Subject::Scope {
                    scope: &scope,
                    resource: "https://crm.example.com",
                    resource_tags: &claims,
                },
                context: &context,
            });
            samples.push(t.elapsed().as_secs_f64() * 1e6);
            assert!(d.allowed);
        }
        samples.sort_by(f64::total_cmp);
        let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        println!(
            "| {n} | {load_ms:.1} | {rss:.0} | {peak:.0} | {runs} | {:.1} | {:.1} | {mean:.1} |",
            pct(0.50),
            pct(0.99)
        );
    }
}
