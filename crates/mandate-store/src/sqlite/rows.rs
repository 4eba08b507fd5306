//! Turning SQLite rows back into domain values: the decoders are shared with PostgreSQL
//! ([`crate::rows`], over [`crate::rows::Columns`], which `SqliteRow` provides).

pub(super) use crate::rows::{
    admin_credential, agent, agent_key, agents_with_keys, approval, checkpoint, event, revocation,
    revocation_entry, revoked_token, secret, secret_info, segment, signing_key, ssf_queued,
    ssf_stream, task, task_step, token,
};
