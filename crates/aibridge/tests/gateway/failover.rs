//! Spec §9.2 (`TestInterception_KeyFailover`) and §9.3, one table run across every bridged API
//! (Anthropic Messages, Chat Completions, Responses), blocking and streaming: in streaming mode
//! every failure happens before the first event, so the same statuses apply.

use aibridge_mock::{MockUpstream, Reply};

use crate::common::*;

/// The expected error in each dialect: Anthropic's type, OpenAI's (type, code).
struct Dialects {
    anthropic: &'static str,
    openai: (&'static str, Option<&'static str>),
}

fn assert_error(api: TestApi, out: &Outcome, expected: &Dialects) -> ApiError {
    let error = api.error(&out.body);
    match api {
        TestApi::Messages => assert_eq!(error.kind, expected.anthropic, "{api:?}: {}", out.body),
        TestApi::Chat | TestApi::Responses => {
            assert_eq!(error.kind, expected.openai.0, "{api:?}: {}", out.body);
            assert_eq!(
                error.code.as_deref(),
                expected.openai.1,
                "{api:?}: {}",
                out.body
            );
        }
    }
    error
}

#[tokio::test]
async fn single_valid_key() {
    for api in APIS {
        for stream in STREAMING {
            let mock = MockUpstream::start().await.unwrap();
            let gw = api.start(&mock, "k0").await;
            let out = api.call(&gw, stream).await;
            api.assert_success(&out, stream);
            assert_eq!(out.retry_after, None);
            assert_eq!(mock.seen_keys(), ["k0"], "{api:?} stream={stream}");
            assert_eq!(gw.key_states(api.provider()).await, ["valid"]);
        }
    }
}

#[tokio::test]
async fn failover_after_429_cools_the_key_for_its_retry_after() {
    for api in APIS {
        for stream in STREAMING {
            let mock = MockUpstream::start().await.unwrap();
            mock.script("k0", vec![Reply::status(429).header("retry-after", "5")]);
            let gw = api.start(&mock, "k0,k1").await;
            let out = api.call(&gw, stream).await;
            api.assert_success(&out, stream);
            assert_eq!(out.retry_after, None, "{api:?} stream={stream}");
            assert_eq!(mock.seen_keys(), ["k0", "k1"], "{api:?} stream={stream}");
            assert_eq!(gw.key_states(api.provider()).await, ["cooling", "valid"]);
            let k0 = &gw.keys(api.provider()).await[0];
            let left = k0["cooldown_remaining_secs"].as_f64().unwrap();
            assert!(
                left > 3.0 && left <= 5.0,
                "cooldown follows Retry-After: {left}"
            );
            assert_eq!(k0["last_status"], 429);
            let credentials: Vec<_> = mock
                .requests()
                .iter()
                .map(|seen| api.credential_seen(seen))
                .collect();
            assert_eq!(
                credentials,
                [Some(api.credential_of("k0")), Some(api.credential_of("k1"))],
                "{api:?}: the pool key where the provider expects it, the token never sent"
            );
        }
    }
}

#[tokio::test]
async fn failover_after_401_and_403_disables_the_key() {
    for (status, reason) in [(401, "unauthorized"), (403, "forbidden")] {
        for api in APIS {
            for stream in STREAMING {
                let mock = MockUpstream::start().await.unwrap();
                // The request, then the gateway's check of the key: both rejected.
                mock.script(
                    "k0",
                    vec![
                        Reply::status(status).header("retry-after", "5"),
                        Reply::status(status),
                    ],
                );
                let gw = api.start(&mock, "k0,k1").await;
                let out = api.call(&gw, stream).await;
                api.assert_success(&out, stream);
                assert_eq!(out.retry_after, None);
                assert_eq!(
                    request_keys(&mock),
                    ["k0", "k1"],
                    "{api:?} {stream} {status}"
                );
                assert_eq!(checked_keys(&mock), ["k0"], "confirmed before disabling");
                assert_eq!(gw.key_states(api.provider()).await, ["disabled", "valid"]);
                assert_eq!(gw.keys(api.provider()).await[0]["disabled_reason"], reason);
                let credentials: Vec<_> = mock
                    .requests()
                    .iter()
                    .filter(|seen| !is_key_check(seen))
                    .map(|seen| api.credential_seen(seen))
                    .collect();
                assert_eq!(
                    credentials,
                    [Some(api.credential_of("k0")), Some(api.credential_of("k1"))],
                    "{api:?}: the pool key where the provider expects it, the token never sent"
                );
            }
        }
    }
}

#[tokio::test]
async fn all_keys_rate_limited_answers_429_with_the_soonest_cooldown() {
    for api in APIS {
        for stream in STREAMING {
            let mock = MockUpstream::start().await.unwrap();
            mock.script("k0", vec![Reply::status(429).header("retry-after", "5")]);
            // The shortest cooldown, in the provider's own convention: OpenAI's milliseconds
            // are honoured first, and rounded up.
            let shortest = match api {
                TestApi::Messages => Reply::status(429).header("retry-after", "3"),
                TestApi::Chat | TestApi::Responses => {
                    Reply::status(429).header("retry-after-ms", "2500")
                }
            };
            mock.script("k1", vec![shortest]);
            mock.script("k2", vec![Reply::status(429).header("retry-after", "10")]);
            let gw = api.start(&mock, "k0,k1,k2").await;
            let out = api.call(&gw, stream).await;
            assert_eq!(out.status, 429, "{api:?} stream={stream}: {}", out.body);
            assert_eq!(out.retry_after.as_deref(), Some("3"), "{api:?}");
            let error = assert_error(
                api,
                &out,
                &Dialects {
                    anthropic: "rate_limit_error",
                    openai: ("rate_limit_error", Some("rate_limit_exceeded")),
                },
            );
            assert!(
                error
                    .message
                    .contains("all configured keys are rate-limited"),
                "{}",
                error.message
            );
            assert_eq!(mock.seen_keys(), ["k0", "k1", "k2"]);
            assert_eq!(
                gw.key_states(api.provider()).await,
                ["cooling", "cooling", "cooling"]
            );
        }
    }
}

#[tokio::test]
async fn all_keys_rejected_answers_502_without_retry_after() {
    for api in APIS {
        for stream in STREAMING {
            let mock = MockUpstream::start().await.unwrap();
            mock.then("k0", Reply::status(401));
            mock.then("k1", Reply::status(403));
            let gw = api.start(&mock, "k0,k1").await;
            let out = api.call(&gw, stream).await;
            assert_eq!(out.status, 502, "{api:?} stream={stream}: {}", out.body);
            assert_eq!(out.retry_after, None);
            let error = assert_error(
                api,
                &out,
                &Dialects {
                    anthropic: "api_error",
                    openai: ("api_error", Some("server_error")),
                },
            );
            assert!(
                error
                    .message
                    .contains("all configured keys failed authentication"),
                "{}",
                error.message
            );
            assert_eq!(request_keys(&mock), ["k0", "k1"]);
            assert_eq!(checked_keys(&mock), ["k0", "k1"]);
            assert_eq!(
                gw.key_states(api.provider()).await,
                ["disabled", "disabled"]
            );

            // A later request does not reach the upstream at all.
            let again = api.call(&gw, stream).await;
            assert_eq!(again.status, 502);
            assert_eq!(mock.seen_keys().len(), 4);
        }
    }
}

#[tokio::test]
async fn server_errors_are_relayed_without_failover() {
    for api in APIS {
        for stream in STREAMING {
            let mock = MockUpstream::start().await.unwrap();
            mock.script("k0", vec![Reply::status(500).header("retry-after", "7")]);
            let gw = api.start(&mock, "k0,k1").await;
            let out = api.call(&gw, stream).await;
            assert_eq!(out.status, 500, "{api:?} stream={stream}: {}", out.body);
            assert_eq!(
                out.retry_after.as_deref(),
                Some("7"),
                "upstream Retry-After relayed"
            );
            assert_error(
                api,
                &out,
                &Dialects {
                    anthropic: "api_error",
                    openai: ("server_error", None),
                },
            );
            assert_eq!(mock.seen_keys(), ["k0"], "{api:?} stream={stream}");
            assert_eq!(gw.key_states(api.provider()).await, ["valid", "valid"]);
        }
    }
}

#[tokio::test]
async fn byok_gets_one_attempt_and_the_upstream_answer_unchanged() {
    for api in APIS {
        for stream in STREAMING {
            let mock = MockUpstream::start().await.unwrap();
            mock.script(
                "user-byok-key",
                vec![Reply::status(429).header("retry-after", "5")],
            );
            let gw = api.start(&mock, "k0,k1").await;
            let response = api
                .byok_request(&gw, stream, "user-byok-key")
                .send()
                .await
                .unwrap();
            let out = Outcome::of(response).await;
            assert_eq!(out.status, 429, "{api:?} stream={stream}");
            assert_eq!(out.retry_after.as_deref(), Some("5"));
            let error = api.error(&out.body);
            match api {
                TestApi::Messages => assert_eq!(error.kind, "rate_limit_error"),
                TestApi::Chat | TestApi::Responses => {
                    assert_eq!(error.code.as_deref(), Some("rate_limit_exceeded"))
                }
            }
            assert_eq!(mock.seen_keys(), ["user-byok-key"]);
            let seen = &mock.requests()[0];
            assert!(
                !seen
                    .headers
                    .iter()
                    .any(|(name, _)| name == "x-aibridge-token"),
                "the gateway token must not travel upstream"
            );
            // The pool was not touched.
            assert_eq!(gw.key_states(api.provider()).await, ["valid", "valid"]);
        }
    }
}

#[tokio::test]
async fn a_rate_limited_key_is_skipped_by_the_next_request() {
    // §9.3 TestAnthropic_KeyFailover / TestOpenAI_KeyFailover: k0 always 429, k1 healthy.
    for api in APIS {
        for stream in STREAMING {
            let mock = MockUpstream::start().await.unwrap();
            mock.then("k0", Reply::status(429).header("retry-after", "60"));
            let gw = api.start(&mock, "k0,k1").await;
            api.assert_success(&api.call(&gw, stream).await, stream);
            api.assert_success(&api.call(&gw, stream).await, stream);
            assert_eq!(
                mock.seen_keys(),
                ["k0", "k1", "k1"],
                "{api:?} stream={stream}"
            );
            assert_eq!(gw.key_states(api.provider()).await, ["cooling", "valid"]);
        }
    }
}

/// Review item 7: a BYOK answer is the client's own: status, every end-to-end header and the
/// body exactly as they came (SDKs obey `x-should-retry`; nothing is synthesised or cut).
#[tokio::test]
async fn byok_answers_are_relayed_unchanged() {
    let big = format!(
        r#"{{"type":"error","error":{{"type":"rate_limit_error","message":"{}"}}}}"#,
        "x".repeat(1_500_000)
    );
    for api in APIS {
        for stream in STREAMING {
            let mock = MockUpstream::start().await.unwrap();
            mock.script(
                "user-byok-key",
                vec![
                    Reply::status(429)
                        .header("retry-after-ms", "1500")
                        .header("x-should-retry", "false")
                        .header("anthropic-ratelimit-requests-remaining", "0")
                        .header("x-ratelimit-remaining-requests", "0")
                        .header("request-id", "req_byok_1")
                        .body(big.clone()),
                    Reply::ok().header("x-ratelimit-remaining-tokens", "999"),
                ],
            );
            let gw = api.start(&mock, "k0").await;
            let response = api
                .byok_request(&gw, stream, "user-byok-key")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 429, "{api:?} stream={stream}");
            let headers = response.headers().clone();
            assert_eq!(headers["x-should-retry"], "false", "{api:?}");
            assert_eq!(headers["anthropic-ratelimit-requests-remaining"], "0");
            assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
            assert_eq!(headers["request-id"], "req_byok_1");
            assert_eq!(headers["retry-after-ms"], "1500");
            assert!(
                headers.get("retry-after").is_none(),
                "{api:?}: nothing synthesised"
            );
            assert_eq!(
                response.text().await.unwrap(),
                big,
                "{api:?}: the body whole"
            );

            let response = api
                .byok_request(&gw, stream, "user-byok-key")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(
                response.headers()["x-ratelimit-remaining-tokens"],
                "999",
                "{api:?} stream={stream}: success headers too"
            );
        }
    }
}

/// Pool answers keep the upstream's request id (for support tickets), but not the pool key's
/// rate-limit counters.
#[tokio::test]
async fn pool_answers_keep_the_upstream_request_id() {
    for api in APIS {
        for stream in STREAMING {
            let mock = MockUpstream::start().await.unwrap();
            mock.script(
                "k0",
                vec![
                    Reply::ok()
                        .header("request-id", "req_pool_1")
                        .header("anthropic-ratelimit-requests-remaining", "7"),
                ],
            );
            let gw = api.start(&mock, "k0").await;
            let response = api.request(&gw, stream).send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["request-id"], "req_pool_1", "{api:?}");
            assert!(
                response
                    .headers()
                    .get("anthropic-ratelimit-requests-remaining")
                    .is_none()
            );
        }
    }
}
