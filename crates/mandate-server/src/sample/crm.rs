//! The sample CRM's REST API (SPEC §10), JSON in and out:
//!
//! * `GET /customers/{id}` → the customer, or 404;
//! * `GET /regions/{region}/customers/{id}` → the same, 404 unless the customer is in `region`;
//! * `GET /tickets/{id}` → the ticket, or 404;
//! * `POST /tickets` with `{"customer": id, "subject": …}` → `201` and the new ticket;
//! * `POST /email/send` with `{"to", "subject", "body"}` → `202 {"queued": true, "id": …}`;
//! * `GET /stream?chunks=N&delay_ms=M` → `N` lines (`chunk 0`, `chunk 1`, …), one every `M` ms,
//!   streamed as they are produced (`N`, `M` ≤ 1000; defaults 10 and 100);
//! * `POST /echo` → the request body streamed back as it arrives, with its `Content-Type`.
//!
//! Bad JSON gets `400`, a body over [`super::MAX_BODY`] `413`, both with `{"error": …}`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Email, Sample, ServedFor, Ticket, error};

/// The most lines `/stream` produces.
pub const MAX_CHUNKS: u32 = 1000;

/// The longest pause between two lines of `/stream`, milliseconds.
pub const MAX_DELAY_MS: u64 = 1000;

/// The REST routes.
pub(crate) fn routes() -> Router<Sample> {
    Router::new()
        .route("/customers/{id}", get(customer))
        .route("/regions/{region}/customers/{id}", get(regional_customer))
        .route("/tickets/{id}", get(ticket))
        .route("/tickets", post(create_ticket))
        .route("/email/send", post(send_email))
        .route("/stream", get(stream))
        .route("/echo", post(echo))
}

async fn customer(
    State(sample): State<Sample>,
    Extension(served): Extension<ServedFor>,
    Path(id): Path<String>,
) -> Response {
    match sample.customer(&id) {
        Some(c) => ok(&served, StatusCode::OK, json!(c)),
        None => error(StatusCode::NOT_FOUND, &format!("no customer {id}")),
    }
}

async fn regional_customer(
    State(sample): State<Sample>,
    Extension(served): Extension<ServedFor>,
    Path((region, id)): Path<(String, String)>,
) -> Response {
    match sample.customer(&id).filter(|c| c.region == region) {
        Some(c) => ok(&served, StatusCode::OK, json!(c)),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("no customer {id} in region {region}"),
        ),
    }
}

async fn ticket(
    State(sample): State<Sample>,
    Extension(served): Extension<ServedFor>,
    Path(id): Path<String>,
) -> Response {
    match sample.data().tickets.get(&id).cloned() {
        Some(t) => ok(&served, StatusCode::OK, json!(t)),
        None => error(StatusCode::NOT_FOUND, &format!("no ticket {id}")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTicket {
    customer: IdValue,
    subject: String,
}

/// An id sent as a string or as a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Text(String),
    Number(u64),
}

impl IdValue {
    fn into_string(self) -> String {
        match self {
            IdValue::Text(s) => s,
            IdValue::Number(n) => n.to_string(),
        }
    }
}

async fn create_ticket(
    State(sample): State<Sample>,
    Extension(served): Extension<ServedFor>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let new: NewTicket = match parse(body) {
        Ok(t) => t,
        Err((status, why)) => return error(status, &why),
    };
    let customer = new.customer.into_string();
    if new.subject.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "`subject` must not be empty");
    }
    let ticket = {
        let mut data = sample.data();
        if !data.customers.contains_key(&customer) {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("no customer {customer}"),
            );
        }
        let id = (12848 + sample.next_id()).to_string();
        let ticket = Ticket {
            id: id.clone(),
            customer,
            subject: new.subject,
            status: "open".to_owned(),
        };
        data.tickets.insert(id, ticket.clone());
        ticket
    };
    let mut resp = ok(&served, StatusCode::CREATED, json!(ticket));
    if let Ok(location) = HeaderValue::from_str(&format!("/tickets/{}", ticket.id)) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    resp
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEmail {
    to: String,
    subject: String,
    body: String,
}

async fn send_email(
    State(sample): State<Sample>,
    Extension(served): Extension<ServedFor>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let new: NewEmail = match parse(body) {
        Ok(e) => e,
        Err((status, why)) => return error(status, &why),
    };
    if !new.to.contains('@') {
        return error(
            StatusCode::BAD_REQUEST,
            "`to` must be an email address, like someone@example.com",
        );
    }
    let id = format!("msg-{}", sample.next_id());
    sample.data().emails.push(Email {
        id: id.clone(),
        to: new.to,
        subject: new.subject,
        body: new.body,
    });
    ok(
        &served,
        StatusCode::ACCEPTED,
        json!({"queued": true, "id": id}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamParams {
    chunks: Option<u32>,
    delay_ms: Option<u64>,
}

async fn stream(params: Result<Query<StreamParams>, QueryRejection>) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("bad query: {}", e.body_text()),
            );
        }
    };
    let chunks = params.chunks.unwrap_or(10);
    let delay_ms = params.delay_ms.unwrap_or(100);
    if chunks > MAX_CHUNKS || delay_ms > MAX_DELAY_MS {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("`chunks` must be at most {MAX_CHUNKS} and `delay_ms` at most {MAX_DELAY_MS}"),
        );
    }
    let delay = Duration::from_millis(delay_ms);
    let lines = futures_util::stream::unfold(0u32, move |i| async move {
        if i >= chunks {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(delay).await;
        }
        Some((
            Ok::<_, Infallible>(Bytes::from(format!("chunk {i}\n"))),
            i + 1,
        ))
    });
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(lines),
    )
        .into_response()
}

async fn echo(req: Request) -> Response {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let body = Body::from_stream(req.into_body().into_data_stream());
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A JSON answer, with `served_for` when the request carried a verified Transaction Token.
fn ok(served: &ServedFor, status: StatusCode, body: Value) -> Response {
    (status, Json(served.add_to(body))).into_response()
}

/// Why a request body was refused: the status and the message.
type Refusal = (StatusCode, String);

/// Parses a JSON request body, or says clearly why not.
fn parse<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Refusal> {
    let bytes = body.map_err(body_error)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

/// Why a request body could not be read: too large, or broken off.
fn body_error(rejection: BytesRejection) -> Refusal {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let limit = super::MAX_BODY;
        let why = format!("request body too large: the limit is {limit} bytes");
        (StatusCode::PAYLOAD_TOO_LARGE, why)
    } else {
        let why = format!("could not read the request body: {}", rejection.body_text());
        (StatusCode::BAD_REQUEST, why)
    }
}
