//! A JSON body extractor whose refusals are the admin API's own errors.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Like `axum::Json`, but a bad body is an [`ApiError`] saying what is wrong.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::bad_request(
                "request body must be JSON with `Content-Type: application/json`",
            )),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::bad_request(format!(
                "request body does not fit: {}",
                e.body_text().replace(
                    "Failed to deserialize the JSON body into the target type: ",
                    ""
                )
            ))),
            Err(JsonRejection::JsonSyntaxError(_)) => {
                Err(ApiError::bad_request("request body is not valid JSON"))
            }
            Err(e) => Err(ApiError {
                status: e.status(),
                code: "bad_request",
                message: "request body could not be read (too large?)".into(),
            }),
        }
    }
}

/// A JSON body that may be left out: an empty body is `T::default()`; anything else must be
/// JSON that fits `T`.
pub struct OptionalJsonBody<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError {
                status: e.status(),
                code: "bad_request",
                message: "request body could not be read (too large?)".into(),
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(OptionalJsonBody)
            .map_err(|e| ApiError::bad_request(format!("request body does not fit: {e}")))
    }
}
