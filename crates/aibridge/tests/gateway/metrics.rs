//! `GET /metrics` on the real binary after failovers, exhaustions, streams, BYOK and refused
//! requests: exact counts, and never a key, a token or a prompt in the text.

use aibridge_mock::{DEFAULT_DELTAS, MockUpstream, Reply};
use serde_json::json;

use crate::common::*;

const K0: &str = "sk-ant-metrics-0000";
const K1: &str = "sk-ant-metrics-1111";
const HINT0: &str = "sk...00";
const HINT1: &str = "sk...11";

/// The value of the sample `name{labels}` (labels in any order), if the text has it.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let mut found: Vec<(&str, &str)> = rest
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once("=\"")?;
                    Some((k, v.trim_end_matches('"')))
                })
                .collect();
            let mut wanted = labels.to_vec();
            found.sort_unstable();
            wanted.sort_unstable();
            (found == wanted).then(|| value.parse().ok())?
        })
}

pub async fn scrape(gw: &Gateway) -> String {
    let response = client().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
    );
    response.text().await.unwrap()
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

fn requests(text: &str, outcome: &str) -> f64 {
    value(
        text,
        "aibridge_requests_total",
        &[
            ("provider", "anthropic"),
            ("route", "/v1/messages"),
            ("outcome", outcome),
            ("client", "Unknown"),
        ],
    )
}

fn attempts(text: &str, key: &str, status: &str) -> f64 {
    value(
        text,
        "aibridge_upstream_attempts_total",
        &[("provider", "anthropic"), ("key", key), ("status", status)],
    )
}

#[tokio::test]
async fn counts_after_failover_exhaustion_streams_byok_and_refusals() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_pool(&mock.url(), &format!("{K0},{K1}")).await;

    let fresh = scrape(&gw).await;
    assert_eq!(
        requests(&fresh, "completed"),
        0.0,
        "series exist from the start"
    );
    assert_eq!(
        value(
            &fresh,
            "aibridge_key_state",
            &[
                ("provider", "anthropic"),
                ("key", HINT0),
                ("state", "valid")
            ]
        ),
        1.0
    );
    assert_eq!(value(&fresh, "aibridge_key_state_store_up", &[]), 1.0);

    // 1. K0 rate-limited for 30 s, K1 serves: blocking.
    mock.script(K0, vec![Reply::status(429).header("retry-after", "30")]);
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    // 2. A stream, served by K1 (K0 is cooling).
    let streamed = post_messages(&gw, &messages_body(true)).await;
    assert_eq!(streamed.status(), 200);
    streamed.text().await.unwrap();
    // 3. K1 rate-limited too: exhausted.
    mock.script(K1, vec![Reply::status(429).header("retry-after", "20")]);
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        429
    );
    // 4. A refused request: no model.
    let refused = post_messages(&gw, &json!({"max_tokens": 1, "messages": []})).await;
    assert_eq!(refused.status(), 400);
    // 5. BYOK: one attempt with the client's key.
    let byok = client()
        .post(gw.url("/anthropic/v1/messages"))
        .header("x-aibridge-token", "abk_anything")
        .header("x-api-key", "sk-ant-client-own-key-9999")
        .header("anthropic-version", "2023-06-01")
        .json(&messages_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(byok.status(), 200);

    let text = scrape(&gw).await;
    assert_eq!(requests(&text, "completed"), 3.0, "{text}");
    assert_eq!(requests(&text, "exhausted"), 1.0);
    assert_eq!(requests(&text, "rejected"), 1.0);
    assert_eq!(requests(&text, "upstream_error"), 0.0);
    assert_eq!(attempts(&text, HINT0, "429"), 1.0);
    assert_eq!(attempts(&text, HINT1, "200"), 2.0);
    assert_eq!(attempts(&text, HINT1, "429"), 1.0);
    assert_eq!(attempts(&text, "byok", "200"), 1.0);
    let transition = |key, reason| {
        value(
            &text,
            "aibridge_key_pool_transitions_total",
            &[("provider", "anthropic"), ("key", key), ("reason", reason)],
        )
    };
    assert_eq!(transition(HINT0, "rate_limited"), 1.0);
    assert_eq!(transition(HINT1, "rate_limited"), 1.0);
    assert_eq!(transition(HINT0, "unauthorized"), 0.0);
    assert_eq!(
        value(
            &text,
            "aibridge_key_pool_exhaustions_total",
            &[("provider", "anthropic"), ("outcome", "rate_limited")]
        ),
        1.0
    );
    // Keys tried per pool-paid request: 2 (failover), 1 (stream), 1 (exhausted after K1).
    let failover = |suffix: &str, labels: &[(&str, &str)]| {
        value(
            &text,
            &format!("aibridge_key_pool_failover_attempts{suffix}"),
            labels,
        )
    };
    assert_eq!(failover("_count", &[("provider", "anthropic")]), 3.0);
    assert_eq!(failover("_sum", &[("provider", "anthropic")]), 4.0);
    assert_eq!(
        failover("_bucket", &[("provider", "anthropic"), ("le", "1")]),
        2.0
    );
    // Key state is read at scrape time.
    for (key, state) in [(HINT0, "cooling"), (HINT1, "cooling")] {
        assert_eq!(
            value(
                &text,
                "aibridge_key_state",
                &[("provider", "anthropic"), ("key", key), ("state", state)]
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "aibridge_key_state",
                &[("provider", "anthropic"), ("key", key), ("state", "valid")]
            ),
            0.0
        );
    }
    let left = value(
        &text,
        "aibridge_key_cooldown_remaining_seconds",
        &[("provider", "anthropic"), ("key", HINT0)],
    );
    assert!(left > 20.0 && left <= 30.0, "{left}");
    // Tokens: three answers with usage (blocking, stream, BYOK), by the client's model.
    let tokens = |kind| {
        value(
            &text,
            "aibridge_tokens_total",
            &[
                ("provider", "anthropic"),
                ("model", "claude-sonnet-4-5"),
                ("type", kind),
            ],
        )
    };
    assert_eq!(tokens("input"), 3.0 * 11.0);
    assert_eq!(tokens("output"), 3.0 * 2.0 * DEFAULT_DELTAS as f64);
    // Every request that ended is timed; none is left in flight.
    let route = [("provider", "anthropic"), ("route", "/v1/messages")];
    assert_eq!(
        value(&text, "aibridge_request_duration_seconds_count", &route),
        5.0
    );
    assert_eq!(
        value(&text, "aibridge_gateway_overhead_seconds_count", &route),
        5.0
    );
    assert_eq!(value(&text, "aibridge_requests_in_flight", &route), 0.0);
    // Nothing secret: keys only as hints, no token, no prompt.
    for secret in [K0, K1, "sk-ant-client-own-key-9999", "abk_", "Say hello"] {
        assert!(!text.contains(secret), "{secret} in /metrics");
    }
    // The log line of a request says what happened.
    let logs = gw.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("request finished") && l.contains("outcome=\"exhausted\""))
        .unwrap_or_else(|| panic!("no finished line for the exhausted request:\n{logs}"));
    for field in [
        "request_id=",
        "provider=\"anthropic\"",
        "route=\"/v1/messages\"",
        "model=\"claude-sonnet-4-5\"",
        "status=429",
        "attempts=1",
        "key=\"sk...11\"",
        "duration_ms=",
        "overhead_ms=",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}

#[tokio::test]
async fn passthrough_routes_are_labelled_by_their_allow_list_entry() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_pool(&mock.url(), K0).await;
    for path in [
        "/anthropic/v1/models",
        "/anthropic/v1/models/claude-x",
        "/anthropic/v1/models/claude-y",
    ] {
        let response = client()
            .get(gw.url(path))
            .header("x-api-key", "abk_gateway_token")
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success() || response.status() == 404,
            "{path}"
        );
    }
    let text = scrape(&gw).await;
    let count = |route| {
        OUTCOMES
            .iter()
            .map(|outcome| {
                value(
                    &text,
                    "aibridge_requests_total",
                    &[
                        ("provider", "anthropic"),
                        ("route", route),
                        ("outcome", outcome),
                        ("client", "Unknown"),
                    ],
                )
            })
            .sum::<f64>()
    };
    assert_eq!(count("/v1/models"), 1.0);
    assert_eq!(count("/v1/models/*"), 2.0);
    assert!(!text.contains("claude-x"), "ids in paths make no series");
}

const OUTCOMES: [&str; 7] = [
    "completed",
    "upstream_error",
    "exhausted",
    "gateway_error",
    "stream_failed",
    "client_disconnected",
    "rejected",
];
