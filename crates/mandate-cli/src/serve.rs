//! `mandate serve`: load configuration, start, print where and how to reach it, run until
//! Ctrl-C or SIGTERM, shut down gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use mandate_server::{Config, Options};

/// Arguments of `mandate serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Configuration file (default: `./mandate.toml` if it exists).
    #[arg(long, env = "MANDATE_CONFIG")]
    config: Option<PathBuf>,
    /// A throwaway setup with the demo world: test IdP, demo users and agents.
    #[arg(long)]
    dev: bool,
    /// Data directory (overrides `data_dir`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Address to listen on (overrides `listen`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Run the gateway on this address too (overrides `gateway.listen`). In `--dev` the gateway
    /// always runs, by default on the port after `--listen`, in front of the sample CRM.
    #[arg(long)]
    gateway_listen: Option<SocketAddr>,
}

/// Logs to stderr, as text or JSON, filtered by `MANDATE_LOG`.
pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MANDATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Runs the server.
pub async fn run(args: ServeArgs) -> Result<ExitCode> {
    let path = args.config.or_else(|| {
        let p = PathBuf::from("mandate.toml");
        p.exists().then_some(p)
    });
    let mut config = Config::load(path.as_deref(), std::env::vars())?;
    if let Some(d) = args.data {
        config.data_dir = d;
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    init_logging(&config.log_format);
    let gateway_listen = args.gateway_listen.or_else(|| {
        // In --dev the gateway runs beside the server, on the next port.
        (args.dev && config.gateway.listen.is_none()).then(|| {
            let mut a = config.listen;
            a.set_port(if a.port() == 0 {
                0
            } else {
                a.port().wrapping_add(1)
            });
            // The next port is only a default: if it is taken, any free port will do.
            if std::net::TcpListener::bind(a).is_err() {
                a.set_port(0);
            }
            a
        })
    });
    let mut opts = Options::new(config, args.dev);
    opts.master_key = std::env::var("MANDATE_MASTER_KEY").ok();
    opts.gateway_listen = gateway_listen;
    let running = mandate_server::start(opts).await.context("cannot start")?;
    println!("Mandate is listening on {}", running.url);
    println!(
        "  metadata: {}/.well-known/oauth-authorization-server",
        running.url
    );
    println!("  data:     {}", running.data_dir.display());
    let node = format!("http://{}", running.addr);
    if node != running.url {
        // Several nodes behind a balancer share the issuer URL; this is where this one is.
        println!("  this node: {node}");
    }
    println!("  database: {}", running.state.store.backend());
    if running.state.config.console.enabled {
        println!("  console:  {}/console", running.url);
        if let Some(link) = &running.console_link {
            println!("  console sign-in link (one use, as admin@example.com): {link}");
        }
    }
    if let Some(gw) = &running.gateway {
        println!(
            "Gateway is listening on {} (tokens need this audience)",
            gw.url
        );
        if running.sample.is_some() {
            println!(
                "  in front of the sample CRM: GET {0}/customers/{{id}}, GET {0}/tickets/{{id}}, POST {0}/tickets, POST {0}/email/send",
                gw.url
            );
            println!("  and its MCP server `crm`: {}/mcp", gw.url);
            if let Some(sample) = &running.sample {
                println!(
                    "  the sample CRM itself: {} (its API key: {})",
                    sample.url(),
                    running
                        .data_dir
                        .join(mandate_server::gateway::DEV_SECRET_FILE)
                        .display()
                );
            }
        }
    }
    match (&running.admin_token, args.dev, running.admin_token_is_new) {
        (Some(t), true, _) => {
            println!("  admin credential: {t}");
            println!(
                "  (also in {})",
                running.data_dir.join("admin.token").display()
            );
            println!(
                "  dev: demo agents' keys are in {}",
                running.data_dir.join("agents").display()
            );
            println!(
                "  try: MANDATE_URL={} MANDATE_TOKEN=$(cat {}) mandate agents list",
                running.url,
                running.data_dir.join("admin.token").display()
            );
        }
        (Some(t), false, true) => {
            println!("  bootstrap admin credential (shown once, stored only hashed): {t}");
        }
        _ => {}
    }
    println!("Press Ctrl-C to stop.");
    running.run_until(shutdown_signal()).await;
    eprintln!("mandate stopped");
    Ok(ExitCode::SUCCESS)
}
