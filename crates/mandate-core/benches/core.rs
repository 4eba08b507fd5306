//! Criterion micro-benchmarks of Mandate's pure domain code: the scope algebra (parse, set
//! intersection, lookups, pattern matching), chain narrowing (one issuance decision per hop, each
//! hop's scopes intersected with the previous hop's, over 1, 3 and 8 hops), a single grant
//! decision, the RFC 8693 `act` encoding, and sealing one audit event onto the hash chain.
//!
//! `cargo bench -p mandate-core --bench core` (add `-- --warm-up-time 1 --measurement-time 2`
//! for a quick run, or a filter such as `-- scope/` to run one group).
//!
//! `ChainHead::seal` (mandate-store) is crate-private; it is `AuditEvent::seal` plus a time
//! comparison and three string clones, so `audit/seal` measures the public `AuditEvent::seal`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mandate_core::audit::{AuditEvent, Decision, GENESIS_HASH, NewEvent, verify_chain};
use mandate_core::chain::{Actor, DelegationChain};
use mandate_core::grant::{GrantRequest, Parent, ScopeMode, TtlPolicy, decide};
use mandate_core::ids::AgentId;
use mandate_core::scope::{ActionCatalog, PatternSet, Scope, ScopePattern, ScopeSet};
use mandate_core::stage::Stage;

const NOW: i64 = 1_800_000_000;

const RESOURCES: [&str; 10] = [
    "crm.customers",
    "crm.orders",
    "crm.notes",
    "tickets",
    "billing.invoices",
    "billing.payments",
    "email",
    "calendar.events",
    "mcp.crm.lookup_customer",
    "docs.kb",
];
const ACTIONS: [&str; 6] = ["read", "list", "search", "create", "update", "send"];

/// `n` distinct realistic concrete scopes (`n` ≤ 60), read-class ones first, starting at the
/// `skip`-th resource so that two sets can overlap partially.
fn scope_strings(n: usize, skip: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for a in ACTIONS {
        for i in 0..RESOURCES.len() {
            if out.len() == n {
                return out;
            }
            out.push(format!("{}:{a}", RESOURCES[(i + skip) % RESOURCES.len()]));
        }
    }
    assert_eq!(out.len(), n, "at most 60 scopes");
    out
}

fn scope_set(n: usize, skip: usize) -> ScopeSet {
    ScopeSet::parse_oauth(&scope_strings(n, skip).join(" ")).unwrap()
}

/// A ceiling or rights set that grants every scope of `scope_strings(n, 0)` the way real ones
/// are written: five wildcards (`crm.*:read`, `tickets:*`, …) first, then the exact scopes the
/// wildcards do not cover.
fn patterns(n: usize) -> PatternSet {
    let wild = PatternSet::parse([
        "crm.*:read",
        "tickets:*",
        "billing.*:read",
        "mcp.crm.*:call",
        "*.events:*",
    ])
    .unwrap();
    let mut items = wild.0.clone();
    for s in scope_set(n, 0).iter() {
        if !wild.allows(s) {
            items.push(ScopePattern::from(s.clone()));
        }
    }
    PatternSet(items)
}

/// Exactly the first `n` scopes of `scope_strings(n, 0)`, no wildcards.
fn exact_patterns(n: usize) -> PatternSet {
    PatternSet::parse(scope_strings(n, 0).iter().map(String::as_str)).unwrap()
}

fn bench_scope(c: &mut Criterion) {
    let mut g = c.benchmark_group("scope");

    g.throughput(Throughput::Elements(1));
    g.bench_function("parse/one", |b| {
        b.iter(|| Scope::parse(black_box("crm.customers:read")).unwrap())
    });
    g.bench_function("pattern_parse/one", |b| {
        b.iter(|| ScopePattern::parse(black_box("mcp.crm.*:call")).unwrap())
    });

    for n in [5usize, 20, 50] {
        let text = scope_strings(n, 0).join(" ");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("parse_oauth", n), &text, |b, t| {
            b.iter(|| ScopeSet::parse_oauth(black_box(t)).unwrap())
        });
        let set = scope_set(n, 0);
        g.bench_with_input(BenchmarkId::new("to_oauth", n), &set, |b, s| {
            b.iter(|| black_box(s).to_oauth())
        });
    }

    // Set ∩ set: a hop's requested scopes kept only where the parent token holds them (what
    // `grant::decide` does per scope), half of them overlapping.
    for n in [5usize, 20, 50] {
        let a = scope_set(n, 0);
        let b_set = scope_set(n, RESOURCES.len() / 2);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("intersect/{n}x{n}"), |b| {
            b.iter(|| black_box(&a).partition(|s| black_box(&b_set).contains(s)))
        });
    }

    // user ∩ agent: requested scopes kept only where both the user's rights and the agent's
    // ceiling (pattern sets with wildcards) grant them.
    for n in [5usize, 20, 50] {
        let requested = scope_set(n, 0);
        let rights = patterns(n);
        let ceiling = patterns(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("user_x_agent/{n}"), |b| {
            b.iter(|| {
                black_box(&requested)
                    .partition(|s| black_box(&rights).allows(s) && black_box(&ceiling).allows(s))
            })
        });
    }

    g.throughput(Throughput::Elements(1));
    for n in [5usize, 20, 50] {
        let set = scope_set(n, 0);
        let hit = Scope::parse(&scope_strings(n, 0)[n / 2]).unwrap();
        let miss = Scope::parse("hr.salaries:read").unwrap();
        g.bench_function(format!("contains/{n}/hit"), |b| {
            b.iter(|| black_box(&set).contains(black_box(&hit)))
        });
        g.bench_function(format!("contains/{n}/miss"), |b| {
            b.iter(|| black_box(&set).contains(black_box(&miss)))
        });
        let sub = scope_set(n.min(5), 0);
        g.bench_function(format!("is_subset/5_of_{n}"), |b| {
            b.iter(|| black_box(&sub).is_subset(black_box(&set)))
        });
        // A pattern set is scanned in order: a miss checks every pattern.
        let pats = patterns(n);
        g.bench_function(format!("pattern_allows/{}/miss", pats.0.len()), |b| {
            b.iter(|| black_box(&pats).allows(black_box(&miss)))
        });
    }

    let p = ScopePattern::parse("crm.*:read").unwrap();
    let q = ScopePattern::parse("*.customers:*").unwrap();
    g.bench_function("pattern_intersect/one", |b| {
        b.iter(|| black_box(&p).intersect(black_box(&q)))
    });
    g.finish();
}

fn actor(i: usize) -> Actor {
    let id = format!("agent-{i}");
    Actor {
        credential: format!("kid:{id}-k1"),
        agent: AgentId::parse(&id).unwrap(),
    }
}

/// One delegation: `hops` issuance decisions, the first from the user's token (no parent), each
/// later one asking for all but one of its parent's scopes under its own agent's ceiling, with
/// the parent's scopes, stage, expiry and audiences as its upper bound.
struct Delegation {
    requested: ScopeSet,
    rights: PatternSet,
    ceilings: Vec<PatternSet>,
    aud: Vec<String>,
    catalog: ActionCatalog,
}

impl Delegation {
    fn new(hops: usize, scopes: usize) -> Delegation {
        Delegation {
            requested: scope_set(scopes, 0),
            rights: patterns(scopes),
            ceilings: (0..hops).map(|_| patterns(scopes)).collect(),
            aud: vec!["https://crm.example".to_owned()],
            catalog: ActionCatalog::default(),
        }
    }

    /// Runs every hop; returns the last hop's scopes and the chain.
    fn run(&self) -> (ScopeSet, DelegationChain) {
        let mut parent: Option<Parent> = None;
        let mut chain = DelegationChain::default();
        let mut requested = self.requested.clone();
        for (hop, ceiling) in self.ceilings.iter().enumerate() {
            let grant = decide(&GrantRequest {
                requested: &requested,
                aud: &self.aud,
                mode: ScopeMode::Strict,
                rights: &self.rights,
                ceiling,
                max_stage: Stage::Execute,
                parent: parent.as_ref(),
                stage: None,
                ttl: None,
                subject_exp: NOW + 3600,
                now: NOW,
                ttl_policy: TtlPolicy::default(),
                catalog: &self.catalog,
            })
            .unwrap();
            chain = chain.extended(actor(hop));
            // The next agent narrows: it asks for all its parent holds but the last scope.
            let keep = grant.scope.len().saturating_sub(1).max(1);
            requested = grant.scope.iter().take(keep).cloned().collect();
            parent = Some(Parent {
                scope: grant.scope,
                stage: grant.stage,
                exp: grant.exp,
                aud: self.aud.clone(),
            });
        }
        (parent.unwrap().scope, chain)
    }
}

fn bench_chain(c: &mut Criterion) {
    let mut g = c.benchmark_group("chain");
    for hops in [1usize, 3, 8] {
        let d = Delegation::new(hops, 20);
        let (last, chain) = d.run();
        assert_eq!(last.len(), 20 - (hops - 1));
        assert_eq!(chain.depth(), hops);
        g.throughput(Throughput::Elements(hops as u64));
        g.bench_function(format!("narrow/{hops}_hops/20_scopes"), |b| {
            b.iter(|| black_box(&d).run())
        });
    }
    for hops in [1usize, 3, 8] {
        let chain = DelegationChain::new((0..hops).map(actor).collect());
        let act = chain.to_act_claim().unwrap();
        g.throughput(Throughput::Elements(hops as u64));
        g.bench_function(format!("to_act_claim/{hops}_hops"), |b| {
            b.iter(|| black_box(&chain).to_act_claim())
        });
        g.bench_function(format!("from_act_claim/{hops}_hops"), |b| {
            b.iter(|| DelegationChain::from_act_claim(black_box(&act)).unwrap())
        });
    }
    g.finish();
}

fn bench_grant(c: &mut Criterion) {
    let mut g = c.benchmark_group("grant");
    let catalog = ActionCatalog::default();
    let aud = vec!["https://crm.example".to_owned()];
    for n in [5usize, 20, 50] {
        let requested = scope_set(n, 0);
        let rights = patterns(n);
        let ceiling = patterns(n);
        let parent = Parent {
            scope: scope_set(n, 0),
            stage: Stage::Execute,
            exp: NOW + 3600,
            aud: aud.clone(),
        };
        let req = GrantRequest {
            requested: &requested,
            aud: &aud,
            mode: ScopeMode::Strict,
            rights: &rights,
            ceiling: &ceiling,
            max_stage: Stage::Execute,
            parent: None,
            stage: None,
            ttl: None,
            subject_exp: NOW + 3600,
            now: NOW,
            ttl_policy: TtlPolicy::default(),
            catalog: &catalog,
        };
        assert_eq!(decide(&req).unwrap().scope.len(), n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("decide/first_hop/{n}_scopes"), |b| {
            b.iter(|| decide(black_box(&req)).unwrap())
        });
        let hop = GrantRequest {
            parent: Some(&parent),
            ..req
        };
        assert_eq!(decide(&hop).unwrap().scope.len(), n);
        g.bench_function(format!("decide/with_parent/{n}_scopes"), |b| {
            b.iter(|| decide(black_box(&hop)).unwrap())
        });
        // Intersect mode with a ceiling that lacks a fifth of the requested scopes.
        let narrow = exact_patterns(n - n / 5);
        let trimmed = GrantRequest {
            mode: ScopeMode::Intersect,
            ceiling: &narrow,
            ..hop
        };
        assert!(!decide(&trimmed).unwrap().dropped.is_empty());
        g.bench_function(format!("decide/intersect_mode/{n}_scopes"), |b| {
            b.iter(|| decide(black_box(&trimmed)).unwrap())
        });
    }
    g.finish();
}

/// A `token.exchange` allow event as the server writes it for a 3-hop token with 5 scopes.
fn exchange_event() -> NewEvent {
    let scope = scope_strings(5, 0).join(" ");
    NewEvent {
        kind: "token.exchange".into(),
        user: Some("alice@example.com".into()),
        chain: vec!["support-v2".into(), "analytics-v1".into(), "relay-1".into()],
        task: Some("ticket-12847".into()),
        action: Some(scope),
        resource: Some("https://crm.example".into()),
        decision: Some(Decision::Allow),
        reason: format!("issued at stage `observe` until {}", NOW + 300),
        policy_ids: vec!["support-group".into()],
        request_id: Some("req-01HV6Z3K8W9Q2M4T7Y1B5N0C3D".into()),
        credential: Some("kid:relay-1-k1".into()),
        jti: Some("Vx9Qk3mZt7Lw2PaR8sYd4A".into()),
        detail: format!(
            r#"{{"dropped":[],"exp":{},"parent_jti":"Nq4Tz8XcB1vWm6Ke2JhR0g","stage":"observe"}}"#,
            NOW + 300
        ),
    }
}

fn bench_audit(c: &mut Criterion) {
    let mut g = c.benchmark_group("audit");
    let new = exchange_event();
    let prev = "9f2c6d4b1e8a7f3c5d0b2e9a4c6f8d1b3e5a7c9f0d2b4e6a8c1f3d5b7e9a0c2".to_owned();
    let time = "2027-01-15T08:00:00.123Z".to_owned();
    let sealed = AuditEvent::seal(new.clone(), 42, time.clone(), prev.clone());
    g.throughput(Throughput::Elements(1));
    // Sealing moves the event in; the clone of the inputs is made outside the timing.
    g.bench_function("seal/token_exchange", |b| {
        b.iter_batched(
            || (new.clone(), time.clone(), prev.clone()),
            |(n, t, p)| AuditEvent::seal(n, 42, t, p),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("compute_hash/token_exchange", |b| {
        b.iter(|| black_box(&sealed).compute_hash())
    });
    let n = 1000;
    let mut prev = GENESIS_HASH.to_owned();
    let events: Vec<AuditEvent> = (1..=n)
        .map(|seq| {
            let e = AuditEvent::seal(exchange_event(), seq, time.clone(), prev.clone());
            prev = e.hash.clone();
            e
        })
        .collect();
    assert!(verify_chain(events.clone()).is_ok());
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("verify_chain/{n}"), |b| {
        b.iter_batched(
            || events.clone(),
            |ev| assert!(verify_chain(ev).is_ok()),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_scope, bench_chain, bench_grant, bench_audit);
criterion_main!(benches);
