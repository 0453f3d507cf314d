//! Streaming specifics: event-by-event relay, the commit point at the first event, and failures
//! after it reaching the client as an SSE `error` event.

use crate::common::*;
use aibridge_mock::{MidStreamFailure, MockUpstream, Reply};
use futures_util::StreamExt;
use serde_json::Value;

#[tokio::test]
async fn events_are_relayed_as_they_arrive_not_buffered() {
    let mock = MockUpstream::start().await.unwrap();
    // 300 ms between upstream events: a buffering gateway would deliver them in one go.
    mock.script("k0", vec![Reply::ok().stream_deltas(3).event_delay_ms(300)]);
    let gw = start_pool(&mock.url(), "k0").await;
    let response = post_messages(&gw, &messages_body(true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut chunks = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        chunks.push(String::from_utf8(chunk.unwrap().to_vec()).unwrap());
    }
    let all = chunks.concat();
    let events = sse_event_types(&all);
    assert_eq!(
        events,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(
        sse_event_types(&chunks[0]),
        ["message_start"],
        "first chunk: {:?}",
        chunks[0]
    );
    assert!(
        chunks.len() >= events.len() - 2,
        "expected about one chunk per event, got {} chunks for {} events",
        chunks.len(),
        events.len()
    );
}

#[tokio::test]
async fn upstream_error_event_mid_stream_reaches_the_client_without_failover() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k0",
        vec![Reply::ok().fail_after_events(3, MidStreamFailure::ErrorEvent)],
    );
    let gw = start_pool(&mock.url(), "k0,k1").await;
    let response = post_messages(&gw, &messages_body(true)).await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert_eq!(
        sse_event_types(&body),
        ["message_start", "content_block_start", "ping", "error"]
    );
    let error = sse_data_of(&body, "error").unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "overloaded_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Overloaded")
    );
    assert_eq!(
        mock.seen_keys(),
        ["k0"],
        "no failover after the first event"
    );
    assert_eq!(gw.key_states("anthropic").await, ["valid", "valid"]);
}

#[tokio::test]
async fn a_cut_connection_mid_stream_becomes_an_sse_error_event() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k0",
        vec![Reply::ok().fail_after_events(4, MidStreamFailure::Cut)],
    );
    let gw = start_pool(&mock.url(), "k0,k1").await;
    let response = post_messages(&gw, &messages_body(true)).await;
    assert_eq!(response.status(), 200);
    let body = response
        .text()
        .await
        .expect("the client stream ends cleanly with an error event");
    let events = sse_event_types(&body);
    assert_eq!(events.first().map(String::as_str), Some("message_start"));
    assert_eq!(
        events.last().map(String::as_str),
        Some("error"),
        "{events:?}"
    );
    assert!(!events.contains(&"message_stop".to_string()));
    let error = sse_data_of(&body, "error").unwrap();
    assert_eq!(error["error"]["type"], "api_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream stream failed"),
        "{error}"
    );
    assert_eq!(mock.seen_keys(), ["k0"]);
}

#[tokio::test]
async fn a_stream_ending_without_message_stop_is_not_a_silent_success() {
    let mock = MockUpstream::start().await.unwrap();
    let truncated = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
    mock.script(
        "k0",
        vec![
            Reply::ok()
                .header("content-type", "text/event-stream")
                .body(truncated),
        ],
    );
    let gw = start_pool(&mock.url(), "k0").await;
    let response = post_messages(&gw, &messages_body(true)).await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert_eq!(
        sse_event_types(&body),
        ["message_start", "content_block_start", "error"]
    );
    let error = sse_data_of(&body, "error").unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("before the response was complete")
    );
}

#[tokio::test]
async fn a_failure_before_the_first_event_is_a_plain_http_error() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k0",
        vec![Reply::ok().fail_after_events(0, MidStreamFailure::Cut)],
    );
    let gw = start_pool(&mock.url(), "k0,k1").await;
    let response = post_messages(&gw, &messages_body(true)).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "api_error");
    // A broken connection is not the key's fault: no failover, key untouched.
    assert_eq!(mock.seen_keys(), ["k0"]);
    assert_eq!(gw.key_states("anthropic").await, ["valid", "valid"]);
}

#[tokio::test]
async fn a_slow_upstream_still_fails_over_before_the_first_event() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "k0",
        vec![Reply::status(429).header("retry-after", "9").delay_ms(200)],
    );
    mock.script("k1", vec![Reply::ok().delay_ms(200).event_delay_ms(20)]);
    let gw = start_pool(&mock.url(), "k0,k1").await;
    let response = post_messages(&gw, &messages_body(true)).await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert_eq!(
        sse_event_types(&body).last().map(String::as_str),
        Some("message_stop")
    );
    assert_eq!(mock.seen_keys(), ["k0", "k1"]);
}

/// Review item 12: whatever follows the API's terminal event (here an error report) is not
/// relayed, and the stream is recorded as the complete stream it was.
#[tokio::test]
async fn data_after_the_terminal_event_does_not_turn_a_complete_stream_into_a_failure() {
    for api in APIS {
        let complete = match api {
            TestApi::Messages => concat!(
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
                "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":3}}\n\n",
                "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            ),
            TestApi::Chat => concat!(
                "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
                "data: [DONE]\n\n",
            ),
            TestApi::Responses => concat!(
                "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"output\":[]}}\n\n",
                "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":1,\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"output\":[]}}\n\n",
            ),
        };
        let trailing = match api {
            TestApi::Messages => {
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"late\"}}\n\n"
            }
            TestApi::Chat => {
                "data: {\"error\":{\"message\":\"late\",\"type\":\"server_error\"}}\n\n"
            }
            TestApi::Responses => {
                "event: error\ndata: {\"type\":\"error\",\"message\":\"late\",\"sequence_number\":2}\n\n"
            }
        };
        let mock = MockUpstream::start().await.unwrap();
        mock.script(
            "k0",
            vec![
                Reply::ok()
                    .header("content-type", "text/event-stream")
                    .body(format!("{complete}{trailing}data: partial")),
            ],
        );
        let gw = api.start(&mock, "k0").await;
        let out = api.call(&gw, true).await;
        assert_eq!(out.status, 200);
        assert_eq!(
            out.body, complete,
            "{api:?}: relayed up to the terminal event"
        );
        let record = wait_for_ended(&gw, None, 1).await.remove(0);
        assert_eq!(record["outcome"], "completed", "{api:?}: {record:#}");
    }
}
