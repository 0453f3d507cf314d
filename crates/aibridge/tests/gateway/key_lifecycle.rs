//! Cooldown hints end to end, cooldown expiry, re-enabling disabled keys (probe and operator),
//! and failover under concurrency.

use std::time::{Duration, SystemTime};

use crate::common::*;
use aibridge_mock::{MockUpstream, Reply};

/// One request with k0 answering 429 and `headers`; returns k0's remaining cooldown in seconds.
async fn cooldown_after_429(headers: &[(&str, &str)], config: Option<&str>) -> f64 {
    let mock = MockUpstream::start().await.unwrap();
    let mut reply = Reply::status(429);
    for (name, value) in headers {
        reply = reply.header(name, value);
    }
    mock.script("k0", vec![reply]);
    let env = pool_env(&mock.url(), "k0,k1");
    let gw = Gateway::start_with_config(config, &env).await;
    let response = post_messages(&gw, &messages_body(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(mock.seen_keys(), ["k0", "k1"]);
    let k0 = &gw.keys("anthropic").await[0];
    assert_eq!(k0["state"], "cooling", "{k0}");
    k0["cooldown_remaining_secs"].as_f64().unwrap()
}

fn assert_between(value: f64, low: f64, high: f64, what: &str) {
    assert!(
        value > low && value <= high,
        "{what}: {value} not in ({low}, {high}]"
    );
}

#[tokio::test]
async fn retry_after_ms_wins_and_keeps_fractions() {
    let left = cooldown_after_429(&[("retry-after-ms", "2500"), ("retry-after", "30")], None).await;
    assert_between(left, 1.0, 2.5, "retry-after-ms 2500");
}

#[tokio::test]
async fn fractional_retry_after_seconds() {
    let left = cooldown_after_429(&[("retry-after", "1.5")], None).await;
    assert_between(left, 0.5, 1.5, "Retry-After 1.5");
}

#[tokio::test]
async fn http_date_retry_after() {
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    let left = cooldown_after_429(&[("retry-after", &date)], None).await;
    assert_between(left, 100.0, 121.0, "Retry-After as an HTTP-date");
}

#[tokio::test]
async fn anthropic_reset_header_of_the_exhausted_limit() {
    let reset = time::OffsetDateTime::now_utc() + time::Duration::seconds(90);
    let reset = reset
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let far = time::OffsetDateTime::now_utc() + time::Duration::seconds(3000);
    let far = far
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let left = cooldown_after_429(
        &[
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", &reset),
            // Not exhausted: its later reset must not be used.
            ("anthropic-ratelimit-requests-remaining", "12"),
            ("anthropic-ratelimit-requests-reset", &far),
        ],
        None,
    )
    .await;
    assert_between(left, 80.0, 90.5, "anthropic tokens reset");
}

#[tokio::test]
async fn openai_style_reset_duration() {
    let left = cooldown_after_429(
        &[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "6m0s"),
        ],
        None,
    )
    .await;
    assert_between(left, 350.0, 360.0, "x-ratelimit-reset-requests 6m0s");
}

#[tokio::test]
async fn no_hint_uses_the_configured_default() {
    let left = cooldown_after_429(&[], None).await;
    assert_between(left, 55.0, 60.0, "default cooldown");
    let config = "[key_pool]\ndefault_cooldown = \"7s\"\n";
    let left = cooldown_after_429(&[], Some(config)).await;
    assert_between(left, 5.0, 7.0, "configured default cooldown");
}

#[tokio::test]
async fn cooldowns_are_capped() {
    let left = cooldown_after_429(&[("retry-after", "999999")], None).await;
    assert_between(left, 3590.0, 3600.0, "capped at 1h");
    let config = "[key_pool]\nmax_cooldown = \"2m\"\n";
    let left = cooldown_after_429(&[("retry-after", "999999")], Some(config)).await;
    assert_between(left, 110.0, 120.0, "capped at the configured 2m");
}

#[tokio::test]
async fn a_cooled_key_serves_again_once_its_cooldown_expires() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("k0", vec![Reply::status(429).header("retry-after", "1")]);
    let gw = start_pool(&mock.url(), "k0,k1").await;
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    assert_eq!(mock.seen_keys(), ["k0", "k1", "k1"]);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(gw.key_states("anthropic").await, ["valid", "valid"]);
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    assert_eq!(
        mock.seen_keys(),
        ["k0", "k1", "k1", "k0"],
        "the primary key is preferred again"
    );
}

#[tokio::test]
async fn a_disabled_key_is_re_enabled_by_the_probe_when_it_works_again() {
    let mock = MockUpstream::start().await.unwrap();
    // 401 on the request, 401 on the first probe, then healthy.
    mock.script("k0", vec![Reply::status(401), Reply::status(401)]);
    let env = pool_env(&mock.url(), "k0,k1");
    let config = "[key_pool]\nprobe_initial_interval = \"200ms\"\nprobe_max_interval = \"400ms\"\n";
    let gw = Gateway::start_with_config(Some(config), &env).await;
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    assert_eq!(gw.key_states("anthropic").await, ["disabled", "valid"]);

    let mut states = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        states = gw.key_states("anthropic").await;
        if states[0] == "valid" {
            break;
        }
    }
    assert_eq!(states, ["valid", "valid"], "logs:\n{}", gw.logs());
    let probes: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.key == "k0")
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(
        probes,
        [
            ("POST".to_string(), "/v1/messages".to_string()),
            ("GET".to_string(), "/v1/models".to_string()),
            ("GET".to_string(), "/v1/models".to_string()),
        ],
        "one request, one rejected probe, one healthy probe"
    );
    assert!(gw.logs().contains("back in rotation"), "{}", gw.logs());

    let before = mock.requests().len();
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    assert_eq!(mock.seen_keys()[before..], ["k0"]);
}

#[tokio::test]
async fn an_operator_can_re_enable_a_disabled_key() {
    let mock = MockUpstream::start().await.unwrap();
    // The request, then the gateway's check of the key: both rejected.
    mock.script("k0", vec![Reply::status(403), Reply::status(403)]);
    let gw = start_pool(&mock.url(), "k0,k1").await;
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    assert_eq!(gw.key_states("anthropic").await, ["disabled", "valid"]);

    let response = client()
        .post(gw.url("/api/v1/keys/anthropic/0/enable"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["changed"], true);
    assert_eq!(gw.key_states("anthropic").await, ["valid", "valid"]);
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    assert_eq!(request_keys(&mock), ["k0", "k1", "k0"]);

    let missing = client()
        .post(gw.url("/api/v1/keys/anthropic/7/enable"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// Many clients at once while the first key is rate-limited: every request succeeds, and once any
/// request has seen the 429 the key is skipped by all. Requests already on their way to the key
/// when the first 429 comes back cannot be recalled, so the bound is one hit per concurrent
/// client (each client sends its requests one after another), not one per request.
#[tokio::test]
async fn concurrent_requests_all_succeed_and_the_limited_key_is_hit_only_a_few_times() {
    const CLIENTS: usize = 40;
    const REQUESTS_PER_CLIENT: usize = 10;
    let mock = MockUpstream::start().await.unwrap();
    mock.then("k0", Reply::status(429).header("retry-after", "60"));
    let gw = start_pool(&mock.url(), "k0,k1,k2").await;
    let http = client();
    let url = gw.url("/anthropic/v1/messages");
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let http = http.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for r in 0..REQUESTS_PER_CLIENT {
                    let response = http
                        .post(&url)
                        .header("anthropic-version", "2023-06-01")
                        .json(&messages_body((c + r) % 2 == 0))
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    outcomes.push((status, response.text().await.unwrap()));
                }
                outcomes
            })
        })
        .collect();
    for task in tasks {
        for (status, body) in task.await.unwrap() {
            assert_eq!(status, 200, "{body}");
            assert!(!body.contains("event: error"), "{body}");
        }
    }
    let total = CLIENTS * REQUESTS_PER_CLIENT;
    let k0_hits = mock.hits("k0");
    println!(
        "{total} requests from {CLIENTS} concurrent clients: rate-limited k0 hit {k0_hits} times"
    );
    assert_eq!(mock.hits("k1"), total, "every request was served by k1");
    assert_eq!(mock.hits("k2"), 0);
    assert!(k0_hits >= 1);
    assert!(
        k0_hits <= CLIENTS,
        "k0 hit {k0_hits} times: more than once per client"
    );
    assert_eq!(
        gw.key_states("anthropic").await,
        ["cooling", "valid", "valid"]
    );
}

/// Review item 14: right after a request is served, `/api/v1/keys` shows the serving key's
/// status and count (with and without recording).
#[tokio::test]
async fn the_keys_api_reflects_a_served_request_at_once() {
    for recording in ["on", "off"] {
        let mock = MockUpstream::start().await.unwrap();
        // Long enough keys that their hints differ (counts are per hint).
        mock.script(
            "key-first-1",
            vec![Reply::status(429).header("retry-after", "30")],
        );
        let mut env = pool_env(&mock.url(), "key-first-1,key-second-2");
        env.push(("AIBRIDGE_RECORDING".into(), recording.into()));
        let gw = Gateway::start(&env).await;
        for served in 1..=3 {
            let out = TestApi::Messages.call(&gw, false).await;
            assert_eq!(out.status, 200);
            let keys = gw.keys("anthropic").await;
            assert_eq!(keys[0]["last_status"], 429, "recording {recording}");
            assert_eq!(keys[1]["last_status"], 200, "recording {recording}");
            assert_eq!(keys[1]["requests_served"], served, "recording {recording}");
            assert_eq!(keys[0]["requests_served"], 0);
        }
    }
}
