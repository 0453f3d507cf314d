//! The binary's commands and process behaviour: check-config, help, health, graceful shutdown,
//! and the demo.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use aibridge_mock::{MockUpstream, Reply};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn aibridge() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aibridge"));
    for (name, _) in std::env::vars() {
        if name.starts_with("AIBRIDGE_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

#[test]
fn the_example_config_is_valid() {
    let output = aibridge()
        .args(["check-config", "--config"])
        .arg(repo_root().join("aibridge.example.toml"))
        .env("ANTHROPIC_KEY_PRIMARY", "sk-ant-example-primary-000001")
        .env("ANTHROPIC_KEY_FALLBACK", "sk-ant-example-fallback-00002")
        .env(
            "ANTHROPIC_EU_KEYS",
            "sk-ant-eu-example-1,sk-ant-eu-example-2",
        )
        .env("OPENAI_KEYS", "sk-openai-example-1")
        .env("AWS1_ID", "AKIDEXAMPLE1")
        .env("AWS1_SECRET", "example-secret-access-key")
        .env("BEDROCK_API_KEY", "example-bedrock-api-key")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("/anthropic (anthropic) -> https://api.anthropic.com, 2 key(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/anthropic-eu (anthropic) -> https://anthropic-eu.example.com, 2 key(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/openai (openai) -> https://api.openai.com/v1, 1 key(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "/bedrock (bedrock) -> https://bedrock-runtime.us-east-1.amazonaws.com, 2 key(s)"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("example-secret-access-key"), "{stdout}");
    assert!(
        !stdout.contains("example-primary"),
        "keys are masked: {stdout}"
    );
}

#[test]
fn check_config_shows_mcp_urls_without_their_secrets() {
    let dir = std::env::temp_dir().join(format!("aibridge-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mcp.toml");
    std::fs::write(
        &path,
        "[[providers]]\nname = \"anthropic\"\ntype = \"anthropic\"\nkeys = [\"sk-ant-cli-0001\"]\n\n[[mcp_servers]]\nname = \"tools\"\nurl = \"http://user:pw-secret@127.0.0.1:9000/mcp?token=tok-secret\"\n",
    )
    .unwrap();
    let output = aibridge()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("mcp server: tools -> http://127.0.0.1:9000/mcp"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("secret"),
        "user info and query are not shown: {stdout}"
    );
}

#[test]
fn check_config_names_the_field_at_fault_and_exits_non_zero() {
    let dir = std::env::temp_dir().join(format!("aibridge-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[[providers]]\nname = \"Bad Name\"\ntype = \"anthropic\"\nbase_url = \"nope\"\nkeys = [\"sk-secret-dup\", \"sk-secret-dup\", \"\"]\n",
    )
    .unwrap();
    let output = aibridge()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("providers[0].name: `Bad Name` is not a valid provider name"),
        "{stderr}"
    );
    assert!(
        stderr.contains("providers[0].base_url: `nope` is not a URL"),
        "{stderr}"
    );
    assert!(
        stderr.contains("providers[0].keys[1]: key duplicates providers[0].keys[0]"),
        "{stderr}"
    );
    assert!(
        stderr.contains("providers[0].keys[2]: key is empty"),
        "{stderr}"
    );
    assert!(!stderr.contains("sk-secret"), "{stderr}");

    let output = aibridge()
        .args(["check-config"])
        .env("AIBRIDGE_LISTEN", "localhost")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("AIBRIDGE_LISTEN: `localhost` is not an address")
    );

    let output = aibridge()
        .args(["check-config", "--config"])
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read config file"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn help_explains_each_command() {
    let output = aibridge().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for command in ["serve", "check-config", "demo"] {
        assert!(help.contains(command), "{help}");
    }
    let output = aibridge().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("--config") && help.contains("AIBRIDGE_CONFIG"),
        "{help}"
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let gw = Gateway::start(Gateway::NO_ENV).await;
    let response = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["status"],
        "ok"
    );
    let response = client().get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("sk-json-log-key-000000000001", vec![Reply::status(429)]);
    let gw = Gateway::start(&[
        ("AIBRIDGE_LOG_FORMAT", "json"),
        (
            "AIBRIDGE_ANTHROPIC_KEYS",
            "sk-json-log-key-000000000001,sk-json-log-key-000000000002",
        ),
        ("AIBRIDGE_ANTHROPIC_BASE_URL", &mock.url()),
    ])
    .await;
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = gw.logs();
    let mut saw_failover = false;
    for line in logs.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if value["message"]
            .as_str()
            .unwrap_or("")
            .contains("failing over")
        {
            assert_eq!(value["key"], "sk-j...0001");
            assert_eq!(value["status"], 429);
            saw_failover = true;
        }
    }
    assert!(saw_failover, "{logs}");
    assert!(!logs.contains("json-log-key-0000"), "{logs}");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_stream_finish() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::ok().stream_deltas(6).event_delay_ms(150)]);
    let gw = start_pool(&mock.url(), "k0").await;
    let response = post_messages(&gw, &messages_body(true)).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));

    let base = gw.base.clone();
    let exit = tokio::spawn(gw.terminate());
    let mut rest = String::new();
    while let Some(chunk) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(
        rest.contains("event: message_stop"),
        "the stream completed: {rest}"
    );
    let status = exit.await.unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn the_shutdown_deadline_bounds_how_long_streams_may_run_on() {
    let mock = MockUpstream::start().await.unwrap();
    // 40 events × 250 ms: about 10 s, far beyond the 500 ms deadline.
    mock.script(
        "k0",
        vec![Reply::ok().stream_deltas(34).event_delay_ms(250)],
    );
    let env = pool_env(&mock.url(), "k0");
    let gw = Gateway::start_with_config(Some("shutdown_timeout = \"500ms\"\n"), &env).await;
    let response = post_messages(&gw, &messages_body(true)).await;
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    let status = gw.terminate().await;
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        !rest.contains("message_stop"),
        "the stream was cut at the deadline"
    );
}

/// Review item 3: a stream still running at the shutdown deadline is cut with the dialect's SSE
/// error event, and its record (with the usage seen so far) is written before the process exits.
#[tokio::test]
async fn streams_cut_at_the_shutdown_deadline_are_recorded() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k0",
        vec![Reply::ok().stream_deltas(34).event_delay_ms(250)],
    );
    let file = std::env::temp_dir().join(format!("aibridge-cut-{}.db", uuid::Uuid::new_v4()));
    let url = format!("sqlite://{}", file.display());
    let mut env = pool_env(&mock.url(), "k0");
    env.push(("AIBRIDGE_DATABASE_URL".into(), url.clone()));
    let gw = Gateway::start_with_config(Some("shutdown_timeout = \"500ms\"\n"), &env).await;
    let response = post_messages(&gw, &messages_body(true)).await;
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    let exit = tokio::spawn(gw.terminate());
    let mut rest = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(exit.await.unwrap().success());
    assert_eq!(
        sse_event_types(&rest).last().map(String::as_str),
        Some("error"),
        "the client is told the stream was cut: {rest}"
    );
    let error = sse_data_of(&rest, "error").unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{error}"
    );

    let gw = Gateway::start(&[("AIBRIDGE_DATABASE_URL", url.as_str())]).await;
    let page: Value = get_json(&gw, "/api/v1/interceptions").await;
    let record = &page["items"][0];
    assert_eq!(record["outcome"], "stream_failed", "{record:#}");
    assert_eq!(
        record["usage"][0]["input"], 11,
        "usage seen so far: {record:#}"
    );
    drop(gw);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
}

#[tokio::test]
async fn demo_shows_a_failover_in_its_own_output() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_aibridge"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env_remove("AIBRIDGE_LISTEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut output = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            output.push_str(&line);
            output.push('\n');
            if line.contains("codex") && line.contains("OPENAI_BASE_URL") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("demo output within a minute");
    for provider in [
        "anthropic: POST /anthropic/v1/messages",
        "openai: POST /openai/v1/chat/completions",
    ] {
        assert!(
            output.contains(&format!("{provider} → HTTP 200")),
            "{output}"
        );
    }
    assert_eq!(
        output
            .matches("keys the upstream saw, in order: sk-d...ited, sk-d...lthy")
            .count(),
        2,
        "each provider failed over from the rate-limited key: {output}"
    );
    assert_eq!(
        output
            .matches("sk-d...ited    cooling (answered 429; back in")
            .count(),
        2,
        "{output}"
    );
    assert_eq!(
        output.matches("sk-d...lthy    valid").count(),
        2,
        "{output}"
    );
    assert!(output.contains("curl -s http://127.0.0.1:"), "{output}");
    // The MCP tool call, run by the gateway.
    assert!(
        output.contains("the model called bmcp_demo_add {\"a\":2,\"b\":3}; the gateway ran it"),
        "{output}"
    );
    assert!(
        output.contains(
            "the client got one answer: \"Let me add that up. Hello from aibridge-mock.\""
        ),
        "{output}"
    );
    // It opens with the dashboard's URL, and the dashboard has the demo's data.
    let dashboard = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("dashboard:"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the dashboard's URL")
        .to_string();
    let keys = client().get(&dashboard).send().await.unwrap();
    assert_eq!(keys.status(), 200, "{dashboard}");
    let html = keys.text().await.unwrap();
    assert!(html.contains("data-state=\"cooling\""), "{html}");
    let requests = client()
        .get(format!("{dashboard}requests"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        requests.matches("class=\"request\"").count() >= 3,
        "{requests}"
    );
    // Ctrl-C / SIGTERM stops the demo, which removes its throwaway database.
    let pid = child.id().unwrap();
    let database = format!("{}/aibridge-demo-{pid}.db", std::env::temp_dir().display());
    assert!(std::path::Path::new(&database).exists(), "{database}");
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        !std::path::Path::new(&database).exists(),
        "demo database left behind"
    );
}
