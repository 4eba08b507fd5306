//! What a token request asks for, parsed from the form: audiences (RFC 8707 `resource`, RFC 8693
//! `audience`), scopes and scope mode, stage, lifetime, task, and the justification shown to an
//! approver.

use mandate_core::grant::ScopeMode;
use mandate_core::ids::TaskId;
use mandate_core::scope::ScopeSet;
use mandate_core::stage::Stage;

use crate::error::OAuthError;
use crate::oauth::form::Form;
use crate::state::AppState;

/// The parameters common to both grants.
#[derive(Debug, Clone)]
pub struct TokenParams {
    /// Requested scopes.
    pub scopes: ScopeSet,
    /// Strict or intersect.
    pub mode: ScopeMode,
    /// The stage asked for.
    pub stage: Option<Stage>,
    /// The lifetime asked for.
    pub ttl: Option<i64>,
    /// Target audiences, sorted, without duplicates.
    pub aud: Vec<String>,
    /// The task named, if any.
    pub task: Option<TaskId>,
    /// Why the task exists (`task_purpose`).
    pub purpose: Option<String>,
    /// The input that triggered the task (`task_input`), stored when the task is created.
    pub input: Option<String>,
    /// Why the agent needs it (`justification`), shown to the approver when the request needs
    /// a human's approval.
    pub justification: Option<String>,
}

/// The most bytes of `task_input`.
pub const MAX_TASK_INPUT_BYTES: usize = 4096;

/// The most bytes of `justification`.
pub const MAX_JUSTIFICATION_BYTES: usize = crate::approvals::MAX_REASON_BYTES;

/// Target audiences from `resource` (RFC 8707) and `audience` (RFC 8693).
pub fn audiences(state: &AppState, form: &Form) -> Result<Vec<String>, OAuthError> {
    let mut out: Vec<String> = Vec::new();
    for r in form.all("resource") {
        let ok = r.len() <= 512
            && r.split_once("://").is_some_and(|(scheme, rest)| {
                !scheme.is_empty()
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
                    && !rest.is_empty()
            })
            && !r.contains('#');
        if !ok {
            return Err(OAuthError::invalid_target(
                "`resource` must be an absolute URI without a fragment (RFC 8707)",
            ));
        }
        out.push(r.to_owned());
    }
    for a in form.all("audience") {
        if a.len() > 512 {
            return Err(OAuthError::invalid_target("`audience` is too long"));
        }
        out.push(a.to_owned());
    }
    if out.is_empty() {
        return Err(OAuthError::invalid_request(
            "`resource` or `audience` is required: name where the token will be used (RFC 8707)",
        ));
    }
    out.sort();
    out.dedup();
    if out.len() > 8 {
        return Err(OAuthError::invalid_target("at most 8 audiences per token"));
    }
    let allowed = &state.config.audiences;
    if !allowed.is_empty()
        && let Some(bad) = out.iter().find(|a| !allowed.contains(a))
    {
        return Err(OAuthError::invalid_target(format!(
            "audience `{}` is not served by this deployment",
            bad.chars().take(100).collect::<String>()
        )));
    }
    Ok(out)
}

/// Parses the parameters common to both grants.
pub fn parse(state: &AppState, form: &Form) -> Result<TokenParams, OAuthError> {
    let aud = audiences(state, form)?;
    let scopes = ScopeSet::parse_oauth(form.get("scope").unwrap_or_default())
        .map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
    let mode = match form.get("scope_mode") {
        None | Some("strict") => ScopeMode::Strict,
        Some("intersect") => ScopeMode::Intersect,
        Some(_) => {
            return Err(OAuthError::invalid_request(
                "`scope_mode` must be `strict` or `intersect`",
            ));
        }
    };
    let stage = form
        .get("stage")
        .map(|s| s.parse::<Stage>())
        .transpose()
        .map_err(OAuthError::invalid_request)?;
    let ttl = form
        .get("ttl")
        .map(|t| t.parse::<i64>())
        .transpose()
        .map_err(|_| OAuthError::invalid_request("`ttl` must be a whole number of seconds"))?;
    let task = form
        .get("task")
        .map(TaskId::parse)
        .transpose()
        .map_err(|e| OAuthError::invalid_request(e.to_string()))?;
    let purpose = form
        .get("task_purpose")
        .map(|p| p.chars().take(1000).collect());
    let input = form.get("task_input").map(str::to_owned);
    if input
        .as_ref()
        .is_some_and(|i| i.len() > MAX_TASK_INPUT_BYTES)
    {
        return Err(OAuthError::invalid_request(format!(
            "`task_input` must be at most {MAX_TASK_INPUT_BYTES} bytes"
        )));
    }
    let justification = form.get("justification").map(str::to_owned);
    if justification
        .as_ref()
        .is_some_and(|j| j.len() > MAX_JUSTIFICATION_BYTES)
    {
        return Err(OAuthError::invalid_request(format!(
            "`justification` must be at most {MAX_JUSTIFICATION_BYTES} bytes"
        )));
    }
    Ok(TokenParams {
        scopes,
        mode,
        stage,
        ttl,
        aud,
        task,
        purpose,
        input,
        justification,
    })
}
