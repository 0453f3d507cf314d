//! Bedrock routes of the mock over a real socket, signed with AWS's own SigV4 signer (`aws-sigv4`)
//! to check the mock's independent verifier against it.

use std::time::{Duration, Instant, SystemTime};

use aibridge_mock::{
    EventStreamFrame, MidStreamFailure, MockUpstream, Reply, bedrock_secret_for,
    decode_event_stream,
};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

const MODEL: &str = "anthropic.claude-sonnet-4-5-20250929-v1:0";
/// The model id as it travels in the path.
const MODEL_IN_PATH: &str = "anthropic.claude-sonnet-4-5-20250929-v1%3A0";
const REGION: &str = "eu-west-3";

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A SigV4 identity and signing time.
struct Signer {
    id: String,
    secret: String,
    token: Option<String>,
    at: SystemTime,
    /// Also send (and sign) `x-amz-content-sha256`.
    content_sha256: bool,
}

impl Signer {
    /// Access key `id` with the secret the mock knows for it, signing now.
    fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            secret: bedrock_secret_for(id),
            token: None,
            at: SystemTime::now(),
            content_sha256: false,
        }
    }

    fn secret(mut self, secret: &str) -> Self {
        self.secret = secret.to_owned();
        self
    }

    fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    fn at(mut self, at: SystemTime) -> Self {
        self.at = at;
        self
    }

    fn content_sha256(mut self) -> Self {
        self.content_sha256 = true;
        self
    }

    /// The headers `aws-sigv4` adds to sign `method url` with `headers` and `body`.
    fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Vec<(String, String)> {
        let identity = Credentials::new(
            self.id.clone(),
            self.secret.clone(),
            self.token.clone(),
            None,
            "aibridge-mock-test",
        )
        .into();
        let mut settings = SigningSettings::default();
        if self.content_sha256 {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name("bedrock")
            .time(self.at)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let request = SignableRequest::new(
            method,
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _signature) = sign(request, &params).unwrap().into_parts();
        instructions
            .headers()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }

    /// A signed JSON POST of `body` to `path`.
    async fn post(&self, mock: &MockUpstream, path: &str, body: &Value) -> reqwest::Response {
        self.post_bytes(mock, path, body.to_string().into_bytes(), None)
            .await
    }

    /// A signed POST of `signed` (sent as `sent` when given: a tampered body).
    async fn post_bytes(
        &self,
        mock: &MockUpstream,
        path: &str,
        signed: Vec<u8>,
        sent: Option<Vec<u8>>,
    ) -> reqwest::Response {
        let url = format!("{}{path}", mock.url());
        let content_type = [("content-type", "application/json")];
        let mut request = client()
            .post(&url)
            .header("content-type", "application/json");
        for (name, value) in self.sign("POST", &url, &content_type, &signed) {
            request = request.header(name, value);
        }
        request.body(sent.unwrap_or(signed)).send().await.unwrap()
    }

    async fn get(&self, mock: &MockUpstream, path: &str) -> reqwest::Response {
        let url = format!("{}{path}", mock.url());
        let mut request = client().get(&url);
        for (name, value) in self.sign("GET", &url, &[], b"") {
            request = request.header(name, value);
        }
        request.send().await.unwrap()
    }
}

fn invoke_body(n_messages: usize) -> Value {
    let messages: Vec<Value> = (0..n_messages)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("m{i}")}))
        .collect();
    json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64, "messages": messages})
}

fn invoke_path(stream: bool) -> String {
    let action = if stream {
        "invoke-with-response-stream"
    } else {
        "invoke"
    };
    format!("/model/{MODEL_IN_PATH}/{action}")
}

async fn post_bearer(
    mock: &MockUpstream,
    path: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    client()
        .post(format!("{}{path}", mock.url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Asserts a Bedrock error (status, `x-amzn-ErrorType` naming `exception`, JSON body) and
/// returns its body.
async fn bedrock_error(resp: reqwest::Response, status: u16, exception: &str) -> Value {
    assert_eq!(resp.status(), status);
    let error_type = resp.headers()["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        error_type.starts_with(&format!("{exception}:http://internal.amazon.com/coral/")),
        "{error_type}"
    );
    assert!(error_type.ends_with('/'), "{error_type}");
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers().contains_key("x-amzn-requestid"));
    resp.json().await.unwrap()
}

/// The Anthropic events carried by a stream's `chunk` frames, checking each frame's headers and
/// padding.
fn chunk_events(frames: &[EventStreamFrame]) -> Vec<Value> {
    frames
        .iter()
        .map(|f| {
            assert_eq!(
                f.headers,
                [
                    (":event-type".to_owned(), "chunk".to_owned()),
                    (":content-type".to_owned(), "application/json".to_owned()),
                    (":message-type".to_owned(), "event".to_owned()),
                ]
            );
            let payload = f.payload_json().unwrap();
            assert!(payload["p"].as_str().is_some_and(|p| !p.is_empty()));
            let bytes = BASE64.decode(payload["bytes"].as_str().unwrap()).unwrap();
            assert_eq!(f.chunk_bytes().unwrap(), bytes);
            serde_json::from_slice(&bytes).unwrap()
        })
        .collect()
}

async fn stream_frames(resp: reqwest::Response) -> Vec<EventStreamFrame> {
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.amazon.eventstream"
    );
    assert_eq!(
        resp.headers()["x-amzn-bedrock-content-type"],
        "application/json"
    );
    decode_event_stream(&resp.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn sigv4_invoke_answers_the_anthropic_message() {
    let mock = MockUpstream::start().await.unwrap();
    let resp = Signer::new("AKIDK0")
        .post(&mock, &invoke_path(false), &invoke_body(3))
        .await;
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-amzn-bedrock-input-token-count"], "13");
    assert_eq!(headers["x-amzn-bedrock-output-token-count"], "10");
    assert_eq!(
        headers["x-amzn-requestid"],
        "00000000-0000-4000-8000-000000000001"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "id": "msg_bdrk_mock_1",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [{"type": "text", "text": "Hello from aibridge-mock."}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {
                "input_tokens": 13,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 10
            }
        })
    );
    let seen = mock.requests();
    assert_eq!(mock.seen_keys(), ["AKIDK0"]);
    // The raw path is recorded as it arrived, still percent-encoded.
    assert_eq!(seen[0].path, invoke_path(false));
    assert!(
        seen[0]
            .headers
            .iter()
            .any(|(n, v)| n == "authorization"
                && v.starts_with("AWS4-HMAC-SHA256 Credential=AKIDK0/"))
    );
    assert_eq!(mock.hits("AKIDK0"), 1);
}

#[tokio::test]
async fn the_model_id_verifies_with_a_raw_colon_too() {
    let mock = MockUpstream::start().await.unwrap();
    let resp = Signer::new("AKIDRAW")
        .post(&mock, &format!("/model/{MODEL}/invoke"), &invoke_body(1))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["model"], MODEL);
}

#[tokio::test]
async fn invoke_with_response_stream_sends_event_stream_frames() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "AKIDS",
        vec![Reply::ok().stream_deltas(3).event_delay_ms(30)],
    );
    let started = Instant::now();
    let mut resp = Signer::new("AKIDS")
        .post(&mock, &invoke_path(true), &invoke_body(2))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.amazon.eventstream"
    );
    // One frame per chunk, paced by event_delay_ms.
    let mut frames = Vec::new();
    let mut arrivals = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        arrivals.push(started.elapsed());
        let mut decoded = decode_event_stream(&chunk).unwrap();
        assert_eq!(decoded.len(), 1, "chunk holds one whole frame");
        frames.append(&mut decoded);
    }
    assert!(
        *arrivals.last().unwrap() - arrivals[0] >= Duration::from_millis(200),
        "{arrivals:?}"
    );
    let events = chunk_events(&frames);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
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
    assert_eq!(events[0]["message"]["id"], "msg_bdrk_mock_1");
    assert_eq!(events[0]["message"]["model"], MODEL);
    assert_eq!(events[0]["message"]["usage"]["input_tokens"], 12);
    assert_eq!(events[0]["message"]["usage"]["output_tokens"], 1);
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .map(|e| e["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello from aibridge");
    assert_eq!(events[7]["usage"]["output_tokens"], 6);
    assert_eq!(events[7]["delta"]["stop_reason"], "end_turn");
    let metrics = &events[8]["amazon-bedrock-invocationMetrics"];
    assert_eq!(metrics["inputTokenCount"], 12);
    assert_eq!(metrics["outputTokenCount"], 6);
    assert_eq!(metrics["firstByteLatency"], 0);
    assert_eq!(metrics["invocationLatency"], 8 * 30);
}

#[tokio::test]
async fn tool_calls_on_invoke_and_stream() {
    let mock = MockUpstream::start().await.unwrap();
    let args = json!({"city": "Paris", "days": [1, 2]});
    mock.script(
        "AKIDT",
        vec![
            Reply::tool_call("get_weather", args.clone()).with_text("Checking."),
            Reply::tool_call("get_weather", args.clone()).stream_deltas(3),
        ],
    );
    let signer = Signer::new("AKIDT");
    let body: Value = signer
        .post(&mock, &invoke_path(false), &invoke_body(1))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["stop_reason"], "tool_use");
    assert_eq!(
        body["content"][0],
        json!({"type": "text", "text": "Checking."})
    );
    assert_eq!(body["content"][1]["type"], "tool_use");
    assert_eq!(body["content"][1]["name"], "get_weather");
    assert_eq!(body["content"][1]["input"], args);
    assert!(
        body["content"][1]["id"]
            .as_str()
            .unwrap()
            .starts_with("toolu_mock_")
    );

    let frames = stream_frames(
        signer
            .post(&mock, &invoke_path(true), &invoke_body(1))
            .await,
    )
    .await;
    let events = chunk_events(&frames);
    let start = events
        .iter()
        .find(|e| e["type"] == "content_block_start")
        .unwrap();
    assert_eq!(start["content_block"]["type"], "tool_use");
    assert_eq!(start["content_block"]["input"], json!({}));
    let pieces: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .map(|e| {
            assert_eq!(e["delta"]["type"], "input_json_delta");
            e["delta"]["partial_json"].as_str().unwrap()
        })
        .collect();
    assert_eq!(pieces.len(), 3);
    let arguments: Value = serde_json::from_str(&pieces.concat()).unwrap();
    assert_eq!(arguments, args);
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert!(
        events.last().unwrap()["amazon-bedrock-invocationMetrics"]["outputTokenCount"].is_number()
    );
}

#[tokio::test]
async fn count_tokens_and_foundation_models() {
    let mock = MockUpstream::start().await.unwrap();
    let signer = Signer::new("AKIDC");
    let path = format!("/model/{MODEL_IN_PATH}/count-tokens");
    let mut inner = invoke_body(4);
    inner.as_object_mut().unwrap().remove("max_tokens");
    let request = json!({"input": {"invokeModel": {"body": BASE64.encode(inner.to_string())}}});
    let resp = signer.post(&mock, &path, &request).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"inputTokens": 14})
    );
    let converse = json!({"input": {"converse": {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}}});
    let resp = signer.post(&mock, &path, &converse).await;
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"inputTokens": 11})
    );
    let body = bedrock_error(
        signer.post(&mock, &path, &json!({"input": {}})).await,
        400,
        "ValidationException",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("input"),
        "{body}"
    );
    let mut with_model = invoke_body(1);
    with_model["model"] = json!(MODEL);
    let bad_inner =
        json!({"input": {"invokeModel": {"body": BASE64.encode(with_model.to_string())}}});
    let body = bedrock_error(
        signer.post(&mock, &path, &bad_inner).await,
        400,
        "ValidationException",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("extraneous key [model]")
    );

    let resp = signer
        .get(
            &mock,
            "/foundation-models?byProvider=Anthropic&byOutputModality=TEXT",
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let summaries = body["modelSummaries"].as_array().unwrap();
    assert!(summaries.len() >= 2);
    assert!(summaries.iter().all(|m| m["providerName"] == "Anthropic"));
    let first = &summaries[0];
    assert_eq!(first["modelId"], MODEL);
    assert_eq!(
        first["modelArn"],
        format!("arn:aws:bedrock:{REGION}::foundation-model/{MODEL}")
    );
    assert_eq!(mock.hits("AKIDC"), 5);
    assert_eq!(
        mock.requests()[4].query.as_deref(),
        Some("byProvider=Anthropic&byOutputModality=TEXT")
    );

    // Re-validating a credential goes through its script like any call.
    mock.script("AKIDC", vec![Reply::exception("AccessDeniedException")]);
    bedrock_error(
        signer.get(&mock, "/foundation-models").await,
        403,
        "AccessDeniedException",
    )
    .await;
}

#[tokio::test]
async fn session_tokens_are_signed_and_expired_ones_refused() {
    let mock = MockUpstream::start().await.unwrap();
    let resp = Signer::new("ASIATEMP")
        .token("FwoGZXIvYXdzEXAMPLE")
        .post(&mock, &invoke_path(false), &invoke_body(1))
        .await;
    assert_eq!(resp.status(), 200);
    let seen = mock.requests();
    assert!(
        seen[0]
            .headers
            .iter()
            .any(|(n, v)| n == "x-amz-security-token" && v == "FwoGZXIvYXdzEXAMPLE")
    );
    // A session token starting with `expired` has expired.
    let body = bedrock_error(
        Signer::new("ASIATEMP")
            .token("expired-FwoG")
            .post(&mock, &invoke_path(false), &invoke_body(1))
            .await,
        403,
        "ExpiredTokenException",
    )
    .await;
    assert_eq!(
        body,
        json!({"message": "The security token included in the request is expired"})
    );
    assert_eq!(mock.seen_keys(), ["ASIATEMP", "ASIATEMP"]);
}

#[tokio::test]
async fn a_signed_content_sha256_header_verifies() {
    let mock = MockUpstream::start().await.unwrap();
    let resp = Signer::new("AKIDH")
        .token("FwoGZXIvYXdzEXAMPLE")
        .content_sha256()
        .post(&mock, &invoke_path(false), &invoke_body(1))
        .await;
    assert_eq!(resp.status(), 200);
    let seen = mock.requests();
    let auth = seen[0]
        .headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .unwrap();
    assert!(auth.1.contains("x-amz-content-sha256"), "{}", auth.1);
}

#[tokio::test]
async fn a_wrong_secret_is_an_invalid_signature_and_consumes_no_script() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("AKIDW", vec![Reply::status(429)]);
    let body = bedrock_error(
        Signer::new("AKIDW")
            .secret("not-the-secret")
            .post(&mock, &invoke_path(false), &invoke_body(1))
            .await,
        403,
        "InvalidSignatureException",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."),
        "{body}"
    );
    // Counted and recorded under its key, but the scripted 429 is still there.
    assert_eq!(mock.seen_keys(), ["AKIDW"]);
    assert_eq!(mock.hits("AKIDW"), 1);
    let resp = Signer::new("AKIDW")
        .post(&mock, &invoke_path(false), &invoke_body(1))
        .await;
    bedrock_error(resp, 429, "ThrottlingException").await;
    let resp = Signer::new("AKIDW")
        .post(&mock, &invoke_path(false), &invoke_body(1))
        .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_tampered_body_or_stale_date_fails_the_signature() {
    let mock = MockUpstream::start().await.unwrap();
    let signed = invoke_body(1).to_string().into_bytes();
    let sent = invoke_body(2).to_string().into_bytes();
    let body = bedrock_error(
        Signer::new("AKIDX")
            .post_bytes(&mock, &invoke_path(false), signed, Some(sent))
            .await,
        403,
        "InvalidSignatureException",
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("does not match"));

    let old = SystemTime::now() - Duration::from_secs(20 * 60);
    let body = bedrock_error(
        Signer::new("AKIDX")
            .at(old)
            .post(&mock, &invoke_path(false), &invoke_body(1))
            .await,
        403,
        "InvalidSignatureException",
    )
    .await;
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("Signature expired: "), "{message}");
    assert!(message.ends_with(" - 15 min.)"), "{message}");
    // Within the 15 minutes it is fine.
    let recent = SystemTime::now() - Duration::from_secs(10 * 60);
    let resp = Signer::new("AKIDX")
        .at(recent)
        .post(&mock, &invoke_path(false), &invoke_body(1))
        .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn unknown_keys_and_missing_or_garbled_authorization() {
    let mock = MockUpstream::start().await.unwrap();
    let body = bedrock_error(
        Signer::new("UNKNOWNKEY")
            .post(&mock, &invoke_path(false), &invoke_body(1))
            .await,
        403,
        "UnrecognizedClientException",
    )
    .await;
    assert_eq!(
        body,
        json!({"message": "The security token included in the request is invalid."})
    );

    let url = format!("{}{}", mock.url(), invoke_path(false));
    let resp = client()
        .post(&url)
        .json(&invoke_body(1))
        .send()
        .await
        .unwrap();
    let body = bedrock_error(resp, 403, "MissingAuthenticationTokenException").await;
    assert_eq!(body, json!({"message": "Missing Authentication Token"}));

    let resp = client()
        .post(&url)
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDG/20250101",
        )
        .header("x-amz-date", "20250101T000000Z")
        .json(&invoke_body(1))
        .send()
        .await
        .unwrap();
    let body = bedrock_error(resp, 403, "IncompleteSignatureException").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Authorization header requires 'Signature' parameter."),
        "{body}"
    );
    assert_eq!(mock.seen_keys(), ["UNKNOWNKEY", "", "AKIDG"]);
}

#[tokio::test]
async fn bearer_api_keys() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script("ABSKgoodkey", vec![Reply::ok().stream_deltas(2)]);
    let resp = post_bearer(&mock, &invoke_path(false), "ABSKgoodkey", &invoke_body(1)).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["usage"]["output_tokens"], 4);

    let resp = post_bearer(&mock, &invoke_path(false), "bad-key", &invoke_body(1)).await;
    let body = bedrock_error(resp, 403, "AccessDeniedException").await;
    // Bedrock's API-key rejection capitalises the field.
    assert_eq!(
        body,
        json!({"Message": "Authentication failed: Please make sure your API Key is valid."})
    );
    assert_eq!(mock.seen_keys(), ["ABSKgoodkey", "bad-key"]);
}

#[tokio::test]
async fn a_scripted_throttle_is_consumed_per_key() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "AKIDK0",
        vec![Reply::status(429).header("retry-after", "3")],
    );
    let k0 = Signer::new("AKIDK0");
    let k1 = Signer::new("AKIDK1");
    let resp = k0.post(&mock, &invoke_path(true), &invoke_body(1)).await;
    assert_eq!(resp.headers()["retry-after"], "3");
    assert_eq!(
        resp.headers()["x-amzn-errortype"],
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
    );
    let body = bedrock_error(resp, 429, "ThrottlingException").await;
    assert_eq!(
        body,
        json!({"message": "Too many requests, please wait before trying again."})
    );
    let resp = k1.post(&mock, &invoke_path(true), &invoke_body(1)).await;
    assert_eq!(resp.status(), 200);
    let resp = k0.post(&mock, &invoke_path(false), &invoke_body(1)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.seen_keys(), ["AKIDK0", "AKIDK1", "AKIDK0"]);
}

#[tokio::test]
async fn scripted_exceptions_name_the_error() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "AKIDE",
        vec![
            Reply::exception("ServiceQuotaExceededException"),
            Reply::exception("ExpiredTokenException"),
            Reply::status(503),
            Reply::status(400).with_exception("ModelErrorException"),
            Reply::exception("ThrottlingException")
                .body(r#"{"message":"Too many tokens, please wait before trying again."}"#),
        ],
    );
    let signer = Signer::new("AKIDE");
    let path = invoke_path(false);
    let body = bedrock_error(
        signer.post(&mock, &path, &invoke_body(1)).await,
        400,
        "ServiceQuotaExceededException",
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("quota"));
    bedrock_error(
        signer.post(&mock, &path, &invoke_body(1)).await,
        403,
        "ExpiredTokenException",
    )
    .await;
    let body = bedrock_error(
        signer.post(&mock, &path, &invoke_body(1)).await,
        503,
        "ServiceUnavailableException",
    )
    .await;
    assert_eq!(
        body,
        json!({"message": "Bedrock is unable to process your request."})
    );
    bedrock_error(
        signer.post(&mock, &path, &invoke_body(1)).await,
        400,
        "ModelErrorException",
    )
    .await;
    let body = bedrock_error(
        signer.post(&mock, &path, &invoke_body(1)).await,
        429,
        "ThrottlingException",
    )
    .await;
    assert_eq!(
        body["message"],
        "Too many tokens, please wait before trying again."
    );

    // Scripted over the control API: a bare exception is an error with its status.
    let resp = client()
        .post(format!("{}/_mock/script", mock.url()))
        .json(&json!({"key": "AKIDJ", "steps": [{"exception": "ModelNotReadyException"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    bedrock_error(
        Signer::new("AKIDJ")
            .post(&mock, &invoke_path(true), &invoke_body(1))
            .await,
        429,
        "ModelNotReadyException",
    )
    .await;
}

#[tokio::test]
async fn mid_stream_exception_frame_after_n_events() {
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        "AKIDM",
        vec![
            Reply::ok()
                .fail_after_events(3, MidStreamFailure::ErrorEvent)
                .with_exception("ThrottlingException"),
            Reply::ok().fail_after_events(2, MidStreamFailure::ErrorEvent),
            Reply::ok().fail_after_events(2, MidStreamFailure::Cut),
        ],
    );
    let signer = Signer::new("AKIDM");
    let frames = stream_frames(
        signer
            .post(&mock, &invoke_path(true), &invoke_body(1))
            .await,
    )
    .await;
    assert_eq!(frames.len(), 4);
    let events = chunk_events(&frames[..3]);
    assert_eq!(events[0]["type"], "message_start");
    let exception = &frames[3];
    assert_eq!(
        exception.headers,
        [
            (
                ":exception-type".to_owned(),
                "throttlingException".to_owned()
            ),
            (":content-type".to_owned(), "application/json".to_owned()),
            (":message-type".to_owned(), "exception".to_owned()),
        ]
    );
    assert_eq!(
        exception.payload_json().unwrap(),
        json!({"message": "Too many requests, please wait before trying again."})
    );
    assert_eq!(exception.chunk_bytes(), None);

    let frames = stream_frames(
        signer
            .post(&mock, &invoke_path(true), &invoke_body(1))
            .await,
    )
    .await;
    assert_eq!(frames.len(), 3);
    assert_eq!(
        frames[2].header(":exception-type"),
        Some("internalServerException")
    );
    assert!(frames[2].payload_json().unwrap()["message"].is_string());

    let mut resp = signer
        .post(&mock, &invoke_path(true), &invoke_body(1))
        .await;
    assert_eq!(resp.status(), 200);
    let mut received = Vec::new();
    let error = loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => panic!("the stream ended cleanly"),
            Err(e) => break e,
        }
    };
    assert!(
        error.is_body() || error.is_decode() || error.is_request(),
        "{error:?}"
    );
    assert_eq!(decode_event_stream(&received).unwrap().len(), 2);
}

#[tokio::test]
async fn model_or_stream_in_the_body_is_rejected() {
    let mock = MockUpstream::start().await.unwrap();
    let signer = Signer::new("AKIDV");
    let mut with_model = invoke_body(1);
    with_model["model"] = json!(MODEL);
    let body = bedrock_error(
        signer.post(&mock, &invoke_path(false), &with_model).await,
        400,
        "ValidationException",
    )
    .await;
    assert_eq!(
        body,
        json!({"message": "Malformed input request: #: extraneous key [model] is not permitted, please reformat your input and try again."})
    );
    let mut with_stream = invoke_body(1);
    with_stream["stream"] = json!(true);
    let body = bedrock_error(
        signer.post(&mock, &invoke_path(true), &with_stream).await,
        400,
        "ValidationException",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("extraneous key [stream]")
    );
    let mut no_version = invoke_body(1);
    no_version
        .as_object_mut()
        .unwrap()
        .remove("anthropic_version");
    let body = bedrock_error(
        signer.post(&mock, &invoke_path(false), &no_version).await,
        400,
        "ValidationException",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("required key [anthropic_version] not found")
    );
    // An Anthropic Messages body sent as is (model, no anthropic_version) is refused too.
    let anthropic =
        json!({"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
    bedrock_error(
        post_bearer(&mock, &invoke_path(false), "ABSKk", &anthropic).await,
        400,
        "ValidationException",
    )
    .await;
}

#[tokio::test]
async fn unknown_operations_are_bedrock_404s_after_authentication() {
    let mock = MockUpstream::start().await.unwrap();
    let resp = Signer::new("AKIDU")
        .post(
            &mock,
            &format!("/model/{MODEL_IN_PATH}/converse"),
            &json!({}),
        )
        .await;
    bedrock_error(resp, 404, "UnknownOperationException").await;
    let resp = client()
        .post(format!("{}/model/{MODEL_IN_PATH}/converse", mock.url()))
        .send()
        .await
        .unwrap();
    bedrock_error(resp, 403, "MissingAuthenticationTokenException").await;
}
