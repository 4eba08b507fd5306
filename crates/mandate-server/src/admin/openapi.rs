//! `GET /v1/openapi.json`: the OpenAPI 3.1 description of the admin API.
//!
//! Built from [`ROUTES`], the one list of admin routes; request bodies are described by the
//! `utoipa::ToSchema` derives on the body types, so they cannot drift from what is parsed.

use axum::Json;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, Required,
    ResponseBuilder,
};

use crate::admin::agents::{AgentChange, NewAgent, NewKey};
// Approvals
use crate::admin::approvals::DecisionBody;
// Audit retention
use crate::admin::audit::ArchiveRequest;
use crate::admin::credentials::CredentialRequest;
// Posture and access reviews
use crate::admin::dev::UserTokenRequest;
use crate::admin::gateway_api::{GatewayEvent, GatewayEvents, SuspensionRequest};
use crate::admin::posture::{ReviewAttestation, ReviewRemoval, ReviewRound};
use crate::admin::revocations::NewRevocation;
// Gateway secrets
use crate::admin::secrets::SecretRequest;
// Task steps and outcomes
use crate::admin::tasks::{NewStep, NewTask, TaskCompletion};

/// One admin route: method, path, summary, request body schema, whether it needs `admin`.
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path, with `{param}` segments.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// The request body's schema name, if any.
    pub body: Option<&'static str>,
    /// Success status.
    pub status: &'static str,
}

/// Every admin route.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/v1/agents",
        summary: "list agents",
        body: None,
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/agents",
        summary: "register an agent (owner required)",
        body: Some("NewAgent"),
        status: "201",
    },
    Route {
        method: "GET",
        path: "/v1/agents/{id}",
        summary: "show an agent",
        body: None,
        status: "200",
    },
    Route {
        method: "PATCH",
        path: "/v1/agents/{id}",
        summary: "change an agent's name, owner, description, ceiling or max stage; widening the ceiling or raising the max stage needs a human's approval when `approvals.agent_changes` is on (`202` with `{approval, agent}`, nothing changed yet)",
        body: Some("AgentChange"),
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/agents/{id}/suspend",
        summary: "suspend an agent: its tokens stop working",
        body: None,
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/agents/{id}/resume",
        summary: "resume a suspended agent",
        body: None,
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/agents/{id}/retire",
        summary: "retire an agent for good",
        body: None,
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/agents/{id}/keys",
        summary: "register a public key for client assertions",
        body: Some("NewKey"),
        status: "201",
    },
    Route {
        method: "DELETE",
        path: "/v1/agents/{id}/keys/{kid}",
        summary: "remove a key",
        body: None,
        status: "204",
    },
    Route {
        method: "POST",
        path: "/v1/revocations",
        summary: "revoke a token, task, agent, user or key, and everything derived from it",
        body: Some("NewRevocation"),
        status: "201",
    },
    Route {
        method: "GET",
        path: "/v1/revocations",
        summary: "list revocations",
        body: None,
        status: "200",
    },
    Route {
        method: "GET",
        path: "/v1/revocations/events",
        summary: "follow revocations as server-sent events (resumable with `Last-Event-ID`)",
        body: None,
        status: "200",
    },
    // Approvals
    Route {
        method: "GET",
        path: "/v1/approvals",
        summary: "list approvals, newest first (filter by `status` — `pending`, `expired`, `approved`, `denied` —, `agent`, `user`, `kind`; `limit`); an `admin` or `auditor` credential sees all, a human's identity provider token what they may decide or was asked on their behalf",
        body: None,
        status: "200",
    },
    Route {
        method: "GET",
        path: "/v1/approvals/{id}",
        summary: "show an approval: what is asked, the binding message, its status and decision",
        body: None,
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/approvals/{id}/approve",
        summary: "approve (bearer: the approver's own identity provider token, never an admin credential; the agent's owner or an approver group member, never the user it was asked for; 409 once decided or expired)",
        body: Some("DecisionBody"),
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/approvals/{id}/deny",
        summary: "deny (bearer: the approver's own identity provider token, never an admin credential; 409 once decided or expired)",
        body: Some("DecisionBody"),
        status: "200",
    },
    Route {
        method: "GET",
        path: "/v1/audit",
        summary: "query the audit log",
        body: None,
        status: "200",
    },
    Route {
        method: "GET",
        path: "/v1/audit/verify",
        summary: "verify the audit hash chain and its signed checkpoints",
        body: None,
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/audit/checkpoint",
        summary: "sign and store a checkpoint of the audit chain's head now",
        body: None,
        status: "200",
    },
    // Audit retention
    Route {
        method: "POST",
        path: "/v1/audit/archive",
        summary: "archive the oldest audit events (`before` a time, or `through_seq`) to segment files under `<data_dir>/audit-archive/` that still verify; the newest event always stays (admin)",
        body: Some("ArchiveRequest"),
        status: "200",
    },
    Route {
        method: "GET",
        path: "/v1/audit/segments",
        summary: "list the archived audit segments, oldest first",
        body: None,
        status: "200",
    },
    Route {
        method: "GET",
        path: "/v1/compliance",
        summary: "the compliance report (SOC 2 CC6.1–CC6.3, HIPAA §164.312(a)(1), (a)(2)(i), (b), (d), OWASP LLM06:2025, EU AI Act Art. 12): per control, what Mandate does, this deployment's evidence and gaps; `format=json|md|html`, `window_days` (1–3650, default 30), `verify=false` skips walking the hash chain (admin or auditor)",
        body: None,
        status: "200",
    },
    // Posture and access reviews
    Route {
        method: "GET",
        path: "/v1/posture",
        summary: "the posture report: inventory of every agent (owner, status, ceiling with each pattern's class, justification and last use, max stage, credentials with age, expiry and last use), findings with severity and fix, each agent's blast radius (scope weight × velocity × detection window, each term shown) and open access reviews; `unused_days` (1–3650, default 30), `key_age_days` (1–3650, default 90) (admin or auditor)",
        body: None,
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/reviews",
        summary: "start an access review round: one review item per active agent for its owner, due in `due_days` (default 14); agents with an open review or no owner are skipped and listed",
        body: Some("ReviewRound"),
        status: "201",
    },
    Route {
        method: "GET",
        path: "/v1/reviews",
        summary: "list access reviews, newest first (filter by `status` — `open`, `overdue`, `attested`, `narrowed` —, `agent`, `owner`, `campaign`; `limit`); an `admin` or `auditor` credential sees all, a human's identity provider token the reviews they are asked to answer",
        body: None,
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/reviews/{id}/attest",
        summary: "the owner attests the agent still needs its whole ceiling (bearer: the agent owner's own identity provider token, never an admin credential; 409 once answered)",
        body: Some("ReviewAttestation"),
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/reviews/{id}/remove",
        summary: "the owner removes `scopes` from the agent's ceiling, which narrows at once (bearer: the agent owner's own identity provider token, never an admin credential; 409 once answered)",
        body: Some("ReviewRemoval"),
        status: "200",
    },
    // Task steps and outcomes
    Route {
        method: "GET",
        path: "/v1/tasks",
        summary: "list tasks, newest first (filter by `agent`, `user`, `status`; `limit`)",
        body: None,
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/tasks",
        summary: "create a task with its purpose and triggering input (admin credential, or the agent's access token)",
        body: Some("NewTask"),
        status: "201",
    },
    Route {
        method: "GET",
        path: "/v1/tasks/{id}",
        summary: "show a task: its input, steps, token records, revocations, audit events and outcome",
        body: None,
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/tasks/{id}/steps",
        summary: "record a step of an active task: decision, reasoning, intended tool call (admin credential, or an access token bound to the task)",
        body: Some("NewStep"),
        status: "201",
    },
    Route {
        method: "POST",
        path: "/v1/tasks/{id}/complete",
        summary: "complete a task with its outcome; its tokens end everywhere (admin credential, or an access token bound to the task)",
        body: Some("TaskCompletion"),
        status: "200",
    },
    Route {
        method: "GET",
        path: "/v1/keys",
        summary: "list published signing keys",
        body: None,
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/keys/rotate",
        summary: "rotate the signing key",
        body: None,
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/credentials",
        summary: "make an admin, auditor, verifier or gateway credential (secret shown once)",
        body: Some("CredentialRequest"),
        status: "201",
    },
    // Gateway secrets
    Route {
        method: "GET",
        path: "/v1/secrets",
        summary: "list the gateway's upstream secrets: names, descriptions and times, never values",
        body: None,
        status: "200",
    },
    Route {
        method: "PUT",
        path: "/v1/secrets/{name}",
        summary: "set a gateway secret's value, sealed under the master key (201 new, 200 replaced; the value is never shown back)",
        body: Some("SecretRequest"),
        status: "201",
    },
    Route {
        method: "DELETE",
        path: "/v1/secrets/{name}",
        summary: "delete a gateway secret",
        body: None,
        status: "204",
    },
    // The standalone gateway's routes (role `gateway` only)
    Route {
        method: "GET",
        path: "/v1/gateway/bundle",
        summary: "the policy sources in force and every agent, with a version (`ETag`; `If-None-Match` answers 304) (role `gateway` only)",
        body: None,
        status: "200",
    },
    Route {
        method: "GET",
        path: "/v1/gateway/secrets/{name}",
        summary: "a gateway secret's value, for the gateway to inject upstream; each reveal is audited (role `gateway` only)",
        body: None,
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/gateway/events",
        summary: "append 1–200 `gateway.*` audit events in one commit (role `gateway` only)",
        body: Some("GatewayEvents"),
        status: "201",
    },
    Route {
        method: "POST",
        path: "/v1/gateway/suspensions",
        summary: "suspend an agent (a breaker tripped): its tokens stop working (role `gateway` only)",
        body: Some("SuspensionRequest"),
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/gateway/holds",
        summary: "hold a draft-stage write for approval: `{held, binding_message}` (the held request's claims must match a token Mandate issued) → `{id, expires_at}` (role `gateway` only)",
        body: None,
        status: "201",
    },
    Route {
        method: "GET",
        path: "/v1/gateway/holds",
        summary: "`?approved=true`: approved held writes nobody claimed yet, `{ids}` (role `gateway` only)",
        body: None,
        status: "200",
    },
    Route {
        method: "GET",
        path: "/v1/gateway/holds/{id}",
        summary: "a held write: its approval, dispatch state, request and the upstream's answer once sent (role `gateway` only)",
        body: None,
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/gateway/holds/{id}/claim",
        summary: "claim an approved held write for sending: `{claimed}` is true for exactly one caller, ever (role `gateway` only)",
        body: None,
        status: "200",
    },
    Route {
        method: "POST",
        path: "/v1/gateway/holds/{id}/delivery",
        summary: "store the upstream's answer to a claimed held write (role `gateway` only)",
        body: None,
        status: "204",
    },
    Route {
        method: "POST",
        path: "/v1/dev/user-token",
        summary: "mint a user token from the built-in test IdP (`--dev` only)",
        body: Some("UserTokenRequest"),
        status: "200",
    },
];

fn method(m: &str) -> HttpMethod {
    match m {
        "POST" => HttpMethod::Post,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        "PUT" => HttpMethod::Put,
        _ => HttpMethod::Get,
    }
}

/// Builds the document.
pub fn document() -> OpenApi {
    let mut paths = Paths::new();
    for r in ROUTES {
        let mut op = OperationBuilder::new()
            .summary(Some(r.summary))
            .security(SecurityRequirement::new("admin", Vec::<String>::new()))
            .response(
                r.status,
                ResponseBuilder::new().description("success").build(),
            )
            .response(
                "400",
                ResponseBuilder::new()
                    .description("bad input; nothing changed")
                    .build(),
            )
            .response(
                "401",
                ResponseBuilder::new()
                    .description("no or unknown admin credential")
                    .build(),
            )
            .response(
                "403",
                ResponseBuilder::new()
                    .description("the credential's role does not allow this")
                    .build(),
            );
        for seg in r.path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                op = op.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True),
                );
            }
        }
        if let Some(schema) = r.body {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(schema)))
                            .build(),
                    )
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        paths.add_path_operation(r.path, vec![method(r.method)], op.build());
    }
    let components = ComponentsBuilder::new()
        .schema_from::<NewAgent>()
        .schema_from::<AgentChange>()
        .schema_from::<NewKey>()
        .schema_from::<NewRevocation>()
        .schema_from::<CredentialRequest>()
        .schema_from::<UserTokenRequest>()
        // Task steps and outcomes
        .schema_from::<NewTask>()
        .schema_from::<NewStep>()
        .schema_from::<TaskCompletion>()
        // Gateway secrets
        .schema_from::<SecretRequest>()
        // The standalone gateway's routes
        .schema_from::<GatewayEvents>()
        .schema_from::<GatewayEvent>()
        .schema_from::<SuspensionRequest>()
        // Approvals
        .schema_from::<DecisionBody>()
        // Posture and access reviews
        .schema_from::<ReviewRound>()
        .schema_from::<ReviewAttestation>()
        .schema_from::<ReviewRemoval>()
        // Audit retention
        .schema_from::<ArchiveRequest>()
        .security_scheme(
            "admin",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Mandate admin API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("Agents, revocations, audit and keys. Every route needs `Authorization: Bearer <admin credential>`."))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .build()
}

/// `GET /v1/openapi.json` (any admin credential).
pub async fn openapi(_admin: crate::admin::auth::Admin) -> Json<OpenApi> {
    Json(document())
}
