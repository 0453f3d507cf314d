//! Write throughput of `write_batch`, per backend. Not timed in CI; run it with
//! `cargo test -p aibridge-store --release -- --ignored throughput --nocapture`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use crate::common::TestDb;
use aibridge_store::{
    AttemptRow, CredentialKind, InterceptionEnded, NewInterception, PromptRow, Record, RequestKind,
    ThoughtRow, TokenUsageRow, ToolCallRow,
};

const RECORDS: usize = 20_000;
const BATCH: usize = 256;
/// Records per interception: an end, 3 attempts, 2 usages, 2 prompts, a tool call, a thought.
const PER_INTERCEPTION: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release -- --ignored throughput --nocapture"]
async fn throughput_sqlite() {
    crate::common::run(Some(TestDb::sqlite().await), measure).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release -- --ignored throughput --nocapture"]
async fn throughput_postgres() {
    crate::common::run(TestDb::postgres().await, measure).await;
}

async fn measure(db: std::sync::Arc<TestDb>) {
    let store = &db.store;
    let interceptions = RECORDS / PER_INTERCEPTION;
    let ids: Vec<String> = (0..interceptions)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();

    let started = Instant::now();
    for (n, id) in ids.iter().enumerate() {
        store
            .start_interception(&NewInterception {
                id: id.clone(),
                user: format!("user{}", n % 17),
                kind: RequestKind::Bridged,
                provider_type: "anthropic".into(),
                provider_name: "anthropic".into(),
                method: "POST".into(),
                route: "/v1/messages".into(),
                model: Some("claude-sonnet-4-5".into()),
                streaming: true,
                client: Some("claude-code".into()),
                session_id: None,
                user_agent: Some("claude-cli/2.0".into()),
                credential: CredentialKind::Pool,
                started_at: 1_767_225_600_000 + n as i64,
            })
            .await
            .unwrap();
    }
    let start_secs = started.elapsed().as_secs_f64();

    let records: Vec<Record> = ids.iter().flat_map(|id| records_of(id)).collect();
    assert_eq!(records.len(), RECORDS);
    let started = Instant::now();
    for batch in records.chunks(BATCH) {
        store.write_batch(batch).await.unwrap();
    }
    let batch_secs = started.elapsed().as_secs_f64();

    let _ = writeln!(
        std::io::stderr(),
        "{}: write_batch {RECORDS} records in batches of {BATCH}: {:.0} ms, {:.0} records/s; \
         start_interception x{interceptions}: {:.0} /s",
        store.backend(),
        batch_secs * 1e3,
        RECORDS as f64 / batch_secs,
        interceptions as f64 / start_secs,
    );
}

fn records_of(id: &str) -> Vec<Record> {
    let at = 1_767_225_600_000;
    let mut out = Vec::with_capacity(PER_INTERCEPTION);
    for number in 1..=3 {
        out.push(Record::Attempt(AttemptRow {
            interception_id: id.into(),
            number,
            key_hint: Some(format!("sk-ant...{number:04}")),
            status: Some(if number < 3 { 429 } else { 200 }),
            transport_error: None,
            failover_reason: (number < 3).then(|| "rate_limited".into()),
            cooldown_ms: (number < 3).then_some(30_000),
            key_check: None,
            duration_ms: 150,
            created_at: at,
        }));
    }
    for n in 0..2 {
        out.push(Record::TokenUsage(TokenUsageRow {
            interception_id: id.into(),
            seq: crate::common::next_seq(),
            provider_response_id: Some(format!("msg_{n}")),
            input: 1_200,
            output: 350,
            cache_read: 4_000,
            cache_write: 100,
            extra: BTreeMap::from([("reasoning".into(), 42)]),
            created_at: at,
        }));
        out.push(Record::Prompt(PromptRow {
            interception_id: id.into(),
            seq: crate::common::next_seq(),
            provider_response_id: None,
            prompt: "Refactor the function below so that it handles empty input. ".repeat(8),
            created_at: at,
        }));
    }
    out.push(Record::ToolCall(ToolCallRow {
        interception_id: id.into(),
        seq: crate::common::next_seq(),
        provider_response_id: Some("msg_1".into()),
        tool_call_id: Some("toolu_1".into()),
        name: "read_file".into(),
        input: r#"{"path":"src/main.rs"}"#.into(),
        injected: false,
        run: None,
        created_at: at,
    }));
    out.push(Record::Thought(ThoughtRow {
        interception_id: id.into(),
        seq: crate::common::next_seq(),
        content: "The user wants the function to handle empty input.".into(),
        source: "thinking".into(),
        created_at: at,
    }));
    out.push(Record::Ended(InterceptionEnded {
        id: id.into(),
        ended_at: at + 2_000,
        duration_ms: 2_000,
        status: Some(200),
        outcome: "completed".into(),
        key_hint: Some("sk-ant...0003".into()),
        attempts: 3,
        error: None,
        totals: None,
    }));
    out
}
