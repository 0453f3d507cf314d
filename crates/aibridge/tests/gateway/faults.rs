//! The upstream misbehaves: silence, slowness, resets. Each call has its own deadline
//! (`connect_timeout`, `request_timeout`, `first_byte_timeout`, `stream_idle_timeout`), none
//! fails over (it is not the key's fault), and every answer is in the caller's dialect.

use std::time::Duration;

use aibridge_mock::{MockUpstream, Reply};
use futures_util::StreamExt;

use crate::common::*;

async fn start_with_timeouts(mock: &MockUpstream, keys: &str, upstream: &str) -> Gateway {
    let env = pool_env(&mock.url(), keys);
    Gateway::start_with_config(Some(&format!("[upstream]\n{upstream}\n")), &env).await
}

/// Review item 2: a blocking answer slower than the stream idle bound is not cut by it; only
/// `request_timeout` bounds a blocking call.
#[tokio::test]
async fn a_blocking_answer_may_take_longer_than_the_stream_idle_bound() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::ok().delay_ms(1500)]);
    let gw = start_with_timeouts(
        &mock,
        "k0",
        "stream_idle_timeout = \"500ms\"\nrequest_timeout = \"10s\"",
    )
    .await;
    let out = TestApi::Messages.call(&gw, false).await;
    TestApi::Messages.assert_success(&out, false);
}

#[tokio::test]
async fn a_blocking_call_over_request_timeout_gets_504_without_failover() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::ok().delay_ms(3000)]);
    let gw = start_with_timeouts(&mock, "k0,k1", "request_timeout = \"500ms\"").await;
    let out = TestApi::Messages.call(&gw, false).await;
    assert_eq!(out.status, 504, "{}", out.body);
    let error = TestApi::Messages.error(&out.body);
    assert_eq!(error.kind, "api_error");
    assert_eq!(mock.seen_keys(), ["k0"], "a timeout is not the key's fault");
    assert_eq!(gw.key_states("anthropic").await, ["valid", "valid"]);
}

#[tokio::test]
async fn a_stream_whose_head_never_comes_gets_504_within_first_byte_timeout() {
    for api in APIS {
        let mock = MockUpstream::start().await.unwrap();
        mock.script("k0", vec![Reply::ok().delay_ms(5000)]);
        let config = "[upstream]\nfirst_byte_timeout = \"500ms\"\nrequest_timeout = \"60s\"\n";
        let gw = match api {
            TestApi::Messages => {
                Gateway::start_with_config(Some(config), &pool_env(&mock.url(), "k0,k1")).await
            }
            TestApi::Chat | TestApi::Responses => {
                let base = format!("{}/v1", mock.url());
                Gateway::start_with_config(
                    Some(config),
                    &[
                        ("AIBRIDGE_OPENAI_KEYS", "k0,k1"),
                        ("AIBRIDGE_OPENAI_BASE_URL", base.as_str()),
                    ],
                )
                .await
            }
        };
        let started = std::time::Instant::now();
        let out = api.call(&gw, true).await;
        assert_eq!(out.status, 504, "{api:?}: {}", out.body);
        api.error(&out.body);
        assert!(
            started.elapsed() < Duration::from_millis(4500),
            "{api:?}: answered before the upstream's head would have come"
        );
        assert_eq!(mock.seen_keys(), ["k0"], "{api:?}");
    }
}

#[tokio::test]
async fn a_stream_that_stalls_ends_with_an_sse_error_after_the_idle_bound() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k0",
        vec![Reply::ok().stream_deltas(3).event_delay_ms(3000)],
    );
    let gw = start_with_timeouts(&mock, "k0", "stream_idle_timeout = \"500ms\"").await;
    let out = TestApi::Messages.call(&gw, true).await;
    assert_eq!(out.status, 200);
    let events = sse_event_types(&out.body);
    assert_eq!(events.first().map(String::as_str), Some("message_start"));
    assert_eq!(
        events.last().map(String::as_str),
        Some("error"),
        "{events:?}"
    );
    let error = sse_data_of(&out.body, "error").unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sent nothing for 0.5s"),
        "{error}"
    );
}

/// A TCP reset before any header: 502 in the dialect, no failover.
#[tokio::test]
async fn a_reset_before_the_headers_is_502_without_failover() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Read the request, then close with linger 0: RST instead of FIN.
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
            )
            .await;
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    });
    let gw = start_pool(&format!("http://{addr}"), "k0,k1").await;
    for stream in STREAMING {
        let out = TestApi::Messages.call(&gw, stream).await;
        assert_eq!(out.status, 502, "{}", out.body);
        let error = TestApi::Messages.error(&out.body);
        assert_eq!(error.kind, "api_error");
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one attempt per request: a reset is not the key's fault"
    );
    assert_eq!(gw.key_states("anthropic").await, ["valid", "valid"]);
}

/// A client that reads slowly: the relay applies back-pressure (the upstream is read only as
/// fast as the client takes it) rather than buffering the whole stream.
#[tokio::test]
async fn a_slow_reader_gets_back_pressure_not_buffering() {
    let mock = MockUpstream::start().await.unwrap();
    // About 15 MB of events, sent as fast as the sockets take them.
    mock.script("k0", vec![Reply::ok().stream_deltas(100_000)]);
    let gw = start_pool(&mock.url(), "k0").await;
    let rss_before = gateway_rss_kib(&gw);
    let response = post_messages(&gw, &messages_body(true)).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss_while_stalled = gateway_rss_kib(&gw);
    let mut total = 0usize;
    while let Some(chunk) = body.next().await {
        total += chunk.unwrap().len();
    }
    assert!(
        total > 10_000_000,
        "the whole stream arrived: {total} bytes"
    );
    let grown = rss_while_stalled.saturating_sub(rss_before);
    assert!(
        grown < 8 * 1024,
        "the gateway holds at most socket buffers' worth while the client stalls, \
         not the {total} bytes of the stream: it grew by {grown} KiB"
    );
}

fn gateway_rss_kib(gw: &Gateway) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A client that sends its body slowly still gets its answer: the body is read as it comes.
#[tokio::test]
async fn a_client_that_sends_its_body_slowly_is_served() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_pool(&mock.url(), "k0").await;
    let body = serde_json::to_vec(&messages_body(false)).unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(16).map(|c| Ok(c.to_vec())).collect();
    let slow = futures_util::stream::iter(chunks).then(|chunk| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        chunk
    });
    let response = client()
        .post(gw.url("/anthropic/v1/messages"))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(reqwest::Body::wrap_stream(slow))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(mock.requests()[0].body.as_bytes(), &body[..]);
}
