//! Load mode: server-wide latency, stream shape, no recording, per-key counts, and the binary's flags.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aibridge_mock::{MockOptions, MockStats, MockUpstream, Reply};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start(options: MockOptions) -> MockUpstream {
    MockUpstream::start_with(any_port(), options).await.unwrap()
}

fn msg(stream: bool) -> Value {
    json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
}

async fn post(base: &str, path: &str, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{base}{path}"))
        .header("x-api-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The `content_block_delta` texts of an Anthropic stream, and the final output token count.
fn anthropic_deltas(text: &str) -> (Vec<String>, u64) {
    let mut deltas = Vec::new();
    let mut output = 0;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let v: Value = serde_json::from_str(data).unwrap();
        match v["type"].as_str() {
            Some("content_block_delta") => {
                deltas.push(v["delta"]["text"].as_str().unwrap().to_owned());
            }
            Some("message_delta") => output = v["usage"]["output_tokens"].as_u64().unwrap(),
            _ => {}
        }
    }
    (deltas, output)
}

#[test]
fn default_options_change_nothing() {
    let o = MockOptions::default();
    assert_eq!(
        (o.latency_ms, o.stream_events, o.event_delay_ms, o.record),
        (0, 0, 0, true)
    );
    let o = MockOptions::default()
        .latency_ms(3)
        .stream_events(4)
        .event_delay_ms(5)
        .record(false);
    assert_eq!(
        (o.latency_ms, o.stream_events, o.event_delay_ms, o.record),
        (3, 4, 5, false)
    );
}

#[tokio::test]
async fn plain_start_uses_the_default_options() {
    let mock = MockUpstream::start().await.unwrap();
    assert_eq!(mock.options(), &MockOptions::default());
}

#[tokio::test]
async fn latency_delays_every_response_but_not_the_control_api() {
    let mock = start(MockOptions::default().latency_ms(150)).await;
    let base = mock.url();
    mock.then("limited", Reply::status(429).header("retry-after", "60"));

    let t = Instant::now();
    let r = post(&base, "/v1/messages", "ok", &msg(false)).await;
    assert_eq!(r.status(), 200);
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );

    let t = Instant::now();
    let r = post(&base, "/v1/messages", "limited", &msg(false)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "60");
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );

    // Added to a scripted delay.
    mock.script("slow", vec![Reply::ok().delay_ms(100)]);
    let t = Instant::now();
    let r = post(&base, "/v1/messages", "slow", &msg(false)).await;
    assert_eq!(r.status(), 200);
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );

    let t = Instant::now();
    let r = client()
        .get(format!("{base}/_mock/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn stream_events_and_event_delay_shape_unscripted_streams() {
    let mock = start(MockOptions::default().stream_events(12).event_delay_ms(20)).await;
    let base = mock.url();

    let t = Instant::now();
    let r = post(&base, "/v1/messages", "k", &msg(true)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    // 12 deltas + 6 other events = 18 events, 17 pauses of 20 ms.
    assert!(
        t.elapsed() >= Duration::from_millis(17 * 20),
        "{:?}",
        t.elapsed()
    );
    let (deltas, output) = anthropic_deltas(&text);
    assert_eq!(deltas.len(), 12);
    assert_eq!(
        deltas.concat(),
        "Hello from aibridge-mock.Hello from aibridge-mock.Hello from"
    );
    assert_eq!(output, 24, "usage follows the effective delta count");

    // Blocking usage follows it too.
    let body: Value = post(&base, "/v1/messages", "k", &msg(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["usage"]["output_tokens"], 24);

    // OpenAI chat: one chunk per delta between the role chunk and the finish chunk.
    let r = post(
        &base,
        "/v1/chat/completions",
        "k",
        &json!({"model": "g", "messages": [], "stream": true}),
    )
    .await;
    let text = r.text().await.unwrap();
    let chunks: Vec<&str> = text
        .split("\n\n")
        .filter(|c| c.starts_with("data: "))
        .collect();
    assert_eq!(chunks.len(), 1 + 12 + 1 + 1, "{text}");
    assert_eq!(chunks.last(), Some(&"data: [DONE]"));

    // A script's own settings win.
    mock.script("scripted", vec![Reply::ok().stream_deltas(2)]);
    let text = post(&base, "/v1/messages", "scripted", &msg(true))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(anthropic_deltas(&text).0.len(), 2);
}

#[tokio::test]
async fn no_record_keeps_no_history_but_counts_and_scripts() {
    let mock = start(MockOptions::default().record(false)).await;
    let base = mock.url();
    mock.then("k1", Reply::status(429).header("retry-after", "60"));
    for _ in 0..3 {
        assert_eq!(
            post(&base, "/v1/messages", "k1", &msg(false))
                .await
                .status(),
            429
        );
    }
    for _ in 0..2 {
        let r = post(&base, "/v1/messages", "k2", &msg(false)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["request-id"],
            format!("req_mock_{}", mock.stats().requests)
        );
    }
    assert!(mock.requests().is_empty());
    assert!(mock.seen_keys().is_empty());
    assert_eq!(
        (mock.hits("k1"), mock.hits("k2"), mock.hits("k3")),
        (3, 2, 0)
    );

    let seen: Vec<Value> = client()
        .get(format!("{base}/_mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(seen.is_empty());
    let stats: MockStats = client()
        .get(format!("{base}/_mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats, mock.stats());
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.hits.len(), 2);
    assert_eq!(stats.hits["k1"], 3);

    mock.reset();
    assert_eq!(mock.stats().requests, 0);
    assert_eq!(mock.hits("k1"), 0);
}

#[tokio::test]
async fn recording_mode_counts_the_same_as_its_history() {
    let mock = MockUpstream::start().await.unwrap();
    let base = mock.url();
    for key in ["a", "b", "a"] {
        post(&base, "/v1/messages", key, &msg(false)).await;
    }
    client()
        .get(format!("{base}/v1/models"))
        .bearer_auth("b")
        .send()
        .await
        .unwrap();
    assert_eq!(mock.requests().len(), 4);
    let stats = mock.stats();
    assert_eq!(stats.requests, 4);
    assert_eq!((stats.hits["a"], stats.hits["b"]), (2, 2));
    assert_eq!(mock.hits("a"), 2);
}

#[tokio::test]
async fn binary_load_mode_flags() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aibridge-mock"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--latency-ms",
            "100",
            "--stream-events",
            "7",
            "--event-delay-ms",
            "1",
            "--no-record",
            "--workers",
            "1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let url = line
        .trim_end()
        .strip_prefix("aibridge-mock listening on ")
        .unwrap()
        .to_owned();

    let t = Instant::now();
    let r = post(&url, "/v1/messages", "bin", &msg(true)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(anthropic_deltas(&text).0.len(), 7);

    let c = client();
    let seen: Vec<Value> = c
        .get(format!("{url}/_mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(seen.is_empty(), "--no-record keeps no history");
    let stats: MockStats = c
        .get(format!("{url}/_mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.hits["bin"], 1);
    drop(c);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn sse_bench_measures_streams_against_the_mock() {
    let mock = start(
        MockOptions::default()
            .stream_events(3)
            .event_delay_ms(20)
            .record(false),
    )
    .await;
    let url = format!("{}/v1/messages", mock.url());
    let body = msg(true).to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_aibridge-sse-bench"))
            .args([
                "--url",
                &url,
                "--body",
                &body,
                "--header",
                "x-api-key: sse",
                "--rate",
                "200",
                "--requests",
                "10",
                "--time-limit-s",
                "20",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], 10, "{report}");
    assert_eq!(report["statuses"]["200"], 10);
    assert_eq!(report["unfinished"], 0);
    assert!(report["peak_open"].as_u64().unwrap() >= 2, "{report}");
    let lat = &report["latency_ms"];
    assert_eq!(lat["first_event"]["count"], 10);
    // 9 events, 8 pauses of 20 ms: the last byte comes well after the first event.
    let first = lat["first_event"]["p50"].as_f64().unwrap();
    let last = lat["last_byte"]["p50"].as_f64().unwrap();
    assert!(last - first >= 150.0, "{report}");
    assert!(
        lat["head"]["p50"].as_f64().unwrap() <= first + 1.0,
        "{report}"
    );
    assert_eq!(mock.hits("sse"), 10);
}

#[tokio::test]
async fn sse_bench_refuses_non_loopback_targets() {
    let out = tokio::task::spawn_blocking(|| {
        Command::new(env!("CARGO_BIN_EXE_aibridge-sse-bench"))
            .args(["--url", "http://192.0.2.1:80/v1/messages", "--body", "{}"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
}
