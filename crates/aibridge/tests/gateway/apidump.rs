//! apidump on the real binary: a file pair per upstream attempt (each failover attempt its
//! own), streams dumped as the bytes relayed, passthrough calls under `passthrough/`, secrets
//! masked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aibridge_mock::{MockUpstream, Reply};

use crate::common::*;

const K0: &str = "sk-ant-apidump-0000";
const K1: &str = "sk-ant-apidump-1111";

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Waits until `dir` holds `count` files whose contents satisfy `done` (the writer is a
/// thread of its own).
async fn wait_for_files(
    dir: &Path,
    count: usize,
    done: impl Fn(&[String]) -> bool,
) -> Vec<(PathBuf, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let files = files_under(dir);
        let texts: Vec<String> = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect();
        if files.len() == count && done(&texts) {
            return files.into_iter().zip(texts).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {count} dump files, have {files:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[tokio::test]
async fn each_attempt_of_a_failed_over_request_a_stream_and_a_passthrough_call_are_dumped() {
    let dir = std::env::temp_dir().join(format!("aibridge-apidump-{}", uuid::Uuid::new_v4()));
    let mock = MockUpstream::start().await.unwrap();
    mock.script(
        K0,
        vec![
            Reply::status(429).header("retry-after", "30").body(
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
            ),
        ],
    );
    let mut env = pool_env(&mock.url(), &format!("{K0},{K1}"));
    env.push(("AIBRIDGE_APIDUMP_DIR".into(), dir.display().to_string()));
    let gw = Gateway::start(&env).await;

    // 1. Failover: K0 429, K1 200 → two pairs.
    let blocking = post_messages(&gw, &messages_body(false)).await;
    assert_eq!(blocking.status(), 200);
    let request_id = blocking.headers()["x-aibridge-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let answer = blocking.text().await.unwrap();
    // The writer is a thread of its own: wait for both response bodies to be in.
    let files = wait_for_files(&dir, 4, |texts| {
        texts.iter().all(|t| !t.is_empty())
            && texts.iter().any(|t| t.ends_with(&answer))
            && texts.iter().any(|t| t.ends_with("slow down\"}}"))
    })
    .await;
    let model_dir = dir.join("anthropic").join("claude-sonnet-4-5");
    let names: Vec<String> = files.iter().map(|(p, _)| name(p)).collect();
    for (attempt, suffix) in [(1, "req"), (1, "resp"), (2, "req"), (2, "resp")] {
        assert!(
            names
                .iter()
                .any(|n| n.ends_with(&format!("-{request_id}-a{attempt}.{suffix}.txt"))),
            "attempt {attempt} {suffix} missing in {names:?}"
        );
    }
    assert!(files.iter().all(|(p, _)| p.parent() == Some(&model_dir)));
    let text_of = |attempt: u32, suffix: &str| {
        files
            .iter()
            .find(|(p, _)| name(p).ends_with(&format!("-a{attempt}.{suffix}.txt")))
            .map(|(_, t)| t.clone())
            .unwrap()
    };
    let first_request = text_of(1, "req");
    assert!(
        first_request.starts_with("POST /v1/messages HTTP/1.1\r\n"),
        "{first_request}"
    );
    assert!(
        first_request.contains("\r\nX-Api-Key: sk...00\r\n"),
        "{first_request}"
    );
    assert!(first_request.contains("\r\nAnthropic-Version: 2023-06-01\r\n"));
    assert!(
        first_request.contains("  \"model\": \"claude-sonnet-4-5\",\n"),
        "pretty-printed"
    );
    let (head, body) = first_request.split_once("\r\n\r\n").unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        length + 1,
        body.len(),
        "Content-Length is the dumped body's, then a newline"
    );
    let first_response = text_of(1, "resp");
    assert!(
        first_response.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{first_response}"
    );
    assert!(first_response.contains("\r\nRetry-After: 30\r\n"));
    assert!(
        first_response.ends_with("slow down\"}}"),
        "{first_response}"
    );
    assert!(text_of(2, "req").contains("X-Api-Key: sk...11"));
    let second_response = text_of(2, "resp");
    assert!(second_response.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(second_response.ends_with(&answer), "the body as relayed");

    // 2. A stream: the response file holds the events as relayed.
    std::fs::remove_dir_all(&dir).unwrap();
    let streamed = post_messages(&gw, &messages_body(true)).await;
    let events = streamed.text().await.unwrap();
    let files = wait_for_files(&dir, 2, |texts| texts.iter().any(|t| t.ends_with(&events))).await;
    let (_, response) = files
        .iter()
        .find(|(p, _)| name(p).ends_with(".resp.txt"))
        .unwrap();
    assert!(
        response.contains("Content-Type: text/event-stream"),
        "{response}"
    );
    assert!(
        response.ends_with(&events),
        "every event, as the client got it"
    );

    // 3. Passthrough.
    std::fs::remove_dir_all(&dir).unwrap();
    let models = client()
        .get(gw.url("/anthropic/v1/models?limit=2"))
        .header("x-api-key", "abk_gateway_token")
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    let listed = models.text().await.unwrap();
    let files = wait_for_files(&dir, 2, |texts| {
        texts.iter().all(|t| !t.is_empty()) && texts.iter().any(|t| t.ends_with(&listed))
    })
    .await;
    for (path, text) in &files {
        assert_eq!(
            path.parent(),
            Some(dir.join("anthropic").join("passthrough").as_path())
        );
        assert!(name(path).contains("-v1-models-"), "{path:?}");
        if name(path).ends_with(".req.txt") {
            assert!(
                text.starts_with("GET /v1/models?limit=2 HTTP/1.1\r\n"),
                "{text}"
            );
        } else {
            assert!(text.ends_with(&listed));
        }
    }

    // Nothing unmasked anywhere.
    for (path, text) in wait_for_files(&dir, 2, |_| true).await {
        for secret in [K0, K1, "abk_gateway_token"] {
            assert!(!text.contains(secret), "{secret} in {path:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_unwritable_dump_directory_costs_a_log_line_not_the_request() {
    let dir = std::env::temp_dir().join(format!("aibridge-apidump-{}", uuid::Uuid::new_v4()));
    let mock = MockUpstream::start().await.unwrap();
    let mut env = pool_env(&mock.url(), K0);
    env.push(("AIBRIDGE_APIDUMP_DIR".into(), dir.display().to_string()));
    let gw = Gateway::start(&env).await;
    // A file where the provider's folder would go.
    std::fs::write(dir.join("anthropic"), b"in the way").unwrap();
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !gw.logs().contains("apidump: cannot write") {
        assert!(tokio::time::Instant::now() < deadline, "{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
