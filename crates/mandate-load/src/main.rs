//! `mandate-load`: a bounded load run against a Mandate server on loopback.
//!
//! It reads the admin credential and the `support-v2` demo agent's key from a `--dev` data
//! directory, prepares what a scenario needs (user tokens, tokens to introspect) outside the
//! measurement, then runs `--concurrency` workers (a closed loop; or, with `--rate`, an open loop
//! at a fixed arrival rate, see [`open`]) for `--warmup` + `--duration` seconds and prints
//! one line per scenario: requests, errors, successful requests per second and latency
//! percentiles. With `--gateway-latency` it instead measures what the gateway adds over calling
//! its upstream directly (see [`gateway`]). It refuses any URL that is not on loopback, and never
//! follows redirects or uses a proxy. See `bench/run.sh` and `docs/BENCHMARKS.md`.

mod gateway;
mod latency;
mod open;
mod peer;
mod run;
mod scenario;
mod server;
mod stats;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use crate::run::Plan;
use crate::scenario::{Scenario, Workload};
use crate::server::Server;

/// The longest measured run, seconds.
const MAX_DURATION: u64 = 120;

/// Command-line arguments.
#[derive(Parser)]
#[command(
    name = "mandate-load",
    version,
    about = "Bounded load run against a Mandate `--dev` server on loopback"
)]
struct Args {
    /// Base URL of a running server; must be 127.0.0.1, localhost or [::1].
    #[arg(long)]
    url: String,
    /// The server's `--data` directory (for `admin.token` and `agents/support-v2.jwk`).
    #[arg(long)]
    data: PathBuf,
    /// Measured seconds per scenario (at most 120).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Workers, each with one request in flight; with `--rate`, the most requests in flight.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// Open loop: start this many requests per second, whatever the answers do, and measure each
    /// request's latency from when it was due (see `open.rs`). Without it, the run is a closed
    /// loop of `--concurrency` workers.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=200_000))]
    rate: Option<u32>,
    /// Scenarios to run, in order (comma-separated or repeated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "exchange")]
    scenario: Vec<Scenario>,
    /// Unmeasured seconds before each measurement (at most 60).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=60))]
    warmup: u64,
    /// Instead of throughput scenarios, measure revocation-to-refusal latency at a verifier
    /// over this many revocations.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    revocation_latency: Option<u64>,
    /// Most requests per scenario, warm-up included.
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_requests: u64,
    /// Instead of throughput scenarios, measure the gateway's added latency: `GET /customers/9821`
    /// straight to `--upstream` and through `--gateway`, at each of `--connections`, with
    /// `--warmup` + `--duration` seconds per side and round.
    #[arg(long, requires_all = ["gateway", "upstream"], conflicts_with = "revocation_latency")]
    gateway_latency: bool,
    /// The gateway's base URL (loopback), for `--gateway-latency`; tokens are asked for this
    /// audience.
    #[arg(long)]
    gateway: Option<String>,
    /// The upstream's base URL (loopback), for `--gateway-latency`: the sample CRM behind the
    /// gateway.
    #[arg(long)]
    upstream: Option<String>,
    /// File holding the upstream's API key, sent as `x-api-key` (default:
    /// `<data>/sample-crm.key`).
    #[arg(long)]
    upstream_key_file: Option<PathBuf>,
    /// Concurrency levels of `--gateway-latency`, comma-separated: workers, each on its own
    /// keep-alive connection.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64", value_parser = clap::value_parser!(u16).range(1..=1024))]
    connections: Vec<u16>,
    /// Rounds per level of `--gateway-latency`; each runs both sides, in ABBA order.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=10))]
    rounds: u64,
    /// Base URL (loopback) of a peer authorization server for the `peer-client-credentials`
    /// scenario: `bench/peer/provider.mjs` (node oidc-provider), which knows `support-v2` by the
    /// public half of the same key.
    #[arg(long)]
    peer: Option<String>,
}

/// Runs `--gateway-latency` and prints its tables; exit code 2 if any measured request failed.
async fn gateway_latency(args: &Args, server: &Server, plan: &Plan) -> Result<ExitCode> {
    let (Some(gw), Some(up)) = (&args.gateway, &args.upstream) else {
        anyhow::bail!("--gateway-latency needs --gateway and --upstream");
    };
    let key_path = args
        .upstream_key_file
        .clone()
        .unwrap_or_else(|| args.data.join("sample-crm.key"));
    let upstream_key = std::fs::read_to_string(&key_path)
        .with_context(|| format!("cannot read `{}`", key_path.display()))?
        .trim()
        .to_owned();
    if args.connections.len() > 8 {
        anyhow::bail!("at most 8 levels in --connections");
    }
    let gplan = gateway::GatewayPlan {
        gateway: target::loopback_base(gw)?,
        upstream: target::loopback_base(up)?,
        upstream_key,
        levels: args.connections.iter().map(|c| usize::from(*c)).collect(),
        rounds: usize::try_from(args.rounds).unwrap_or(1),
        warmup: plan.warmup,
        duration: plan.duration,
        max_requests: plan.max_requests,
    };
    eprintln!(
        "mandate-load: gateway {} vs upstream {}, GET {}, connections {:?}, {} rounds (ABBA) of {} s warm-up + {} s measured per side, {} client threads",
        gplan.gateway,
        gplan.upstream,
        gateway::PATH,
        gplan.levels,
        gplan.rounds,
        gplan.warmup.as_secs(),
        gplan.duration.as_secs(),
        tokio::runtime::Handle::current().metrics().num_workers(),
    );
    let levels = gateway::run(server, &gplan).await?;
    print!("{}", gateway::table(&levels));
    let errors = levels
        .iter()
        .any(|l| l.direct.errors > 0 || l.gateway.errors > 0);
    Ok(if errors {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Prepares and runs every scenario, then prints the table.
async fn run(args: Args) -> Result<ExitCode> {
    let url = target::loopback_base(&args.url)?;
    if args.duration > MAX_DURATION {
        eprintln!("--duration {} is capped at {MAX_DURATION} s", args.duration);
    }
    let plan = Plan {
        warmup: Duration::from_secs(args.warmup),
        duration: Duration::from_secs(args.duration.clamp(1, MAX_DURATION)),
        concurrency: usize::from(args.concurrency),
        max_requests: args.max_requests,
    };
    let server = Arc::new(Server::connect(url, &args.data, plan.concurrency).await?);
    if args.gateway_latency {
        return gateway_latency(&args, &server, &plan).await;
    }
    if let Some(rounds) = args.revocation_latency {
        eprintln!(
            "mandate-load: {} (issuer {}), revocation-to-refusal latency over {rounds} revocations",
            server.url, server.issuer
        );
        latency::run(&server, usize::try_from(rounds).unwrap_or(usize::MAX)).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let shape = match args.rate {
        Some(rate) => format!(
            "open loop at {rate}/s with at most {} in flight",
            plan.concurrency
        ),
        None => format!("{} workers", plan.concurrency),
    };
    eprintln!(
        "mandate-load: {} (issuer {}), {shape}, {} s warm-up + {} s measured per scenario, {} client threads",
        server.url,
        server.issuer,
        plan.warmup.as_secs(),
        plan.duration.as_secs(),
        tokio::runtime::Handle::current().metrics().num_workers(),
    );
    let mut lines = Vec::new();
    let mut any_errors = false;
    for scenario in args.scenario {
        eprintln!("[{}] preparing", scenario.name());
        let workload = match (scenario, &args.peer) {
            (Scenario::PeerClientCredentials, Some(raw)) => {
                let peer = peer::Peer::connect(raw, &args.data, plan.concurrency).await?;
                let seen = peer.check().await?;
                eprintln!(
                    "[{}] {} (issuer {}): {seen}",
                    scenario.name(),
                    peer.url,
                    peer.issuer
                );
                Arc::new(Workload::Peer(Box::new(peer)))
            }
            _ => Arc::new(Workload::prepare(scenario, &server).await?),
        };
        eprintln!("[{}] running", scenario.name());
        let outcome = match args.rate {
            Some(rate) => open::run(server.clone(), workload, plan, rate).await?,
            None => run::run(server.clone(), workload, plan).await?,
        };
        if let Some(e) = &outcome.first_error {
            eprintln!("[{}] first error: {e}", scenario.name());
        }
        let summary = stats::summarise(outcome.samples);
        any_errors |= summary.errors > 0 || outcome.first_error.is_some();
        eprintln!(
            "[{}] {} sent in all (warm-up included)",
            scenario.name(),
            outcome.sent
        );
        lines.push(stats::line(scenario.name(), &summary));
    }
    println!("{}", stats::header());
    for l in lines {
        println!("{l}");
    }
    Ok(if any_errors {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The same allocator as the server's, so the load generator takes as little of the shared
/// cores as it can.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Parses the arguments and runs; exit code 2 means the run finished but saw errors.
#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mandate-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
