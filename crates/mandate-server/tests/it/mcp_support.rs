//! MCP test support: an rmcp client for any streamable-HTTP MCP endpoint, and a small MCP server
//! built with rmcp (the same two tools as the sample's `/mcp`, with rmcp's own session and SSE
//! behaviour) to stand in as a third-party upstream.
// Shared with other test files; not every helper is used by every one.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{ClientInitializeError, RequestContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{
    StreamableHttpClientTransport, StreamableHttpServerConfig, StreamableHttpService,
};
use rmcp::{ErrorData, RoleClient, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

/// A connected rmcp client.
pub type McpClient = RunningService<RoleClient, ()>;

/// How the client proves itself to the server.
pub enum Credential<'a> {
    /// `Authorization: Bearer <key>` (rmcp's `auth_header`).
    Bearer(&'a str),
    /// A custom header, e.g. `x-api-key`.
    Header(&'static str, &'a str),
}

/// Connects an rmcp streamable-HTTP client to `url` (the MCP endpoint itself, e.g. `…/mcp`).
pub async fn connect(url: &str, credential: Credential<'_>) -> McpClient {
    try_connect(url, Some(credential))
        .await
        .expect("mcp client connects")
}

/// Like [`connect`], but says why it could not.
pub async fn try_connect(
    url: &str,
    credential: Option<Credential<'_>>,
) -> Result<McpClient, ClientInitializeError> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    match credential {
        Some(Credential::Bearer(key)) => config = config.auth_header(key.to_owned()),
        Some(Credential::Header(name, value)) => {
            let mut headers = HashMap::new();
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
            config = config.custom_headers(headers);
        }
        None => {}
    }
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    ().serve(transport).await
}

/// The text of a tool result's first content block.
pub fn first_text(result: &CallToolResult) -> String {
    match result.content.first() {
        Some(ContentBlock::Text(t)) => t.text.clone(),
        other => panic!("expected text content, got {other:?}"),
    }
}

/// A small MCP server built with rmcp: `lookup_customer` and `delete_customer` over a seed of
/// three customers.
#[derive(Clone)]
pub struct CrmTools {
    customers: Arc<Mutex<BTreeMap<String, Value>>>,
}

impl Default for CrmTools {
    fn default() -> Self {
        let seed = [
            ("9821", "Acme Corp", "emea"),
            ("4410", "Globex", "amer"),
            ("7702", "Initech", "emea"),
        ]
        .into_iter()
        .map(|(id, name, region)| {
            let c = json!({"id": id, "name": name, "region": region});
            (id.to_owned(), c)
        })
        .collect();
        CrmTools {
            customers: Arc::new(Mutex::new(seed)),
        }
    }
}

fn tool(name: &'static str, description: &'static str, read_only: bool) -> Tool {
    let schema = json!({
        "type": "object",
        "properties": {"id": {"type": "string"}},
        "required": ["id"]
    });
    let schema: JsonObject = schema.as_object().unwrap().clone();
    let mut t = Tool::new(name, description, Arc::new(schema));
    t.annotations = Some(
        ToolAnnotations::new()
            .read_only(read_only)
            .destructive(!read_only),
    );
    t
}

impl ServerHandler for CrmTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("crm", "0.1.0"))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![
            tool("lookup_customer", "looks a customer up by id", true),
            tool("delete_customer", "deletes a customer by id", false),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let id = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(id) = id else {
            let text = ContentBlock::text("missing argument `id`");
            return Ok(CallToolResult::error(vec![text]).into());
        };
        let mut customers = self.customers.lock().unwrap();
        let result = match (request.name.as_ref(), customers.get(&id).cloned()) {
            ("lookup_customer", Some(c)) => {
                let mut r = CallToolResult::success(vec![ContentBlock::text(c.to_string())]);
                r.structured_content = Some(c);
                r
            }
            ("delete_customer", Some(_)) => {
                customers.remove(&id);
                CallToolResult::success(vec![ContentBlock::text(format!("deleted customer {id}"))])
            }
            ("lookup_customer" | "delete_customer", None) => {
                CallToolResult::error(vec![ContentBlock::text(format!("no customer {id}"))])
            }
            (other, _) => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool: {other}"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }
}

/// The headers of each request received, oldest first.
type SeenLog = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// The rmcp server, listening on an ephemeral loopback port; stops when dropped.
pub struct RmcpUpstream {
    addr: SocketAddr,
    seen: SeenLog,
    config: StreamableHttpServerConfig,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Gate {
    api_key: String,
    seen: SeenLog,
}

async fn gate(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let ok = headers.iter().any(|(n, v)| {
        (n == "x-api-key" && *v == gate.api_key)
            || (n == "authorization" && *v == format!("Bearer {}", gate.api_key))
    });
    gate.seen.lock().unwrap().push(headers);
    if !ok {
        return (StatusCode::UNAUTHORIZED, "missing or wrong API key").into_response();
    }
    next.run(req).await
}

impl RmcpUpstream {
    /// Starts the server at `/mcp`, requiring `api_key` (as `x-api-key` or a bearer token).
    pub async fn start(api_key: &str) -> RmcpUpstream {
        let config = StreamableHttpServerConfig::default().disable_allowed_hosts();
        let service = StreamableHttpService::new(
            || Ok(CrmTools::default()),
            Arc::new(LocalSessionManager::default()),
            config.clone(),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = Gate {
            api_key: api_key.to_owned(),
            seen: seen.clone(),
        };
        let app = Router::new()
            .nest_service("/mcp", service)
            .layer(middleware::from_fn_with_state(state, gate));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ct = config.cancellation_token.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { ct.cancelled_owned().await })
                .await;
        });
        RmcpUpstream {
            addr,
            seen,
            config,
            task,
        }
    }

    /// The MCP endpoint, `http://ADDR/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// The headers of every request received so far, oldest first.
    pub fn seen_headers(&self) -> Vec<Vec<(String, String)>> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for RmcpUpstream {
    fn drop(&mut self) {
        self.config.cancellation_token.cancel();
        self.task.abort();
    }
}
