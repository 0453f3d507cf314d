//! Test harness: the real `aibridge` binary on port 0, driven over real HTTP.
#![allow(dead_code)]

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
