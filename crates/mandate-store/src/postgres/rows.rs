//! Turning PostgreSQL rows back into domain values: the decoders are shared with SQLite
//! ([`crate::rows`], over [`crate::rows::Columns`], which `PgRow` provides), so both backends
//! read a stored value the same way.
//!
//! What PostgreSQL adds is typing: every integer a read selects must be a `BIGINT` (columns
//! are; `COUNT(*)` and `MAX` of a `BIGINT` are; `SUM` is not and is cast), every text a `TEXT`.

pub(super) use crate::rows::{
    admin_credential, agents_with_keys, approval, approval_count, checkpoint, checkpoint_fact,
    credential_use, event, event_count, justification, rate_peak, review, revocation,
    revocation_entry, revoked_token, scope_use, secret, secret_info, segment, signing_key,
    ssf_queued, ssf_stream, task, task_step, token,
};
