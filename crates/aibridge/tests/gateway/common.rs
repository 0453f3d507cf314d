//! Test harness: the real `aibridge` binary on port 0, driven over real HTTP.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct Gateway {
    child: Child,
    pub base: String,
    logs: Arc<Mutex<Vec<String>>>,
    config_file: Option<PathBuf>,
    /// The recording database, a fresh SQLite file per gateway unless the test chose one.
    pub database_url: String,
    database_file: Option<PathBuf>,
}

impl Gateway {
    /// Starts `aibridge serve` with `AIBRIDGE_AUTH=none` and the given environment on top.
    pub async fn start(env: &[(impl AsRef<str>, impl AsRef<str>)]) -> Gateway {
        Self::start_with_config(None, env).await
    }

    pub async fn start_with_config(
        config: Option<&str>,
        env: &[(impl AsRef<str>, impl AsRef<str>)],
    ) -> Gateway {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aibridge"));
        cmd.arg("serve");
        let config_file = config.map(|text| {
            let path =
                std::env::temp_dir().join(format!("aibridge-test-{}.toml", uuid::Uuid::new_v4()));
            std::fs::write(&path, text).unwrap();
            path
        });
        if let Some(path) = &config_file {
            cmd.arg("--config").arg(path);
        }
        for (name, _) in std::env::vars() {
            if name.starts_with("AIBRIDGE_") {
                cmd.env_remove(name);
            }
        }
        let database_file =
            std::env::temp_dir().join(format!("aibridge-test-{}.db", uuid::Uuid::new_v4()));
        let chosen_database = env
            .iter()
            .find(|(k, _)| k.as_ref() == "AIBRIDGE_DATABASE_URL")
            .map(|(_, v)| v.as_ref().to_string());
        let database_url = chosen_database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", database_file.display()));
        cmd.env("AIBRIDGE_DATABASE_URL", &database_url);
        cmd.env("AIBRIDGE_LISTEN", "127.0.0.1:0")
            .env("AIBRIDGE_AUTH", "none")
            .env("AIBRIDGE_LOG", "info,aibridge=debug")
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k.as_ref(), v.as_ref());
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn aibridge");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(30), addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => panic!(
                "aibridge did not start; logs:\n{}",
                logs.lock().unwrap().join("\n")
            ),
        };
        Gateway {
            child,
            base: format!("http://{addr}"),
            logs,
            config_file,
            database_url,
            database_file: chosen_database.is_none().then_some(database_file),
        }
    }

    /// No environment beyond the harness defaults.
    pub const NO_ENV: &'static [(&'static str, &'static str)] = &[];

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// States of a provider's keys, in pool order, from the admin API.
    pub async fn key_states(&self, provider: &str) -> Vec<String> {
        self.keys(provider)
            .await
            .iter()
            .map(|k| k["state"].as_str().unwrap().to_string())
            .collect()
    }

    pub async fn keys(&self, provider: &str) -> Vec<Value> {
        let body: Value = client()
            .get(self.url("/api/v1/keys"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == provider)
            .unwrap_or_else(|| panic!("no provider {provider} in {body}"))["keys"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Runs an `aibridge` command against this gateway's database; returns (success, stdout,
    /// stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        run_cli(&self.database_url, args)
    }

    /// SIGKILL: the process ends at once, with no chance to write anything more.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap();
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap()
            .unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if let Some(path) = &self.config_file {
            let _ = std::fs::remove_file(path);
        }
        if let Some(path) = &self.database_file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
}

/// Runs `aibridge ARGS` with the given database; returns (success, stdout, stderr).
pub fn run_cli(database_url: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_aibridge"));
    for (name, _) in std::env::vars() {
        if name.starts_with("AIBRIDGE_") {
            cmd.env_remove(name);
        }
    }
    let output = cmd
        .args(args)
        .env("AIBRIDGE_DATABASE_URL", database_url)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

pub fn messages_body(stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 128,
        "stream": stream,
        "messages": [{"role": "user", "content": "Say hello"}],
    })
}

/// POST /anthropic/v1/messages the way the Anthropic SDK does (gateway token as x-api-key).
/// `GET path` without credentials (the gateway runs with `AIBRIDGE_AUTH=none`), its body as JSON.
pub async fn get_json(gw: &Gateway, path: &str) -> Value {
    client()
        .get(gw.url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn post_messages(gw: &Gateway, body: &Value) -> reqwest::Response {
    client()
        .post(gw.url("/anthropic/v1/messages"))
        .header("x-api-key", "abk_gateway_token")
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The `event:` names of an SSE body, in order.
pub fn sse_event_types(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|frame| !frame.trim().is_empty())
        .map(|frame| {
            frame
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("message")
                .to_string()
        })
        .collect()
}

/// The `data:` payload of the first SSE frame with the given event name, parsed.
pub fn sse_data_of(body: &str, event: &str) -> Option<Value> {
    body.split("\n\n").find_map(|frame| {
        let is_it = frame.lines().any(|l| l == format!("event: {event}"));
        let data = frame.lines().find_map(|l| l.strip_prefix("data: "))?;
        is_it.then(|| serde_json::from_str(data).unwrap())
    })
}

pub fn pool_env(mock_url: &str, keys: &str) -> Vec<(String, String)> {
    vec![
        ("AIBRIDGE_ANTHROPIC_KEYS".into(), keys.into()),
        ("AIBRIDGE_ANTHROPIC_BASE_URL".into(), mock_url.into()),
    ]
}

pub async fn start_pool(mock_url: &str, keys: &str) -> Gateway {
    Gateway::start(&pool_env(mock_url, keys)).await
}

/// A gateway whose only provider is a Copilot instance (BYOK only) in front of the mock.
pub async fn start_copilot(mock: &aibridge_mock::MockUpstream) -> Gateway {
    let config = format!(
        "[[providers]]\nname = \"copilot\"\ntype = \"copilot\"\nbase_url = \"{}/v1\"\n",
        mock.url()
    );
    Gateway::start_with_config(Some(&config), Gateway::NO_ENV).await
}

/// The three bridged APIs as a client sees them, for tables that hold for every API.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TestApi {
    Messages,
    Chat,
    Responses,
}

pub const APIS: [TestApi; 3] = [TestApi::Messages, TestApi::Chat, TestApi::Responses];
pub const STREAMING: [bool; 2] = [false, true];

/// A client's view of one answer.
pub struct Outcome {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: String,
}

impl Outcome {
    pub async fn of(response: reqwest::Response) -> Self {
        Outcome {
            status: response.status().as_u16(),
            retry_after: response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string()),
            body: response.text().await.unwrap(),
        }
    }
}

/// An error body's type, message and (OpenAI) code.
#[derive(Debug)]
pub struct ApiError {
    pub kind: String,
    pub message: String,
    pub code: Option<String>,
}

impl TestApi {
    /// The provider instance that serves it by default.
    pub fn provider(self) -> &'static str {
        match self {
            TestApi::Messages => "anthropic",
            TestApi::Chat | TestApi::Responses => "openai",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            TestApi::Messages => "/anthropic/v1/messages",
            TestApi::Chat => "/openai/v1/chat/completions",
            TestApi::Responses => "/openai/v1/responses",
        }
    }

    pub fn body(self, stream: bool) -> Value {
        match self {
            TestApi::Messages => messages_body(stream),
            TestApi::Chat => json!({
                "model": "gpt-5",
                "stream": stream,
                "messages": [{"role": "user", "content": "Say hello"}],
            }),
            TestApi::Responses => json!({"model": "gpt-5", "stream": stream, "input": "Say hello"}),
        }
    }

    /// A gateway whose pool for this API's provider is `keys`, in front of `mock`.
    pub async fn start(self, mock: &aibridge_mock::MockUpstream, keys: &str) -> Gateway {
        match self {
            TestApi::Messages => start_pool(&mock.url(), keys).await,
            TestApi::Chat | TestApi::Responses => start_openai(mock, keys).await,
        }
    }

    /// The request as the provider's SDK sends it, the gateway token in the normal auth header
    /// (so the pool pays).
    pub fn request(self, gw: &Gateway, stream: bool) -> reqwest::RequestBuilder {
        let request = client().post(gw.url(self.path())).json(&self.body(stream));
        match self {
            TestApi::Messages => request
                .header("x-api-key", "abk_gateway_token")
                .header("anthropic-version", "2023-06-01"),
            TestApi::Chat | TestApi::Responses => request.bearer_auth("abk_gateway_token"),
        }
    }

    /// The same request as BYOK: the gateway token in `X-AIBridge-Token`, the user's own key
    /// where the SDK puts it.
    pub fn byok_request(
        self,
        gw: &Gateway,
        stream: bool,
        user_key: &str,
    ) -> reqwest::RequestBuilder {
        let request = client()
            .post(gw.url(self.path()))
            .header("x-aibridge-token", "abk_gateway_token")
            .json(&self.body(stream));
        match self {
            TestApi::Messages => request
                .header("x-api-key", user_key)
                .header("anthropic-version", "2023-06-01"),
            TestApi::Chat | TestApi::Responses => request.bearer_auth(user_key),
        }
    }

    pub async fn call(self, gw: &Gateway, stream: bool) -> Outcome {
        Outcome::of(self.request(gw, stream).send().await.unwrap()).await
    }

    /// The credential header as the upstream saw it: the pool key where the provider expects it.
    pub fn credential_seen(self, seen: &aibridge_mock::SeenRequest) -> Option<String> {
        let name = match self {
            TestApi::Messages => "x-api-key",
            TestApi::Chat | TestApi::Responses => "authorization",
        };
        seen.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// How a pool key travels upstream on this API.
    pub fn credential_of(self, key: &str) -> String {
        match self {
            TestApi::Messages => key.to_string(),
            TestApi::Chat | TestApi::Responses => format!("Bearer {key}"),
        }
    }

    /// A successful answer in the requested mode.
    pub fn assert_success(self, out: &Outcome, stream: bool) {
        assert_eq!(out.status, 200, "{self:?} stream={stream}: {}", out.body);
        match (self, stream) {
            (TestApi::Messages, false) => {
                let v: Value = serde_json::from_str(&out.body).unwrap();
                assert_eq!(v["type"], "message");
                assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);
            }
            (TestApi::Messages, true) => {
                let events = sse_event_types(&out.body);
                assert_eq!(
                    events.first().map(String::as_str),
                    Some("message_start"),
                    "{events:?}"
                );
                assert_eq!(
                    events.last().map(String::as_str),
                    Some("message_stop"),
                    "{events:?}"
                );
                assert!(!events.iter().any(|e| e == "error"), "{events:?}");
            }
            (TestApi::Chat, false) => {
                let v: Value = serde_json::from_str(&out.body).unwrap();
                assert_eq!(v["object"], "chat.completion");
                assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);
            }
            (TestApi::Chat, true) => {
                let data = data_lines(&out.body);
                assert_eq!(data.last(), Some(&"[DONE]"), "{}", out.body);
                assert!(!out.body.contains("\"error\""), "{}", out.body);
            }
            (TestApi::Responses, false) => {
                let v: Value = serde_json::from_str(&out.body).unwrap();
                assert_eq!(v["object"], "response");
                assert_eq!(v["status"], "completed");
            }
            (TestApi::Responses, true) => {
                let events = sse_event_types(&out.body);
                assert_eq!(events.first().map(String::as_str), Some("response.created"));
                assert_eq!(
                    events.last().map(String::as_str),
                    Some("response.completed"),
                    "{events:?}"
                );
            }
        }
    }

    /// The error in this API's dialect; panics when the body is not one.
    pub fn error(self, body: &str) -> ApiError {
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        match self {
            TestApi::Messages => {
                assert_eq!(v["type"], "error", "{body}");
                ApiError {
                    kind: v["error"]["type"].as_str().unwrap().to_string(),
                    message: v["error"]["message"].as_str().unwrap().to_string(),
                    code: None,
                }
            }
            TestApi::Chat | TestApi::Responses => ApiError {
                kind: v["error"]["type"].as_str().unwrap_or_default().to_string(),
                message: v["error"]["message"]
                    .as_str()
                    .unwrap_or_else(|| panic!("not an OpenAI error: {body}"))
                    .to_string(),
                code: v["error"]["code"].as_str().map(str::to_string),
            },
        }
    }
}

/// A gateway whose `openai` pool is `keys`, in front of `mock`.
pub async fn start_openai(mock: &aibridge_mock::MockUpstream, keys: &str) -> Gateway {
    let base = format!("{}/v1", mock.url());
    Gateway::start(&[
        ("AIBRIDGE_OPENAI_KEYS", keys),
        ("AIBRIDGE_OPENAI_BASE_URL", &base),
    ])
    .await
}

/// The `data:` payloads of an SSE body, in order.
pub fn data_lines(body: &str) -> Vec<&str> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect()
}

/// Waits until the background writer has recorded the end of `expected` requests; returns the
/// records, newest first. `admin` is the token for `tokens` mode (`None` in `none` mode).
pub async fn wait_for_ended(gw: &Gateway, admin: Option<&str>, expected: usize) -> Vec<Value> {
    let mut items = Vec::new();
    for _ in 0..100 {
        let mut request = client().get(gw.url("/api/v1/interceptions?limit=100"));
        if let Some(token) = admin {
            request = request.bearer_auth(token);
        }
        let page: Value = request.send().await.unwrap().json().await.unwrap();
        items = page["items"].as_array().unwrap().clone();
        if items.len() >= expected && items.iter().all(|i| !i["outcome"].is_null()) {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {expected} ended records, got {items:#?}");
}

/// Whether the upstream request was the gateway's check of a key (its model list).
pub fn is_key_check(seen: &aibridge_mock::SeenRequest) -> bool {
    seen.method == "GET" && seen.path.ends_with("/models")
}

/// Keys of the requests the upstream saw, the gateway's key checks left out.
pub fn request_keys(mock: &aibridge_mock::MockUpstream) -> Vec<String> {
    mock.requests()
        .into_iter()
        .filter(|seen| !is_key_check(seen))
        .map(|seen| seen.key)
        .collect()
}

/// Keys the gateway checked (after a 401/403), in order.
pub fn checked_keys(mock: &aibridge_mock::MockUpstream) -> Vec<String> {
    mock.requests()
        .into_iter()
        .filter(is_key_check)
        .map(|seen| seen.key)
        .collect()
}

/// A PostgreSQL schema created for one test (on `AIBRIDGE_TEST_POSTGRES_URL`) and dropped after
/// it. Outside CI, `create` skips with a printed reason when the variable is unset.
pub struct PgSchema {
    pub admin_url: String,
    pub name: String,
}

impl PgSchema {
    pub fn create() -> Option<PgSchema> {
        let admin_url = match std::env::var("AIBRIDGE_TEST_POSTGRES_URL") {
            Ok(url) => url,
            Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI=true but AIBRIDGE_TEST_POSTGRES_URL is not set")
            }
            Err(_) => {
                eprintln!("SKIPPED: AIBRIDGE_TEST_POSTGRES_URL is not set");
                return None;
            }
        };
        let name = format!("gw_{}", uuid::Uuid::new_v4().simple());
        psql(&admin_url, &format!("CREATE SCHEMA {name}"));
        Some(PgSchema { admin_url, name })
    }

    /// The database URL that puts everything in this schema.
    pub fn url(&self) -> String {
        let sep = if self.admin_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}options=-csearch_path%3D{}",
            self.admin_url, self.name
        )
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        psql(
            &self.admin_url,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
    }
}

pub fn psql(url: &str, sql: &str) {
    let output = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .expect("psql must be installed to run the PostgreSQL tests");
    assert!(
        output.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
