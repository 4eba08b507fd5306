//! What the gateway changes on a request before it goes upstream, and on the answer before it
//! goes back (SPEC §6: "strips the agent's credential and injects the upstream's real
//! credential … never the agent's own token").
//!
//! Pure header work on `http` types: the agent's `Authorization`, `DPoP`, cookies and every
//! hop-by-hop header are removed; the upstream's real credential goes in a header or a query
//! parameter; the Transaction Token and the usual `Forwarded` facts are added. On the way back,
//! hop-by-hop headers and anything that would set state on the agent's side for the upstream's
//! domain are removed.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use serde::{Deserialize, Serialize};

/// How an upstream expects its credential.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Injection {
    /// In a header, e.g. `authorization` with format `Bearer {secret}`.
    Header {
        /// The header name.
        name: String,
        /// The value, with `{secret}` standing for the secret (default: the secret alone).
        #[serde(default)]
        format: Option<String>,
    },
    /// In a query parameter, e.g. `api_key`.
    Query {
        /// The parameter name.
        name: String,
    },
    /// No credential: the upstream trusts the Transaction Token alone.
    None,
}

/// Why a request could not be prepared. Messages never contain the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The configured header name is not a header name.
    #[error("credential header `{0}` is not a valid header name")]
    HeaderName(String),
    /// The secret (or its format) does not make a valid header value.
    #[error("the credential for header `{0}` is not a valid header value")]
    HeaderValue(String),
    /// The URI could not be rebuilt.
    #[error("the upstream request URI could not be built")]
    Uri,
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus those that
/// carry the agent's own credentials.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

const AGENT_CREDENTIALS: &[&str] = &["authorization", "dpop", "cookie"];

/// Removes hop-by-hop headers, including any named by `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
}

/// Headers an upstream may take from the gateway, or may let override the method or path the
/// gateway routed on: never forwarded from the agent.
const GATEWAY_ONLY: &[&str] = &[
    crate::txn::HEADER,
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Header name prefixes of the same kind: `x-forwarded-*`, and `x-mandate-*`, which only
/// Mandate may send.
const GATEWAY_ONLY_PREFIXES: &[&str] = &["x-forwarded-", "x-mandate-"];

/// Removes every header a client could use to pose as the gateway's own additions (the
/// Transaction Token, `Forwarded` facts) or to make the upstream act on another method or path
/// than the one admitted.
fn strip_impersonation(headers: &mut HeaderMap) {
    let prefixed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| {
            GATEWAY_ONLY_PREFIXES
                .iter()
                .any(|p| n.as_str().starts_with(p))
        })
        .cloned()
        .collect();
    for n in prefixed {
        headers.remove(n);
    }
    for h in GATEWAY_ONLY {
        headers.remove(*h);
    }
}

/// What to add to an upstream request. Its `Debug` never shows the secret or the token.
#[derive(Clone)]
pub struct Outbound<'a> {
    /// How to pass the upstream's credential.
    pub injection: &'a Injection,
    /// The credential itself (from the secret store). Never logged.
    pub secret: Option<&'a str>,
    /// The signed Transaction Token.
    pub txn_token: &'a str,
    /// The client's address, for `Forwarded`.
    pub client_ip: Option<&'a str>,
}

impl std::fmt::Debug for Outbound<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("injection", self.injection)
            .field("secret", &self.secret.map(|_| "…"))
            .field("txn_token", &"…")
            .field("client_ip", &self.client_ip)
            .finish()
    }
}

/// Rewrites the headers (and, for query injection, the URI) of a request going upstream.
pub fn prepare_request(
    headers: &mut HeaderMap,
    uri: &mut Uri,
    out: &Outbound<'_>,
) -> Result<(), ForwardError> {
    strip_hop_by_hop(headers);
    for h in AGENT_CREDENTIALS {
        headers.remove(*h);
    }
    strip_impersonation(headers);
    match (out.injection, out.secret) {
        (Injection::Header { name, format }, Some(secret)) => {
            let hn = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ForwardError::HeaderName(name.clone()))?;
            let value = match format {
                Some(f) => f.replace("{secret}", secret),
                None => secret.to_owned(),
            };
            let mut hv = HeaderValue::from_str(&value)
                .map_err(|_| ForwardError::HeaderValue(name.clone()))?;
            hv.set_sensitive(true);
            headers.insert(hn, hv);
        }
        (Injection::Query { name }, Some(secret)) => {
            *uri = with_query_param(uri, name, secret)?;
        }
        _ => {}
    }
    if let Ok(v) = HeaderValue::from_str(out.txn_token) {
        headers.insert(crate::txn::HEADER, v);
    }
    if let Some(ip) = out.client_ip
        && let Ok(v) = HeaderValue::from_str(&format!("for=\"{ip}\""))
    {
        headers.insert("forwarded", v);
    }
    Ok(())
}

/// Rewrites the headers of an answer coming back from upstream.
pub fn prepare_response(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    // The agent talks to the gateway, not to the upstream's domain.
    headers.remove(header::SET_COOKIE);
}

/// `uri` with `name=value` added to its query (any earlier `name` removed, so an agent cannot
/// smuggle its own).
fn with_query_param(uri: &Uri, name: &str, value: &str) -> Result<Uri, ForwardError> {
    let path = uri.path();
    let mut pairs: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            form_urlencoded_parse(q)
                .into_iter()
                .filter(|(k, _)| k != name)
                .collect()
        })
        .unwrap_or_default();
    pairs.push((name.to_owned(), value.to_owned()));
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let pq: PathAndQuery = format!("{path}?{}", query.join("&"))
        .parse()
        .map_err(|_| ForwardError::Uri)?;
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq);
    Uri::from_parts(parts).map_err(|_| ForwardError::Uri)
}

fn form_urlencoded_parse(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match (b, bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match (b, escaped) {
            (_, Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    #[test]
    fn debug_never_shows_the_secret_or_the_token() {
        let injection = super::Injection::Query {
            name: "api_key".into(),
        };
        let out = super::Outbound {
            injection: &injection,
            secret: Some("s3cr3t-value"),
            txn_token: "eyJ.secret-token.sig",
            client_ip: Some("127.0.0.1"),
        };
        let text = format!("{out:?}");
        assert!(
            !text.contains("s3cr3t-value") && !text.contains("secret-token"),
            "{text}"
        );
        assert!(text.contains("api_key"), "{text}");
    }

    use super::*;

    fn agent_request() -> (HeaderMap, Uri) {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer agent-token".parse().unwrap());
        h.insert("dpop", "proof".parse().unwrap());
        h.insert("cookie", "s=1".parse().unwrap());
        h.insert("connection", "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("txn-token", "forged".parse().unwrap());
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        h.insert("x-forwarded-host", "admin.internal".parse().unwrap());
        h.insert("x-real-ip", "127.0.0.1".parse().unwrap());
        h.insert("x-original-url", "/admin".parse().unwrap());
        h.insert("x-http-method-override", "DELETE".parse().unwrap());
        h.insert("x-mandate-user", "root".parse().unwrap());
        h.append("forwarded", "for=127.0.0.1".parse().unwrap());
        h.insert("accept", "application/json".parse().unwrap());
        (
            h,
            "/customers/9821?fields=name&api_key=mine".parse().unwrap(),
        )
    }

    #[test]
    fn the_agents_credentials_never_go_upstream_and_the_real_one_does() {
        let (mut h, mut uri) = agent_request();
        let injection = Injection::Header {
            name: "authorization".into(),
            format: Some("Bearer {secret}".into()),
        };
        prepare_request(
            &mut h,
            &mut uri,
            &Outbound {
                injection: &injection,
                secret: Some("sk_live_crm"),
                txn_token: "txn.jwt.sig",
                client_ip: Some("10.0.0.7"),
            },
        )
        .unwrap();
        assert_eq!(h["authorization"], "Bearer sk_live_crm");
        assert!(h["authorization"].is_sensitive());
        assert_eq!(h["txn-token"], "txn.jwt.sig");
        assert_eq!(h["forwarded"], "for=\"10.0.0.7\"");
        assert_eq!(h["accept"], "application/json");
        for gone in [
            "dpop",
            "cookie",
            "connection",
            "x-private",
            "te",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-real-ip",
            "x-original-url",
            "x-http-method-override",
            "x-mandate-user",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(uri, "/customers/9821?fields=name&api_key=mine");
    }

    #[test]
    fn a_query_credential_replaces_any_the_agent_sent() {
        let (mut h, mut uri) = agent_request();
        let injection = Injection::Query {
            name: "api_key".into(),
        };
        prepare_request(
            &mut h,
            &mut uri,
            &Outbound {
                injection: &injection,
                secret: Some("s3cr&t=1"),
                txn_token: "t",
                client_ip: None,
            },
        )
        .unwrap();
        assert_eq!(uri, "/customers/9821?fields=name&api_key=s3cr%26t%3D1");
        assert!(!h.contains_key("authorization"));
        assert!(!h.contains_key("forwarded"));
        assert!(!h.contains_key("x-forwarded-host") && !h.contains_key("x-mandate-user"));
    }

    #[test]
    fn a_bad_header_configuration_is_named_without_the_secret() {
        let (mut h, mut uri) = agent_request();
        for (injection, msg) in [
            (
                Injection::Header {
                    name: "bad header".into(),
                    format: None,
                },
                "credential header `bad header` is not a valid header name",
            ),
            (
                Injection::Header {
                    name: "x-api-key".into(),
                    format: Some("{secret}\n".into()),
                },
                "the credential for header `x-api-key` is not a valid header value",
            ),
        ] {
            let e = prepare_request(
                &mut h,
                &mut uri,
                &Outbound {
                    injection: &injection,
                    secret: Some("hunter2"),
                    txn_token: "t",
                    client_ip: None,
                },
            )
            .unwrap_err();
            assert_eq!(e.to_string(), msg);
            assert!(!e.to_string().contains("hunter2"));
        }
    }

    #[test]
    fn answers_lose_hop_by_hop_headers_and_cookies() {
        let mut h = HeaderMap::new();
        h.insert("set-cookie", "upstream=1".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        prepare_response(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["content-type"], "application/json");
    }

    #[test]
    fn injections_parse_from_configuration() {
        let i: Injection =
            serde_json::from_value(serde_json::json!({"header": {"name": "x-api-key"}})).unwrap();
        assert_eq!(
            i,
            Injection::Header {
                name: "x-api-key".into(),
                format: None
            }
        );
        let q: Injection =
            serde_json::from_value(serde_json::json!({"query": {"name": "key"}})).unwrap();
        assert_eq!(q, Injection::Query { name: "key".into() });
    }

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(decode("a%20b+c%zz%4"), "a b c%zz%4");
        assert_eq!(decode("%é%"), "%é%");
        assert_eq!(encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
