//! `mandate-upstream`: the smallest upstream worth putting behind the gateway, for measuring
//! what the gateway itself adds (see `bench/gateway.sh` and `docs/BENCHMARKS.md`).
//!
//! A hyper HTTP/1.1 server on a loopback address that answers every request `200` with one
//! fixed, small JSON body naming customer 9821 (what `mandate-load --gateway-latency` expects),
//! optionally only when a fixed API key header carries the expected key (else `401`). It does
//! no Transaction Token check and no JSON work, and allocates almost nothing per request: the
//! body is a static buffer. It prints the URL it listens on, then serves until killed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The answer to every accepted request.
const BODY: &[u8] = br#"{"id":"9821","name":"minimal upstream","ok":true}"#;

/// The answer to a request without the expected key.
const REFUSED: &[u8] = br#"{"error":"unauthorized"}"#;

/// Command-line arguments.
#[derive(Parser)]
#[command(
    name = "mandate-upstream",
    version,
    about = "A minimal loopback upstream for gateway benchmarks: 200 and a fixed JSON body"
)]
struct Args {
    /// Address to listen on; must be a loopback address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// File holding the API key every request must carry (default: none is checked).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// The header that carries the API key.
    #[arg(long, default_value = "x-api-key")]
    key_header: String,
    /// Runtime worker threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: Option<u16>,
}

/// The key check, if any: the header and the value it must have.
struct KeyCheck {
    header: HeaderName,
    key: Vec<u8>,
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The answer to one request.
fn answer(check: Option<&KeyCheck>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let allowed = check.is_none_or(|c| {
        req.headers()
            .get(&c.header)
            .is_some_and(|v| same(v.as_bytes(), &c.key))
    });
    let (status, body) = if allowed {
        (StatusCode::OK, BODY)
    } else {
        (StatusCode::UNAUTHORIZED, REFUSED)
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Accepts connections forever, one task each.
async fn serve(listener: TcpListener, check: Option<Arc<KeyCheck>>) -> Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("mandate-upstream: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let check = check.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let r = answer(check.as_deref(), &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Checks the arguments, binds, prints the URL and serves.
fn run(args: Args) -> Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!(
            "`--listen {}`: mandate-upstream only listens on loopback",
            args.listen
        );
    }
    let check = match &args.key_file {
        None => None,
        Some(path) => {
            let key = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read `{}`", path.display()))?;
            let key = key.trim();
            if key.is_empty() {
                bail!("`{}` holds no key", path.display());
            }
            let header = HeaderName::from_bytes(args.key_header.as_bytes())
                .with_context(|| format!("`{}` is not a header name", args.key_header))?;
            Some(Arc::new(KeyCheck {
                header,
                key: key.as_bytes().to_vec(),
            }))
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(usize::from(n));
    }
    let rt = rt
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async move {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on `{}`", args.listen))?;
        let addr = listener.local_addr()?;
        println!("mandate-upstream is listening on http://{addr}");
        serve(listener, check).await
    })
}

/// Parses the arguments and serves until killed.
/// The same allocator as the server's, so the load generator takes as little of the shared
/// cores as it can.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mandate-upstream: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_exactly() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(!same(b"", b"a"));
    }

    #[test]
    fn the_body_names_the_customer_the_load_generator_expects() {
        assert!(BODY.windows(4).any(|w| w == b"9821"));
    }
}
