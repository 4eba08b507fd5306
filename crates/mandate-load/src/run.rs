//! The closed-loop run: `concurrency` workers each send one request, wait for the whole answer,
//! and send the next, until the time is up or the request budget is spent. Only requests that
//! start after the warm-up and finish before the end are measured, so the rate is exact for the
//! window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use crate::scenario::Workload;
use crate::server::Server;
use crate::stats::Samples;

/// How long and how hard to run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Unmeasured time at the start.
    pub warmup: Duration,
    /// Measured time after the warm-up.
    pub duration: Duration,
    /// Workers, each with one request in flight.
    pub concurrency: usize,
    /// Most requests sent in all, warm-up included.
    pub max_requests: u64,
}

/// What a run produced.
pub struct Outcome {
    /// The measurements.
    pub samples: Samples,
    /// The first failed answer (status and body, shortened), warm-up included.
    pub first_error: Option<String>,
    /// Requests sent in all, warm-up and unmeasured stragglers included.
    pub sent: u64,
}

/// What every worker shares.
struct Shared {
    /// The server.
    server: Arc<Server>,
    /// The prepared scenario.
    workload: Arc<Workload>,
    /// Measurement starts here.
    measure_from: Instant,
    /// No request starts after this, and none that ends after it is measured.
    end: Instant,
    /// The request budget.
    max_requests: u64,
    /// Requests sent so far.
    sent: AtomicU64,
    /// The first failure seen.
    first_error: OnceLock<String>,
}

/// Sends one request; `Ok(())` for a success, `Err(description)` otherwise. The body is always
/// read to the end, so the connection goes back to the pool.
pub(crate) async fn send_one(
    workload: &Workload,
    rb: reqwest::RequestBuilder,
) -> Result<(), String> {
    let resp = rb.send().await.map_err(|e| format!("no answer: {e}"))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("{status}, body unreadable: {e}"))?;
    if status == reqwest::StatusCode::OK && workload.accepts(&body) {
        Ok(())
    } else {
        let text: String = String::from_utf8_lossy(&body).chars().take(500).collect();
        Err(format!("{status}: {text}"))
    }
}

/// One worker's loop.
async fn worker(shared: Arc<Shared>, id: usize) -> Result<Samples> {
    let mut local = Samples::default();
    loop {
        if Instant::now() >= shared.end
            || shared.sent.fetch_add(1, Ordering::Relaxed) >= shared.max_requests
        {
            return Ok(local);
        }
        let rb = shared
            .workload
            .request(&shared.server, id)
            .context("cannot build a request")?;
        let started = Instant::now();
        let result = send_one(&shared.workload, rb).await;
        let finished = Instant::now();
        if let Err(e) = &result {
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

/// Runs `workload` against `server` as `plan` says.
pub async fn run(server: Arc<Server>, workload: Arc<Workload>, plan: Plan) -> Result<Outcome> {
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let shared = Arc::new(Shared {
        server,
        workload,
        measure_from,
        end,
        max_requests: plan.max_requests,
        sent: AtomicU64::new(0),
        first_error: OnceLock::new(),
    });
    let mut workers = JoinSet::new();
    for id in 0..plan.concurrency {
        workers.spawn(worker(shared.clone(), id));
    }
    let mut samples = Samples::default();
    while let Some(joined) = workers.join_next().await {
        samples.merge(joined.context("a worker stopped abnormally")??);
    }
    // Normally the whole window; shorter only if the request budget ran out first.
    let stopped = Instant::now().min(end);
    samples.window = stopped.saturating_duration_since(measure_from);
    let sent = shared.sent.load(Ordering::Relaxed).min(plan.max_requests);
    Ok(Outcome {
        samples,
        first_error: shared.first_error.get().cloned(),
        sent,
    })
}
