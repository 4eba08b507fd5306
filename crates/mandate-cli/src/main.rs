//! `mandate`: one binary for the authorization server (`serve`), the end-to-end story (`demo`),
//! and admin subcommands that call the server's `/v1` API (never its database, except the
//! offline `audit verify --data`).

mod approvals;
mod audit_cmds;
mod client;
mod commands;
mod compliance;
mod demo;
mod demo_cluster;
mod demo_draft;
mod demo_gateway;
mod demo_posture;
mod demo_workload;
mod gateway;
mod output;
mod policy;
mod posture;
mod secrets;
mod serve;
mod tasks;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Identity and least-privilege authorization for AI agents.
#[derive(Parser)]
#[command(name = "mandate", version, about)]
struct Cli {
    /// Server URL for admin commands.
    #[arg(
        long,
        global = true,
        env = "MANDATE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// Admin credential (default: `./mandate-data/admin.token` when present).
    #[arg(long, global = true, env = "MANDATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the authorization server.
    Serve(serve::ServeArgs),
    /// Run the gateway on its own, in front of its upstreams, following a Mandate server.
    Gateway(gateway::GatewayArgs),
    /// Run the whole story on this machine and print it: a user, two agents, a delegation
    /// chain, a refused over-reach, a revocation mid-task, and the audit trail.
    Demo(demo::DemoArgs),
    /// Helpers for a `--dev` server.
    #[command(subcommand)]
    Dev(commands::DevCommand),
    /// Register and manage agents.
    #[command(subcommand)]
    Agents(commands::AgentsCommand),
    /// Revoke a token, task, agent, user or key (and everything derived from it).
    Revoke(commands::RevokeArgs),
    /// List revocations.
    Revocations,
    /// Requests waiting for a human: list, show, approve, deny (deciding needs your own
    /// identity provider token: `--as-token` or `MANDATE_USER_TOKEN`).
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Read and verify the audit log.
    #[command(subcommand)]
    Audit(commands::AuditCommand),
    /// The compliance report: SOC 2 CC6.1–CC6.3, HIPAA §164.312(a)(1), (a)(2)(i), (b), (d),
    /// OWASP LLM06:2025 and EU AI Act Art. 12 — per control, what Mandate does, this
    /// deployment's evidence and its gaps (Markdown, HTML or JSON).
    Compliance(compliance::ComplianceArgs),
    /// The posture report: every agent with its owner, credentials, ceiling and stage; findings
    /// with severity and fix; each agent's blast radius. Exits 2 when a finding is at least as
    /// severe as `--fail-on` (default `high`).
    Posture(posture::PostureArgs),
    /// Access reviews: start a round (one item per agent for its owner), list, and — as the
    /// owner, with your own identity provider token — attest or remove scopes.
    #[command(subcommand)]
    Review(posture::ReviewCommand),
    /// Signing keys.
    #[command(subcommand)]
    Keys(commands::KeysCommand),
    /// Admin credentials.
    #[command(subcommand)]
    Credentials(commands::CredentialsCommand),
    /// The gateway's upstream credentials, stored sealed: set (value from stdin), list, rm.
    /// Values are never shown back.
    #[command(subcommand)]
    Secret(secrets::SecretCommand),
    /// Tasks: list, create, record the agent's steps, complete, and show one timeline.
    #[command(subcommand)]
    Task(tasks::TaskCommand),
    /// Validate, test and explain Cedar policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Obtain and inspect tokens as an agent.
    #[command(subcommand)]
    Token(commands::TokenCommand),
}

fn default_token(given: Option<String>) -> Option<String> {
    given.or_else(|| {
        std::fs::read_to_string(PathBuf::from("mandate-data/admin.token"))
            .ok()
            .map(|s| s.trim().to_owned())
    })
}

/// mimalloc instead of glibc's malloc: the server allocates and frees many small, short-lived
/// values per request from several threads (see docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let token = default_token(cli.token);
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Gateway(args) => gateway::run(args).await,
            Command::Demo(a) => demo::run(a).await,
            Command::Dev(c) => commands::dev(c, &cli.url, token, cli.json).await,
            Command::Agents(c) => commands::agents(c, &cli.url, token, cli.json).await,
            Command::Revoke(a) => commands::revoke(a, &cli.url, token, cli.json).await,
            Command::Revocations => commands::revocations(&cli.url, token, cli.json).await,
            Command::Approvals(c) => approvals::run(c, &cli.url, token, cli.json).await,
            Command::Audit(c) => commands::audit(c, &cli.url, token, cli.json).await,
            Command::Compliance(a) => compliance::run(a, &cli.url, token, cli.json).await,
            Command::Posture(a) => posture::posture(a, &cli.url, token, cli.json).await,
            Command::Review(c) => posture::review(c, &cli.url, token, cli.json).await,
            Command::Keys(c) => commands::keys(c, &cli.url, token, cli.json).await,
            Command::Credentials(c) => commands::credentials(c, &cli.url, token, cli.json).await,
            Command::Secret(c) => secrets::run(c, &cli.url, token, cli.json).await,
            Command::Task(c) => tasks::run(c, &cli.url, token, cli.json).await,
            Command::Token(c) => commands::token(c, &cli.url, token, cli.json).await,
            Command::Policy(c) => policy::run(c, &cli.url, token, cli.json).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
