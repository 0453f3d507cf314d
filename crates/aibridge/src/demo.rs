//! `aibridge demo`: the gateway in front of a built-in fake upstream whose first key is
//! rate-limited, so a newcomer sees failover happen without a provider account.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use aibridge_mock::{MockUpstream, Reply};
use anyhow::Context as _;

use crate::config::Config;
use crate::server::{AppState, Gateway, shutdown_signal};

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
    let env: BTreeMap<String, String> = [
        ("AIBRIDGE_LISTEN", listen),
        ("AIBRIDGE_AUTH", "none".to_string()),
        (
            "AIBRIDGE_ANTHROPIC_KEYS",
            format!("{RATE_LIMITED_KEY},{HEALTHY_KEY}"),
        ),
        ("AIBRIDGE_ANTHROPIC_BASE_URL", mock.url()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config = Config::load(None, &env)?;
    let gateway = Gateway::bind(AppState::build(config)?).await?;
    let addr = gateway.local_addr()?;
    let state = gateway.state().clone();
    let server = tokio::spawn(gateway.run(shutdown_signal()));

    let base = format!("http://{addr}");
    println!("aibridge demo");
    println!("  gateway:        {base}");
    println!("  fake upstream:  {} (Anthropic API)", mock.url());
    println!(
        "  key pool:       anthropic = [{}, {}]",
        hint(RATE_LIMITED_KEY),
        hint(HEALTHY_KEY)
    );
    println!("                  the first key always answers 429 (Retry-After: 30)");
    println!();

    println!("Sending one request through the gateway to show the failover…");
    match demo_request(&base).await {
        Ok((status, text)) => println!("  → HTTP {status}: {text}"),
        Err(e) => println!("  → request failed: {e:#}"),
    }
    if let Some(pool) = state
        .providers
        .get("anthropic")
        .and_then(|p| p.pool.clone())
    {
        println!("Key pool after the request:");
        for key in pool.snapshot().await? {
            let detail = match (key.cooldown_remaining, key.last_status) {
                (Some(left), Some(status)) => {
                    format!(" (answered {status}; back in {}s)", left.as_secs())
                }
                _ => String::new(),
            };
            println!("  {:<14} {}{detail}", key.hint, key.state.as_str());
        }
    }
    let seen: Vec<String> = mock.seen_keys().iter().map(|k| hint(k)).collect();
    println!("Keys the upstream saw, in order: {}", seen.join(", "));
    println!();
    println!("Try it yourself (Ctrl-C stops the demo):");
    println!(
        "  curl -s {base}/anthropic/v1/messages -H 'content-type: application/json' \\\n    \
         -H 'anthropic-version: 2023-06-01' \\\n    \
         -d '{{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":64,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'"
    );
    println!(
        "  curl -sN {base}/anthropic/v1/messages -H 'content-type: application/json' \\\n    \
         -H 'anthropic-version: 2023-06-01' \\\n    \
         -d '{{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":64,\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'"
    );
    println!("  ANTHROPIC_BASE_URL={base}/anthropic ANTHROPIC_API_KEY=demo claude");

    server.await.context("gateway task")??;
    Ok(())
}

fn hint(key: &str) -> String {
    aibridge_keypool::mask_secret(key)
}

async fn demo_request(base: &str) -> anyhow::Result<(u16, String)> {
    let body = serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hello from the aibridge demo"}],
    });
    let response = reqwest::Client::new()
        .post(format!("{base}/anthropic/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = response.status().as_u16();
    let value: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
    let text = value["content"][0]["text"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| value.to_string());
    Ok((status, text))
}
