//! `GET /v1/compliance?format=json|md|html&window_days=30&verify=true`: the compliance report
//! of this deployment (SPEC §8), for an `admin` or `auditor` credential.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use mandate_core::compliance::{DEFAULT_WINDOW_DAYS, MAX_WINDOW_DAYS};
use serde::Deserialize;

use crate::admin::auth::Admin;
use crate::compliance::{Options, report};
use crate::error::ApiError;
use crate::state::AppState;

/// Query of `GET /v1/compliance`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplianceQuery {
    /// `json` (default), `md` (or `markdown`) or `html`.
    pub format: Option<String>,
    /// Days of activity to count: 1 to 3650, default 30.
    pub window_days: Option<String>,
    /// `false` skips walking the whole hash chain (slow on a large log); default `true`.
    pub verify: Option<String>,
}

/// The rendering asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Markdown,
    Html,
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

fn parse(q: &ComplianceQuery) -> Result<(Format, Options), ApiError> {
    let format = match q.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("md" | "markdown") => Format::Markdown,
        Some("html") => Format::Html,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`format` must be `json`, `md` or `html`, not `{}`",
                short(other)
            )));
        }
    };
    let window_days = match q.window_days.as_deref() {
        None => DEFAULT_WINDOW_DAYS,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=MAX_WINDOW_DAYS).contains(d))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`window_days` must be a whole number of days from 1 to {MAX_WINDOW_DAYS}, \
                     not `{}`",
                    short(s)
                ))
            })?,
    };
    let verify = match q.verify.as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`verify` must be `true` or `false`, not `{}`",
                short(other)
            )));
        }
    };
    Ok((
        format,
        Options {
            window_days,
            verify,
        },
    ))
}

/// `GET /v1/compliance`.
pub async fn show(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    query: Result<Query<ComplianceQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "bad query: {} (known parameters: `format`, `window_days`, `verify`)",
            e.body_text()
        ))
    })?;
    let (format, opts) = parse(&q)?;
    let report = report(&state, opts).await?;
    Ok(match format {
        Format::Json => Json(report.json()).into_response(),
        Format::Markdown => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            report.markdown(),
        )
            .into_response(),
        Format::Html => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                // The page is static: no script, no outside resource, only its inline style.
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'",
                ),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            report.html(),
        )
            .into_response(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn q(format: Option<&str>, days: Option<&str>, verify: Option<&str>) -> ComplianceQuery {
        ComplianceQuery {
            format: format.map(str::to_owned),
            window_days: days.map(str::to_owned),
            verify: verify.map(str::to_owned),
        }
    }

    #[test]
    fn parameters_are_checked() {
        let (f, o) = parse(&q(None, None, None)).unwrap();
        assert_eq!(f, Format::Json);
        assert_eq!(o, Options::default());
        let (f, o) = parse(&q(Some("md"), Some("7"), Some("false"))).unwrap();
        assert_eq!(f, Format::Markdown);
        assert_eq!((o.window_days, o.verify), (7, false));
        assert_eq!(parse(&q(Some("html"), None, None)).unwrap().0, Format::Html);
        for bad in [
            q(Some("pdf"), None, None),
            q(None, Some("0"), None),
            q(None, Some("3651"), None),
            q(None, Some("-1"), None),
            q(None, Some("x"), None),
            q(None, None, Some("yes")),
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
    }
}
