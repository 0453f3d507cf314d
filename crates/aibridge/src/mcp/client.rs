//! MCP client: connects to an MCP server over streamable HTTP (rmcp's client side), lists its tools
//! and calls them.
//!
//! The HTTP side runs on the gateway's own `reqwest::Client` (reqwest 0.12): `GatewayHttp`
//! implements rmcp's `StreamableHttpClient` trait, so rmcp's `reqwest` feature (reqwest 0.13 and,
//! through it, aws-lc-sys) is not needed. rmcp still runs the protocol: the `initialize`
//! handshake, the `Mcp-Session-Id` session, the `MCP-Protocol-Version` header, SSE or JSON
//! responses to each POST, the standalone GET stream that carries server notifications (such as
//! `notifications/tools/list_changed`), `notifications/cancelled` for a request whose future is
//! dropped, and the session's DELETE on close.
//!
//! Connection pooling: a server that writes an SSE answer in several small writes without
//! `TCP_NODELAY` (rmcp's own server behind a plain `axum::serve` does) costs ~40 ms per call on a
//! pooled keep-alive connection (Nagle against delayed ACK; measured 43 ms vs 0.9 ms). rmcp's own
//! reqwest backend therefore builds its client with `pool_max_idle_per_host(0)`. Pass such a
//! client (the gateway's builder settings plus `.pool_max_idle_per_host(0)`) to trade that stall
//! for a new connection per request; a server that answers with JSON or sets `TCP_NODELAY` does
//! not stall.
//!
//! Configured header values (`Authorization: Bearer ...` and the like) are marked sensitive and
//! never appear in an error's text or in a log line from this module; neither does the server's
//! URL (it may carry a token in its query). Errors name the server by its configured name.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ClientJsonRpcMessage,
    ContentBlock, Implementation, JsonRpcMessage, PaginatedRequestParams, ProtocolVersion,
    ServerJsonRpcMessage,
};
use rmcp::service::{
    ClientInitializeError, MaybeSendFuture, NotificationContext, RunningService, ServiceError,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::common::client_side_sse::ExponentialBackoff;
use rmcp::transport::streamable_http_client::{
    AuthRequiredError, HttpStatusError, SseError, StreamableHttpClient,
    StreamableHttpClientTransportConfig, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use rmcp::{ClientCacheConfig, ClientHandler, RoleClient};
use sse_stream::{Sse, SseStream};
use tokio::sync::watch;

/// Most pages a `tools/list` walk follows before giving up on a server whose cursors never end.
const MAX_TOOL_PAGES: usize = 1_000;
/// Longest pause between reconnects of the server-notification (GET) stream.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);
/// Headers the transport sets itself; a configured header may not override them.
const RESERVED_HEADERS: &[&str] = &[
    "accept",
    "content-type",
    "content-length",
    "host",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

/// One MCP server the gateway connects to.
#[derive(Clone)]
pub struct McpEndpoint {
    /// The gateway's name for the server (used in errors, logs and tool ids).
    pub name: String,
    /// The server's streamable-HTTP endpoint, e.g. `https://mcp.example.com/mcp`.
    pub url: String,
    /// Headers sent on every MCP request: (name, whole value), e.g.
    /// `("Authorization", "Bearer x")`.
    pub headers: Vec<(String, String)>,
}

impl fmt::Debug for McpEndpoint {
    /// Header values and the URL's query are left out: either may hold a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        let url = redacted_url(&self.url);
        f.debug_struct("McpEndpoint")
            .field("name", &self.name)
            .field("url", &url)
            .field("header_names", &header_names)
            .finish()
    }
}

/// `scheme://host[:port]/path` of `url`: no user info, query or fragment (they may hold a
/// secret). What logs, records and `check-config` show of an MCP server's URL.
pub(crate) fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(url) => {
            let port = url
                .port()
                .map(|port| format!(":{port}"))
                .unwrap_or_default();
            let host = url.host_str().unwrap_or_default();
            format!("{}://{host}{port}{}", url.scheme(), url.path())
        }
        Err(_) => "<invalid url>".to_owned(),
    }
}

/// A tool as the server lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct McpTool {
    /// The tool's own name on its server.
    pub name: String,
    pub description: Option<String>,
    /// The tool's `inputSchema`: a JSON Schema object.
    pub input_schema: serde_json::Value,
}

/// The outcome of a `tools/call` that the server answered with a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    /// The server's `isError`: the tool ran and failed (the text says why).
    pub is_error: bool,
    /// Text parts joined with "\n"; any other part (image, audio, resource) as its JSON. A result
    /// with no content parts but `structuredContent` gives that value's JSON.
    pub text: String,
}

/// An MCP failure. The text names the server by its configured name, never its URL or header
/// values.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("MCP server {server}: invalid configuration: {reason}")]
    Config { server: String, reason: String },
    #[error("MCP server {server}: {operation} timed out after {timeout:?}")]
    Timeout {
        server: String,
        operation: &'static str,
        timeout: Duration,
    },
    #[error("MCP server {server}: authorization rejected (HTTP {status})")]
    Unauthorized { server: String, status: u16 },
    #[error("MCP server {server}: HTTP {status}")]
    HttpStatus { server: String, status: u16 },
    #[error("MCP server {server}: initialization failed: {message}")]
    Initialize { server: String, message: String },
    #[error("MCP server {server}: JSON-RPC error {code}: {message}")]
    Rpc {
        server: String,
        code: i32,
        message: String,
    },
    #[error("MCP server {server}: transport failed: {message}")]
    Transport { server: String, message: String },
    #[error("MCP server {server}: connection closed")]
    Closed { server: String },
    #[error("MCP server {server}: protocol error: {message}")]
    Protocol { server: String, message: String },
    #[error("MCP server {server}: arguments of tool {tool} must be a JSON object")]
    InvalidArguments { server: String, tool: String },
}

/// A live session with one MCP server. Dropping it cancels the session's background task (which
/// sends the session's DELETE); [`McpConnection::close`] does the same and waits for it.
pub struct McpConnection {
    server: String,
    service: RunningService<RoleClient, GatewayClientHandler>,
    tools_changed: watch::Receiver<u64>,
}

impl fmt::Debug for McpConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpConnection")
            .field("server", &self.server)
            .field("protocol_version", &self.protocol_version())
            .finish_non_exhaustive()
    }
}

impl McpConnection {
    /// Opens a session: validates `config`, POSTs `initialize` (offering protocol version
    /// 2025-11-25, the newest with an `initialize` handshake), reads the result, sends
    /// `notifications/initialized` and opens the GET stream for server notifications, all within
    /// `timeout`. `http` carries every request of the session (see the module doc on pooling);
    /// no client-wide `timeout` on it, or it cuts the long-lived notification stream.
    pub async fn connect(
        http: reqwest::Client,
        config: &McpEndpoint,
        timeout: Duration,
    ) -> Result<Self, McpError> {
        let server = config.name.clone();
        let headers = build_headers(config)?;
        let (tx, tools_changed) = watch::channel(0u64);
        let handler = GatewayClientHandler {
            server: server.clone(),
            tools_changed: tx,
        };

        let mut retry = ExponentialBackoff::default();
        retry.max_delay = Some(MAX_RECONNECT_DELAY);
        let mut transport_config =
            StreamableHttpClientTransportConfig::with_uri(config.url.as_str());
        transport_config.retry_config = Arc::new(retry);
        let transport = StreamableHttpClientTransport::with_client(
            GatewayHttp {
                http,
                headers: Arc::new(headers),
            },
            transport_config,
        );

        let service =
            match tokio::time::timeout(timeout, rmcp::serve_client(handler, transport)).await {
                Err(_) => {
                    return Err(McpError::Timeout {
                        server,
                        operation: "initialize",
                        timeout,
                    });
                }
                Ok(Err(error)) => return Err(init_error(&server, error)),
                Ok(Ok(service)) => service,
            };
        // The gateway keeps its own view of the tool list; rmcp's response cache would only hide
        // a fresh listing behind a stale one.
        service
            .peer()
            .set_response_cache_config(ClientCacheConfig::disabled())
            .await;
        tracing::debug!(
            mcp_server = %server,
            protocol_version = %service.peer().peer_info().map(|i| i.protocol_version.to_string()).unwrap_or_default(),
            "MCP session initialized"
        );
        Ok(Self {
            server,
            service,
            tools_changed,
        })
    }

    /// The server's configured name.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The protocol version the server chose in its `initialize` result.
    pub fn protocol_version(&self) -> Option<String> {
        self.service
            .peer()
            .peer_info()
            .map(|info| info.protocol_version.to_string())
    }

    /// Whether the server said it sends `notifications/tools/list_changed`.
    pub fn announces_tool_list_changes(&self) -> bool {
        self.service
            .peer()
            .peer_info()
            .and_then(|info| {
                info.capabilities
                    .tools
                    .as_ref()
                    .and_then(|t| t.list_changed)
            })
            .unwrap_or(false)
    }

    /// A receiver whose value goes up by one at each `notifications/tools/list_changed` from the
    /// server: `changed().await` wakes on the next one. It returns `Err` once the session has
    /// ended (the handler, which holds the sender, is gone).
    pub fn tools_changed(&self) -> watch::Receiver<u64> {
        self.tools_changed.clone()
    }

    /// Whether the session's background task has stopped (transport failure or close).
    pub fn is_closed(&self) -> bool {
        self.service.is_closed() || self.service.peer().is_transport_closed()
    }

    /// Every tool the server lists, following `nextCursor` page by page, within `timeout` for
    /// the whole walk.
    pub async fn list_tools(&self, timeout: Duration) -> Result<Vec<McpTool>, McpError> {
        match tokio::time::timeout(timeout, self.list_all_pages()).await {
            Ok(result) => result,
            Err(_) => Err(McpError::Timeout {
                server: self.server.clone(),
                operation: "tools/list",
                timeout,
            }),
        }
    }

    async fn list_all_pages(&self) -> Result<Vec<McpTool>, McpError> {
        let peer = self.service.peer();
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_TOOL_PAGES {
            let params = cursor
                .take()
                .map(|cursor| PaginatedRequestParams::default().with_cursor(Some(cursor)));
            let page = peer
                .list_tools(params)
                .await
                .map_err(|error| service_error(&self.server, error))?;
            tools.extend(page.tools.into_iter().map(|tool| McpTool {
                name: tool.name.into_owned(),
                description: tool.description.map(|d| d.into_owned()),
                input_schema: serde_json::Value::Object((*tool.input_schema).clone()),
            }));
            match page.next_cursor {
                Some(next) if !next.is_empty() => cursor = Some(next),
                _ => return Ok(tools),
            }
        }
        Err(McpError::Protocol {
            server: self.server.clone(),
            message: format!("tools/list did not end within {MAX_TOOL_PAGES} pages"),
        })
    }

    /// Calls tool `name` (its own name on the server) with `arguments` (a JSON object, or null
    /// for none). A timeout drops the request, and rmcp then sends `notifications/cancelled`.
    /// A tool that ran and failed is `Ok` with `is_error: true`; `Err` is for the call itself
    /// failing (transport, JSON-RPC error such as an unknown tool, timeout).
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: serde_json::Value,
        timeout: Duration,
    ) -> Result<ToolResult, McpError> {
        let mut params = CallToolRequestParams::new(name.to_owned());
        match arguments {
            serde_json::Value::Object(map) => params = params.with_arguments(map),
            serde_json::Value::Null => {}
            _ => {
                return Err(McpError::InvalidArguments {
                    server: self.server.clone(),
                    tool: name.to_owned(),
                });
            }
        }
        let result =
            match tokio::time::timeout(timeout, self.service.peer().call_tool(params)).await {
                Err(_) => {
                    return Err(McpError::Timeout {
                        server: self.server.clone(),
                        operation: "tools/call",
                        timeout,
                    });
                }
                Ok(result) => result.map_err(|error| service_error(&self.server, error))?,
            };
        Ok(render_result(result))
    }

    /// Ends the session (DELETE of the session id, best effort) within `timeout`.
    pub async fn close(mut self, timeout: Duration) {
        if let Err(error) = self.service.close_with_timeout(timeout).await {
            tracing::debug!(mcp_server = %self.server, %error, "MCP session task failed on close");
        }
    }
}

fn render_result(result: CallToolResult) -> ToolResult {
    let mut parts = Vec::with_capacity(result.content.len());
    for block in &result.content {
        match block {
            ContentBlock::Text(text) => parts.push(text.text.clone()),
            other => parts.push(serde_json::to_string(other).unwrap_or_default()),
        }
    }
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(structured.to_string());
    }
    ToolResult {
        is_error: result.is_error.unwrap_or(false),
        text: parts.join("\n"),
    }
}

fn build_headers(config: &McpEndpoint) -> Result<HeaderMap, McpError> {
    let invalid = |reason: String| McpError::Config {
        server: config.name.clone(),
        reason,
    };
    let url = reqwest::Url::parse(&config.url)
        .map_err(|error| invalid(format!("url is not a valid URL ({error})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("url must be http or https".to_owned()));
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &config.headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("header name {name:?} is not valid")))?;
        if RESERVED_HEADERS.contains(&header_name.as_str()) {
            return Err(invalid(format!(
                "header {name} is set by the MCP transport"
            )));
        }
        // The value is never echoed: it is likely a credential.
        let mut header_value = HeaderValue::from_str(value).map_err(|_| {
            invalid(format!(
                "the value of header {name} is not a valid header value"
            ))
        })?;
        header_value.set_sensitive(true);
        headers.append(header_name, header_value);
    }
    Ok(headers)
}

/// What an HTTP failure under an rmcp error was, when there is one.
enum HttpFailure {
    Unauthorized(u16),
    Status(u16),
}

fn http_failure(error: &(dyn StdError + 'static)) -> Option<HttpFailure> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(http) = error.downcast_ref::<StreamableHttpError<GatewayHttpError>>() {
            match http {
                StreamableHttpError::AuthRequired(_) => {
                    return Some(HttpFailure::Unauthorized(401));
                }
                StreamableHttpError::InsufficientScope(_) => {
                    return Some(HttpFailure::Unauthorized(403));
                }
                StreamableHttpError::HttpStatus(status) => {
                    return Some(match status.status {
                        401 | 403 => HttpFailure::Unauthorized(status.status),
                        other => HttpFailure::Status(other),
                    });
                }
                _ => {}
            }
        }
        if error.downcast_ref::<AuthRequiredError>().is_some() {
            return Some(HttpFailure::Unauthorized(401));
        }
        current = error.source();
    }
    None
}

fn from_http_failure(server: &str, failure: HttpFailure) -> McpError {
    match failure {
        HttpFailure::Unauthorized(status) => McpError::Unauthorized {
            server: server.to_owned(),
            status,
        },
        HttpFailure::Status(status) => McpError::HttpStatus {
            server: server.to_owned(),
            status,
        },
    }
}

fn init_error(server: &str, error: ClientInitializeError) -> McpError {
    let transport_error = match &error {
        ClientInitializeError::TransportError { error, .. } => Some(error.error.as_ref()),
        _ => None,
    };
    if let Some(failure) = transport_error.and_then(|e| http_failure(e)) {
        return from_http_failure(server, failure);
    }
    match error {
        ClientInitializeError::JsonRpcError(data) => McpError::Rpc {
            server: server.to_owned(),
            code: data.code.0,
            message: data.message.into_owned(),
        },
        ClientInitializeError::TransportError { error, context } => McpError::Transport {
            server: server.to_owned(),
            message: format!("{context}: {}", error.error),
        },
        other => McpError::Initialize {
            server: server.to_owned(),
            message: other.to_string(),
        },
    }
}

fn service_error(server: &str, error: ServiceError) -> McpError {
    if let Some(failure) = http_failure(&error) {
        return from_http_failure(server, failure);
    }
    match error {
        ServiceError::McpError(data) => McpError::Rpc {
            server: server.to_owned(),
            code: data.code.0,
            message: data.message.into_owned(),
        },
        ServiceError::TransportClosed => McpError::Closed {
            server: server.to_owned(),
        },
        ServiceError::TransportSend(error) => McpError::Transport {
            server: server.to_owned(),
            message: error.error.to_string(),
        },
        other => McpError::Protocol {
            server: server.to_owned(),
            message: other.to_string(),
        },
    }
}

/// rmcp's client-side handler for this connection: it answers pings (rmcp's default) and turns
/// `notifications/tools/list_changed` into a bump of the watch value.
struct GatewayClientHandler {
    server: String,
    tools_changed: watch::Sender<u64>,
}

impl ClientHandler for GatewayClientHandler {
    fn on_tool_list_changed(
        &self,
        _context: NotificationContext<RoleClient>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        tracing::debug!(mcp_server = %self.server, "MCP server's tool list changed");
        self.tools_changed.send_modify(|n| *n = n.wrapping_add(1));
        std::future::ready(())
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("aibridge", env!("CARGO_PKG_VERSION")),
        )
        // 2026-07-28 drops `initialize` (and sessions); a server asked for it over `initialize`
        // answers with an older version anyway, so ask for the newest one that has it.
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }
}

/// The error of the reqwest backend (`GatewayHttp`): a reqwest failure (its URL removed) or an oversized SSE event.
/// rmcp keeps only this error's text (`StreamableHttpError::Client` has no source), so the text
/// carries the cause chain ("error sending request: client error (Connect): tcp connect error:
/// Connection refused ...").
#[derive(Debug, thiserror::Error)]
pub enum GatewayHttpError {
    #[error("HTTP request failed: {}", error_chain(.0))]
    Request(reqwest::Error),
    #[error("SSE event exceeded the maximum size of {max_size} bytes")]
    EventTooLarge { max_size: usize },
}

fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

type HttpResult<T> = Result<T, StreamableHttpError<GatewayHttpError>>;

fn request_error(error: reqwest::Error) -> StreamableHttpError<GatewayHttpError> {
    StreamableHttpError::Client(GatewayHttpError::Request(error.without_url()))
}

/// rmcp's streamable-HTTP client backend on the gateway's reqwest 0.12 client. The configured
/// headers go on every request (POST, GET stream, DELETE).
#[derive(Clone)]
struct GatewayHttp {
    http: reqwest::Client,
    headers: Arc<HeaderMap>,
}

impl GatewayHttp {
    fn request(
        &self,
        method: reqwest::Method,
        uri: &str,
        session_id: Option<&str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<reqwest::RequestBuilder> {
        let mut request = self
            .http
            .request(method, uri)
            .headers((*self.headers).clone());
        for (name, value) in custom_headers {
            request = request.header(name, value);
        }
        if let Some(token) = auth_header {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                StreamableHttpError::UnexpectedServerResponse("invalid auth header".into())
            })?;
            value.set_sensitive(true);
            request = request.header(http::header::AUTHORIZATION, value);
        }
        if let Some(session_id) = session_id {
            request = request.header("mcp-session-id", session_id);
        }
        Ok(request)
    }
}

fn status_error(response: &reqwest::Response) -> StreamableHttpError<GatewayHttpError> {
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        return StreamableHttpError::AuthRequired(AuthRequiredError::new(challenge));
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    StreamableHttpError::HttpStatus(HttpStatusError::new(status.as_u16(), retry_after))
}

fn media_type_is(response: &reqwest::Response, expected: &str) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(expected))
}

async fn read_bounded(mut response: reqwest::Response, max_size: usize) -> HttpResult<Vec<u8>> {
    if response
        .content_length()
        .is_some_and(|length| length > max_size as u64)
    {
        return Err(StreamableHttpError::ResponseBodyTooLarge { max_size });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(request_error)? {
        if chunk.len() > max_size - body.len() {
            return Err(StreamableHttpError::ResponseBodyTooLarge { max_size });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Counts the bytes of the SSE event being received, so one event cannot grow without bound.
struct SseEventLimit {
    max_size: usize,
    event_size: usize,
    line_size: usize,
    previous_was_cr: bool,
}

impl SseEventLimit {
    /// `false` once the current event is over the limit.
    fn observe(&mut self, chunk: &[u8]) -> bool {
        for &byte in chunk {
            let previous_was_cr = std::mem::replace(&mut self.previous_was_cr, byte == b'\r');
            match byte {
                b'\n' if previous_was_cr => {}
                b'\r' | b'\n' => {
                    if self.line_size == 0 {
                        self.event_size = 0;
                    } else {
                        self.event_size = self.event_size.saturating_add(self.line_size + 1);
                    }
                    self.line_size = 0;
                }
                _ => self.line_size = self.line_size.saturating_add(1),
            }
            if self.event_size.saturating_add(self.line_size) > self.max_size {
                return false;
            }
        }
        true
    }
}

fn sse_events(
    response: reqwest::Response,
    max_size: usize,
) -> BoxStream<'static, Result<Sse, SseError>> {
    let mut limit = SseEventLimit {
        max_size,
        event_size: 0,
        line_size: 0,
        previous_was_cr: false,
    };
    let bytes = response.bytes_stream().scan(false, move |failed, item| {
        let item: Option<Result<Bytes, GatewayHttpError>> = if *failed {
            None
        } else {
            Some(match item {
                Ok(chunk) if limit.observe(&chunk) => Ok(chunk),
                Ok(_) => {
                    *failed = true;
                    Err(GatewayHttpError::EventTooLarge { max_size })
                }
                Err(error) => {
                    *failed = true;
                    Err(GatewayHttpError::Request(error.without_url()))
                }
            })
        };
        std::future::ready(item)
    });
    SseStream::from_bytes_stream(bytes).boxed()
}

impl StreamableHttpClient for GatewayHttp {
    type Error = GatewayHttpError;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<StreamableHttpPostResponse> {
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            StreamableHttpResponseLimits::default(),
        )
        .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> HttpResult<StreamableHttpPostResponse> {
        let mut limits = StreamableHttpResponseLimits::default();
        limits.max_sse_event_size = max_sse_event_size;
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            limits,
        )
        .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> HttpResult<StreamableHttpPostResponse> {
        // A notification, response or error leaves nothing to wait for.
        let awaits_no_response = !matches!(message, JsonRpcMessage::Request(_));
        let body = serde_json::to_vec(&message)?;
        let session_was_attached = session_id.is_some();
        let response = self
            .request(
                reqwest::Method::POST,
                &uri,
                session_id.as_deref(),
                auth_header,
                custom_headers,
            )?
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status();
        if matches!(status, StatusCode::ACCEPTED | StatusCode::NO_CONTENT) {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status == StatusCode::NOT_FOUND && session_was_attached {
            return Err(StreamableHttpError::SessionExpired);
        }
        let new_session_id = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let is_json = media_type_is(&response, "application/json");
        if !status.is_success() {
            // A JSON-RPC error in a 4xx/5xx body is the server's answer to the request; anything
            // else is reported by status alone (a body may echo what we sent).
            let error = status_error(&response);
            if is_json && !matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                let body = read_bounded(response, limits.max_json_response_size).await?;
                if let Ok(message @ JsonRpcMessage::Error(_)) =
                    serde_json::from_slice::<ServerJsonRpcMessage>(&body)
                {
                    return Ok(StreamableHttpPostResponse::Json(message, new_session_id));
                }
            }
            return Err(error);
        }
        if awaits_no_response && response.content_length() == Some(0) {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if media_type_is(&response, "text/event-stream") {
            return Ok(StreamableHttpPostResponse::Sse(
                sse_events(response, limits.max_sse_event_size),
                new_session_id,
            ));
        }
        if is_json {
            let body = read_bounded(response, limits.max_json_response_size).await?;
            return match serde_json::from_slice::<ServerJsonRpcMessage>(&body) {
                Ok(message) => Ok(StreamableHttpPostResponse::Json(message, new_session_id)),
                Err(_) if awaits_no_response => Ok(StreamableHttpPostResponse::Accepted),
                Err(error) => Err(StreamableHttpError::UnexpectedServerResponse(
                    format!("response is not a JSON-RPC message: {error}").into(),
                )),
            };
        }
        if awaits_no_response {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        Err(StreamableHttpError::UnexpectedContentType(content_type))
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<()> {
        let response = self
            .request(
                reqwest::Method::DELETE,
                &uri,
                Some(&session_id),
                auth_header,
                custom_headers,
            )?
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status();
        if status.is_success() || status == StatusCode::METHOD_NOT_ALLOWED {
            Ok(())
        } else {
            Err(status_error(&response))
        }
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<BoxStream<'static, Result<Sse, SseError>>> {
        self.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            StreamableHttpResponseLimits::default().max_sse_event_size,
        )
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> HttpResult<BoxStream<'static, Result<Sse, SseError>>> {
        let mut request = self
            .request(
                reqwest::Method::GET,
                &uri,
                session_id.as_deref(),
                auth_header,
                custom_headers,
            )?
            .header(ACCEPT, "text/event-stream");
        if let Some(last_event_id) = last_event_id {
            request = request.header("last-event-id", last_event_id);
        }
        let response = request.send().await.map_err(request_error)?;
        let status = response.status();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            return Err(StreamableHttpError::ServerDoesNotSupportSse);
        }
        if !status.is_success() {
            return Err(status_error(&response));
        }
        if !media_type_is(&response, "text/event-stream") {
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            return Err(StreamableHttpError::UnexpectedContentType(content_type));
        }
        Ok(sse_events(response, max_sse_event_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_limit_counts_one_event_at_a_time() {
        let mut limit = SseEventLimit {
            max_size: 16,
            event_size: 0,
            line_size: 0,
            previous_was_cr: false,
        };
        assert!(limit.observe(b"data: 0123456\n\n"));
        assert!(limit.observe(b"data: 0123456\r\n\r\n"));
        assert!(!limit.observe(b"data: 0123456789abcdef\n"));
    }

    #[test]
    fn config_debug_hides_header_values_and_query() {
        let config = McpEndpoint {
            name: "s".into(),
            url: "https://u:pw@h/mcp?token=abc".into(),
            headers: vec![("Authorization".into(), "Bearer sekrit".into())],
        };
        let text = format!("{config:?}");
        assert!(
            !text.contains("sekrit") && !text.contains("abc") && !text.contains("pw"),
            "{text}"
        );
        assert!(text.contains("https://h/mcp"), "{text}");
    }

    #[test]
    fn reserved_and_invalid_headers_are_refused_without_echoing_values() {
        let config = |headers: Vec<(String, String)>| McpEndpoint {
            name: "s".into(),
            url: "http://127.0.0.1:1/mcp".into(),
            headers,
        };
        let reserved = build_headers(&config(vec![("Mcp-Session-Id".into(), "x".into())]));
        assert!(matches!(reserved, Err(McpError::Config { .. })));
        let bad = build_headers(&config(vec![(
            "Authorization".into(),
            "Bearer a\nb".into(),
        )]))
        .map(|_| ())
        .map_err(|e| e.to_string());
        assert!(
            matches!(&bad, Err(text) if !text.contains("Bearer")),
            "{bad:?}"
        );
    }
}
