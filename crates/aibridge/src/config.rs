//! Configuration: an optional TOML file, then the `AIBRIDGE_*` environment variables of the
//! interface contract on top (the environment wins), then validation that names the field at
//! fault. Keys are never echoed back: problems with a key name its position, not its value.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aibridge_keypool::ApiKey;
use serde::Deserialize;

use crate::bedrock::{BedrockCredential, BedrockSettings};
use crate::breaker::BreakerSettings;
use crate::provider::{KeyScope, ProviderKind};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://aibridge.db";
/// Matches the reference's limit; larger bodies get 413.
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Names that cannot be provider names because the gateway serves its own routes there.
const RESERVED_NAMES: &[&str] = &["api", "healthz", "readyz", "metrics", "ui", "dashboard"];

/// Whether requests must carry a gateway token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every request needs a gateway token issued by this gateway.
    Tokens,
    /// No token is checked; every request is the user `local`.
    None,
}

/// Where key state (cooldowns, disabled keys) lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStateBackend {
    Memory,
    /// Shared by every replica given the same URL.
    Redis {
        url: String,
        /// Bound of every Redis call.
        timeout: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    /// Whether requests are recorded (users and tokens live in the database either way).
    pub record_requests: bool,
    /// Tell the upstream which user a pool-paid request is for (`X-AI-Bridge-Actor-*`).
    pub send_actor_headers: bool,
    pub key_state: KeyStateBackend,
    pub auth: AuthMode,
    /// How long in-flight requests and streams may run on after SIGTERM / Ctrl-C.
    pub shutdown_timeout: Duration,
    pub max_request_body_bytes: usize,
    pub upstream: UpstreamSettings,
    pub key_pool: KeyPoolSettings,
    /// `[circuit_breaker]`: off when absent.
    pub circuit_breaker: Option<BreakerSettings>,
    /// `AIBRIDGE_APIDUMP_DIR`: every upstream attempt is dumped there.
    pub apidump_dir: Option<PathBuf>,
    /// `[[mcp_servers]]` and `[mcp]`: tools injected into bridged requests.
    pub mcp: McpSettings,
    pub providers: Vec<ProviderConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// Whole-request limit for blocking calls.
    pub request_timeout: Duration,
    /// A stream's (and a passthrough answer's) response head and first event must come within
    /// this.
    pub first_byte_timeout: Duration,
    /// Longest silence tolerated between two events of a stream (two chunks of a passthrough
    /// answer).
    pub stream_idle_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPoolSettings {
    /// Cooldown after a 429 that carried no usable hint.
    pub default_cooldown: Duration,
    /// Upper bound of any cooldown, whatever the provider asked.
    pub max_cooldown: Duration,
    /// First re-validation of a disabled key, doubling up to `probe_max_interval`.
    pub probe_initial_interval: Duration,
    pub probe_max_interval: Duration,
}

#[derive(Clone, PartialEq)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// Without a trailing slash.
    pub base_url: String,
    /// Priority order: the first key serves while it is healthy.
    pub keys: Vec<ApiKey>,
    /// What each key (same order) is scoped to; sent with it.
    pub key_scopes: Vec<KeyScope>,
    /// `type = "bedrock"`: region, models and the credentials behind `keys`.
    pub bedrock: Option<Arc<BedrockSettings>>,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field(
                "keys",
                &self.keys.iter().map(ApiKey::hint).collect::<Vec<_>>(),
            )
            .field("key_scopes", &self.key_scopes)
            .field("bedrock", &self.bedrock)
            .finish()
    }
}

/// The MCP servers whose tools are injected, and the inner loop's bound.
#[derive(Debug, Clone, PartialEq)]
pub struct McpSettings {
    /// Upstream calls per client request (initial call included); past it, an error.
    pub max_iterations: u32,
    pub servers: Vec<McpServerConfig>,
}

/// One `[[mcp_servers]]` entry.
#[derive(Clone, PartialEq)]
pub struct McpServerConfig {
    /// `[a-z0-9-]+`: the model sees `bmcp_<name>_<tool>`.
    pub name: String,
    /// Streamable HTTP endpoint.
    pub url: String,
    /// Whole header values sent on every MCP request (secrets: never shown).
    pub headers: Vec<(String, String)>,
    pub tools: ToolFilter,
}

impl std::fmt::Debug for McpServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServerConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .field("tools", &self.tools)
            .finish()
    }
}

/// Which of a server's tools are injected: a tool's own name must match `allow` (when given)
/// and must not match `deny` (deny wins).
#[derive(Debug, Clone, Default)]
pub struct ToolFilter {
    pub allow: Option<regex::Regex>,
    pub deny: Option<regex::Regex>,
}

impl ToolFilter {
    pub fn admits(&self, tool: &str) -> bool {
        self.allow.as_ref().is_none_or(|allow| allow.is_match(tool))
            && !self.deny.as_ref().is_some_and(|deny| deny.is_match(tool))
    }
}

impl PartialEq for ToolFilter {
    fn eq(&self, other: &Self) -> bool {
        let pattern = |r: &Option<regex::Regex>| r.as_ref().map(|r| r.as_str().to_string());
        pattern(&self.allow) == pattern(&other.allow) && pattern(&self.deny) == pattern(&other.deny)
    }
}

/// One thing wrong with the configuration, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n{}", list(.0))]
    Invalid(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---- the file format -------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    record_requests: Option<bool>,
    send_actor_headers: Option<bool>,
    key_state_url: Option<String>,
    key_state_timeout: Option<String>,
    auth: Option<String>,
    shutdown_timeout: Option<String>,
    max_request_body_bytes: Option<usize>,
    #[serde(default)]
    upstream: FileUpstream,
    #[serde(default)]
    key_pool: FileKeyPool,
    circuit_breaker: Option<FileCircuitBreaker>,
    apidump_dir: Option<PathBuf>,
    #[serde(default)]
    mcp_servers: Vec<FileMcpServer>,
    #[serde(default)]
    mcp: FileMcp,
    providers: Option<Vec<FileProvider>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMcpServer {
    name: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, SecretSource>,
    tool_allow: Option<String>,
    tool_deny: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMcp {
    max_iterations: Option<u32>,
}

/// A secret written in the file, or `{ env = "VAR" }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SecretSource {
    Literal(String),
    Env { env: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCircuitBreaker {
    failure_threshold: Option<u32>,
    open_for: Option<String>,
    half_open_max_requests: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstream {
    connect_timeout: Option<String>,
    request_timeout: Option<String>,
    first_byte_timeout: Option<String>,
    stream_idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeyPool {
    default_cooldown: Option<String>,
    max_cooldown: Option<String>,
    probe_initial_interval: Option<String>,
    probe_max_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProvider {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    base_url: Option<String>,
    #[serde(default)]
    keys: Vec<KeySource>,
    /// Name of an environment variable holding a comma-separated list of keys.
    keys_env: Option<String>,
    /// Bedrock only: the AWS region (signing, default endpoint).
    region: Option<String>,
    /// Bedrock only: client model name → Bedrock model id.
    models: Option<BTreeMap<String, String>>,
    /// Bedrock only: the model id for client models not in `models`.
    default_model: Option<String>,
    /// Bedrock only: the credentials pool, in priority order.
    #[serde(default)]
    credentials: Vec<FileCredential>,
}

/// One Bedrock credential: an access key pair (and session token), or a Bedrock API key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCredential {
    access_key_id: Option<SecretSource>,
    secret_access_key: Option<SecretSource>,
    session_token: Option<SecretSource>,
    api_key: Option<SecretSource>,
}

/// A key written in the file, or a table: `{ env = "VAR" }` (the key from the environment, so
/// secrets need not be written in the file) or `{ key = "…" }`, either with the OpenAI
/// `organization` / `project` the key belongs to (sent with it, never the client's).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum KeySource {
    Literal(String),
    Table(KeyTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyTable {
    key: Option<String>,
    env: Option<String>,
    organization: Option<String>,
    project: Option<String>,
}

/// Reads environment variables; injectable so tests do not touch the process environment.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Environment for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl Config {
    /// Loads `path` (if any) and applies the environment.
    pub fn load(path: Option<&Path>, env: &dyn Environment) -> Result<Self, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::parse_file(&text, path)?
            }
            None => FileConfig::default(),
        };
        Self::build(file, env)
    }

    /// Parses TOML text (used by `load` and by tests of example files).
    pub fn from_toml(
        text: &str,
        origin: &Path,
        env: &dyn Environment,
    ) -> Result<Self, ConfigError> {
        Self::build(Self::parse_file(text, origin)?, env)
    }

    fn parse_file(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    fn build(file: FileConfig, env: &dyn Environment) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut p = Checker {
            problems: &mut problems,
        };

        let listen_raw = env_or(
            env,
            "AIBRIDGE_LISTEN",
            file.listen,
            "listen",
            DEFAULT_LISTEN,
        );
        let listen = p.check(
            &listen_raw.1,
            listen_raw
                .0
                .parse::<SocketAddr>()
                .map_err(|_| format!("`{}` is not an address like 127.0.0.1:8080", listen_raw.0)),
        );

        let (database_url, database_field) = env_or(
            env,
            "AIBRIDGE_DATABASE_URL",
            file.database_url,
            "database_url",
            DEFAULT_DATABASE_URL,
        );
        if !(database_url.starts_with("sqlite://")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            p.push(
                &database_field,
                "must start with sqlite:// or postgres://".to_string(),
            );
        }

        let record_requests = match env.var("AIBRIDGE_RECORDING").as_deref().map(str::trim) {
            None => file.record_requests.unwrap_or(true),
            Some("on") => true,
            Some("off") => false,
            Some(other) => {
                p.push(
                    "AIBRIDGE_RECORDING",
                    format!("`{other}` is neither `on` nor `off`"),
                );
                true
            }
        };

        let (key_state_url, key_state_field) = env_or(
            env,
            "AIBRIDGE_KEY_STATE_URL",
            file.key_state_url,
            "key_state_url",
            "memory",
        );
        let key_state_timeout = p.duration(
            "key_state_timeout",
            file.key_state_timeout.as_deref(),
            "500ms",
        );
        let key_state = match key_state_url.as_str() {
            "memory" => Some(KeyStateBackend::Memory),
            url if url.starts_with("redis://") => match redis_url_problem(url) {
                None => Some(KeyStateBackend::Redis {
                    url: url.to_string(),
                    timeout: key_state_timeout,
                }),
                Some(problem) => {
                    p.push(&key_state_field, problem);
                    None
                }
            },
            url if url.starts_with("rediss://") => {
                p.push(
                    &key_state_field,
                    "TLS to Redis (rediss://) is not supported; use redis:// on a private network"
                        .to_string(),
                );
                None
            }
            other => {
                p.push(
                    &key_state_field,
                    format!("`{other}` is neither `memory` nor a redis:// URL"),
                );
                None
            }
        };

        let (auth_raw, auth_field) = env_or(env, "AIBRIDGE_AUTH", file.auth, "auth", "tokens");
        let auth = match auth_raw.as_str() {
            "tokens" => Some(AuthMode::Tokens),
            "none" => Some(AuthMode::None),
            other => {
                p.push(
                    &auth_field,
                    format!("`{other}` is neither `tokens` nor `none`"),
                );
                None
            }
        };

        let shutdown_timeout =
            p.duration("shutdown_timeout", file.shutdown_timeout.as_deref(), "30s");
        let max_request_body_bytes = file
            .max_request_body_bytes
            .unwrap_or(DEFAULT_MAX_REQUEST_BODY_BYTES);
        if max_request_body_bytes == 0 {
            p.push(
                "max_request_body_bytes",
                "must be greater than 0".to_string(),
            );
        }

        let upstream = UpstreamSettings {
            connect_timeout: p.duration(
                "upstream.connect_timeout",
                file.upstream.connect_timeout.as_deref(),
                "10s",
            ),
            request_timeout: p.duration(
                "upstream.request_timeout",
                file.upstream.request_timeout.as_deref(),
                "600s",
            ),
            first_byte_timeout: p.duration(
                "upstream.first_byte_timeout",
                file.upstream.first_byte_timeout.as_deref(),
                "120s",
            ),
            stream_idle_timeout: p.duration(
                "upstream.stream_idle_timeout",
                file.upstream.stream_idle_timeout.as_deref(),
                "300s",
            ),
        };
        let key_pool = KeyPoolSettings {
            default_cooldown: p.duration(
                "key_pool.default_cooldown",
                file.key_pool.default_cooldown.as_deref(),
                "60s",
            ),
            max_cooldown: p.duration(
                "key_pool.max_cooldown",
                file.key_pool.max_cooldown.as_deref(),
                "1h",
            ),
            probe_initial_interval: p.duration(
                "key_pool.probe_initial_interval",
                file.key_pool.probe_initial_interval.as_deref(),
                "60s",
            ),
            probe_max_interval: p.duration(
                "key_pool.probe_max_interval",
                file.key_pool.probe_max_interval.as_deref(),
                "1h",
            ),
        };
        if key_pool.max_cooldown < key_pool.default_cooldown {
            p.push(
                "key_pool.max_cooldown",
                "must not be shorter than key_pool.default_cooldown".to_string(),
            );
        }
        if key_pool.probe_max_interval < key_pool.probe_initial_interval {
            p.push(
                "key_pool.probe_max_interval",
                "must not be shorter than key_pool.probe_initial_interval".to_string(),
            );
        }

        let circuit_breaker = file.circuit_breaker.map(|breaker| {
            let settings = BreakerSettings {
                failure_threshold: breaker.failure_threshold.unwrap_or(5),
                open_for: p.duration(
                    "circuit_breaker.open_for",
                    breaker.open_for.as_deref(),
                    "30s",
                ),
                half_open_max_requests: breaker.half_open_max_requests.unwrap_or(1),
            };
            for (field, value) in [
                (
                    "circuit_breaker.failure_threshold",
                    settings.failure_threshold,
                ),
                (
                    "circuit_breaker.half_open_max_requests",
                    settings.half_open_max_requests,
                ),
            ] {
                if value == 0 {
                    p.push(field, "must be at least 1".to_string());
                }
            }
            settings
        });

        let apidump_dir = env
            .var("AIBRIDGE_APIDUMP_DIR")
            .map(|dir| dir.trim().to_string())
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or(file.apidump_dir);

        let mcp = build_mcp(file.mcp_servers, file.mcp, env, &mut p);

        let providers = build_providers(file.providers, env, &mut p);

        match (listen, key_state, auth) {
            (Some(listen), Some(key_state), Some(auth)) if problems.is_empty() => Ok(Config {
                listen,
                database_url,
                record_requests,
                send_actor_headers: file.send_actor_headers.unwrap_or(false),
                key_state,
                auth,
                shutdown_timeout,
                max_request_body_bytes,
                upstream,
                key_pool,
                circuit_breaker,
                apidump_dir,
                mcp,
                providers,
            }),
            _ => Err(ConfigError::Invalid(problems)),
        }
    }
}

/// What is wrong with a `redis://HOST:PORT[/DB]` URL, if anything (the password never shown).
fn redis_url_problem(url: &str) -> Option<String> {
    let mut parsed = match reqwest::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(e) => return Some(format!("not a redis://HOST:PORT[/DB] URL ({e})")),
    };
    let no_host = parsed.host_str().is_none_or(str::is_empty);
    let db = parsed.path().trim_start_matches('/').to_string();
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if no_host {
        Some(format!("`{parsed}` has no host"))
    } else if !db.is_empty() && db.parse::<u32>().is_err() {
        Some(format!("`{parsed}`: the path must be a database number"))
    } else {
        None
    }
}

/// The environment variable if set (naming it as the field), else the file value, else a default.
fn env_or(
    env: &dyn Environment,
    var: &str,
    file_value: Option<String>,
    field: &str,
    default: &str,
) -> (String, String) {
    match env.var(var) {
        Some(v) => (v.trim().to_string(), var.to_string()),
        None => (
            file_value.unwrap_or_else(|| default.to_string()),
            field.to_string(),
        ),
    }
}

struct Checker<'a> {
    problems: &'a mut Vec<Problem>,
}

impl Checker<'_> {
    fn push(&mut self, field: &str, message: String) {
        self.problems.push(Problem {
            field: field.to_string(),
            message,
        });
    }

    fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.push(field, message)).ok()
    }

    fn duration(&mut self, field: &str, value: Option<&str>, default: &str) -> Duration {
        let raw = value.unwrap_or(default);
        match humantime::parse_duration(raw) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.push(field, "must be longer than zero".to_string());
                Duration::from_secs(1)
            }
            Err(e) => {
                self.push(
                    field,
                    format!("`{raw}` is not a duration like 30s, 500ms or 1h ({e})"),
                );
                Duration::from_secs(1)
            }
        }
    }
}

fn build_mcp(
    servers: Vec<FileMcpServer>,
    mcp: FileMcp,
    env: &dyn Environment,
    p: &mut Checker<'_>,
) -> McpSettings {
    let max_iterations = mcp.max_iterations.unwrap_or(16);
    if max_iterations == 0 {
        p.push("mcp.max_iterations", "must be at least 1".to_string());
    }
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, server) in servers.into_iter().enumerate() {
        let at = format!("mcp_servers[{i}]");
        if !valid_mcp_name(&server.name) {
            p.push(
                &format!("{at}.name"),
                format!(
                    "`{}` must be lowercase letters, digits and `-`",
                    server.name
                ),
            );
        } else if !names.insert(server.name.clone()) {
            p.push(
                &format!("{at}.name"),
                format!("`{}` is used by another MCP server", server.name),
            );
        }
        match reqwest::Url::parse(&server.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => p.push(
                &format!("{at}.url"),
                format!("`{}` is not an http:// or https:// URL", server.url),
            ),
        }
        let mut headers = Vec::new();
        for (name, source) in server.headers {
            let field = format!("{at}.headers.{name}");
            let value = match source {
                SecretSource::Literal(value) => Some(value),
                SecretSource::Env { env: var } => {
                    let value = env.var(&var);
                    if value.is_none() {
                        p.push(&field, format!("environment variable {var} is not set"));
                    }
                    value
                }
            };
            let Some(value) = value else { continue };
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push(&field, "not a valid header name".to_string());
            } else if http::HeaderValue::from_str(&value).is_err() {
                // The value is a secret: say what is wrong, never what it is.
                p.push(&field, "the value is not a valid header value".to_string());
            } else {
                headers.push((name, value));
            }
        }
        let mut pattern = |field: &str, text: Option<String>| {
            text.and_then(|text| match regex::Regex::new(&text) {
                Ok(regex) => Some(regex),
                Err(e) => {
                    p.push(
                        &format!("{at}.{field}"),
                        format!("not a regular expression: {e}"),
                    );
                    None
                }
            })
        };
        let tools = ToolFilter {
            allow: pattern("tool_allow", server.tool_allow),
            deny: pattern("tool_deny", server.tool_deny),
        };
        out.push(McpServerConfig {
            name: server.name,
            url: server.url,
            headers,
            tools,
        });
    }
    McpSettings {
        max_iterations,
        servers: out,
    }
}

fn valid_mcp_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn build_providers(
    file: Option<Vec<FileProvider>>,
    env: &dyn Environment,
    p: &mut Checker<'_>,
) -> Vec<ProviderConfig> {
    let mut providers = Vec::new();
    // Scopes by the key's field; keys that come from `AIBRIDGE_*_KEYS` have none.
    let mut scopes: HashMap<String, KeyScope> = HashMap::new();
    // Bedrock settings by the provider's field.
    let mut bedrock: HashMap<String, BedrockSettings> = HashMap::new();
    let file_providers = file.unwrap_or_else(|| {
        // No providers section: one Anthropic and one OpenAI instance under their type's name.
        vec![
            FileProvider {
                name: None,
                kind: "anthropic".into(),
                base_url: None,
                keys: vec![],
                keys_env: None,
                region: None,
                models: None,
                default_model: None,
                credentials: vec![],
            },
            FileProvider {
                name: None,
                kind: "openai".into(),
                base_url: None,
                keys: vec![],
                keys_env: None,
                region: None,
                models: None,
                default_model: None,
                credentials: vec![],
            },
        ]
    });

    for (i, fp) in file_providers.into_iter().enumerate() {
        let at = format!("providers[{i}]");
        let Some(kind) = ProviderKind::parse(&fp.kind) else {
            p.push(
                &format!("{at}.type"),
                format!(
                    "`{}` is not a provider type; expected one of: anthropic, openai, copilot, bedrock",
                    fp.kind
                ),
            );
            continue;
        };
        let name = fp.name.unwrap_or_else(|| kind.as_str().to_string());
        let mut keys = Vec::new();
        let mut base_url = fp.base_url;
        if kind == ProviderKind::Bedrock {
            if !fp.keys.is_empty() || fp.keys_env.is_some() {
                p.push(
                    &format!("{at}.keys"),
                    "bedrock providers take `credentials`, not `keys`".to_string(),
                );
            }
            let settings = build_bedrock(
                &at,
                fp.region,
                fp.models,
                fp.default_model,
                fp.credentials,
                env,
                p,
            );
            if let Some(settings) = settings {
                for (c, credential) in settings.credentials.iter().enumerate() {
                    keys.push((
                        format!("{at}.credentials[{c}]"),
                        credential.pool_key().expose().to_string(),
                    ));
                }
                base_url.get_or_insert_with(|| BedrockSettings::default_base_url(&settings.region));
                bedrock.insert(at.clone(), settings);
            }
        } else if fp.region.is_some()
            || fp.models.is_some()
            || fp.default_model.is_some()
            || !fp.credentials.is_empty()
        {
            p.push(
                &at,
                "`region`, `models`, `default_model` and `credentials` are for bedrock providers only"
                    .to_string(),
            );
        }
        for (k, source) in fp.keys.into_iter().enumerate() {
            let field = format!("{at}.keys[{k}]");
            let table = match source {
                KeySource::Literal(v) => {
                    keys.push((field, v));
                    continue;
                }
                KeySource::Table(table) => table,
            };
            let value = match (table.key, table.env) {
                (Some(value), None) => Some(value),
                (None, Some(var)) => {
                    let value = env.var(&var);
                    if value.is_none() {
                        p.push(&field, format!("environment variable {var} is not set"));
                    }
                    value
                }
                _ => {
                    p.push(&field, "give exactly one of `key` and `env`".to_string());
                    None
                }
            };
            let scope = KeyScope {
                organization: table.organization,
                project: table.project,
            };
            if scope != KeyScope::default() {
                check_scope(&field, kind, &scope, p);
                scopes.insert(field.clone(), scope);
            }
            if let Some(value) = value {
                keys.push((field, value));
            }
        }
        if let Some(var) = fp.keys_env {
            match env.var(&var) {
                Some(list) => keys.extend(split_key_list(&list, &var)),
                None => p.push(
                    &format!("{at}.keys_env"),
                    format!("environment variable {var} is not set"),
                ),
            }
        }
        providers.push((
            at.clone(),
            name,
            kind,
            (
                base_url.unwrap_or_else(|| kind.default_base_url().to_string()),
                format!("{at}.base_url"),
            ),
            keys,
        ));
    }

    // Contract variables: they configure the instance named after the type, creating it if the
    // file did not define one.
    for kind in [ProviderKind::Anthropic, ProviderKind::OpenAi] {
        let Some(prefix) = kind.env_prefix() else {
            continue;
        };
        let keys_var = format!("AIBRIDGE_{prefix}_KEYS");
        let url_var = format!("AIBRIDGE_{prefix}_BASE_URL");
        let env_keys = env.var(&keys_var);
        let env_url = env.var(&url_var);
        if env_keys.is_none() && env_url.is_none() {
            continue;
        }
        let index = match providers
            .iter()
            .position(|(_, name, ..)| name == kind.as_str())
        {
            Some(index) => index,
            None => {
                providers.push((
                    keys_var.clone(),
                    kind.as_str().to_string(),
                    kind,
                    (kind.default_base_url().to_string(), url_var.clone()),
                    vec![],
                ));
                providers.len() - 1
            }
        };
        let entry = &mut providers[index];
        if entry.2 != kind {
            p.push(
                &keys_var,
                format!("provider `{}` is not of type {}", entry.1, kind.as_str()),
            );
            continue;
        }
        if let Some(url) = env_url {
            entry.3 = (url.trim().to_string(), url_var);
        }
        if let Some(list) = env_keys {
            entry.4 = split_key_list(&list, &keys_var);
        }
    }

    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (at, name, kind, (base_url, url_field), keys) in providers {
        if !valid_provider_name(&name) {
            p.push(
                &format!("{at}.name"),
                format!("`{name}` is not a valid provider name: use lower-case letters, digits and single dashes (like `anthropic-eu`)"),
            );
        } else if RESERVED_NAMES.contains(&name.as_str()) {
            p.push(
                &format!("{at}.name"),
                format!("`{name}` is reserved for the gateway's own routes"),
            );
        } else if !names.insert(name.clone()) {
            p.push(
                &format!("{at}.name"),
                format!("provider name `{name}` is used twice"),
            );
        }
        let base_url = match validate_base_url(&base_url) {
            Ok(url) => url,
            Err(message) => {
                p.push(&url_field, message);
                base_url
            }
        };
        if !kind.has_key_pool() && !keys.is_empty() {
            p.push(
                &format!("{at}.keys"),
                format!(
                    "{} providers take no keys: every request uses the caller's own token",
                    kind.as_str()
                ),
            );
        }
        let key_scopes = keys
            .iter()
            .map(|(field, _)| scopes.remove(field).unwrap_or_default())
            .collect();
        let keys = validate_keys(keys, p);
        out.push(ProviderConfig {
            bedrock: bedrock.remove(&at).map(Arc::new),
            name,
            kind,
            base_url,
            keys,
            key_scopes,
        });
    }
    out
}

/// A Bedrock provider's region, models and credentials; `None` when they cannot make one.
fn build_bedrock(
    at: &str,
    region: Option<String>,
    models: Option<BTreeMap<String, String>>,
    default_model: Option<String>,
    credentials: Vec<FileCredential>,
    env: &dyn Environment,
    p: &mut Checker<'_>,
) -> Option<BedrockSettings> {
    let region = match region {
        Some(region)
            if !region.is_empty()
                && region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            Some(region)
        }
        Some(_) => {
            p.push(
                &format!("{at}.region"),
                "not an AWS region (like `us-east-1`)".to_string(),
            );
            None
        }
        None => {
            p.push(
                &format!("{at}.region"),
                "bedrock providers need a `region`".to_string(),
            );
            None
        }
    };
    let models = models.unwrap_or_default();
    if models.is_empty() && default_model.is_none() {
        p.push(
            &format!("{at}.models"),
            "give `models`, `default_model` or both: which Bedrock model serves a request"
                .to_string(),
        );
    }
    let mut pool = Vec::new();
    for (c, credential) in credentials.into_iter().enumerate() {
        let field = format!("{at}.credentials[{c}]");
        let FileCredential {
            access_key_id,
            secret_access_key,
            session_token,
            api_key,
        } = credential;
        let pair = access_key_id.is_some() || secret_access_key.is_some();
        match (pair, api_key) {
            (false, Some(api_key)) if session_token.is_none() => {
                if let Some(key) = secret(format!("{field}.api_key"), Some(api_key), env, p) {
                    pool.push(BedrockCredential::ApiKey(ApiKey::new(key)));
                }
            }
            (true, None) => {
                if access_key_id.is_none() || secret_access_key.is_none() {
                    p.push(
                        &field,
                        "an access key pair needs both `access_key_id` and `secret_access_key`"
                            .to_string(),
                    );
                    continue;
                }
                let id = secret(format!("{field}.access_key_id"), access_key_id, env, p);
                let key = secret(
                    format!("{field}.secret_access_key"),
                    secret_access_key,
                    env,
                    p,
                );
                let token = session_token
                    .map(|token| secret(format!("{field}.session_token"), Some(token), env, p));
                if let (Some(access_key_id), Some(key)) = (id, key)
                    && !matches!(token, Some(None))
                {
                    pool.push(BedrockCredential::AccessKey {
                        access_key_id,
                        secret_access_key: ApiKey::new(key),
                        session_token: token.flatten().map(ApiKey::new),
                    });
                }
            }
            _ => p.push(
                &field,
                "give either `access_key_id` + `secret_access_key` (+ `session_token`) or `api_key`"
                    .to_string(),
            ),
        }
    }
    if pool.is_empty() {
        p.push(
            &format!("{at}.credentials"),
            "bedrock providers need at least one credential".to_string(),
        );
    }
    Some(BedrockSettings {
        region: region?,
        models,
        default_model,
        credentials: pool,
    })
}

/// A credential's part, from the file or the environment; `None` (and a problem) when it is
/// missing or unusable.
fn secret(
    field: String,
    source: Option<SecretSource>,
    env: &dyn Environment,
    p: &mut Checker<'_>,
) -> Option<String> {
    let value = match source? {
        SecretSource::Literal(value) => Some(value),
        SecretSource::Env { env: var } => {
            let value = env.var(&var);
            if value.is_none() {
                p.push(&field, format!("environment variable {var} is not set"));
            }
            value
        }
    }?;
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        // A secret: say what is wrong, never what it is.
        p.push(
            &field,
            "empty, or holds whitespace or control characters".to_string(),
        );
        return None;
    }
    Some(value)
}

/// Organization and project are OpenAI's, and travel as header values.
fn check_scope(field: &str, kind: ProviderKind, scope: &KeyScope, p: &mut Checker<'_>) {
    if kind != ProviderKind::OpenAi {
        p.push(
            field,
            "`organization` and `project` are for openai providers only".to_string(),
        );
    }
    for (name, value) in [
        ("organization", &scope.organization),
        ("project", &scope.project),
    ] {
        if let Some(value) = value
            && (value.is_empty() || http::HeaderValue::from_str(value).is_err())
        {
            p.push(
                &format!("{field}.{name}"),
                "must be a non-empty header value".to_string(),
            );
        }
    }
}

/// Splits a comma-separated key list, naming each entry `VAR[i]`.
fn split_key_list(list: &str, var: &str) -> Vec<(String, String)> {
    list.split(',')
        .enumerate()
        .map(|(i, key)| (format!("{var}[{i}]"), key.trim().to_string()))
        .collect()
}

fn validate_keys(keys: Vec<(String, String)>, p: &mut Checker<'_>) -> Vec<ApiKey> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    let mut problems = Vec::new();
    for (field, value) in &keys {
        if value.trim().is_empty() {
            problems.push((field.clone(), "key is empty".to_string()));
        } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            problems.push((
                field.clone(),
                "key contains whitespace or control characters".to_string(),
            ));
        } else if let Some((first, _)) = seen.iter().find(|(_, v)| v == value) {
            problems.push((field.clone(), format!("key duplicates {first}")));
        } else {
            seen.push((field, value));
        }
    }
    for (field, message) in problems {
        p.push(&field, message);
    }
    keys.into_iter().map(|(_, v)| ApiKey::new(v)).collect()
}

fn valid_provider_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

fn validate_base_url(raw: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("`{raw}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{raw}` must use http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{raw}` has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{raw}` must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{}` must not carry credentials",
            url.host_str().unwrap_or("")
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"), &env(vars))
    }

    fn problems(result: Result<Config, ConfigError>) -> Vec<Problem> {
        match result {
            Err(ConfigError::Invalid(problems)) => problems,
            other => panic!("expected invalid config, got {other:?}"),
        }
    }

    #[test]
    fn defaults_without_file_or_env() {
        let config = Config::load(None, &env(&[])).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.database_url, "sqlite://aibridge.db");
        assert!(config.record_requests);
        assert!(
            !config.send_actor_headers,
            "actor headers are off by default"
        );
        assert_eq!(config.auth, AuthMode::Tokens);
        assert_eq!(config.key_state, KeyStateBackend::Memory);
        assert_eq!(config.max_request_body_bytes, 32 * 1024 * 1024);
        assert_eq!(config.key_pool.default_cooldown, Duration::from_secs(60));
        assert_eq!(config.key_pool.max_cooldown, Duration::from_secs(3600));
        let names: Vec<_> = config.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["anthropic", "openai"]);
        assert_eq!(config.providers[0].base_url, "https://api.anthropic.com");
        assert_eq!(config.providers[1].base_url, "https://api.openai.com/v1");
        assert!(config.providers.iter().all(|p| p.keys.is_empty()));
    }

    #[test]
    fn bedrock_providers_take_a_region_models_and_credentials() {
        let text = r#"
[[providers]]
name = "bedrock"
type = "bedrock"
region = "eu-west-1"
models = { "claude-sonnet-4-5" = "anthropic.claude-sonnet-4-5-v1:0" }
credentials = [
  { access_key_id = "AKIDONE", secret_access_key = { env = "AWS_SECRET" }, session_token = "tok" },
  { api_key = { env = "BEDROCK_KEY" } },
]
"#;
        let config = parse(
            text,
            &[("AWS_SECRET", "the-secret"), ("BEDROCK_KEY", "bedrock-key")],
        )
        .unwrap();
        let bedrock = &config.providers[0];
        assert_eq!(bedrock.kind, ProviderKind::Bedrock);
        assert_eq!(
            bedrock.base_url,
            "https://bedrock-runtime.eu-west-1.amazonaws.com"
        );
        let settings = bedrock.bedrock.as_ref().unwrap();
        assert_eq!(settings.credentials.len(), 2);
        let names: Vec<&str> = bedrock.keys.iter().map(ApiKey::expose).collect();
        assert_eq!(
            names,
            ["AKIDONE", "bedrock-key"],
            "the pool holds public names"
        );
        assert!(!format!("{config:?}").contains("the-secret"));

        let broken = r#"
[[providers]]
name = "bedrock"
type = "bedrock"
keys = ["sk-x"]
credentials = [
  { access_key_id = "AKID" },
  { api_key = "k", access_key_id = "AKID2", secret_access_key = "s" },
  { access_key_id = "AKID3", secret_access_key = { env = "MISSING" } },
]
"#;
        let fields: Vec<String> = problems(parse(broken, &[]))
            .into_iter()
            .map(|p| p.field)
            .collect();
        for field in [
            "providers[0].keys",
            "providers[0].region",
            "providers[0].models",
            "providers[0].credentials[0]",
            "providers[0].credentials[1]",
            "providers[0].credentials[2].secret_access_key",
        ] {
            assert!(fields.contains(&field.to_string()), "{field}: {fields:?}");
        }
        let anthropic = "[[providers]]\ntype = \"anthropic\"\nregion = \"us-east-1\"\n";
        let fields: Vec<String> = problems(parse(anthropic, &[]))
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(fields, ["providers[0]"]);
    }

    #[test]
    fn circuit_breaker_is_off_unless_configured_and_checked_when_it_is() {
        assert_eq!(parse("", &[]).unwrap().circuit_breaker, None);
        let on = parse("[circuit_breaker]\n", &[]).unwrap().circuit_breaker;
        assert_eq!(
            on,
            Some(BreakerSettings {
                failure_threshold: 5,
                open_for: Duration::from_secs(30),
                half_open_max_requests: 1,
            }),
            "the contract's defaults"
        );
        let fields: Vec<String> = problems(parse(
            "[circuit_breaker]\nfailure_threshold = 0\nopen_for = \"soon\"\nhalf_open_max_requests = 0\n",
            &[],
        ))
        .into_iter()
        .map(|p| p.field)
        .collect();
        assert_eq!(
            fields,
            [
                "circuit_breaker.open_for",
                "circuit_breaker.failure_threshold",
                "circuit_breaker.half_open_max_requests"
            ]
        );
        assert!(
            parse("[circuit_breaker]\ntreshold = 1\n", &[]).is_err(),
            "unknown fields"
        );
    }

    #[test]
    fn mcp_servers_with_secrets_by_reference_and_tool_filters() {
        let text = r#"
[[mcp_servers]]
name = "tools"
url = "http://127.0.0.1:9000/mcp"
headers = { Authorization = { env = "TOOLS_TOKEN" }, "X-Team" = "platform" }
tool_allow = "^(add|echo)$"
tool_deny = "^secret"

[mcp]
max_iterations = 4
"#;
        let config = parse(text, &[("TOOLS_TOKEN", "Bearer t0ps3cret")]).unwrap();
        assert_eq!(config.mcp.max_iterations, 4);
        let server = &config.mcp.servers[0];
        assert_eq!(server.name, "tools");
        assert!(
            server
                .headers
                .contains(&("Authorization".into(), "Bearer t0ps3cret".into()))
        );
        assert!(server.tools.admits("add") && server.tools.admits("echo"));
        assert!(!server.tools.admits("fail"));
        assert!(
            !format!("{config:?}").contains("t0ps3cret"),
            "no secret in Debug"
        );
        assert_eq!(parse("", &[]).unwrap().mcp.max_iterations, 16);
        let deny_wins = ToolFilter {
            allow: Some(regex::Regex::new("^secret").unwrap()),
            deny: Some(regex::Regex::new("^secret").unwrap()),
        };
        assert!(!deny_wins.admits("secret_lookup"));

        let bad = r#"
[[mcp_servers]]
name = "Tools"
url = "ftp://x"
headers = { Authorization = { env = "MISSING" } }
tool_allow = "("
[[mcp_servers]]
name = "ok"
url = "http://h/mcp"
unknown = 1
"#;
        assert!(parse(bad, &[]).is_err(), "unknown fields are errors");
        let bad = bad.replace("unknown = 1\n", "");
        let fields: Vec<String> = problems(parse(&bad, &[]))
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(
            fields,
            [
                "mcp_servers[0].name",
                "mcp_servers[0].url",
                "mcp_servers[0].headers.Authorization",
                "mcp_servers[0].tool_allow"
            ]
        );
    }

    #[test]
    fn apidump_dir_from_the_environment_or_the_file() {
        assert_eq!(parse("", &[]).unwrap().apidump_dir, None);
        let from_file = parse("apidump_dir = \"/tmp/a\"\n", &[]).unwrap();
        assert_eq!(from_file.apidump_dir, Some(PathBuf::from("/tmp/a")));
        let from_env = parse(
            "apidump_dir = \"/tmp/a\"\n",
            &[("AIBRIDGE_APIDUMP_DIR", "/tmp/b")],
        )
        .unwrap();
        assert_eq!(from_env.apidump_dir, Some(PathBuf::from("/tmp/b")));
    }

    #[test]
    fn environment_wins_over_file() {
        let text = r#"
            listen = "127.0.0.1:9000"
            auth = "tokens"
            [[providers]]
            type = "anthropic"
            base_url = "http://file.example"
            keys = ["file-key-1"]
        "#;
        let config = parse(
            text,
            &[
                ("AIBRIDGE_LISTEN", "127.0.0.1:0"),
                ("AIBRIDGE_AUTH", "none"),
                ("AIBRIDGE_ANTHROPIC_KEYS", "env-key-a, env-key-b"),
                ("AIBRIDGE_ANTHROPIC_BASE_URL", "http://127.0.0.1:1234/"),
            ],
        )
        .unwrap();
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.auth, AuthMode::None);
        assert_eq!(config.providers.len(), 1);
        let anthropic = &config.providers[0];
        assert_eq!(anthropic.base_url, "http://127.0.0.1:1234");
        let keys: Vec<_> = anthropic
            .keys
            .iter()
            .map(|k| k.expose().to_string())
            .collect();
        assert_eq!(keys, ["env-key-a", "env-key-b"]);
    }

    #[test]
    fn env_keys_create_the_provider_when_the_file_has_none_of_that_name() {
        let text = r#"
            [[providers]]
            name = "anthropic-eu"
            type = "anthropic"
            base_url = "https://eu.example"
        "#;
        let config = parse(text, &[("AIBRIDGE_OPENAI_KEYS", "o1")]).unwrap();
        let names: Vec<_> = config.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["anthropic-eu", "openai"]);
        assert_eq!(
            config.providers[1].base_url,
            crate::provider::DEFAULT_OPENAI_BASE_URL
        );
    }

    #[test]
    fn keys_can_come_from_environment_references() {
        let text = r#"
            [[providers]]
            type = "anthropic"
            keys = ["literal-key", { env = "SECRET_ONE" }]
            keys_env = "MORE_KEYS"
        "#;
        let config = parse(
            text,
            &[("SECRET_ONE", "from-env-1"), ("MORE_KEYS", "m1,m2")],
        )
        .unwrap();
        let keys: Vec<_> = config.providers[0]
            .keys
            .iter()
            .map(|k| k.expose().to_string())
            .collect();
        assert_eq!(keys, ["literal-key", "from-env-1", "m1", "m2"]);

        let missing = problems(parse(text, &[("MORE_KEYS", "m1")]));
        assert_eq!(
            missing,
            [Problem {
                field: "providers[0].keys[1]".into(),
                message: "environment variable SECRET_ONE is not set".into()
            }]
        );
    }

    #[test]
    fn openai_keys_can_carry_their_organization_and_project() {
        let text = r#"
            [[providers]]
            type = "openai"
            keys = [
                { env = "KEY_A", organization = "org-a", project = "proj_a" },
                "plain-key",
                { key = "key-c", project = "proj_c" },
            ]
        "#;
        let config = parse(text, &[("KEY_A", "key-a")]).unwrap();
        let openai = &config.providers[0];
        let keys: Vec<_> = openai.keys.iter().map(|k| k.expose()).collect();
        assert_eq!(keys, ["key-a", "plain-key", "key-c"]);
        assert_eq!(
            openai.key_scopes,
            [
                KeyScope {
                    organization: Some("org-a".into()),
                    project: Some("proj_a".into())
                },
                KeyScope::default(),
                KeyScope {
                    organization: None,
                    project: Some("proj_c".into())
                },
            ]
        );

        let wrong = r#"
            [[providers]]
            type = "anthropic"
            keys = [{ key = "k", organization = "org" }, { key = "k2", env = "X" }]
        "#;
        let fields: Vec<_> = problems(parse(wrong, &[]))
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(fields, ["providers[0].keys[0]", "providers[0].keys[1]"]);
    }

    #[test]
    fn empty_and_duplicate_keys_are_named_without_showing_them() {
        let got = problems(parse(
            "",
            &[("AIBRIDGE_ANTHROPIC_KEYS", "sk-secret-1,,sk-secret-1")],
        ));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].field, "AIBRIDGE_ANTHROPIC_KEYS[1]");
        assert_eq!(got[0].message, "key is empty");
        assert_eq!(got[1].field, "AIBRIDGE_ANTHROPIC_KEYS[2]");
        assert_eq!(got[1].message, "key duplicates AIBRIDGE_ANTHROPIC_KEYS[0]");
        let rendered = ConfigError::Invalid(got).to_string();
        assert!(!rendered.contains("sk-secret"), "{rendered}");
    }

    #[test]
    fn bad_urls_names_and_durations_are_reported_together() {
        let text = r#"
            shutdown_timeout = "soon"
            [[providers]]
            name = "Anthropic EU"
            type = "anthropic"
            base_url = "ftp://x"
            [[providers]]
            name = "dup"
            type = "openai"
            base_url = "not a url"
            [[providers]]
            name = "dup"
            type = "openai"
            [[providers]]
            name = "x"
            type = "gemini"
        "#;
        let got = problems(parse(text, &[]));
        let fields: Vec<_> = got.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "shutdown_timeout",
                "providers[3].type",
                "providers[0].name",
                "providers[0].base_url",
                "providers[1].base_url",
                "providers[2].name",
            ],
            "{got:?}"
        );
        assert!(got[1].message.contains("`gemini` is not a provider type"));
        assert!(got[3].message.contains("must use http or https"));
        assert!(got[5].message.contains("used twice"));
    }

    #[test]
    fn reserved_names_and_unknown_fields_are_rejected() {
        let got = problems(parse(
            "[[providers]]\nname = \"api\"\ntype = \"openai\"\n",
            &[],
        ));
        assert_eq!(got[0].field, "providers[0].name");
        assert!(got[0].message.contains("reserved"));

        let err = parse("listn = \"x\"\n", &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown field `listn`"), "{text}");
    }

    #[test]
    fn recording_can_be_switched_off() {
        assert!(
            !parse("record_requests = false\n", &[])
                .unwrap()
                .record_requests
        );
        assert!(
            parse("record_requests = false\n", &[("AIBRIDGE_RECORDING", "on")])
                .unwrap()
                .record_requests
        );
        assert!(
            !parse("", &[("AIBRIDGE_RECORDING", "off")])
                .unwrap()
                .record_requests
        );
        let got = problems(parse("", &[("AIBRIDGE_RECORDING", "maybe")]));
        assert_eq!(got[0].field, "AIBRIDGE_RECORDING");
    }

    #[test]
    fn redis_key_state_urls() {
        let config = parse(
            "key_state_timeout = \"250ms\"\n",
            &[("AIBRIDGE_KEY_STATE_URL", "redis://:pw@127.0.0.1:6379/2")],
        )
        .unwrap();
        assert_eq!(
            config.key_state,
            KeyStateBackend::Redis {
                url: "redis://:pw@127.0.0.1:6379/2".into(),
                timeout: Duration::from_millis(250),
            }
        );
        assert_eq!(
            parse("", &[("AIBRIDGE_KEY_STATE_URL", "redis://localhost")])
                .unwrap()
                .key_state,
            KeyStateBackend::Redis {
                url: "redis://localhost".into(),
                timeout: Duration::from_millis(500),
            },
            "500 ms by default"
        );
        for (bad, says) in [
            ("redis://:pw@127.0.0.1:6379/x", "database number"),
            ("rediss://host:6380", "TLS"),
            ("redis:///0", "no host"),
            ("memcached://host", "neither"),
        ] {
            let got = problems(parse("", &[("AIBRIDGE_KEY_STATE_URL", bad)]));
            assert_eq!(got[0].field, "AIBRIDGE_KEY_STATE_URL", "{bad}");
            assert!(got[0].message.contains(says), "{bad}: {}", got[0].message);
            assert!(
                !got[0].message.contains(":pw@"),
                "no password: {}",
                got[0].message
            );
        }
    }

    #[test]
    fn provider_name_rule() {
        for ok in ["anthropic", "anthropic-eu", "a1", "open-ai-2"] {
            assert!(valid_provider_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "A", "a_b", "a.b", "a b"] {
            assert!(!valid_provider_name(bad), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_keys() {
        let config = parse(
            "",
            &[("AIBRIDGE_ANTHROPIC_KEYS", "sk-ant-verysecretvalue-123456")],
        )
        .unwrap();
        let dump = format!("{config:?}");
        assert!(!dump.contains("verysecretvalue"), "{dump}");
        assert!(dump.contains("sk-a...3456"), "{dump}");
    }
}
