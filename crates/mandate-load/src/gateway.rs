//! The gateway's added latency: the same `GET /customers/9821` sent directly to the upstream
//! (with its API key) and through the gateway (with a Mandate access token), at several
//! concurrency levels, on loopback.
//!
//! For each level, `rounds` rounds each run a closed loop directly and one through the gateway,
//! in ABBA order (round 0: direct then gateway, round 1: gateway then direct, …) so that drift of
//! a noisy machine during the level falls on both sides alike; a side's samples are pooled over
//! its rounds. Every worker has its own HTTP/1.1 client holding one keep-alive connection, so no
//! connection is set up inside the measured window. Each phase has its own warm-up and measured
//! window (as in [`crate::run`]: only requests that start after the warm-up and finish before the
//! end count). Every answer must be a 200 naming the customer; more than [`MAX_FAILURES`]
//! failures in all stop the run with an error.
//!
//! A fresh access token is minted for each gateway phase (outside the measurement), so a long run
//! never meets an expired one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use tokio::task::JoinSet;

use crate::server::{Server, USER};
use crate::stats::{Samples, Summary, summarise};

/// The request measured, on both sides.
pub const PATH: &str = "/customers/9821";
/// What a successful answer's body contains.
const EXPECT: &[u8] = b"9821";
/// The scope the gateway's route for [`PATH`] requires.
pub const SCOPE: &str = "crm.customers:read";
/// The header the upstream reads its API key from.
const API_KEY_HEADER: &str = "x-api-key";
/// The most failed requests (warm-up included) before the run is abandoned.
pub const MAX_FAILURES: u64 = 10;
/// The longest a phase (warm-up and measurement) may take: well inside a token's default
/// 300 s lifetime.
const MAX_PHASE: Duration = Duration::from_secs(240);

/// Which way a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Straight to the upstream, with its API key.
    Direct,
    /// Through the gateway, with a Mandate access token.
    Gateway,
}

impl Side {
    /// The side's name in the results.
    pub fn name(self) -> &'static str {
        match self {
            Side::Direct => "direct",
            Side::Gateway => "gateway",
        }
    }
}

/// The order of the two sides in round `round` (0-based): ABBA, so a linear drift over a level
/// biases neither side.
pub fn order(round: usize) -> [Side; 2] {
    if round.is_multiple_of(2) {
        [Side::Direct, Side::Gateway]
    } else {
        [Side::Gateway, Side::Direct]
    }
}

/// How the run is shaped.
#[derive(Debug, Clone)]
pub struct GatewayPlan {
    /// The gateway's base URL (checked to be loopback); also the tokens' audience.
    pub gateway: String,
    /// The upstream's base URL (checked to be loopback).
    pub upstream: String,
    /// The upstream's API key.
    pub upstream_key: String,
    /// The concurrency levels, in order.
    pub levels: Vec<usize>,
    /// Rounds per level (each one phase per side).
    pub rounds: usize,
    /// Unmeasured time at the start of each phase.
    pub warmup: Duration,
    /// Measured time of each phase.
    pub duration: Duration,
    /// Most requests sent in one phase, warm-up included.
    pub max_requests: u64,
}

/// The added latency of the gateway at one level: gateway − direct, milliseconds (negative if
/// the gateway side came out faster, which only noise can do).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Added {
    /// At the median.
    pub p50_ms: f64,
    /// At the 99th percentile.
    pub p99_ms: f64,
    /// Gateway successful requests per second ÷ direct ones.
    pub rate_ratio: f64,
}

/// Milliseconds of `d`.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What the gateway adds over the direct path, from the two sides' summaries.
pub fn added(direct: &Summary, gateway: &Summary) -> Added {
    Added {
        p50_ms: ms(gateway.p50) - ms(direct.p50),
        p99_ms: ms(gateway.p99) - ms(direct.p99),
        rate_ratio: if direct.rate > 0.0 {
            gateway.rate / direct.rate
        } else {
            0.0
        },
    }
}

/// Adds `other` (a later round of the same side) to `into`, windows included, so the pooled rate
/// is successes over the total measured time.
pub fn pool(into: &mut Samples, other: Samples) {
    into.window += other.window;
    into.merge(other);
}

/// One phase's request: the URL and the one credential header.
struct Target {
    url: String,
    header: HeaderName,
    value: HeaderValue,
}

/// What every worker of a phase shares.
struct Shared {
    target: Target,
    measure_from: Instant,
    end: Instant,
    max_requests: u64,
    sent: AtomicU64,
    /// Failures in the whole phase, warm-up included.
    failures: AtomicU64,
    first_error: OnceLock<String>,
}

/// A client for one worker: HTTP/1.1, one idle connection kept, no proxy, no redirects.
fn worker_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(Duration::from_secs(300))
        .tcp_nodelay(true)
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .context("cannot build an HTTP client")
}

/// Sends one request and reads the whole answer; `Err(description)` unless it is a 200 naming
/// the customer.
async fn send_one(client: &reqwest::Client, target: &Target) -> Result<(), String> {
    let resp = client
        .get(&target.url)
        .header(target.header.clone(), target.value.clone())
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("{status}, body unreadable: {e}"))?;
    if status == reqwest::StatusCode::OK && body.windows(EXPECT.len()).any(|w| w == EXPECT) {
        Ok(())
    } else {
        let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
        Err(format!("{status}: {text}"))
    }
}

/// One worker's closed loop on its own connection.
async fn worker(shared: Arc<Shared>, client: reqwest::Client) -> Samples {
    let mut local = Samples::default();
    loop {
        if Instant::now() >= shared.end
            || shared.failures.load(Ordering::Relaxed) > MAX_FAILURES
            || shared.sent.fetch_add(1, Ordering::Relaxed) >= shared.max_requests
        {
            return local;
        }
        let started = Instant::now();
        let result = send_one(&client, &shared.target).await;
        let finished = Instant::now();
        if let Err(e) = &result {
            shared.failures.fetch_add(1, Ordering::Relaxed);
            let _ = shared.first_error.set(e.clone());
        }
        if started >= shared.measure_from && finished <= shared.end {
            match result {
                Ok(()) => local.ok.push(finished - started),
                Err(_) => local.errors += 1,
            }
        }
    }
}

/// What one phase produced.
struct Phase {
    samples: Samples,
    failures: u64,
    first_error: Option<String>,
}

/// Runs one closed-loop phase of `concurrency` workers against `target`.
async fn phase(target: Target, concurrency: usize, plan: &GatewayPlan) -> Result<Phase> {
    // Clients are built (and connect) before the clock starts; the warm-up opens the connections.
    let clients = (0..concurrency)
        .map(|_| worker_client())
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let shared = Arc::new(Shared {
        target,
        measure_from,
        end,
        max_requests: plan.max_requests,
        sent: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        first_error: OnceLock::new(),
    });
    let mut workers = JoinSet::new();
    for client in clients {
        workers.spawn(worker(shared.clone(), client));
    }
    let mut samples = Samples::default();
    while let Some(joined) = workers.join_next().await {
        samples.merge(joined.context("a worker stopped abnormally")?);
    }
    let stopped = Instant::now().min(end);
    samples.window = stopped.saturating_duration_since(measure_from);
    Ok(Phase {
        samples,
        failures: shared.failures.load(Ordering::Relaxed),
        first_error: shared.first_error.get().cloned(),
    })
}

/// A credential header value, marked sensitive so it is never logged.
fn secret_header(value: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value).context("a credential is not a valid header value")?;
    v.set_sensitive(true);
    Ok(v)
}

/// One request on each side, outside the measurement: both must succeed before anything is
/// measured.
async fn probe(targets: [&Target; 2]) -> Result<()> {
    let client = worker_client()?;
    for (t, side) in targets.into_iter().zip([Side::Direct, Side::Gateway]) {
        if let Err(e) = send_one(&client, t).await {
            bail!("the {} probe of {} failed: {e}", side.name(), t.url);
        }
    }
    Ok(())
}

/// The results of one level.
pub struct Level {
    /// Workers (= connections) per side.
    pub concurrency: usize,
    /// The direct side, pooled over the rounds.
    pub direct: Summary,
    /// The gateway side, pooled over the rounds.
    pub gateway: Summary,
}

/// Runs the whole measurement and returns one [`Level`] per concurrency level; per-phase lines
/// go to stderr as it runs.
pub async fn run(server: &Server, plan: &GatewayPlan) -> Result<Vec<Level>> {
    if plan.warmup + plan.duration > MAX_PHASE {
        bail!("a phase may last at most {} s", MAX_PHASE.as_secs());
    }
    let user = server.user_token(USER, None).await?;
    let url = |base: &str| format!("{base}{PATH}");
    let direct = || -> Result<Target> {
        Ok(Target {
            url: url(&plan.upstream),
            header: HeaderName::from_static(API_KEY_HEADER),
            value: secret_header(&plan.upstream_key)?,
        })
    };
    let run_id = std::process::id();
    let mut minted = 0usize;
    let mut via_gateway = || {
        minted += 1;
        let task = format!("bench-gw-{run_id}-{minted}");
        let user = user.clone();
        async move {
            let token = server
                .exchange_for(&user, &task, SCOPE, &plan.gateway)
                .await
                .context("cannot get a token for the gateway")?;
            Ok::<_, anyhow::Error>(Target {
                url: url(&plan.gateway),
                header: AUTHORIZATION,
                value: secret_header(&format!("Bearer {token}"))?,
            })
        }
    };
    probe([&direct()?, &via_gateway().await?]).await?;

    let mut out = Vec::with_capacity(plan.levels.len());
    let mut failures = 0u64;
    for &c in &plan.levels {
        let mut pooled = [Samples::default(), Samples::default()];
        for round in 0..plan.rounds {
            for side in order(round) {
                let target = match side {
                    Side::Direct => direct()?,
                    Side::Gateway => via_gateway().await?,
                };
                let p = phase(target, c, plan).await?;
                failures += p.failures;
                if let Some(e) = &p.first_error {
                    eprintln!(
                        "[{c} conns, round {round}, {}] first error: {e}",
                        side.name()
                    );
                }
                let s = summarise(Samples {
                    ok: p.samples.ok.clone(),
                    errors: p.samples.errors,
                    window: p.samples.window,
                });
                eprintln!(
                    "[{c} conns, round {round}, {:<7}] {:>7} ok, {:>8.1}/s, p50 {:.3} ms, p99 {:.3} ms",
                    side.name(),
                    s.requests - s.errors,
                    s.rate,
                    ms(s.p50),
                    ms(s.p99)
                );
                let slot = match side {
                    Side::Direct => &mut pooled[0],
                    Side::Gateway => &mut pooled[1],
                };
                pool(slot, p.samples);
                if failures > MAX_FAILURES {
                    bail!(
                        "{failures} failed requests (more than {MAX_FAILURES}): the measurement is not valid"
                    );
                }
            }
        }
        let [d, g] = pooled;
        out.push(Level {
            concurrency: c,
            direct: summarise(d),
            gateway: summarise(g),
        });
    }
    Ok(out)
}

/// The results as two Markdown tables: each side's numbers, then the added latency.
pub fn table(levels: &[Level]) -> String {
    let mut s = String::from(
        "| connections | side | requests | errors | ok/s | p50 ms | p90 ms | p99 ms | max ms |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for l in levels {
        for (name, v) in [("direct", &l.direct), ("gateway", &l.gateway)] {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
                l.concurrency,
                name,
                v.requests,
                v.errors,
                v.rate,
                ms(v.p50),
                ms(v.p90),
                ms(v.p99),
                ms(v.max)
            ));
        }
    }
    s.push_str(
        "\n| connections | added p50 ms | added p99 ms | gateway ok/s ÷ direct ok/s |\n\
         |---:|---:|---:|---:|\n",
    );
    for l in levels {
        let a = added(&l.direct, &l.gateway);
        s.push_str(&format!(
            "| {} | {:+.3} | {:+.3} | {:.2} |\n",
            l.concurrency, a.p50_ms, a.p99_ms, a.rate_ratio
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p50_us: u64, p99_us: u64, rate: f64) -> Summary {
        Summary {
            requests: 10,
            errors: 0,
            rate,
            p50: Duration::from_micros(p50_us),
            p90: Duration::from_micros(p99_us),
            p99: Duration::from_micros(p99_us),
            max: Duration::from_micros(p99_us),
        }
    }

    #[test]
    fn added_latency_is_gateway_minus_direct() {
        let a = added(&summary(100, 400, 8000.0), &summary(350, 1250, 2000.0));
        assert!((a.p50_ms - 0.25).abs() < 1e-9, "{a:?}");
        assert!((a.p99_ms - 0.85).abs() < 1e-9, "{a:?}");
        assert!((a.rate_ratio - 0.25).abs() < 1e-9, "{a:?}");
    }

    #[test]
    fn added_latency_can_be_negative_and_survives_an_empty_side() {
        let a = added(&summary(300, 900, 0.0), &summary(200, 800, 10.0));
        assert!((a.p50_ms + 0.1).abs() < 1e-9, "{a:?}");
        assert!((a.p99_ms + 0.1).abs() < 1e-9, "{a:?}");
        assert_eq!(a.rate_ratio, 0.0);
    }

    #[test]
    fn rounds_alternate_abba() {
        let seq: Vec<Side> = (0..4).flat_map(order).collect();
        use Side::{Direct as D, Gateway as G};
        assert_eq!(seq, [D, G, G, D, D, G, G, D]);
    }

    #[test]
    fn pooled_rounds_add_windows_and_percentiles_cover_both() {
        let mut a = Samples::default();
        pool(
            &mut a,
            Samples {
                ok: (1..=50).map(Duration::from_millis).collect(),
                errors: 1,
                window: Duration::from_secs(5),
            },
        );
        pool(
            &mut a,
            Samples {
                ok: (51..=100).map(Duration::from_millis).collect(),
                errors: 0,
                window: Duration::from_secs(5),
            },
        );
        let s = summarise(a);
        assert_eq!(s.requests, 101);
        assert_eq!(s.errors, 1);
        assert!((s.rate - 10.0).abs() < 1e-9);
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
    }

    #[test]
    fn the_table_has_one_added_row_per_level() {
        let levels = [Level {
            concurrency: 16,
            direct: summary(100, 400, 8000.0),
            gateway: summary(350, 1250, 2000.0),
        }];
        let t = table(&levels);
        assert!(t.contains("| 16 | direct | 10 | 0 | 8000 | 0.100 |"), "{t}");
        assert!(t.contains("| 16 | +0.250 | +0.850 | 0.25 |"), "{t}");
    }
}
