//! A real MCP server (rmcp's server side, streamable HTTP) for tests of the gateway's MCP tool
//! injection.
//!
//! Tools:
//! - `add` `{a: number, b: number}` → the sum as text (`2 + 3` → `"5"`, `0.5 + 1` → `"1.5"`),
//! - `echo` `{text: string}` → the text,
//! - `fail` → a tool error result (`isError: true`) with text "the tool failed on purpose",
//! - `secret_lookup` `{query: string}` → "classified" (meant to be denied by a gateway rule),
//! - `sleep` `{ms: integer}` → "slept" after `ms` milliseconds (for call timeouts),
//! - `noop_0` … `noop_{N-1}` → "noop" ([`McpMockOptions::noop_tools`], 60 by default),
//! - and whatever [`McpMock::add_tool`] adds (each answers with its own name).
//!
//! `tools/list` is paginated ([`McpMockOptions::page_size`], 25 by default: the default 65 tools
//! come in 3 pages); the cursor is the decimal offset of the page's first tool.
//!
//! By default the server keeps sessions (`Mcp-Session-Id`) and answers each POST with an SSE
//! stream; [`McpMockOptions::stateless_json`] makes it sessionless with plain JSON answers (no
//! notification stream then, so no `list_changed` either).
//!
//! [`McpMock::add_tool`] adds a tool and sends `notifications/tools/list_changed` to every
//! initialized session (over the session's standalone GET stream: a client that has not opened
//! that stream yet misses it). [`McpMock::calls`] records every `tools/call` (name and
//! arguments), so a test can check that a denied tool was never called.
//!
//! With [`McpMockOptions::expected_authorization`] set, any request whose `Authorization` header
//! is not exactly that value gets a 401 before it reaches MCP.
//!
//! Serve it on its own port with [`McpMock::start`] (`http://127.0.0.1:PORT/mcp`) or mount
//! [`McpMock::router`] (which routes `/mcp`) into another axum app with `Router::merge`. Such an
//! app should call [`McpMock::close_sessions`] before its graceful shutdown (open SSE streams
//! hold it open) and set `TCP_NODELAY` on accepted sockets as [`McpMock::start_on`] does (or
//! SSE answers stall ~40 ms on a kept-alive connection: Nagle against delayed ACK).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use http::StatusCode;
use http::header::AUTHORIZATION;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{MaybeSendFuture, NotificationContext, RequestContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The text of every `fail` result.
pub const FAIL_TEXT: &str = "the tool failed on purpose";
/// The text of every `secret_lookup` result.
pub const SECRET_TEXT: &str = "classified";

/// Settings of an [`McpMock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpMockOptions {
    /// Tools per `tools/list` page (0 is taken as 1).
    pub page_size: usize,
    /// How many `noop_N` tools to list after the five named ones.
    pub noop_tools: usize,
    /// When set, the whole `Authorization` header value every request must carry.
    pub expected_authorization: Option<String>,
    /// Serve without sessions and answer POSTs with `application/json` instead of SSE.
    pub stateless_json: bool,
}

impl Default for McpMockOptions {
    fn default() -> Self {
        Self {
            page_size: 25,
            noop_tools: 60,
            expected_authorization: None,
            stateless_json: false,
        }
    }
}

/// One `tools/call` the mock received.
#[derive(Debug, Clone, PartialEq)]
pub struct McpCall {
    pub tool: String,
    /// The call's `arguments` (`Value::Null` when absent).
    pub arguments: Value,
}

#[derive(Default)]
struct McpMockState {
    tools: Vec<Tool>,
    peers: Vec<Peer<RoleServer>>,
    calls: Vec<McpCall>,
}

struct Shared {
    options: McpMockOptions,
    state: Mutex<McpMockState>,
    /// Ends every MCP session (and its SSE streams) when cancelled.
    sessions: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, McpMockState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The MCP mock's state, shared by its HTTP service and the test that drives it. Clones share it.
#[derive(Clone)]
pub struct McpMock {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for McpMock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpMock")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl Default for McpMock {
    fn default() -> Self {
        Self::new(McpMockOptions::default())
    }
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

fn empty_schema() -> Arc<JsonObject> {
    schema(json!({"type": "object", "properties": {}}))
}

fn builtin_tools(noop_tools: usize) -> Vec<Tool> {
    let mut tools = vec![
        Tool::new(
            "add",
            "Adds two numbers.",
            schema(json!({
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"]
            })),
        ),
        Tool::new(
            "echo",
            "Returns its text.",
            schema(json!({
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"]
            })),
        ),
        Tool::new("fail", "Always fails.", empty_schema()),
        Tool::new(
            "sleep",
            "Answers after `ms` milliseconds.",
            schema(json!({
                "type": "object",
                "properties": {"ms": {"type": "integer", "minimum": 0}},
                "required": ["ms"]
            })),
        ),
        Tool::new(
            "secret_lookup",
            "Looks up a secret.",
            schema(json!({
                "type": "object",
                "properties": {"query": {"type": "string"}}
            })),
        ),
    ];
    tools.extend(
        (0..noop_tools).map(|i| Tool::new(format!("noop_{i}"), "Does nothing.", empty_schema())),
    );
    tools
}

impl McpMock {
    pub fn new(options: McpMockOptions) -> Self {
        let tools = builtin_tools(options.noop_tools);
        Self {
            shared: Arc::new(Shared {
                options,
                state: Mutex::new(McpMockState {
                    tools,
                    ..McpMockState::default()
                }),
                sessions: CancellationToken::new(),
            }),
        }
    }

    /// An axum router serving MCP at `/mcp` (POST, GET for the notification stream, DELETE).
    pub fn router(&self) -> Router {
        let handler = MockHandler {
            shared: Arc::clone(&self.shared),
        };
        let stateless = self.shared.options.stateless_json;
        let config = StreamableHttpServerConfig::default()
            // A test mock: accept any Host (the default allows only loopback names).
            .disable_allowed_hosts()
            .with_legacy_session_mode(!stateless)
            .with_json_response(stateless)
            .with_cancellation_token(self.shared.sessions.child_token());
        let service = StreamableHttpService::new(
            move || Ok(handler.clone()),
            Arc::new(LocalSessionManager::default()),
            config,
        );
        let router = Router::new().route_service("/mcp", service);
        match &self.shared.options.expected_authorization {
            Some(_) => router.layer(middleware::from_fn_with_state(
                Arc::clone(&self.shared),
                check_authorization,
            )),
            None => router,
        }
    }

    /// Serves [`Self::router`] on 127.0.0.1, an OS-chosen port.
    pub async fn start(self) -> std::io::Result<McpMockServer> {
        self.start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Serves [`Self::router`] on `addr` in one spawned task.
    pub async fn start_on(self, addr: SocketAddr) -> std::io::Result<McpMockServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = self.router();
        let (stop, stopped) = oneshot::channel::<()>();
        let sessions = self.shared.sessions.clone();
        let task = tokio::spawn(async move {
            // Small SSE writes (event, then end of stream) must not wait on Nagle.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
                // Open SSE streams would hold a graceful shutdown forever: end the sessions.
                sessions.cancel();
            });
            if let Err(error) = serve.await {
                tracing::warn!(%error, "MCP mock server failed");
            }
        });
        Ok(McpMockServer {
            addr,
            mock: self,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Ends every MCP session and its streams (needed before a graceful shutdown of an app that
    /// mounts [`Self::router`]); the mock answers no MCP request after this.
    pub fn close_sessions(&self) {
        self.shared.sessions.cancel();
    }

    /// Names of the tools `tools/list` returns, in order.
    pub fn tool_names(&self) -> Vec<String> {
        self.shared
            .lock()
            .tools
            .iter()
            .map(|tool| tool.name.to_string())
            .collect()
    }

    /// Every `tools/call` received so far, in order.
    pub fn calls(&self) -> Vec<McpCall> {
        self.shared.lock().calls.clone()
    }

    /// Adds a tool named `name` (answering with its own name) and sends
    /// `notifications/tools/list_changed` to every live session. Returns how many sessions
    /// were sent it.
    pub async fn add_tool(&self, name: &str) -> usize {
        self.shared.lock().tools.push(Tool::new(
            name.to_owned(),
            "Added at run time.",
            empty_schema(),
        ));
        self.notify_tools_changed().await
    }

    /// Sends `notifications/tools/list_changed` to every live session; returns how many.
    pub async fn notify_tools_changed(&self) -> usize {
        let peers: Vec<Peer<RoleServer>> = {
            let mut state = self.shared.lock();
            state.peers.retain(|peer| !peer.is_transport_closed());
            state.peers.clone()
        };
        let mut sent = 0;
        for peer in peers {
            match peer.notify_tool_list_changed().await {
                Ok(()) => sent += 1,
                Err(error) => tracing::debug!(%error, "MCP mock: list_changed not sent"),
            }
        }
        sent
    }
}

async fn check_authorization(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let expected = shared.options.expected_authorization.as_deref();
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if expected.is_some() && given != expected {
        return (
            StatusCode::UNAUTHORIZED,
            [(http::header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong Authorization",
        )
            .into_response();
    }
    next.run(request).await
}

/// A running [`McpMock`] on its own port; dropping it stops the server.
pub struct McpMockServer {
    addr: SocketAddr,
    mock: McpMock,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for McpMockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpMockServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl McpMockServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    pub fn mock(&self) -> &McpMock {
        &self.mock
    }

    /// Stops the server and waits for its task.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for McpMockServer {
    fn drop(&mut self) {
        self.mock.shared.sessions.cancel();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// rmcp's server handler: one per MCP session, all sharing the mock's state.
#[derive(Clone)]
struct MockHandler {
    shared: Arc<Shared>,
}

fn text_result(text: impl Into<String>) -> CallToolResponse {
    CallToolResult::success(vec![ContentBlock::text(text)]).into()
}

fn number(arguments: &Value, key: &str) -> Result<f64, ErrorData> {
    arguments
        .get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| ErrorData::invalid_params(format!("`{key}` must be a number"), None))
}

fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

impl ServerHandler for MockHandler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new(
            "aibridge-mock-mcp",
            env!("CARGO_PKG_VERSION"),
        ))
    }

    fn on_initialized(
        &self,
        context: NotificationContext<RoleServer>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.shared.lock().peers.push(context.peer);
        std::future::ready(())
    }

    fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<ListToolsResult, ErrorData>> + MaybeSendFuture + '_ {
        let cursor = request.and_then(|params| params.cursor);
        let result = (|| {
            let start = match cursor {
                None => 0,
                Some(cursor) => cursor
                    .parse::<usize>()
                    .map_err(|_| ErrorData::invalid_params("invalid cursor", None))?,
            };
            let page_size = self.shared.options.page_size.max(1);
            let tools = &self.shared.lock().tools;
            if start > tools.len() {
                return Err(ErrorData::invalid_params("invalid cursor", None));
            }
            let end = start.saturating_add(page_size).min(tools.len());
            let mut page = ListToolsResult::with_all_items(tools[start..end].to_vec());
            if end < tools.len() {
                page.next_cursor = Some(end.to_string());
            }
            Ok(page)
        })();
        std::future::ready(result)
    }

    fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<CallToolResponse, ErrorData>> + MaybeSendFuture + '_ {
        let sleep_ms = (request.name == "sleep").then(|| {
            request
                .arguments
                .as_ref()
                .and_then(|arguments| arguments.get("ms"))
                .and_then(Value::as_u64)
        });
        let arguments = request.arguments.map(Value::Object).unwrap_or(Value::Null);
        let name: Cow<'static, str> = request.name;
        let known = {
            let mut state = self.shared.lock();
            state.calls.push(McpCall {
                tool: name.to_string(),
                arguments: arguments.clone(),
            });
            state.tools.iter().any(|tool| tool.name == name)
        };
        let result = if !known {
            Err(ErrorData::invalid_params(
                format!("unknown tool: {name}"),
                None,
            ))
        } else {
            match name.as_ref() {
                "add" => number(&arguments, "a").and_then(|a| {
                    number(&arguments, "b").map(|b| text_result(format_number(a + b)))
                }),
                "echo" => match arguments.get("text").and_then(Value::as_str) {
                    Some(text) => Ok(text_result(text)),
                    None => Err(ErrorData::invalid_params("`text` must be a string", None)),
                },
                "fail" => Ok(CallToolResult::error(vec![ContentBlock::text(FAIL_TEXT)]).into()),
                "secret_lookup" => Ok(text_result(SECRET_TEXT)),
                "sleep" => Ok(text_result("slept")),
                other if other.starts_with("noop_") => Ok(text_result("noop")),
                other => Ok(text_result(other.to_owned())),
            }
        };
        async move {
            match sleep_ms {
                Some(Some(ms)) => tokio::time::sleep(Duration::from_millis(ms)).await,
                Some(None) => {
                    return Err(ErrorData::invalid_params("`ms` must be an integer", None));
                }
                None => {}
            }
            result
        }
    }
}
