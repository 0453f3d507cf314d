//! Every configured MCP server's tools, kept current, and their calls.
//!
//! Start-up waits for each server's first listing, at most 5 s each (all at once). A server
//! that is down or slow then is retried in the background (every 30 s at most) and its tools
//! appear once listed; lists are refreshed every 5 minutes and whenever the server says its list
//! changed. An MCP server never stops the gateway from starting or serving.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aibridge_protocol::{Api, RenderedTools, ToolSpec};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::client::{McpConnection, McpEndpoint, McpTool, redacted_url};
use crate::config::{McpServerConfig, McpSettings};

/// Prefix of every injected tool's name: `bmcp_<server>_<tool>`.
pub use aibridge_protocol::GATEWAY_TOOL_PREFIX as TOOL_PREFIX;

/// Providers refuse tool names longer than this.
const MAX_TOOL_NAME: usize = 64;

const FIRST_LISTING: Duration = Duration::from_secs(5);
const LIST_TIMEOUT: Duration = Duration::from_secs(10);
const REFRESH_EVERY: Duration = Duration::from_secs(300);
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How long one tool call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A tool as injected: the id the model calls, and where it really lives.
#[derive(Debug, Clone)]
pub struct InjectedTool {
    pub spec: ToolSpec,
    pub server: String,
    pub server_url: String,
    /// The tool's own name on its server.
    pub tool: String,
}

/// What calling an injected tool came to.
#[derive(Debug, Clone)]
pub struct ToolCallResult {
    pub text: String,
    pub is_error: bool,
    pub duration: Duration,
    /// The server and the tool's own name, when the id named a known tool.
    pub server: Option<String>,
    pub tool: Option<String>,
}

#[derive(Debug)]
struct Server {
    config: McpServerConfig,
    connection: RwLock<Option<Arc<McpConnection>>>,
    tools: RwLock<Arc<Vec<InjectedTool>>>,
    /// The catalogue's generation, bumped when this server's list is replaced.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Debug)]
pub struct McpTools {
    servers: Vec<Arc<Server>>,
    pub max_iterations: u32,
    stop: CancellationToken,
    /// Bumped whenever a server's list changes: the rendered tools below are then stale.
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// The tools rendered for each API, as of a generation (rendering them for every request
    /// would cost more than the rest of the request).
    rendered: RwLock<Vec<(Api, u64, Arc<RenderedTools>)>>,
}

impl McpTools {
    /// Connects to every server (at most 5 s each, together) and keeps them current in the
    /// background until `shutdown`.
    pub async fn start(client: reqwest::Client, settings: &McpSettings) -> Arc<Self> {
        let stop = CancellationToken::new();
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let servers: Vec<Arc<Server>> = settings
            .servers
            .iter()
            .map(|config| {
                Arc::new(Server {
                    config: config.clone(),
                    connection: RwLock::new(None),
                    tools: RwLock::new(Arc::new(Vec::new())),
                    generation: generation.clone(),
                })
            })
            .collect();
        let first = servers.iter().map(|server| {
            let (server, client) = (server.clone(), client.clone());
            async move {
                match tokio::time::timeout(FIRST_LISTING, refresh(&server, &client)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(mcp_server = %server.config.name, error = %e, "MCP server not listed at start: retrying in the background"),
                    Err(_) => tracing::warn!(mcp_server = %server.config.name, "MCP server did not list its tools within 5 s: retrying in the background"),
                }
            }
        });
        futures_util::future::join_all(first).await;
        for server in &servers {
            tokio::spawn(keep_current(server.clone(), client.clone(), stop.clone()));
        }
        Arc::new(Self {
            servers,
            max_iterations: settings.max_iterations,
            stop,
            generation,
            rendered: RwLock::new(Vec::new()),
        })
    }

    /// No servers configured: nothing is injected.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Every injected tool rendered for `api`, as listed now (rendered once per list change).
    pub fn rendered(&self, api: Api) -> Arc<RenderedTools> {
        let now = self.generation.load(std::sync::atomic::Ordering::Acquire);
        if let Ok(cache) = self.rendered.read()
            && let Some((_, _, tools)) = cache.iter().find(|(a, g, _)| *a == api && *g == now)
        {
            return tools.clone();
        }
        let specs: Vec<ToolSpec> = self.tools().into_iter().map(|tool| tool.spec).collect();
        let tools = Arc::new(api.render_tools(&specs));
        if let Ok(mut cache) = self.rendered.write() {
            cache.retain(|(a, _, _)| *a != api);
            cache.push((api, now, tools.clone()));
        }
        tools
    }

    /// Every injected tool of every server, as listed now.
    pub fn tools(&self) -> Vec<InjectedTool> {
        self.servers
            .iter()
            .flat_map(|server| {
                let tools = server
                    .tools
                    .read()
                    .map(|tools| tools.clone())
                    .unwrap_or_default();
                tools.as_ref().clone()
            })
            .collect()
    }

    /// Calls the injected tool `id` (as the model named it) with `arguments` (JSON text). An
    /// unknown id, arguments that are not a JSON object, a server that is down: all come back
    /// as errors for the model, never as a failure of the request.
    pub async fn call(&self, id: &str, arguments: &str) -> ToolCallResult {
        let started = Instant::now();
        let found = self.servers.iter().find_map(|server| {
            let tools = server.tools.read().ok()?.clone();
            tools
                .iter()
                .find(|tool| tool.spec.name == id)
                .map(|tool| (server.clone(), tool.tool.clone()))
        });
        let Some((server, tool)) = found else {
            return ToolCallResult {
                text: format!("Error: tool {id} not found"),
                is_error: true,
                duration: started.elapsed(),
                server: None,
                tool: None,
            };
        };
        let arguments: Value = match serde_json::from_str(if arguments.trim().is_empty() {
            "{}"
        } else {
            arguments
        }) {
            Ok(value @ Value::Object(_)) => value,
            _ => {
                return ToolCallResult {
                    text: "Error: the arguments are not a JSON object".into(),
                    is_error: true,
                    duration: started.elapsed(),
                    server: Some(server.config.name.clone()),
                    tool: Some(tool),
                };
            }
        };
        let connection = server.connection.read().ok().and_then(|c| c.clone());
        let outcome = match connection {
            Some(connection) => connection.call_tool(&tool, arguments, CALL_TIMEOUT).await,
            None => Err(super::client::McpError::Closed {
                server: server.config.name.clone(),
            }),
        };
        let (text, is_error) = match outcome {
            Ok(result) => (result.text, result.is_error),
            Err(e) => (format!("Error: calling tool: {e}"), true),
        };
        ToolCallResult {
            text,
            is_error,
            duration: started.elapsed(),
            server: Some(server.config.name.clone()),
            tool: Some(tool),
        }
    }

    /// Calls the injected tool `id` as `call` does, in a trace span of its own, and says what
    /// it came to for the record.
    pub async fn run(
        &self,
        id: &str,
        arguments: &str,
    ) -> (ToolCallResult, aibridge_store::ToolRun) {
        let span = tracing::info_span!(
            "mcp_tool_call",
            otel.name = %format_args!("execute_tool {id}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = %id,
            mcp.server = tracing::field::Empty,
        );
        let result = self.call(id, arguments).instrument(span.clone()).await;
        if let Some(server) = &result.server {
            span.record("mcp.server", server.as_str());
        }
        if result.is_error {
            span.record("otel.status_code", "error");
        }
        // A tool the gateway does not know (not listed, or denied) is answered with an error
        // and recorded with no server.
        let server = result.server.as_deref().unwrap_or_default();
        let run = aibridge_store::ToolRun {
            server_name: server.to_string(),
            server_url: self
                .servers
                .iter()
                .find(|s| s.config.name == server)
                .map(|s| redacted_url(&s.config.url))
                .unwrap_or_default(),
            tool_name: result.tool.clone().unwrap_or_else(|| id.to_string()),
            result: (!result.is_error).then(|| result.text.clone()),
            error: result.is_error.then(|| result.text.clone()),
            duration_ms: i64::try_from(result.duration.as_millis()).unwrap_or(i64::MAX),
        };
        (result, run)
    }

    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

/// Connects if needed and lists the server's tools.
async fn refresh(server: &Server, client: &reqwest::Client) -> Result<(), super::client::McpError> {
    let current = server.connection.read().ok().and_then(|c| c.clone());
    let connection = match current {
        Some(connection) if !connection.is_closed() => connection,
        _ => {
            let endpoint = McpEndpoint {
                name: server.config.name.clone(),
                url: server.config.url.clone(),
                headers: server.config.headers.clone(),
            };
            let connection =
                Arc::new(McpConnection::connect(client.clone(), &endpoint, LIST_TIMEOUT).await?);
            if let Ok(mut slot) = server.connection.write() {
                *slot = Some(connection.clone());
            }
            connection
        }
    };
    let listed = connection.list_tools(LIST_TIMEOUT).await?;
    let tools = injected(&server.config, &listed);
    tracing::info!(mcp_server = %server.config.name, tools = tools.len(), "MCP tools listed");
    if let Ok(mut slot) = server.tools.write() {
        *slot = Arc::new(tools);
    }
    server
        .generation
        .fetch_add(1, std::sync::atomic::Ordering::Release);
    Ok(())
}

/// Relists on the server's notice, every 5 minutes, and after a failure with back-off.
async fn keep_current(server: Arc<Server>, client: reqwest::Client, stop: CancellationToken) {
    let mut retry = RETRY_FIRST;
    loop {
        let healthy = server
            .connection
            .read()
            .ok()
            .and_then(|c| c.clone())
            .filter(|c| !c.is_closed());
        let wait = match &healthy {
            Some(connection) => {
                let mut changed = connection.tools_changed();
                tokio::select! {
                    () = stop.cancelled() => return,
                    notice = changed.changed() => match notice {
                        Ok(()) => Duration::ZERO,
                        // The session's notices have ended: reconnect (after the back-off, so
                        // a server that drops every session is not hammered).
                        Err(_) => {
                            if let Ok(mut slot) = server.connection.write() {
                                *slot = None;
                            }
                            retry
                        }
                    },
                    () = tokio::time::sleep(REFRESH_EVERY) => Duration::ZERO,
                }
            }
            None => retry,
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        match refresh(&server, &client).await {
            Ok(()) => retry = RETRY_FIRST,
            Err(e) => {
                tracing::warn!(mcp_server = %server.config.name, error = %e, retry_secs = retry.as_secs(), "MCP server unreachable");
                if let Ok(mut slot) = server.connection.write() {
                    *slot = None;
                }
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// The tools of `listed` the filter admits, named `bmcp_<server>_<tool>`; names over 64
/// characters are skipped (providers refuse them).
fn injected(config: &McpServerConfig, listed: &[McpTool]) -> Vec<InjectedTool> {
    listed
        .iter()
        .filter(|tool| config.tools.admits(&tool.name))
        .filter_map(|tool| {
            let id = format!("{TOOL_PREFIX}{}_{}", config.name, tool.name);
            if id.len() > MAX_TOOL_NAME {
                tracing::warn!(mcp_server = %config.name, tool = %tool.name, "MCP tool skipped: its name would be over 64 characters");
                return None;
            }
            Some(InjectedTool {
                spec: ToolSpec {
                    name: id,
                    description: tool.description.clone(),
                    input_schema: tool.input_schema.clone(),
                },
                server: config.name.clone(),
                server_url: config.url.clone(),
                tool: tool.name.clone(),
            })
        })
        .collect()
}
