//! The open-loop run (`--rate`): requests are due at a fixed rate whatever the server does, and
//! each one's latency counts from when it was due, not from when it was sent. A slow answer
//! therefore cannot hide the requests that should have followed it (no coordinated omission),
//! which is what "p99 at half the peak rate" needs.
//!
//! The scheduler wakes at the timer's granularity (about a millisecond) and starts every request
//! that is due by then, each as its own task; at most `concurrency` are in flight, and a request
//! that must wait for a slot keeps the time it was due. Request `k` uses worker slot
//! `k % concurrency` (so `exchange` uses `concurrency` tasks, as in the closed loop).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use crate::run::{Outcome, Plan, send_one};
use crate::scenario::Workload;
use crate::server::Server;
use crate::stats::Samples;

/// Runs `workload` against `server` at `rate` requests per second for `plan`'s warm-up and
/// duration, with at most `plan.concurrency` requests in flight.
pub async fn run(
    server: Arc<Server>,
    workload: Arc<Workload>,
    plan: Plan,
    rate: u32,
) -> Result<Outcome> {
    schedule(plan, rate, move |worker| {
        let rb = workload
            .request(&server, worker)
            .context("cannot build a request")?;
        let workload = Arc::clone(&workload);
        Ok(async move { send_one(&workload, rb).await })
    })
    .await
}

/// The open loop itself: `start(worker)` prepares one request and returns the future that sends
/// it and judges the answer.
async fn schedule<F, Fut>(plan: Plan, rate: u32, mut start: F) -> Result<Outcome>
where
    F: FnMut(usize) -> Result<Fut>,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let interval = Duration::from_secs(1) / rate.max(1);
    let began = Instant::now();
    let measure_from = began + plan.warmup;
    let end = measure_from + plan.duration;
    let slots = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let samples = Arc::new(Mutex::new(Samples::default()));
    let first_error: Arc<std::sync::OnceLock<String>> = Arc::default();
    let mut in_flight = JoinSet::new();
    let mut sent: u64 = 0;
    'schedule: loop {
        let now = Instant::now();
        // Every request due by now, in order.
        loop {
            let due = began + interval * u32::try_from(sent).unwrap_or(u32::MAX);
            if due >= end || sent >= plan.max_requests {
                break 'schedule;
            }
            if due > now {
                tokio::time::sleep_until(due.into()).await;
                break;
            }
            let slot = Arc::clone(&slots)
                .acquire_owned()
                .await
                .context("the in-flight limit closed")?;
            let worker = usize::try_from(sent).unwrap_or(0) % plan.concurrency.max(1);
            let request = start(worker)?;
            let samples = Arc::clone(&samples);
            let first_error = Arc::clone(&first_error);
            in_flight.spawn(async move {
                let result = request.await;
                let finished = Instant::now();
                drop(slot);
                if let Err(e) = &result {
                    let _ = first_error.set(e.clone());
                }
                if due >= measure_from && finished <= end {
                    let mut s = samples.lock().await;
                    match result {
                        Ok(()) => s.ok.push(finished - due),
                        Err(_) => s.errors += 1,
                    }
                }
            });
            sent += 1;
            // Reap finished tasks as we go, so the set stays small.
            while in_flight.try_join_next().is_some() {}
        }
    }
    while let Some(joined) = in_flight.join_next().await {
        joined.context("a request task stopped abnormally")?;
    }
    let stopped = Instant::now().min(end);
    let mut samples = std::mem::take(&mut *samples.lock().await);
    samples.window = stopped.saturating_duration_since(measure_from);
    Ok(Outcome {
        samples,
        first_error: first_error.get().cloned(),
        sent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(concurrency: usize) -> Plan {
        Plan {
            warmup: Duration::ZERO,
            duration: Duration::from_millis(400),
            concurrency,
            max_requests: 1_000_000,
        }
    }

    #[tokio::test]
    async fn requests_start_at_the_rate_whatever_the_answers_take() {
        // 500/s for 0.4 s, each answer taking 20 ms: 200 requests, about ten in flight at once.
        let out = schedule(plan(64), 500, |_| {
            Ok(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(())
            })
        })
        .await
        .unwrap();
        assert_eq!(out.sent, 200);
        assert!(out.samples.ok.len() >= 180, "{}", out.samples.ok.len());
        assert!(
            out.samples
                .ok
                .iter()
                .all(|d| *d >= Duration::from_millis(20))
        );
    }

    #[tokio::test]
    async fn a_request_that_waits_for_a_slot_counts_from_when_it_was_due() {
        // One slot and 20 ms answers at 100/s: each request waits behind the previous ones, so
        // latencies grow far past 20 ms instead of hiding the backlog.
        let out = schedule(plan(1), 100, |_| {
            Ok(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(())
            })
        })
        .await
        .unwrap();
        let worst = out.samples.ok.iter().max().copied().unwrap_or_default();
        assert!(worst >= Duration::from_millis(60), "{worst:?}");
    }

    #[tokio::test]
    async fn failures_are_counted_and_the_first_kept() {
        let out = schedule(plan(8), 100, |worker| {
            Ok(async move {
                if worker % 2 == 0 {
                    Ok(())
                } else {
                    Err(format!("worker {worker} failed"))
                }
            })
        })
        .await
        .unwrap();
        assert!(out.samples.errors >= 15, "{}", out.samples.errors);
        assert!(out.first_error.is_some_and(|e| e.contains("failed")));
    }
}
