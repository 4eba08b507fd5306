//! Held writes on the server's side (draft stage, SPEC §6): what the gateway — in-process, or
//! standalone through `/v1/gateway/holds` — asks of the store. The approval itself is an
//! ordinary one ([`crate::approvals`]); its payload is the [`HeldRequest`] and its outcome the
//! upstream's answer ([`Delivered`]).

use mandate_core::approval::Ask;
use mandate_core::claims::SubProfile;
use mandate_core::revocation::TokenFacts;
use mandate_gateway::authority::Receipt;
use mandate_gateway::hold::{Delivered, HeldRequest, Proposal};
use mandate_store::{ApprovalFilter, Op, OpOutput, StoreError};

use crate::state::AppState;

/// Most approved held writes handed to a gateway per sweep.
const SWEEP_LIMIT: u32 = 100;

fn failed(e: StoreError) -> String {
    tracing::error!(error = %e, "held write store failure");
    "the store failed".to_owned()
}

/// Opens the approval for a held write (its `approval.requested` event in the same unit).
pub async fn hold(
    state: &AppState,
    held: HeldRequest,
    binding_message: String,
    requested_by: &str,
) -> Result<Receipt, String> {
    let c = &held.claims;
    let chain = c
        .chain()
        .map_err(|e| format!("the held request's claims do not parse: {e}"))?
        .agent_ids();
    let payload = serde_json::to_value(&held).map_err(|e| e.to_string())?;
    let req = crate::approvals::Request {
        ask: Ask::HeldWrite {
            method: held.method.clone(),
            path: held.path.clone(),
            action: held.action.clone(),
            resource: held.resource.clone(),
        },
        user: (c.sub_profile == SubProfile::User).then(|| c.sub.clone()),
        agent: c.client_id.clone(),
        chain,
        task: Some(c.task.clone()),
        justification: String::new(),
        binding_message,
        payload,
        request_id: None,
        requested_by: requested_by.to_owned(),
    };
    let stored = crate::approvals::open(state, req).await.map_err(failed)?;
    Ok(Receipt {
        id: stored.approval.id,
        expires_at: stored.approval.expires_at,
    })
}

/// A held write by its approval id; `None` for an unknown id or another kind of approval.
pub async fn proposal(state: &AppState, id: &str) -> Result<Option<Proposal>, String> {
    let Some(stored) = state.store.approval(id).await.map_err(failed)? else {
        return Ok(None);
    };
    if !matches!(stored.approval.ask, Ask::HeldWrite { .. }) {
        return Ok(None);
    }
    let held: HeldRequest = serde_json::from_str(&stored.payload)
        .map_err(|e| format!("held write `{id}` does not decode: {e}"))?;
    let delivered = stored
        .outcome
        .as_deref()
        .map(serde_json::from_str::<Delivered>)
        .transpose()
        .map_err(|e| format!("the answer to held write `{id}` does not decode: {e}"))?;
    Ok(Some(Proposal {
        approval: stored.approval,
        dispatch: stored.dispatch,
        held,
        delivered,
    }))
}

/// Claims an approved held write for sending: `true` for exactly one caller.
pub async fn claim(state: &AppState, id: &str) -> Result<bool, String> {
    let out = state
        .store
        .commit(vec![Op::ClaimApproval { id: id.to_owned() }])
        .await
        .map_err(failed)?;
    Ok(matches!(out.first(), Some(OpOutput::Claimed(true))))
}

/// Stores the upstream's answer to a claimed held write.
pub async fn deliver(state: &AppState, id: &str, delivered: &Delivered) -> Result<(), String> {
    let outcome = serde_json::to_string(delivered).map_err(|e| e.to_string())?;
    state
        .store
        .commit(vec![Op::FinishApproval {
            id: id.to_owned(),
            outcome,
        }])
        .await
        .map_err(failed)?;
    Ok(())
}

/// Approved held writes nobody claimed yet, oldest last.
pub async fn approved(state: &AppState) -> Result<Vec<String>, String> {
    let filter = ApprovalFilter {
        kind: Some("held_write".into()),
        undispatched: true,
        limit: Some(SWEEP_LIMIT),
        ..Default::default()
    };
    Ok(state
        .store
        .approvals(&filter)
        .await
        .map_err(failed)?
        .into_iter()
        .map(|s| s.approval.id)
        .collect())
}

/// Why a revocation reaches the token `claims` come from, if one does.
pub fn revoked(state: &AppState, claims: &mandate_core::claims::AccessClaims) -> Option<String> {
    let Ok(chain) = claims.chain() else {
        return Some("the held request's token claims do not parse".into());
    };
    let user = (claims.sub_profile == SubProfile::User).then_some(claims.sub.as_str());
    let facts = TokenFacts {
        jti: &claims.jti,
        task: &claims.task,
        user,
        chain: &chain,
        iat: claims.iat,
    };
    state
        .revocations
        .with(|idx| idx.check(&facts))
        .map(|r| format!("{} `{}` has been revoked", r.kind.as_str(), r.id))
}
