//! Control API, lifecycle and the binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use aibridge_mock::{MidStreamFailure, MockUpstream, Reply, SeenRequest};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test]
async fn control_api_round_trip() {
    let mock = MockUpstream::start().await.unwrap();
    let c = client();
    let base = mock.url();
    let r = c
        .post(format!("{base}/_mock/script"))
        .json(&json!({
            "key": "k0",
            "steps": [
                {"status": 429, "headers": [["retry-after", "7"]]},
                {"stream_deltas": 2, "fail_after_events": 1, "failure": "cut"}
            ],
            "then": {"status": 500, "body": "{\"boom\":1}"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let msg = json!({"model": "m", "max_tokens": 8, "messages": [], "stream": true});
    let r = c
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "k0")
        .json(&msg)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let r = c
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "k0")
        .json(&msg)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.is_err());
    for _ in 0..2 {
        let r = c
            .post(format!("{base}/v1/messages"))
            .header("x-api-key", "k0")
            .json(&msg)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 500);
        assert_eq!(r.text().await.unwrap(), "{\"boom\":1}");
    }

    let r = c
        .get(format!("{base}/_mock/requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Vec<SeenRequest> = r.json().await.unwrap();
    assert_eq!(seen.len(), 4, "control requests are not recorded");
    assert!(
        seen.iter()
            .all(|s| s.key == "k0" && s.path == "/v1/messages")
    );
    assert_eq!(seen, mock.requests());

    // Raw JSON shape of a seen request.
    let raw: Value = c
        .get(format!("{base}/_mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw[0]["method"], "POST");
    assert_eq!(raw[0]["query"], Value::Null);
    assert!(
        raw[0]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == &json!(["x-api-key", "k0"]))
    );

    // "then": null clears the then reply.
    let r = c
        .post(format!("{base}/_mock/script"))
        .json(&json!({"key": "k0", "steps": [], "then": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "k0")
        .json(&json!({"model": "m", "max_tokens": 8, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = c.post(format!("{base}/_mock/reset")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let seen: Vec<Value> = c
        .get(format!("{base}/_mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(seen.is_empty());
    assert!(mock.requests().is_empty());

    // Bad script body.
    let r = c
        .post(format!("{base}/_mock/script"))
        .body("{\"steps\": 3}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(mock.requests().is_empty());
}

#[test]
fn reply_serde_shape() {
    let reply = Reply::status(429)
        .header("retry-after", "5")
        .delay_ms(10)
        .event_delay_ms(3)
        .stream_deltas(2)
        .fail_after_events(1, MidStreamFailure::Cut);
    let v = serde_json::to_value(&reply).unwrap();
    assert_eq!(
        v,
        json!({
            "status": 429,
            "headers": [["retry-after", "5"]],
            "body": null,
            "delay_ms": 10,
            "stream_deltas": 2,
            "event_delay_ms": 3,
            "fail_after_events": 1,
            "failure": "cut"
        })
    );
    let back: Reply = serde_json::from_value(json!({"status": 429, "headers": [["retry-after", "5"]], "delay_ms": 10, "stream_deltas": 2, "event_delay_ms": 3, "fail_after_events": 1, "failure": "cut"})).unwrap();
    assert_eq!(back, reply);
    let empty: Reply = serde_json::from_value(json!({})).unwrap();
    assert_eq!(empty, Reply::ok());
    assert_eq!(empty.failure, MidStreamFailure::ErrorEvent);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let mock = MockUpstream::start().await.unwrap();
    let addr = mock.addr();
    assert_eq!(mock.url(), format!("http://127.0.0.1:{}", addr.port()));
    let r = client()
        .get(format!("{}/v1/models", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::timeout(Duration::from_secs(10), mock.shutdown())
        .await
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn drop_stops_serving() {
    let mock = MockUpstream::start().await.unwrap();
    let addr = mock.addr();
    drop(mock);
    let mut closed = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "listener still accepting after drop");
}

#[tokio::test]
async fn start_on_a_given_address() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let mock = MockUpstream::start_on(addr).await.unwrap();
    assert_eq!(mock.addr(), addr);
    let r = client()
        .get(format!("{}/v1/models", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    mock.shutdown().await;
}

#[tokio::test]
async fn binary_prints_its_url_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aibridge-mock"))
        .args(["--listen", "127.0.0.1:0"])
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
        .strip_suffix('\n')
        .unwrap()
        .strip_prefix("aibridge-mock listening on ")
        .unwrap()
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line:?}");
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0);

    let c = client();
    let r = c
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", "py")
        .json(&json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Vec<SeenRequest> = c
        .get(format!("{url}/_mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].key, "py");
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
