//! The gateway's configuration (`[gateway]` in `mandate.toml`) and the plan compiled from it.
//!
//! ```toml
//! [gateway]
//! listen = "127.0.0.1:8081"
//! public_url = "https://gw.example.com"     # the audience tokens must carry
//!
//! [[gateway.upstreams]]
//! name = "crm"
//! url = "http://127.0.0.1:9000"
//! secret = "crm-api"                         # from `mandate secret set crm-api`
//! credential = { header = { name = "x-api-key" } }
//!
//! [[gateway.routes]]
//! method = "GET"
//! path = "/customers/{id}"
//! action = "crm.customers:read"
//! resource = "customers/{id}"
//!
//! [[gateway.mcp]]
//! server = "crm"                             # scopes `mcp.crm.<tool>:call`
//! path = "/mcp"
//! upstream = "crm"
//! ```
//!
//! [`Plan::new`] checks everything at load, so a running gateway never meets a bad route, an
//! unknown upstream or a malformed URL: the error names the entry and what is wrong.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use http::Uri;
use serde::{Deserialize, Serialize};

use crate::breaker::{BreakerRule, Breakers};
use crate::forward::Injection;
use crate::route::{RouteConfig, RouteTable};

/// `[gateway]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Where the gateway listens. Without it, `mandate serve` runs no gateway (unless
    /// `--gateway-listen` is given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The gateway's public URL: the audience tokens must carry, and the base of its
    /// protected-resource metadata. Default `http://<listen>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// The `aud` of the Transaction Tokens sent upstream (the trust domain). Default: the public
    /// URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// Largest request body forwarded, bytes (default 10 MiB). MCP bodies are parsed and limited
    /// to 1 MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// How long a client may take to send a request's headers, seconds (default 10); also how
    /// long an idle connection is kept. Beyond it the connection is closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_timeout_secs: Option<u64>,
    /// Most connections served at once (default 4096). Beyond it the gateway stops accepting
    /// until one closes: new connections wait in the listen backlog.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// How long a request's body may take to arrive in full, seconds, from the end of its
    /// headers (default 60). A slower body is cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_timeout_secs: Option<u64>,
    /// For a standalone `mandate gateway`: Mandate's URL (its issuer). Ignored inside
    /// `mandate serve`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mandate_url: Option<String>,
    /// For a standalone `mandate gateway`: the `iss` of Mandate's tokens when it is not
    /// `mandate_url` — several Mandate nodes behind a load balancer whose public URL is the
    /// issuer, while this gateway follows one node (or the balancer) at `mandate_url`. Default:
    /// `mandate_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mandate_issuer: Option<String>,
    /// For a standalone `mandate gateway`: a file holding its credential (role `gateway`);
    /// `MANDATE_GATEWAY_CREDENTIAL` overrides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_file: Option<std::path::PathBuf>,
    /// The services behind the gateway.
    pub upstreams: Vec<UpstreamConfig>,
    /// REST routes.
    pub routes: Vec<RouteConfig>,
    /// MCP servers.
    pub mcp: Vec<McpConfig>,
    /// Circuit breakers.
    pub breakers: Vec<BreakerRule>,
}

/// One upstream service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Its name, used by routes and MCP servers.
    pub name: String,
    /// Base URL: `http://` or `https://`, host, port and an optional base path that is put in
    /// front of every forwarded path.
    pub url: String,
    /// The secret (in Mandate's secret store) holding the upstream's real credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Where the credential goes; default: `authorization: Bearer {secret}` when a secret is
    /// named, none otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Injection>,
    /// Seconds to wait for the upstream's answer to start (default 30): then `504`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// The audience tokens must carry for this upstream's routes, e.g. `https://crm.example.com`
    /// (default: the gateway's URL). A route may name its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// One MCP server behind the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// The server's name in scopes: `mcp.<server>.<tool>:call`.
    pub server: String,
    /// The path the gateway serves it at, e.g. `/mcp`.
    pub path: String,
    /// The upstream it is on.
    pub upstream: String,
    /// The path on the upstream (default: the same path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_path: Option<String>,
    /// Action classes of tools, overriding their annotations: `{ export_all = "write" }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tool_classes: BTreeMap<String, String>,
    /// The audience tokens must carry (default: the gateway's URL or this server's URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Why a gateway configuration was refused. Messages name the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gateway: {0}")]
pub struct ConfigError(pub String);

/// A checked upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Its name.
    pub name: String,
    /// Scheme and authority.
    pub origin: Uri,
    /// Base path without a trailing `/` (empty for none).
    pub base_path: String,
    /// The secret's name.
    pub secret: Option<String>,
    /// Where the credential goes.
    pub injection: Injection,
    /// Answer timeout, seconds.
    pub timeout_secs: u64,
}

/// A checked MCP server.
#[derive(Debug, Clone)]
pub struct McpServer {
    /// Name in scopes.
    pub server: String,
    /// Path at the gateway.
    pub path: String,
    /// Index into [`Plan::upstreams`].
    pub upstream: usize,
    /// Path on the upstream.
    pub upstream_path: String,
    /// Tool class overrides (`true` = read).
    pub read_tools: BTreeMap<String, bool>,
    /// The audiences a token for it may carry (one of).
    pub audiences: Vec<String>,
}

/// Everything the gateway needs from its configuration, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The public URL, without a trailing `/`.
    pub public_url: String,
    /// The Transaction Tokens' audience.
    pub trust_domain: String,
    /// Largest forwarded body.
    pub max_body_bytes: u64,
    /// The listener's limits on connections.
    pub listener: crate::serve::Limits,
    /// How long a request's body may take to arrive in full.
    pub body_timeout: std::time::Duration,
    /// Upstreams.
    pub upstreams: Vec<Upstream>,
    /// The route table.
    pub routes: RouteTable,
    /// For each route (same order), its upstream's index.
    pub route_upstreams: Vec<usize>,
    /// For each route (same order), the audiences a token for it may carry (one of).
    pub route_audiences: Vec<Vec<String>>,
    /// MCP servers.
    pub mcp: Vec<McpServer>,
    /// The breaker rules, compiled (with empty counts).
    pub breakers: Breakers,
}

/// Default largest forwarded body: 10 MiB.
pub const DEFAULT_MAX_BODY: u64 = 10 * 1024 * 1024;

/// Default time a request's body may take to arrive: 60 s.
pub const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn err(msg: String) -> ConfigError {
    ConfigError(msg)
}

fn valid_path(p: &str) -> bool {
    p.starts_with('/') && !p.contains(['?', '#', ' ', '{', '}']) && !p.contains("//")
}

impl Plan {
    /// Checks `config`; `public_url` is the gateway's URL when the configuration names none.
    pub fn new(config: &GatewayConfig, default_public_url: &str) -> Result<Plan, ConfigError> {
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| default_public_url.to_owned());
        let public_url = public_url.trim_end_matches('/').to_owned();
        match public_url.parse::<Uri>() {
            Ok(u) if u.scheme().is_some() && u.authority().is_some() => {}
            _ => {
                return Err(err(format!(
                    "`public_url` `{public_url}` is not an absolute URL"
                )));
            }
        }
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        let mut by_name = BTreeMap::new();
        for (i, u) in config.upstreams.iter().enumerate() {
            let up =
                upstream(u).map_err(|m| err(format!("upstream {} (`{}`): {m}", i + 1, u.name)))?;
            if by_name.insert(up.name.clone(), upstreams.len()).is_some() {
                return Err(err(format!("upstream name `{}` is used twice", u.name)));
            }
            upstreams.push(up);
        }
        let find = |name: Option<&str>, what: String| -> Result<usize, ConfigError> {
            match name {
                Some(n) => by_name
                    .get(n)
                    .copied()
                    .ok_or_else(|| err(format!("{what}: no upstream named `{n}`"))),
                None if upstreams.len() == 1 => Ok(0),
                None => Err(err(format!(
                    "{what}: name its `upstream` (there are {})",
                    upstreams.len()
                ))),
            }
        };
        let routes = RouteTable::new(&config.routes).map_err(|e| err(e.to_string()))?;
        let route_upstreams = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| find(r.upstream.as_deref(), format!("route {}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let gateway_audiences = vec![public_url.clone(), format!("{public_url}/")];
        let route_audiences = config
            .routes
            .iter()
            .zip(&route_upstreams)
            .map(|(r, &u)| {
                let named = r
                    .audience
                    .clone()
                    .or_else(|| config.upstreams.get(u).and_then(|u| u.audience.clone()));
                match named {
                    Some(a) => vec![a],
                    None => gateway_audiences.clone(),
                }
            })
            .collect::<Vec<_>>();
        for (i, auds) in route_audiences.iter().enumerate() {
            if auds.iter().any(|a| a.trim().is_empty()) {
                return Err(err(format!("route {}: `audience` is empty", i + 1)));
            }
        }
        let mut mcp = Vec::with_capacity(config.mcp.len());
        for (i, m) in config.mcp.iter().enumerate() {
            let what = format!("mcp server {} (`{}`)", i + 1, m.server);
            if crate::mcp::tool_scope(&m.server, "probe").is_none() {
                return Err(err(format!(
                    "{what}: the name must be lowercase letters, digits, `_` or `-`"
                )));
            }
            if !valid_path(&m.path) {
                return Err(err(format!("{what}: `path` `{}` is not a path", m.path)));
            }
            if mcp.iter().any(|o: &McpServer| o.path == m.path) {
                return Err(err(format!("{what}: path `{}` is used twice", m.path)));
            }
            let upstream_path = m.upstream_path.clone().unwrap_or_else(|| m.path.clone());
            if !valid_path(&upstream_path) {
                return Err(err(format!(
                    "{what}: `upstream_path` `{upstream_path}` is not a path"
                )));
            }
            let mut read_tools = BTreeMap::new();
            for (tool, class) in &m.tool_classes {
                let read = match class.as_str() {
                    "read" => true,
                    "write" => false,
                    other => {
                        return Err(err(format!(
                            "{what}: tool `{tool}` class `{other}` is neither `read` nor `write`"
                        )));
                    }
                };
                read_tools.insert(tool.clone(), read);
            }
            let audiences = match &m.audience {
                Some(a) if a.trim().is_empty() => {
                    return Err(err(format!("{what}: `audience` is empty")));
                }
                Some(a) => vec![a.clone()],
                None => {
                    let mut v = gateway_audiences.clone();
                    v.push(format!("{public_url}{}", m.path));
                    v
                }
            };
            mcp.push(McpServer {
                audiences,
                server: m.server.clone(),
                path: m.path.clone(),
                upstream: find(Some(&m.upstream), what)?,
                upstream_path,
                read_tools,
            });
        }
        let breakers = Breakers::new(config.breakers.clone()).map_err(|e| err(e.to_string()))?;
        Ok(Plan {
            trust_domain: config
                .trust_domain
                .clone()
                .unwrap_or_else(|| public_url.clone()),
            public_url,
            max_body_bytes: config.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY),
            listener: crate::serve::Limits::new(config.header_timeout_secs, config.max_connections)
                .map_err(err)?,
            body_timeout: match config.body_timeout_secs {
                Some(0) => return Err(err("`body_timeout_secs` must be at least 1".into())),
                Some(secs) => std::time::Duration::from_secs(secs),
                None => DEFAULT_BODY_TIMEOUT,
            },
            upstreams,
            routes,
            route_upstreams,
            route_audiences,
            mcp,
            breakers,
        })
    }

    /// Every audience a token may carry to be accepted here at all: the public URL, each MCP
    /// server's URL (RFC 8707 resource indicators name the MCP endpoint itself) and the
    /// audiences routes name. Each request then needs its own route's or server's audience.
    pub fn audiences(&self) -> Vec<String> {
        let mut v = vec![self.public_url.clone(), format!("{}/", self.public_url)];
        for a in self
            .mcp
            .iter()
            .flat_map(|m| &m.audiences)
            .chain(self.route_audiences.iter().flatten())
        {
            if !v.contains(a) {
                v.push(a.clone());
            }
        }
        v
    }
}

/// Whether `name` fits the secret store's names, `[a-z0-9][a-z0-9._-]{0,62}` (it goes into a
/// URL path when a standalone gateway fetches it).
fn valid_secret_name(name: &str) -> bool {
    let b = name.as_bytes();
    let lead = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(lead)
        && b.iter().all(|c| lead(c) || matches!(c, b'.' | b'_' | b'-'))
}

fn upstream(u: &UpstreamConfig) -> Result<Upstream, String> {
    if u.name.is_empty() || u.name.len() > 64 {
        return Err("the name must be 1 to 64 characters".into());
    }
    let uri: Uri = u
        .url
        .parse()
        .map_err(|_| format!("`url` `{}` is not a URL", u.url))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if scheme != "http" && scheme != "https" {
        return Err(format!("`url` `{}` must be http:// or https://", u.url));
    }
    let Some(authority) = uri.authority().cloned() else {
        return Err(format!("`url` `{}` has no host", u.url));
    };
    if uri.query().is_some() {
        return Err(format!("`url` `{}` must not have a query", u.url));
    }
    let origin = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query("/")
        .build()
        .map_err(|_| format!("`url` `{}` is not a URL", u.url))?;
    let base_path = uri.path().trim_end_matches('/').to_owned();
    if let Some(name) = &u.secret
        && !valid_secret_name(name)
    {
        return Err(format!(
            "`secret` `{name}` is not a secret name (`a-z`, `0-9`, then also `.`, `_`, `-`; at most 63)"
        ));
    }
    let injection = match (&u.credential, &u.secret) {
        (Some(Injection::None), Some(_)) => {
            return Err("a `secret` is named but `credential` is \"none\"".into());
        }
        (Some(i), Some(_)) => i.clone(),
        (Some(Injection::None), None) | (None, None) => Injection::None,
        (Some(_), None) => return Err("`credential` needs a `secret`".into()),
        (None, Some(_)) => Injection::Header {
            name: "authorization".into(),
            format: Some("Bearer {secret}".into()),
        },
    };
    if let Injection::Header { name, .. } = &injection
        && http::HeaderName::from_bytes(name.as_bytes()).is_err()
    {
        return Err(format!("credential header `{name}` is not a header name"));
    }
    Ok(Upstream {
        name: u.name.clone(),
        origin,
        base_path,
        secret: u.secret.clone(),
        injection,
        timeout_secs: u.timeout_secs.unwrap_or(30).clamp(1, 3600),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn parse(text: &str) -> Result<Plan, ConfigError> {
        let c: GatewayConfig = toml::from_str(text).unwrap();
        Plan::new(&c, "http://127.0.0.1:8081")
    }

    const BASE: &str = r#"
        [[upstreams]]
        name = "crm"
        url = "http://127.0.0.1:9000/api/"
        secret = "crm-api"
        credential = { header = { name = "x-api-key" } }

        [[routes]]
        method = "GET"
        path = "/customers/{id}"
        action = "crm.customers:read"
        resource = "customers/{id}"

        [[mcp]]
        server = "crm"
        path = "/mcp"
        upstream = "crm"
    "#;

    #[test]
    fn a_whole_config_compiles() {
        let p = parse(BASE).unwrap();
        assert_eq!(p.public_url, "http://127.0.0.1:8081");
        assert_eq!(p.trust_domain, "http://127.0.0.1:8081");
        assert_eq!(p.upstreams[0].base_path, "/api");
        assert_eq!(p.upstreams[0].origin.to_string(), "http://127.0.0.1:9000/");
        assert_eq!(p.route_upstreams, vec![0]);
        assert_eq!(p.mcp[0].upstream_path, "/mcp");
        assert!(
            p.audiences()
                .contains(&"http://127.0.0.1:8081/mcp".to_owned())
        );
    }

    #[test]
    fn errors_name_the_entry() {
        let cases = [
            (
                "[[upstreams]]\nname = \"a\"\nurl = \"ftp://x\"",
                "upstream 1 (`a`): `url` `ftp://x` must be http:// or https://",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nurl = \"http://x\"\nsecret = \"../admin?x\"",
                "upstream 1 (`a`): `secret` `../admin?x` is not a secret name (`a-z`, `0-9`, then also `.`, `_`, `-`; at most 63)",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nurl = \"http://x\"\ncredential = { query = { name = \"k\" } }",
                "upstream 1 (`a`): `credential` needs a `secret`",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nurl = \"http://x\"\n[[upstreams]]\nname = \"a\"\nurl = \"http://y\"",
                "upstream name `a` is used twice",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nurl = \"http://x\"\n[[mcp]]\nserver = \"crm\"\npath = \"/mcp\"\nupstream = \"b\"",
                "mcp server 1 (`crm`): no upstream named `b`",
            ),
            (
                "[[upstreams]]\nname = \"a\"\nurl = \"http://x\"\n[[mcp]]\nserver = \"c.r\"\npath = \"/mcp\"\nupstream = \"a\"",
                "mcp server 1 (`c.r`): the name must be lowercase letters, digits, `_` or `-`",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.to_string(), format!("gateway: {want}"), "{text}");
        }
    }

    #[test]
    fn a_route_needs_its_upstream_named_when_there_are_several() {
        let text = format!("{BASE}\n[[upstreams]]\nname = \"mail\"\nurl = \"http://m\"");
        let e = parse(&text).unwrap_err();
        assert!(
            e.to_string().contains("route 1: name its `upstream`"),
            "{e}"
        );
    }

    #[test]
    fn audiences_come_from_the_route_then_its_upstream_then_the_gateway() {
        let text = r#"
            [[upstreams]]
            name = "crm"
            url = "http://127.0.0.1:9000"
            audience = "https://crm.example.com"

            [[upstreams]]
            name = "mail"
            url = "http://127.0.0.1:9001"

            [[routes]]
            upstream = "crm"
            method = "GET"
            path = "/customers/{id}"
            action = "crm.customers:read"
            resource = "customers/{id}"

            [[routes]]
            upstream = "crm"
            method = "GET"
            path = "/tickets/{id}"
            action = "tickets:read"
            resource = "tickets/{id}"
            audience = "https://tickets.example.com"

            [[routes]]
            upstream = "mail"
            method = "POST"
            path = "/email/send"
            action = "email:send"
            resource = "email"

            [[mcp]]
            server = "crm"
            path = "/mcp"
            upstream = "crm"
        "#;
        let p = parse(text).unwrap();
        assert_eq!(p.route_audiences[0], vec!["https://crm.example.com"]);
        assert_eq!(p.route_audiences[1], vec!["https://tickets.example.com"]);
        assert_eq!(
            p.route_audiences[2],
            vec!["http://127.0.0.1:8081", "http://127.0.0.1:8081/"]
        );
        assert_eq!(
            p.mcp[0].audiences,
            vec![
                "http://127.0.0.1:8081",
                "http://127.0.0.1:8081/",
                "http://127.0.0.1:8081/mcp"
            ]
        );
        let all = p.audiences();
        for a in [
            "https://crm.example.com",
            "https://tickets.example.com",
            "http://127.0.0.1:8081/mcp",
        ] {
            assert!(all.contains(&a.to_owned()), "{a}");
        }
    }

    #[test]
    fn a_secret_alone_goes_in_a_bearer_header() {
        let p = parse("[[upstreams]]\nname = \"a\"\nurl = \"http://x\"\nsecret = \"s\"").unwrap();
        assert_eq!(
            p.upstreams[0].injection,
            Injection::Header {
                name: "authorization".into(),
                format: Some("Bearer {secret}".into())
            }
        );
    }
}
