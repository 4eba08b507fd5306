//! How many rows a read returns: the defaults and caps of the [`crate::Store`] listings, the
//! same for both backends, as the `LIMIT` value to bind.

use crate::{ApprovalFilter, AuditFilter, ReviewFilter, TaskFilter};

/// Audit events returned when a filter names no limit.
const DEFAULT_AUDIT: u32 = 100;
/// The most audit events one filtered query returns.
const MAX_AUDIT: u32 = 10_000;
/// Tasks returned when a filter names no limit.
const DEFAULT_TASKS: u32 = 100;
/// The most tasks one listing returns.
const MAX_TASKS: u32 = 1_000;
/// Approvals returned when a filter names no limit.
const DEFAULT_APPROVALS: u32 = 100;
/// The most approvals one listing returns.
const MAX_APPROVALS: u32 = 1_000;
/// Reviews returned when a filter names no limit.
const DEFAULT_REVIEWS: u32 = 100;
/// The most reviews one listing returns.
const MAX_REVIEWS: u32 = 1_000;
/// The most revocation feed entries, or outbox SETs, one read returns.
const MAX_READ_BATCH: u32 = 10_000;

/// The limit of an audit query.
pub(crate) fn audit(filter: &AuditFilter) -> i64 {
    i64::from(filter.limit.unwrap_or(DEFAULT_AUDIT).min(MAX_AUDIT))
}

/// The limit of a task listing.
pub(crate) fn tasks(filter: &TaskFilter) -> i64 {
    i64::from(filter.limit.unwrap_or(DEFAULT_TASKS).min(MAX_TASKS))
}

/// The limit of an approval listing.
pub(crate) fn approvals(filter: &ApprovalFilter) -> i64 {
    i64::from(filter.limit.unwrap_or(DEFAULT_APPROVALS).min(MAX_APPROVALS))
}

/// The limit of a review listing.
pub(crate) fn reviews(filter: &ReviewFilter) -> i64 {
    i64::from(filter.limit.unwrap_or(DEFAULT_REVIEWS).min(MAX_REVIEWS))
}

/// The limit of a revocation feed read or a Shared Signals outbox read.
pub(crate) fn batch(limit: u32) -> i64 {
    i64::from(limit.min(MAX_READ_BATCH))
}
