//! The circuit breaker on the real binary: opened by the statuses the client got, refusing with
//! 503 in the caller's dialect without an upstream call, half-open after `open_for`, closed by a
//! success; failed-over attempts and mid-stream failures do not count.

use std::time::Duration;

use aibridge_mock::{MidStreamFailure, MockUpstream, Reply};

use crate::common::*;
use crate::metrics::{sample, scrape};

const BREAKER: &str =
    "[circuit_breaker]\nfailure_threshold = 2\nopen_for = \"2s\"\nhalf_open_max_requests = 1\n";

async fn start(mock: &MockUpstream, keys: &str) -> Gateway {
    Gateway::start_with_config(Some(BREAKER), &pool_env(&mock.url(), keys)).await
}

fn breaker_state(text: &str) -> Option<f64> {
    sample(
        text,
        "aibridge_circuit_breaker_state",
        &[
            ("provider", "anthropic"),
            ("route", "/v1/messages"),
            ("model", "claude-sonnet-4-5"),
        ],
    )
}

#[tokio::test]
async fn full_cycle_closed_open_half_open_closed() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::status(503), Reply::status(529)]);
    let gw = start(&mock, "k0").await;
    for expected in [503, 529] {
        let out = Outcome::of(post_messages(&gw, &messages_body(false)).await).await;
        assert_eq!(out.status, expected, "the upstream's answer is relayed");
    }
    assert_eq!(mock.requests().len(), 2);

    let refused = post_messages(&gw, &messages_body(false)).await;
    assert_eq!(refused.status(), 503);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert_eq!(body["error"]["message"], "circuit breaker is open");
    assert_eq!(mock.requests().len(), 2, "no upstream call while open");
    // The OpenAI dialect on its own breaker is not affected; its shape is checked in unit
    // tests. Another model of the same route has a breaker of its own.
    let mut other = messages_body(false);
    other["model"] = "claude-other".into();
    assert_eq!(post_messages(&gw, &other).await.status(), 200);

    let text = scrape(&gw).await;
    assert_eq!(breaker_state(&text), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "aibridge_circuit_breaker_rejections_total",
            &[
                ("provider", "anthropic"),
                ("route", "/v1/messages"),
                ("model", "claude-sonnet-4-5")
            ],
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "aibridge_requests_total",
            &[
                ("provider", "anthropic"),
                ("route", "/v1/messages"),
                ("outcome", "rejected"),
                ("client", "Unknown")
            ],
        ),
        Some(1.0)
    );
    assert!(
        gw.logs().contains("circuit breaker open"),
        "the trip is logged"
    );

    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Half-open: one request goes through, and its success closes the breaker.
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    assert_eq!(breaker_state(&scrape(&gw).await), Some(0.0));
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
}

#[tokio::test]
async fn failed_over_attempts_and_mid_stream_failures_do_not_count() {
    let mock = MockUpstream::start().await.unwrap();
    // Every request: k0 answers 429 (cooling 0.1 s), k1 serves.
    let gw = start(&mock, "k0,k1").await;
    for _ in 0..3 {
        mock.script("k0", vec![Reply::status(429).header("retry-after-ms", "1")]);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            post_messages(&gw, &messages_body(false)).await.status(),
            200
        );
    }
    // Streams that fail after their first event answered 200.
    for _ in 0..3 {
        mock.script(
            "k0",
            vec![Reply::ok().fail_after_events(2, MidStreamFailure::ErrorEvent)],
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let response = post_messages(&gw, &messages_body(true)).await;
        assert_eq!(response.status(), 200);
        let body = response.text().await.unwrap();
        assert!(body.contains("event: error"), "{body}");
    }
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    assert_eq!(breaker_state(&scrape(&gw).await), Some(0.0));
}

#[tokio::test]
async fn exhaustion_counts_as_a_failure() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::status(429).header("retry-after", "30")]);
    let gw = start(&mock, "k0").await;
    // First: k0 429 → exhausted (429); second: k0 cooling → exhausted without a call.
    for _ in 0..2 {
        assert_eq!(
            post_messages(&gw, &messages_body(false)).await.status(),
            429
        );
    }
    let refused = post_messages(&gw, &messages_body(false)).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(breaker_state(&scrape(&gw).await), Some(1.0));
}
