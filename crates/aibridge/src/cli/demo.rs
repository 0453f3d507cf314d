//! `aibridge demo`: the gateway in front of a built-in fake upstream whose first key is
//! rate-limited, so a newcomer sees failover happen without a provider account.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use aibridge_mock::mcp::{McpMock, McpMockOptions};
use aibridge_mock::{MockUpstream, Reply};
use aibridge_store::{GroupBy, UsageFilter};
use anyhow::Context as _;
use serde_json::{Value, json};

use crate::config::{Config, McpServerConfig, ToolFilter};
use crate::serve::{Gateway, shutdown_signal};
use crate::state::AppState;

const RATE_LIMITED_KEY: &str = "sk-demo-primary-rate-limited";
const HEALTHY_KEY: &str = "sk-demo-fallback-healthy";

pub async fn run(listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let mock = MockUpstream::start()
        .await
        .context("starting the fake upstream")?;
    mock.then(
        RATE_LIMITED_KEY,
        Reply::status(429).header("retry-after", "30"),
    );

    let listen = listen
        .map(|a| a.to_string())
        .or_else(|| std::env::var("AIBRIDGE_LISTEN").ok())
        .unwrap_or_else(|| crate::config::DEFAULT_LISTEN.to_string());
    let pool = format!("{RATE_LIMITED_KEY},{HEALTHY_KEY}");
    // A throwaway database: the demo's records are not the operator's.
    let database = std::env::temp_dir().join(format!("aibridge-demo-{}.db", std::process::id()));
    let database_url = format!("sqlite://{}", database.display());
    let env: BTreeMap<String, String> = [
        ("AIBRIDGE_LISTEN", listen),
        ("AIBRIDGE_AUTH", "none".to_string()),
        ("AIBRIDGE_DATABASE_URL", database_url.clone()),
        ("AIBRIDGE_ANTHROPIC_KEYS", pool.clone()),
        ("AIBRIDGE_ANTHROPIC_BASE_URL", mock.url()),
        ("AIBRIDGE_OPENAI_KEYS", pool),
        ("AIBRIDGE_OPENAI_BASE_URL", format!("{}/v1", mock.url())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut config = Config::load(None, &env)?;
    // An MCP server of its own, whose tools the gateway injects and runs.
    let mcp = McpMock::new(McpMockOptions {
        noop_tools: 0,
        ..McpMockOptions::default()
    })
    .start()
    .await
    .context("starting the demo MCP server")?;
    config.mcp.servers.push(McpServerConfig {
        name: "demo".into(),
        url: mcp.url(),
        headers: Vec::new(),
        tools: ToolFilter {
            allow: None,
            deny: regex::Regex::new("^secret").ok(),
        },
    });
    let client = crate::upstream::client::build(&config.upstream)?;
    let gateway = Gateway::bind(AppState::build(config, client).await?).await?;
    let addr = gateway.local_addr()?;
    let state = gateway.state().clone();
    let server = tokio::spawn(gateway.run(shutdown_signal()));

    let base = format!("http://{addr}");
    println!("aibridge demo");
    println!("  dashboard:      {base}/ui/   (keys, usage, requests, health)");
    println!("  gateway:        {base}");
    println!(
        "  fake upstream:  {} (Anthropic and OpenAI APIs)",
        mock.url()
    );
    println!(
        "  key pools:      anthropic and openai = [{}, {}]",
        hint(RATE_LIMITED_KEY),
        hint(HEALTHY_KEY)
    );
    println!("                  the first key always answers 429 (Retry-After: 30)");
    println!(
        "  MCP server:     {} (tools injected as bmcp_demo_<tool>)",
        mcp.url()
    );
    println!();
    println!("Sending one request per provider through the gateway to show the failover…");
    for (provider, path, body) in demo_requests() {
        let seen_before = mock.seen_keys().len();
        match demo_request(&base, path, &body).await {
            Ok(status) => println!("  {provider}: POST {path} → HTTP {status}"),
            Err(e) => println!("  {provider}: POST {path} → failed: {e:#}"),
        }
        let seen: Vec<String> = mock.seen_keys()[seen_before..]
            .iter()
            .map(|k| hint(k))
            .collect();
        println!("    keys the upstream saw, in order: {}", seen.join(", "));
        let Some(pool) = state.providers.get(provider).and_then(|p| p.pool.clone()) else {
            continue;
        };
        for key in pool.snapshot().await? {
            let detail = match (key.cooldown_remaining, key.last_status) {
                (Some(left), Some(status)) => {
                    format!(" (answered {status}; back in {}s)", left.as_secs())
                }
                _ => String::new(),
            };
            println!("    {:<14} {}{detail}", key.hint, key.state.as_str());
        }
    }
    println!();
    println!("Asking the fake model something it answers with a call of the gateway's MCP tool…");
    mock.script(
        HEALTHY_KEY,
        vec![
            Reply::tool_call("bmcp_demo_add", json!({"a": 2, "b": 3}))
                .with_text("Let me add that up. "),
        ],
    );
    let (_, path, body) = demo_requests()[0].clone();
    match demo_answer(&base, path, &body).await {
        Ok(answer) => {
            for call in mcp.mock().calls() {
                println!(
                    "  the model called bmcp_demo_{} {}; the gateway ran it on the MCP server and sent the result back",
                    call.tool, call.arguments
                );
            }
            let text: String = answer["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|block| block["text"].as_str())
                .collect();
            println!("  the client got one answer: {text:?}");
        }
        Err(e) => println!("  failed: {e:#}"),
    }
    // The writer records in the background; give it a moment before reading back.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    println!();
    println!("Recorded (user `local`, database {}):", database.display());
    let rows = state
        .recorder
        .store()
        .usage(&UsageFilter::default(), GroupBy::Provider)
        .await?;
    for row in rows {
        println!(
            "  {:<10} {} request(s), {} failover(s), {} input / {} output tokens",
            row.group, row.requests, row.failovers, row.input_tokens, row.output_tokens
        );
    }
    println!();
    println!("Try it yourself (Ctrl-C stops the demo):");
    println!(
        "  curl -s {base}/anthropic/v1/messages -H 'content-type: application/json' \\\n    \
         -H 'anthropic-version: 2023-06-01' \\\n    \
         -d '{{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":64,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'"
    );
    println!(
        "  curl -sN {base}/openai/v1/chat/completions -H 'content-type: application/json' \\\n    \
         -d '{{\"model\":\"gpt-5\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'"
    );
    println!("  ANTHROPIC_BASE_URL={base}/anthropic ANTHROPIC_API_KEY=demo claude");
    println!("  OPENAI_BASE_URL={base}/openai/v1 OPENAI_API_KEY=demo codex");
    println!("  curl -s '{base}/api/v1/usage?by=provider'      # what was recorded");
    println!("  curl -s {base}/api/v1/keys                      # key health");
    println!("  open {base}/ui/ in a browser                    # the dashboard, with this data");

    let served = server.await.context("gateway task");
    let _ = std::fs::remove_file(&database);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
    }
    served??;
    Ok(())
}

fn hint(key: &str) -> String {
    aibridge_keypool::mask_secret(key)
}

fn demo_requests() -> [(&'static str, &'static str, Value); 2] {
    let messages = json!([{"role": "user", "content": "Hello from the aibridge demo"}]);
    [
        (
            "anthropic",
            "/anthropic/v1/messages",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": messages}),
        ),
        (
            "openai",
            "/openai/v1/chat/completions",
            json!({"model": "gpt-5", "messages": messages}),
        ),
    ]
}

async fn demo_answer(base: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    Ok(serde_json::from_slice(&response.bytes().await?)?)
}

async fn demo_request(base: &str, path: &str, body: &Value) -> anyhow::Result<u16> {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    Ok(response.status().as_u16())
}
