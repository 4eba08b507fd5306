//! `mandate gateway`: the gateway as its own process, following a Mandate server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use mandate_server::Config;

use crate::serve::{init_logging, shutdown_signal};

/// Arguments of `mandate gateway`.
#[derive(Args)]
pub struct GatewayArgs {
    /// Configuration file with a `[gateway]` section (default: `./mandate.toml` if it exists).
    #[arg(long, env = "MANDATE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides `gateway.listen`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Mandate's URL (overrides `gateway.mandate_url`).
    #[arg(long)]
    mandate_url: Option<String>,
    /// The `iss` of Mandate's tokens when it is not `--mandate-url`: the load balancer's URL
    /// when this gateway follows one of several nodes (overrides `gateway.mandate_issuer`).
    #[arg(long)]
    issuer: Option<String>,
}

/// Runs the standalone gateway until Ctrl-C or SIGTERM.
pub async fn run(args: GatewayArgs) -> Result<ExitCode> {
    let path = args.config.or_else(|| {
        let p = PathBuf::from("mandate.toml");
        p.exists().then_some(p)
    });
    let config = Config::load(path.as_deref(), std::env::vars())?;
    init_logging(&config.log_format);
    let mut gw = config.gateway.clone();
    if args.issuer.is_some() {
        gw.mandate_issuer = args.issuer;
    }
    let gw = &gw;
    let listen = args
        .listen
        .or(gw.listen)
        .ok_or_else(|| anyhow!("no address to listen on: give `--listen` or `gateway.listen`"))?;
    let mandate_url = args
        .mandate_url
        .or_else(|| gw.mandate_url.clone())
        .ok_or_else(|| {
            anyhow!("no Mandate server to follow: give `--mandate-url` or `gateway.mandate_url`")
        })?;
    let credential = match std::env::var("MANDATE_GATEWAY_CREDENTIAL") {
        Ok(c) => c,
        Err(_) => {
            let file = gw.credential_file.as_ref().ok_or_else(|| {
                anyhow!(
                    "no credential: set MANDATE_GATEWAY_CREDENTIAL or `gateway.credential_file` \
                     (create one with `mandate credentials create --id gw1 --role gateway`)"
                )
            })?;
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read `{}`", file.display()))?
        }
    };
    let running = mandate_gateway::standalone::start(
        gw,
        listen,
        &mandate_url,
        credential.trim().to_owned(),
        config.tokens.leeway,
    )
    .await
    .context("cannot start the gateway")?;
    println!(
        "Gateway is listening on {} (tokens need this audience)",
        running.url
    );
    println!("  following Mandate at {mandate_url}");
    if let Some(iss) = &gw.mandate_issuer {
        println!("  accepting tokens issued by {iss}");
    }
    println!(
        "  transaction tokens are signed by {0} (keys at {0}/.well-known/jwks.json)",
        running.url
    );
    println!("Press Ctrl-C to stop.");
    shutdown_signal().await;
    running.shutdown().await;
    eprintln!("gateway stopped");
    Ok(ExitCode::SUCCESS)
}
