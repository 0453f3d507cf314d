//! Client mistakes get a clear 4xx in the caller's dialect and never reach the upstream.

use crate::common::*;
use aibridge_mock::MockUpstream;
use serde_json::Value;

async fn send_raw(gw: &Gateway, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = client()
        .post(gw.url(path))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

fn anthropic_error(v: &Value) -> (&str, &str) {
    assert_eq!(v["type"], "error", "{v}");
    (
        v["error"]["type"].as_str().unwrap(),
        v["error"]["message"].as_str().unwrap(),
    )
}

#[tokio::test]
async fn malformed_bodies_get_400_invalid_request_error() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_pool(&mock.url(), "k0").await;
    let cases: [(&str, &str); 6] = [
        ("{\"model\": \"m\",", "not valid JSON"),
        ("", "empty"),
        ("[1,2]", "must be a JSON object"),
        (r#"{"max_tokens":5,"messages":[]}"#, "`model` is required"),
        (
            r#"{"model":42,"messages":[]}"#,
            "`model` must be a non-empty string",
        ),
        (
            r#"{"model":"m","stream":"yes"}"#,
            "`stream` must be a boolean",
        ),
    ];
    for (body, expected) in cases {
        let (status, value) = send_raw(&gw, "/anthropic/v1/messages", body.to_string()).await;
        assert_eq!(status, 400, "{body}");
        let (kind, message) = anthropic_error(&value);
        assert_eq!(kind, "invalid_request_error");
        assert!(message.contains(expected), "{body}: {message}");
    }
    assert!(mock.requests().is_empty(), "no upstream call for bad input");
}

#[tokio::test]
async fn bodies_over_32_mib_get_413() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_pool(&mock.url(), "k0").await;
    let mut big = br#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":""#.to_vec();
    big.resize(33 * 1024 * 1024, b'a');
    big.extend_from_slice(br#""}]}"#);
    let (status, value) = send_raw(&gw, "/anthropic/v1/messages", big).await;
    assert_eq!(status, 413);
    let (kind, message) = anthropic_error(&value);
    assert_eq!(kind, "request_too_large");
    assert!(message.contains("33554432"), "{message}");
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn chunked_bodies_over_the_limit_get_413_too() {
    let mock = MockUpstream::start().await.unwrap();
    let env = pool_env(&mock.url(), "k0");
    let gw = Gateway::start_with_config(Some("max_request_body_bytes = 1024\n"), &env).await;
    // A streamed body has no Content-Length: the limit applies while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..4).map(|_| Ok(vec![b' '; 512])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let (status, value) = send_raw(&gw, "/anthropic/v1/messages", body).await;
    assert_eq!(status, 413);
    assert_eq!(anthropic_error(&value).0, "request_too_large");
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_pool(&mock.url(), "k0").await;

    let (status, value) = send_raw(&gw, "/anthropic/v1/complete", "{}").await;
    assert_eq!(status, 404);
    let (kind, message) = anthropic_error(&value);
    assert_eq!(kind, "not_found_error");
    assert_eq!(message, "route not supported: POST /anthropic/v1/complete");

    // Outside any provider, an OpenAI-shaped answer unless the client speaks Anthropic.
    let response = client().get(gw.url("/nope/v1/chat")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let value: Value = response.json().await.unwrap();
    assert_eq!(
        value["error"]["message"],
        "route not supported: GET /nope/v1/chat"
    );

    let response = client()
        .get(gw.url("/anthropic/v1/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let value: Value = response.json().await.unwrap();
    assert_eq!(anthropic_error(&value).0, "invalid_request_error");
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn a_provider_without_keys_serves_byok_only() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(&[("AIBRIDGE_ANTHROPIC_BASE_URL", &mock.url())]).await;
    let (status, value) = send_raw(
        &gw,
        "/anthropic/v1/messages",
        messages_body(false).to_string(),
    )
    .await;
    assert_eq!(status, 401);
    let (kind, message) = anthropic_error(&value);
    assert_eq!(kind, "authentication_error");
    assert!(message.contains("X-AIBridge-Token"), "{message}");
    assert!(mock.requests().is_empty());

    let response = client()
        .post(gw.url("/anthropic/v1/messages"))
        .header("x-aibridge-token", "t")
        .header("x-api-key", "user-key")
        .json(&messages_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(mock.seen_keys(), ["user-key"]);
}

#[tokio::test]
async fn tokens_mode_refuses_requests_without_a_valid_gateway_token() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(&[
        ("AIBRIDGE_AUTH", "tokens"),
        ("AIBRIDGE_ANTHROPIC_KEYS", "k0"),
        ("AIBRIDGE_ANTHROPIC_BASE_URL", &mock.url()),
    ])
    .await;
    let response = client()
        .post(gw.url("/anthropic/v1/messages"))
        .json(&messages_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let value: Value = response.json().await.unwrap();
    let (kind, message) = anthropic_error(&value);
    assert_eq!(kind, "authentication_error");
    assert!(message.contains("gateway token is required"), "{message}");

    let response = post_messages(&gw, &messages_body(false)).await;
    assert_eq!(response.status(), 401);
    let value: Value = response.json().await.unwrap();
    assert_eq!(anthropic_error(&value).1, "the gateway token is not valid");
    assert!(mock.requests().is_empty());

    // The admin API is closed too.
    let response = client().get(gw.url("/api/v1/keys")).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

/// Review item 8: passthrough takes GET, POST, DELETE, HEAD and OPTIONS; anything else is 405
/// and never reaches the upstream with a pool key.
#[tokio::test]
async fn passthrough_refuses_other_methods() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_pool(&mock.url(), "k0").await;
    for method in ["TRACE", "PUT", "PATCH", "CONNECT2"] {
        let response = client()
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                gw.url("/anthropic/v1/models"),
            )
            .header("anthropic-version", "2023-06-01")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method}");
        let value: Value = response.json().await.unwrap();
        assert_eq!(
            anthropic_error(&value).0,
            "invalid_request_error",
            "{method}"
        );
    }
    for method in ["GET", "HEAD", "OPTIONS"] {
        let response = client()
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                gw.url("/anthropic/v1/models"),
            )
            .send()
            .await
            .unwrap();
        assert_ne!(response.status(), 405, "{method}");
    }
    assert_eq!(
        mock.requests().len(),
        3,
        "only the allowed methods went upstream"
    );
}

/// Review item 9: encoded slashes and backslashes cannot walk out of the allow-list, and the
/// headers that rewrite a request's URL or method never travel.
#[tokio::test]
async fn encoded_slashes_are_refused_and_rewriting_headers_stay_behind() {
    let mock = MockUpstream::start().await.unwrap();
    let base = format!("{}/v1", mock.url());
    let gw = Gateway::start(&[
        ("AIBRIDGE_OPENAI_KEYS", "k0"),
        ("AIBRIDGE_OPENAI_BASE_URL", base.as_str()),
    ])
    .await;
    for path in [
        "/openai/v1/responses/x%2F..%2F..%2Ffiles",
        "/openai/v1/responses/x%2f..%2ffiles",
        "/openai/v1/models/a%5C..%5Cfiles",
    ] {
        let response = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let value: Value = response.json().await.unwrap();
        assert_eq!(value["error"]["code"], "not_found", "{path}");
    }
    assert!(mock.requests().is_empty());

    let response = client()
        .get(gw.url("/openai/v1/models"))
        .header("x-original-url", "/v1/files")
        .header("x-rewrite-url", "/v1/files")
        .header("x-http-method-override", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = &mock.requests()[0];
    for name in ["x-original-url", "x-rewrite-url", "x-http-method-override"] {
        assert!(
            !seen.headers.iter().any(|(n, _)| n == name),
            "{name} was forwarded"
        );
    }
}

/// Review item 15: the operator API's own errors are JSON like the rest.
#[tokio::test]
async fn operator_api_errors_are_json() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_pool(&mock.url(), "k0").await;
    for (method, path, status) in [
        ("POST", "/api/v1/keys/anthropic/abc/enable", 400),
        ("POST", "/api/v1/keys/anthropic/-1/enable", 400),
        ("POST", "/api/v1/keys/anthropic/7/enable", 404),
        ("DELETE", "/api/v1/keys", 405),
        ("POST", "/api/v1/usage", 405),
        ("GET", "/api/v1/keys/anthropic/0/enable", 405),
        ("GET", "/api/v1/usage?since=%ff", 400),
        ("GET", "/api/v1/interceptions?limit=x", 400),
    ] {
        let response = client()
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                gw.url(path),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        let text = response.text().await.unwrap();
        let value: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
        assert!(
            value["error"]["message"].is_string(),
            "{method} {path}: {value}"
        );
    }
}

/// Review item 10: with `AIBRIDGE_AUTH=none` a web page cannot make the operator's browser spend
/// the pool or read the operator API: other origins, cross-site fetches and foreign host names
/// (DNS rebinding) get 403 in the caller's dialect.
#[tokio::test]
async fn without_tokens_foreign_browser_requests_are_refused() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = start_pool(&mock.url(), "k0").await;
    let host = gw.base.trim_start_matches("http://").to_string();
    let same_origin = format!("http://{host}");
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("host", "attacker.example"),
    ] {
        let response = client()
            .post(gw.url("/anthropic/v1/messages"))
            .header("anthropic-version", "2023-06-01")
            .header(name, value)
            .json(&messages_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{name}: {value}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(anthropic_error(&body).0, "permission_error");

        let response = client()
            .get(gw.url("/api/v1/interceptions"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "operator API, {name}");
    }
    assert!(mock.requests().is_empty());

    let response = client()
        .post(gw.url("/anthropic/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .header("origin", same_origin.as_str())
        .json(&messages_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "same origin is served");
}
