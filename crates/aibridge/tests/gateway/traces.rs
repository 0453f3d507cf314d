//! OpenTelemetry traces from the real binary to an OTLP/HTTP receiver on loopback: a server
//! span per request continuing the client's `traceparent`, a client span per upstream attempt,
//! the GenAI attributes, and the trace context sent upstream.

use std::time::Duration;

use aibridge_mock::{DEFAULT_DELTAS, MockUpstream, Reply};

use crate::common::*;
use crate::otlp_receiver::OtlpReceiver;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";
const K0: &str = "sk-ant-traces-0000";
const K1: &str = "sk-ant-traces-1111";

async fn start(mock: &MockUpstream, receiver: &OtlpReceiver) -> Gateway {
    let mut env = pool_env(&mock.url(), &format!("{K0},{K1}"));
    env.extend([
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
            receiver.base.clone(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "100".to_string()),
        ("OTEL_SERVICE_NAME".to_string(), "aibridge-test".to_string()),
    ]);
    Gateway::start(&env).await
}

#[tokio::test]
async fn a_failed_over_request_is_one_trace_continued_from_the_client_and_upstream() {
    let receiver = OtlpReceiver::start().await;
    let mock = MockUpstream::start().await.unwrap();
    mock.script(K0, vec![Reply::status(429).header("retry-after", "30")]);
    let gw = start(&mock, &receiver).await;

    let response = client()
        .post(gw.url("/anthropic/v1/messages"))
        .header("x-api-key", "abk_gateway_token")
        .header("anthropic-version", "2023-06-01")
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .json(&messages_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let spans = receiver
        .wait_for(
            |spans| {
                spans.iter().filter(|s| s.name == "POST upstream").count() == 2
                    && spans.iter().any(|s| s.kind == "server")
            },
            Duration::from_secs(10),
        )
        .await;
    let server = spans.iter().find(|s| s.kind == "server").unwrap();
    assert_eq!(server.name, "chat claude-sonnet-4-5");
    assert_eq!(server.trace_id, TRACE_ID, "the client's trace is continued");
    assert_eq!(server.parent_span_id, CLIENT_SPAN);
    assert_eq!(server.service_name.as_deref(), Some("aibridge-test"));
    for (key, value) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "anthropic"),
        ("gen_ai.request.model", "claude-sonnet-4-5"),
        ("gen_ai.response.model", "claude-sonnet-4-5"),
        ("aibridge.outcome", "completed"),
        ("aibridge.key", "sk...11"),
    ] {
        assert_eq!(server.str_attr(key), Some(value), "{key}: {server:?}");
    }
    for (key, value) in [
        ("gen_ai.usage.input_tokens", 11),
        ("gen_ai.usage.output_tokens", 2 * DEFAULT_DELTAS as i64),
        ("gen_ai.usage.cache_read.input_tokens", 0),
        ("http.response.status_code", 200),
        ("aibridge.attempts", 2),
    ] {
        assert_eq!(server.int_attr(key), Some(value), "{key}: {server:?}");
    }

    let mut attempts: Vec<_> = spans.iter().filter(|s| s.name == "POST upstream").collect();
    attempts.sort_by_key(|s| s.int_attr("aibridge.attempt"));
    for attempt in &attempts {
        assert_eq!(attempt.trace_id, TRACE_ID);
        assert_eq!(
            attempt.parent_span_id, server.span_id,
            "a child of the request"
        );
        assert_eq!(attempt.kind, "client");
    }
    assert_eq!(attempts[0].str_attr("aibridge.key"), Some("sk...00"));
    assert_eq!(attempts[0].int_attr("http.response.status_code"), Some(429));
    assert_eq!(
        attempts[0].str_attr("aibridge.verdict"),
        Some("rate_limited")
    );
    assert_eq!(attempts[1].str_attr("aibridge.key"), Some("sk...11"));
    assert_eq!(attempts[1].int_attr("http.response.status_code"), Some(200));
    assert_eq!(attempts[1].attr("aibridge.verdict"), None);

    // Each attempt sent its own span as the upstream's parent.
    let sent: Vec<String> = mock
        .requests()
        .iter()
        .map(|seen| {
            seen.headers
                .iter()
                .find(|(name, _)| name == "traceparent")
                .map(|(_, value)| value.clone())
                .unwrap()
        })
        .collect();
    assert_eq!(
        sent,
        attempts
            .iter()
            .map(|a| format!("00-{TRACE_ID}-{}-01", a.span_id))
            .collect::<Vec<_>>()
    );
    // Nothing secret in any span.
    let everything = format!("{spans:?}");
    for secret in [K0, K1, "abk_gateway_token", "Say hello"] {
        assert!(!everything.contains(secret), "{secret} in a span");
    }
}

#[tokio::test]
async fn a_stream_records_its_usage_and_a_request_without_traceparent_starts_a_trace() {
    let receiver = OtlpReceiver::start().await;
    let mock = MockUpstream::start().await.unwrap();
    let gw = start(&mock, &receiver).await;
    let response = post_messages(&gw, &messages_body(true)).await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap();
    let server = receiver
        .wait_for(
            |spans| spans.iter().any(|s| s.kind == "server"),
            Duration::from_secs(10),
        )
        .await
        .into_iter()
        .find(|s| s.kind == "server")
        .unwrap();
    assert_eq!(server.parent_span_id, "", "a root span");
    assert_eq!(
        server.int_attr("gen_ai.usage.output_tokens"),
        Some(2 * DEFAULT_DELTAS as i64)
    );
    assert_eq!(server.str_attr("aibridge.outcome"), Some("completed"));
}

#[tokio::test]
async fn an_unreachable_collector_costs_a_log_line_not_the_request() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mock = MockUpstream::start().await.unwrap();
    let mut env = pool_env(&mock.url(), K0);
    env.extend([
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "50".to_string()),
    ]);
    let gw = Gateway::start(&env).await;
    for _ in 0..3 {
        assert_eq!(
            post_messages(&gw, &messages_body(false)).await.status(),
            200
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !gw.logs().contains("ExportError") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no export error logged:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = std::time::Instant::now();
    let status = gw.terminate().await;
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown is bounded"
    );
}
