//! The store's behaviour, each test run against SQLite and against PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::common::TestDb;
use aibridge_store::{
    AttemptRow, AttemptView, CredentialKind, DailyUsageRow, GroupBy, InterceptionDetail,
    InterceptionEnded, InterceptionFilter, NewInterception, NewToken, PromptRow, Record,
    RequestKind, StoreError, ThoughtRow, ThoughtView, TokenUsageRow, ToolCallRow, ToolCallView,
    Totals, UsageFilter, UsageRow, UsageView, WriteBatch,
};

/// 2026-01-01T00:00:00Z.
const D0: i64 = 1_767_225_600_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

store_tests!(
    migrate_twice,
    users,
    tokens,
    token_errors_do_not_leak_the_hash,
    every_record_kind,
    bad_rows_do_not_lose_the_batch,
    a_repeated_attempt_is_ignored_and_a_bad_row_does_not_lose_the_batch,
    a_retried_batch_counts_nothing_twice,
    records_of_a_request_in_flight_retried_count_once,
    an_end_with_its_totals_is_written_as_it_says,
    usage_by_each_group,
    usage_filters,
    usage_by_day,
    usage_cells,
    interception_filters,
    one_interception_by_id,
    pagination,
    served_by_key,
    survives_reopen,
    concurrent_batches,
    starts_commit_with_records,
    a_request_in_one_batch_is_written_as_over_several,
);

// ---------------------------------------------------------------------------------------------
// helpers

fn new_interception(id: &str, user: &str, provider: &str, model: Option<&str>) -> NewInterception {
    NewInterception {
        id: id.to_owned(),
        user: user.to_owned(),
        kind: RequestKind::Bridged,
        provider_type: if provider.starts_with("openai") {
            "openai"
        } else {
            "anthropic"
        }
        .to_owned(),
        provider_name: provider.to_owned(),
        method: "POST".to_owned(),
        route: "/v1/messages".to_owned(),
        model: model.map(str::to_owned),
        streaming: true,
        client: Some("claude-code".to_owned()),
        session_id: Some("session-1".to_owned()),
        user_agent: Some("claude-cli/2.0".to_owned()),
        credential: CredentialKind::Pool,
        started_at: D0,
    }
}

fn ended(id: &str, at: i64, status: u16, outcome: &str, key: Option<&str>, n: u32) -> Record {
    Record::Ended(InterceptionEnded {
        id: id.to_owned(),
        ended_at: at,
        duration_ms: 1_000,
        status: Some(status),
        outcome: outcome.to_owned(),
        key_hint: key.map(str::to_owned),
        attempts: n,
        error: (outcome != "completed").then(|| format!("{outcome} happened")),
        totals: None,
    })
}

fn attempt(id: &str, number: u32, key: Option<&str>, status: u16, reason: Option<&str>) -> Record {
    Record::Attempt(AttemptRow {
        interception_id: id.to_owned(),
        number,
        key_hint: key.map(str::to_owned),
        status: Some(status),
        transport_error: None,
        failover_reason: reason.map(str::to_owned),
        cooldown_ms: reason.map(|_| 30_000),
        key_check: None,
        duration_ms: 120,
        created_at: D0 + i64::from(number),
    })
}

fn usage(id: &str, input: i64, output: i64, cache_read: i64, cache_write: i64) -> Record {
    Record::TokenUsage(TokenUsageRow {
        interception_id: id.to_owned(),
        seq: crate::common::next_seq(),
        provider_response_id: Some(format!("msg_{input}")),
        input,
        output,
        cache_read,
        cache_write,
        extra: BTreeMap::new(),
        created_at: D0,
    })
}

fn prompt(id: &str, text: &str) -> Record {
    Record::Prompt(PromptRow {
        interception_id: id.to_owned(),
        seq: crate::common::next_seq(),
        provider_response_id: None,
        prompt: text.to_owned(),
        created_at: D0,
    })
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn all_interceptions(db: &TestDb, mut filter: InterceptionFilter) -> Vec<InterceptionDetail> {
    filter.limit = 500;
    let page = db.store.interceptions(&filter).await.unwrap();
    assert_eq!(page.next, None);
    page.items
}

fn ids(items: &[InterceptionDetail]) -> Vec<&str> {
    items.iter().map(|i| i.id.as_str()).collect()
}

#[allow(clippy::too_many_arguments)]
fn row(
    group: &str,
    requests: i64,
    failed_requests: i64,
    failovers: i64,
    input_tokens: i64,
    output_tokens: i64,
    cache_read_tokens: i64,
    cache_write_tokens: i64,
) -> UsageRow {
    UsageRow {
        group: group.to_owned(),
        requests,
        failed_requests,
        failovers,
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_write_tokens,
    }
}

/// Five interceptions over three days:
///
/// | id | user | provider | model | credential | start | outcome | key | failovers | tokens (in, out, cr, cw) |
/// |---|---|---|---|---|---|---|---|---|---|
/// | i1 | alice | anthropic | claude-a | pool | D0+1h | completed 200 | sk-ant...a1 | 1 | (100,50,10,5)+(200,20,0,0) |
/// | i2 | alice | openai | gpt-x | pool | D0+2h | upstream_error 500 | sk-oai...o1 | 0 | (30,0,0,0) |
/// | i3 | bob | anthropic | claude-a | byok | D0+1d+1h | completed 200 | – | 0 | (7,3,1,1) |
/// | i4 | bob | anthropic | – | pool | D0+1d+2h | exhausted 429 | – | 2 | – |
/// | i5 | alice | anthropic | claude-a | pool | D0+2d | not ended | – | 0 | – |
struct Seed {
    i1: String,
    i2: String,
    i3: String,
    i4: String,
    i5: String,
}

async fn seed(db: &TestDb) -> Seed {
    let s = Seed {
        i1: uuid(),
        i2: uuid(),
        i3: uuid(),
        i4: uuid(),
        i5: uuid(),
    };
    let store = &db.store;
    let mut i1 = new_interception(&s.i1, "alice", "anthropic", Some("claude-a"));
    i1.started_at = D0 + HOUR;
    let mut i2 = new_interception(&s.i2, "alice", "openai", Some("gpt-x"));
    i2.started_at = D0 + 2 * HOUR;
    i2.route = "/v1/chat/completions".into();
    let mut i3 = new_interception(&s.i3, "bob", "anthropic", Some("claude-a"));
    i3.started_at = D0 + DAY + HOUR;
    i3.credential = CredentialKind::Byok;
    let mut i4 = new_interception(&s.i4, "bob", "anthropic", None);
    i4.started_at = D0 + DAY + 2 * HOUR;
    i4.kind = RequestKind::Passthrough;
    i4.method = "GET".into();
    i4.route = "/v1/models".into();
    let mut i5 = new_interception(&s.i5, "alice", "anthropic", Some("claude-a"));
    i5.started_at = D0 + 2 * DAY;
    for i in [&i1, &i2, &i3, &i4, &i5] {
        store.start_interception(i).await.unwrap();
    }
    store
        .write_batch(&[
            attempt(&s.i1, 2, Some("sk-ant...a1"), 200, None),
            attempt(&s.i1, 1, Some("sk-ant...a0"), 429, Some("rate_limited")),
            usage(&s.i1, 100, 50, 10, 5),
            usage(&s.i1, 200, 20, 0, 0),
            ended(
                &s.i1,
                D0 + HOUR + 1_000,
                200,
                "completed",
                Some("sk-ant...a1"),
                2,
            ),
            attempt(&s.i2, 1, Some("sk-oai...o1"), 500, None),
            usage(&s.i2, 30, 0, 0, 0),
            ended(
                &s.i2,
                D0 + 2 * HOUR + 1_000,
                500,
                "upstream_error",
                Some("sk-oai...o1"),
                1,
            ),
            attempt(&s.i3, 1, None, 200, None),
            usage(&s.i3, 7, 3, 1, 1),
            ended(&s.i3, D0 + DAY + HOUR + 1_000, 200, "completed", None, 1),
            attempt(&s.i4, 1, Some("sk-ant...a0"), 429, Some("rate_limited")),
            attempt(&s.i4, 2, Some("sk-ant...a1"), 401, Some("unauthorized")),
            ended(
                &s.i4,
                D0 + DAY + 2 * HOUR + 1_000,
                429,
                "exhausted",
                None,
                2,
            ),
        ])
        .await
        .unwrap();
    s
}

// ---------------------------------------------------------------------------------------------
// tests

async fn migrate_twice(db: Arc<TestDb>) {
    // The harness migrated once already.
    db.store.migrate().await.unwrap();
    db.store.migrate().await.unwrap();
    db.store.ping().await.unwrap();
    let again = db.open_again().await;
    again.migrate().await.unwrap();
    assert_eq!(again.backend(), db.store.backend());
    assert!(["sqlite", "postgres"].contains(&db.store.backend()));
    again.close().await;
}

async fn users(db: Arc<TestDb>) {
    let store = &db.store;
    assert!(store.users().await.unwrap().is_empty());
    let bob = store.create_user("bob", D0).await.unwrap();
    let alice = store.create_user("alice", D0 + 1).await.unwrap();
    assert_eq!((bob.name.as_str(), bob.created_at), ("bob", D0));
    assert_ne!(bob.id, alice.id);
    match store.create_user("alice", D0 + 2).await {
        Err(StoreError::UserExists(name)) => assert_eq!(name, "alice"),
        other => panic!("expected UserExists, got {other:?}"),
    }
    assert_eq!(store.users().await.unwrap(), vec![alice, bob]);
}

async fn tokens(db: Arc<TestDb>) {
    let store = &db.store;
    let token = |id: &str, user: &str, hash: &str| NewToken {
        id: id.to_owned(),
        user: user.to_owned(),
        label: Some(format!("{id} label")),
        admin: id == "tok-admin",
        secret_hash: hash.to_owned(),
        created_at: D0,
    };
    match store.create_token(token("tok-1", "nobody", "h1")).await {
        Err(StoreError::NoSuchUser(name)) => assert_eq!(name, "nobody"),
        other => panic!("expected NoSuchUser, got {other:?}"),
    }
    store.create_user("alice", D0).await.unwrap();
    let created = store
        .create_token(token("tok-1", "alice", "h1"))
        .await
        .unwrap();
    assert_eq!(created.user, "alice");
    assert_eq!(created.label.as_deref(), Some("tok-1 label"));
    assert!(!created.admin);
    assert_eq!((created.revoked_at, created.last_used_at), (None, None));
    let admin = store
        .create_token(token("tok-admin", "alice", "h2"))
        .await
        .unwrap();
    assert!(admin.admin);

    // Lookup by hash records last use, to the minute.
    assert_eq!(store.token_by_hash("unknown", D0).await.unwrap(), None);
    let found = store.token_by_hash("h1", D0 + 10).await.unwrap().unwrap();
    assert_eq!(found.id, "tok-1");
    assert_eq!(found.last_used_at, Some(D0 + 10));
    let found = store.token_by_hash("h1", D0 + 20).await.unwrap().unwrap();
    assert_eq!(
        found.last_used_at,
        Some(D0 + 10),
        "coarse: not rewritten within a minute"
    );
    let found = store
        .token_by_hash("h1", D0 + 10 + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.last_used_at, Some(D0 + 10 + 60_000));

    // Revocation is immediate and shows in the list.
    assert!(store.revoke_token("tok-1", D0 + 100_000).await.unwrap());
    assert!(!store.revoke_token("tok-1", D0 + 200_000).await.unwrap());
    assert!(!store.revoke_token("no-such-token", D0).await.unwrap());
    assert_eq!(store.token_by_hash("h1", D0 + 100_001).await.unwrap(), None);
    assert!(store.token_by_hash("h2", D0).await.unwrap().is_some());

    let list = store.tokens().await.unwrap();
    assert_eq!(list.len(), 2);
    let t1 = list.iter().find(|t| t.id == "tok-1").unwrap();
    assert_eq!(t1.revoked_at, Some(D0 + 100_000));
    assert_eq!(t1.last_used_at, Some(D0 + 10 + 60_000));
    assert_eq!(t1.user, "alice");
    let t2 = list.iter().find(|t| t.id == "tok-admin").unwrap();
    assert_eq!(t2.revoked_at, None);
    assert_eq!(t2.last_used_at, Some(D0));
    assert!(t2.admin);
}

async fn token_errors_do_not_leak_the_hash(db: Arc<TestDb>) {
    let store = &db.store;
    store.create_user("alice", D0).await.unwrap();
    let hash = "5e3c7a1f0d9b8e2c4a6f1d3b5c7e9a0b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c";
    let new = |id: &str| NewToken {
        id: id.to_owned(),
        user: "alice".into(),
        label: None,
        admin: false,
        secret_hash: hash.into(),
        created_at: D0,
    };
    store.create_token(new("a")).await.unwrap();
    let err = store.create_token(new("b")).await.unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(hash), "hash leaked: {text}");
}

async fn every_record_kind(db: Arc<TestDb>) {
    let store = &db.store;
    let id = uuid();
    let mut start = new_interception(&id, "alice", "anthropic", Some("claude-sonnet-4-5"));
    start.streaming = false;
    start.client = None;
    start.session_id = None;
    store.start_interception(&start).await.unwrap();

    // Before the end: the start fields, no end fields, no records.
    let before = all_interceptions(&db, InterceptionFilter::default()).await;
    assert_eq!(before.len(), 1);
    let d = &before[0];
    assert_eq!(
        (d.ended_at, d.status, &d.outcome, d.attempt_count),
        (None, None, &None, None)
    );
    assert!(d.attempts.is_empty() && d.usage.is_empty() && d.prompts.is_empty());

    let extra = BTreeMap::from([("reasoning".to_owned(), 42), ("audio".to_owned(), 3)]);
    let run = || aibridge_store::ToolRun {
        server_name: "tools".into(),
        server_url: "http://127.0.0.1:9000/mcp".into(),
        tool_name: "search".into(),
        result: None,
        error: Some("Error: calling tool: timed out".into()),
        duration_ms: 1234,
    };
    let tool = |n: i64, name: &str, injected: bool| ToolCallRow {
        interception_id: id.clone(),
        seq: crate::common::next_seq(),
        provider_response_id: Some("msg_1".into()),
        tool_call_id: Some(format!("toolu_{n}")),
        name: name.into(),
        input: format!(r#"{{"n":{n}}}"#),
        injected,
        // A tool the gateway ran carries where it lives and what it gave.
        run: injected.then(run),
        created_at: D0 + n,
    };
    let thought = |n: i64, source: &str| ThoughtRow {
        interception_id: id.clone(),
        seq: crate::common::next_seq(),
        content: format!("thinking {n}"),
        source: source.into(),
        created_at: D0 + n,
    };
    store
        .write_batch(&[
            Record::Attempt(AttemptRow {
                interception_id: id.clone(),
                number: 2,
                key_hint: Some("sk-ant...bbbb".into()),
                status: Some(200),
                transport_error: None,
                failover_reason: None,
                cooldown_ms: None,
                key_check: None,
                duration_ms: 900,
                created_at: D0 + 2,
            }),
            Record::Attempt(AttemptRow {
                interception_id: id.clone(),
                number: 1,
                key_hint: Some("sk-ant...aaaa".into()),
                status: None,
                transport_error: Some("connection reset".into()),
                failover_reason: Some("rate_limited".into()),
                cooldown_ms: Some(61_000),
                key_check: None,
                duration_ms: 15,
                created_at: D0 + 1,
            }),
            Record::Prompt(PromptRow {
                interception_id: id.clone(),
                seq: crate::common::next_seq(),
                provider_response_id: Some("msg_1".into()),
                prompt: "first prompt".into(),
                created_at: D0 + 3,
            }),
            Record::TokenUsage(TokenUsageRow {
                interception_id: id.clone(),
                seq: crate::common::next_seq(),
                provider_response_id: Some("msg_1".into()),
                input: 1_000,
                output: 200,
                cache_read: 300,
                cache_write: 40,
                extra: extra.clone(),
                created_at: D0 + 4,
            }),
            Record::ToolCall(tool(5, "read_file", false)),
            Record::Thought(thought(6, "thinking")),
            Record::Prompt(PromptRow {
                interception_id: id.clone(),
                seq: crate::common::next_seq(),
                provider_response_id: None,
                prompt: "second prompt, ünïcode ✓".into(),
                created_at: D0 + 7,
            }),
            Record::ToolCall(tool(8, "mcp_search", true)),
            Record::Thought(thought(9, "reasoning_summary")),
            Record::TokenUsage(TokenUsageRow {
                interception_id: id.clone(),
                seq: crate::common::next_seq(),
                provider_response_id: None,
                input: 1,
                output: 2,
                cache_read: 0,
                cache_write: 0,
                extra: BTreeMap::new(),
                created_at: D0 + 10,
            }),
            Record::Ended(InterceptionEnded {
                id: id.clone(),
                ended_at: D0 + 11,
                duration_ms: 11,
                status: Some(200),
                outcome: "completed".into(),
                key_hint: Some("sk-ant...bbbb".into()),
                attempts: 2,
                error: None,
                totals: None,
            }),
        ])
        .await
        .unwrap();

    let items = all_interceptions(&db, InterceptionFilter::default()).await;
    let expected = InterceptionDetail {
        id: id.clone(),
        user: "alice".into(),
        kind: RequestKind::Bridged,
        provider_type: "anthropic".into(),
        provider_name: "anthropic".into(),
        method: "POST".into(),
        route: "/v1/messages".into(),
        model: Some("claude-sonnet-4-5".into()),
        streaming: false,
        client: None,
        session_id: None,
        user_agent: Some("claude-cli/2.0".into()),
        credential: CredentialKind::Pool,
        started_at: D0,
        ended_at: Some(D0 + 11),
        duration_ms: Some(11),
        status: Some(200),
        outcome: Some("completed".into()),
        key_hint: Some("sk-ant...bbbb".into()),
        attempt_count: Some(2),
        error: None,
        attempts: vec![
            AttemptView {
                number: 1,
                key_hint: Some("sk-ant...aaaa".into()),
                status: None,
                transport_error: Some("connection reset".into()),
                failover_reason: Some("rate_limited".into()),
                cooldown_ms: Some(61_000),
                key_check: None,
                duration_ms: 15,
                created_at: D0 + 1,
            },
            AttemptView {
                number: 2,
                key_hint: Some("sk-ant...bbbb".into()),
                status: Some(200),
                transport_error: None,
                failover_reason: None,
                cooldown_ms: None,
                key_check: None,
                duration_ms: 900,
                created_at: D0 + 2,
            },
        ],
        usage: vec![
            UsageView {
                provider_response_id: Some("msg_1".into()),
                input: 1_000,
                output: 200,
                cache_read: 300,
                cache_write: 40,
                extra,
                created_at: D0 + 4,
            },
            UsageView {
                provider_response_id: None,
                input: 1,
                output: 2,
                cache_read: 0,
                cache_write: 0,
                extra: BTreeMap::new(),
                created_at: D0 + 10,
            },
        ],
        prompts: vec!["first prompt".into(), "second prompt, ünïcode ✓".into()],
        tool_calls: vec![
            ToolCallView {
                provider_response_id: Some("msg_1".into()),
                tool_call_id: Some("toolu_5".into()),
                name: "read_file".into(),
                input: r#"{"n":5}"#.into(),
                injected: false,
                run: None,
                created_at: D0 + 5,
            },
            ToolCallView {
                provider_response_id: Some("msg_1".into()),
                tool_call_id: Some("toolu_8".into()),
                name: "mcp_search".into(),
                input: r#"{"n":8}"#.into(),
                injected: true,
                run: Some(run()),
                created_at: D0 + 8,
            },
        ],
        thoughts: vec![
            ThoughtView {
                content: "thinking 6".into(),
                source: "thinking".into(),
                created_at: D0 + 6,
            },
            ThoughtView {
                content: "thinking 9".into(),
                source: "reasoning_summary".into(),
                created_at: D0 + 9,
            },
        ],
    };
    assert_eq!(items, vec![expected]);

    // A second end overwrites the first.
    store
        .write_batch(&[ended(&id, D0 + 99, 502, "stream_failed", None, 3)])
        .await
        .unwrap();
    let d = &all_interceptions(&db, InterceptionFilter::default()).await[0];
    assert_eq!(
        (
            d.ended_at,
            d.status,
            d.outcome.as_deref(),
            d.key_hint.as_deref(),
            d.attempt_count
        ),
        (
            Some(D0 + 99),
            Some(502),
            Some("stream_failed"),
            None,
            Some(3)
        )
    );
    assert_eq!(d.error.as_deref(), Some("stream_failed happened"));
}

async fn bad_rows_do_not_lose_the_batch(db: Arc<TestDb>) {
    let store = &db.store;
    let id = uuid();
    let ghost = uuid();
    store
        .start_interception(&new_interception(&id, "alice", "anthropic", None))
        .await
        .unwrap();
    let secret_prompt = "my private prompt text";
    let err = store
        .write_batch(&[
            prompt(&id, "one"),
            prompt(&ghost, secret_prompt),
            attempt(&id, 1, Some("k1"), 200, None),
            usage(&ghost, 1, 1, 1, 1),
            prompt(&id, "two"),
            ended(&ghost, D0, 200, "completed", None, 1),
            ended(&id, D0 + 5, 200, "completed", Some("k1"), 1),
        ])
        .await
        .unwrap_err();
    let StoreError::PartialBatch { total, failures } = &err else {
        panic!("expected PartialBatch, got {err:?}");
    };
    assert_eq!(*total, 7);
    let got: Vec<_> = failures
        .iter()
        .map(|f| {
            (
                f.index,
                f.kind,
                f.interception_id.as_str(),
                f.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "prompt", ghost.as_str(), "unknown interception"),
            (3, "token_usage", ghost.as_str(), "unknown interception"),
            (5, "ended", ghost.as_str(), "unknown interception"),
        ]
    );
    let text = err.to_string();
    assert!(text.starts_with("3 of 7 records not written"), "{text}");
    assert!(!text.contains(secret_prompt), "{text}");

    let items = all_interceptions(&db, InterceptionFilter::default()).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].prompts, vec!["one", "two"]);
    assert_eq!(items[0].attempts.len(), 1);
    assert_eq!(items[0].outcome.as_deref(), Some("completed"));
}

async fn a_repeated_attempt_is_ignored_and_a_bad_row_does_not_lose_the_batch(db: Arc<TestDb>) {
    let store = &db.store;
    let id = uuid();
    store
        .start_interception(&new_interception(&id, "alice", "anthropic", None))
        .await
        .unwrap();
    store
        .write_batch(&[attempt(&id, 1, Some("k1"), 429, Some("rate_limited"))])
        .await
        .unwrap();
    // PostgreSQL refuses a NUL in text, and a refused row aborts its transaction: the store must
    // recover per record. SQLite takes the NUL.
    let postgres = store.backend() == "postgres";
    let err = store
        .write_batch(&[
            prompt(&id, "before"),
            attempt(&id, 1, Some("k1"), 500, None),
            prompt(&uuid(), "ghost"),
            attempt(&id, 2, Some("k2"), 200, None),
            prompt(&id, "nul \u{0} byte"),
            prompt(&id, "after"),
        ])
        .await
        .unwrap_err();
    let StoreError::PartialBatch { total, failures } = &err else {
        panic!("expected PartialBatch, got {err:?}");
    };
    assert_eq!(*total, 6);
    let mut expected = vec![(2, "prompt")];
    if postgres {
        expected.push((4, "prompt"));
    }
    assert_eq!(
        failures
            .iter()
            .map(|f| (f.index, f.kind))
            .collect::<Vec<_>>(),
        expected,
        "the repeated attempt is no failure: it was written before"
    );
    assert_eq!(failures[0].reason, "unknown interception");
    if postgres {
        assert_ne!(failures[1].reason, "unknown interception");
    }

    let d = &all_interceptions(&db, InterceptionFilter::default()).await[0];
    let mut prompts = vec!["before", "nul \u{0} byte", "after"];
    if postgres {
        prompts.remove(1);
    }
    assert_eq!(d.prompts, prompts);
    let attempts: Vec<_> = d.attempts.iter().map(|a| (a.number, a.status)).collect();
    assert_eq!(
        attempts,
        vec![(1, Some(429)), (2, Some(200))],
        "the first attempt 1 is kept"
    );
}

/// Review item 11: when a COMMIT's acknowledgement is lost the writer retries the whole batch;
/// the records were written the first time and must not count twice.
async fn a_retried_batch_counts_nothing_twice(db: Arc<TestDb>) {
    let store = &db.store;
    let id = uuid();
    store
        .start_interception(&new_interception(
            &id,
            "rita",
            "anthropic",
            Some("claude-x"),
        ))
        .await
        .unwrap();
    let records = vec![
        attempt(&id, 1, Some("k1"), 429, Some("rate_limited")),
        attempt(&id, 2, Some("k2"), 200, None),
        usage(&id, 100, 20, 5, 1),
        prompt(&id, "once"),
        ended(&id, D0 + 5, 200, "completed", Some("k2"), 2),
    ];
    commit_each_then_counted_once(&db, vec![records; 3], 2).await;
}

/// Commits each list of records as a batch of its own, then checks that their one request is
/// counted once: one request of 100 input and 20 output tokens, `attempts` attempts, one usage
/// row and the prompt "once".
async fn commit_each_then_counted_once(db: &TestDb, batches: Vec<Vec<Record>>, attempts: usize) {
    let store = &db.store;
    for records in batches {
        store
            .commit(Arc::new(WriteBatch {
                starts: vec![],
                records,
            }))
            .await
            .unwrap();
    }
    let report = store
        .usage(&UsageFilter::default(), GroupBy::User)
        .await
        .unwrap();
    assert_eq!(
        (
            report[0].requests,
            report[0].input_tokens,
            report[0].output_tokens
        ),
        (1, 100, 20)
    );
    let d = &all_interceptions(db, InterceptionFilter::default()).await[0];
    assert_eq!(d.attempts.len(), attempts);
    assert_eq!(d.usage.len(), 1);
    assert_eq!(d.prompts, vec!["once"]);
}

/// The records of a request whose start was committed in an earlier batch and that has not
/// ended (SQLite's writer inserts them without looking its row up first), retried before and
/// after its end: each row is written once.
async fn records_of_a_request_in_flight_retried_count_once(db: Arc<TestDb>) {
    let store = &db.store;
    let id = uuid();
    store
        .start_interception(&new_interception(&id, "ida", "anthropic", Some("claude-x")))
        .await
        .unwrap();
    let in_flight = vec![
        attempt(&id, 1, Some("k1"), 200, None),
        usage(&id, 100, 20, 5, 1),
        prompt(&id, "once"),
    ];
    let end = ended(&id, D0 + 5, 200, "completed", Some("k1"), 1);
    let batches = vec![
        in_flight.clone(),
        in_flight.clone(),
        vec![end.clone()],
        in_flight,
        vec![end],
    ];
    commit_each_then_counted_once(&db, batches, 1).await;
}

/// An end that carries its request's totals (the gateway's do: it counted them as it recorded
/// the usage and attempts) is written with them as they are, not summed from the rows: the same
/// whether the end follows its start's batch or shares it.
async fn an_end_with_its_totals_is_written_as_it_says(db: Arc<TestDb>) {
    let store = &db.store;
    let totals = Totals {
        input: 130,
        output: 27,
        cache_read: 5,
        cache_write: 3,
        failovers: 1,
    };
    let with_totals = |id: &str| {
        let mut end = ended(id, D0 + 5, 200, "completed", Some("k2"), 2);
        if let Record::Ended(end) = &mut end {
            end.totals = Some(totals);
        }
        // Rows that sum to something else: the end's totals are what the row keeps.
        vec![
            attempt(id, 1, Some("k1"), 429, Some("rate_limited")),
            usage(id, 100, 20, 5, 1),
            end,
        ]
    };
    let (split, whole) = (uuid(), uuid());
    store
        .start_interception(&new_interception(&split, "sam", "anthropic", None))
        .await
        .unwrap();
    store
        .commit(Arc::new(WriteBatch {
            starts: vec![],
            records: with_totals(&split),
        }))
        .await
        .unwrap();
    store
        .commit(Arc::new(WriteBatch {
            starts: vec![new_interception(&whole, "wendy", "anthropic", None)],
            records: with_totals(&whole),
        }))
        .await
        .unwrap();
    let mut report = store
        .usage(&UsageFilter::default(), GroupBy::User)
        .await
        .unwrap();
    report.sort_by(|a, b| a.group.cmp(&b.group));
    assert_eq!(
        report,
        vec![
            row("sam", 1, 0, 1, 130, 27, 5, 3),
            row("wendy", 1, 0, 1, 130, 27, 5, 3),
        ]
    );
}

async fn usage_by_each_group(db: Arc<TestDb>) {
    seed(&db).await;
    let all = UsageFilter::default();
    let report = |by| {
        let db = db.clone();
        let all = all.clone();
        async move { db.store.usage(&all, by).await.unwrap() }
    };
    assert_eq!(
        report(GroupBy::User).await,
        vec![
            row("alice", 3, 1, 1, 330, 70, 10, 5),
            row("bob", 2, 1, 2, 7, 3, 1, 1),
        ]
    );
    assert_eq!(
        report(GroupBy::Model).await,
        vec![
            row("-", 1, 1, 2, 0, 0, 0, 0),
            row("claude-a", 3, 0, 1, 307, 73, 11, 6),
            row("gpt-x", 1, 1, 0, 30, 0, 0, 0),
        ]
    );
    assert_eq!(
        report(GroupBy::Key).await,
        vec![
            row("-", 2, 1, 2, 0, 0, 0, 0),
            row("byok", 1, 0, 0, 7, 3, 1, 1),
            row("sk-ant...a1", 1, 0, 1, 300, 70, 10, 5),
            row("sk-oai...o1", 1, 1, 0, 30, 0, 0, 0),
        ]
    );
    assert_eq!(
        report(GroupBy::Day).await,
        vec![
            row("2026-01-01", 2, 1, 1, 330, 70, 10, 5),
            row("2026-01-02", 2, 1, 2, 7, 3, 1, 1),
            row("2026-01-03", 1, 0, 0, 0, 0, 0, 0),
        ]
    );
    assert_eq!(
        report(GroupBy::Provider).await,
        vec![
            row("anthropic", 4, 1, 3, 307, 73, 11, 6),
            row("openai", 1, 1, 0, 30, 0, 0, 0),
        ]
    );
}

async fn usage_by_day(db: Arc<TestDb>) {
    seed(&db).await;
    let day = |day: &str, usage: UsageRow| DailyUsageRow {
        day: day.to_owned(),
        usage,
    };
    let all = db
        .store
        .usage_by_day(&UsageFilter::default(), GroupBy::Model)
        .await
        .unwrap();
    assert_eq!(
        all,
        vec![
            day("2026-01-01", row("claude-a", 1, 0, 1, 300, 70, 10, 5)),
            day("2026-01-01", row("gpt-x", 1, 1, 0, 30, 0, 0, 0)),
            day("2026-01-02", row("-", 1, 1, 2, 0, 0, 0, 0)),
            day("2026-01-02", row("claude-a", 1, 0, 0, 7, 3, 1, 1)),
            day("2026-01-03", row("claude-a", 1, 0, 0, 0, 0, 0, 0)),
        ]
    );
    // The split by day sums to the report without it.
    let plain = db
        .store
        .usage(&UsageFilter::default(), GroupBy::Model)
        .await
        .unwrap();
    for total in &plain {
        let requests: i64 = all
            .iter()
            .filter(|d| d.usage.group == total.group)
            .map(|d| d.usage.requests)
            .sum();
        assert_eq!(requests, total.requests, "{}", total.group);
    }
    // Filters as for `usage`; grouped by day, the group is the day.
    let filtered = db
        .store
        .usage_by_day(
            &UsageFilter {
                since: Some(D0 + DAY),
                until: Some(D0 + 2 * DAY),
                user: Some("bob".into()),
            },
            GroupBy::Day,
        )
        .await
        .unwrap();
    assert_eq!(
        filtered,
        vec![day("2026-01-02", row("2026-01-02", 2, 1, 2, 7, 3, 1, 1))]
    );
}

async fn usage_cells(db: Arc<TestDb>) {
    seed(&db).await;
    let cells = db
        .store
        .usage_cells(&UsageFilter::default(), GroupBy::User)
        .await
        .unwrap();
    // Summed over days and models: the report by user; over users: the report by day and model.
    let by_user = db
        .store
        .usage(&UsageFilter::default(), GroupBy::User)
        .await
        .unwrap();
    for total in &by_user {
        let (requests, input): (i64, i64) = cells
            .iter()
            .filter(|c| c.usage.group == total.group)
            .fold((0, 0), |(r, i), c| {
                (r + c.usage.requests, i + c.usage.input_tokens)
            });
        assert_eq!(
            (requests, input),
            (total.requests, total.input_tokens),
            "{}",
            total.group
        );
    }
    let by_day = db
        .store
        .usage_by_day(&UsageFilter::default(), GroupBy::Model)
        .await
        .unwrap();
    for daily in &by_day {
        let (requests, output): (i64, i64) = cells
            .iter()
            .filter(|c| c.day == daily.day && c.model == daily.usage.group)
            .fold((0, 0), |(r, o), c| {
                (r + c.usage.requests, o + c.usage.output_tokens)
            });
        assert_eq!(
            (requests, output),
            (daily.usage.requests, daily.usage.output_tokens),
            "{} {}",
            daily.day,
            daily.usage.group
        );
    }
    let order: Vec<(&str, &str, &str)> = cells
        .iter()
        .map(|c| (c.day.as_str(), c.model.as_str(), c.usage.group.as_str()))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "by day, model, group");
}

async fn one_interception_by_id(db: Arc<TestDb>) {
    let s = seed(&db).await;
    let listed = all_interceptions(&db, InterceptionFilter::default()).await;
    for id in [&s.i1, &s.i4, &s.i5] {
        let one = db.store.interception(id).await.unwrap();
        let expected = listed.iter().find(|i| &i.id == id).cloned();
        assert!(expected.is_some());
        assert_eq!(one, expected, "{id}");
    }
    let i1 = db.store.interception(&s.i1).await.unwrap().unwrap();
    assert_eq!(
        i1.attempts.iter().map(|a| a.number).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(i1.usage.len(), 2);
    assert_eq!(db.store.interception(&uuid()).await.unwrap(), None);
    assert_eq!(db.store.interception("").await.unwrap(), None);
}

async fn usage_filters(db: Arc<TestDb>) {
    seed(&db).await;
    let store = &db.store;
    let by_user = |filter: UsageFilter| {
        let db = db.clone();
        async move { db.store.usage(&filter, GroupBy::User).await.unwrap() }
    };
    // since is inclusive, until exclusive (on the start time).
    assert_eq!(
        by_user(UsageFilter {
            since: Some(D0 + DAY + HOUR),
            until: Some(D0 + 2 * DAY),
            user: None,
        })
        .await,
        vec![row("bob", 2, 1, 2, 7, 3, 1, 1)]
    );
    assert_eq!(
        by_user(UsageFilter {
            since: None,
            until: Some(D0 + DAY + HOUR),
            user: None,
        })
        .await,
        vec![row("alice", 2, 1, 1, 330, 70, 10, 5)]
    );
    assert_eq!(
        by_user(UsageFilter {
            since: Some(D0 + 90 * 60_000),
            until: None,
            user: Some("alice".into()),
        })
        .await,
        vec![row("alice", 2, 1, 0, 30, 0, 0, 0)]
    );
    assert_eq!(
        store
            .usage(
                &UsageFilter {
                    user: Some("bob".into()),
                    ..UsageFilter::default()
                },
                GroupBy::Day
            )
            .await
            .unwrap(),
        vec![row("2026-01-02", 2, 1, 2, 7, 3, 1, 1)]
    );
    assert_eq!(
        by_user(UsageFilter {
            user: Some("nobody".into()),
            ..UsageFilter::default()
        })
        .await,
        vec![]
    );
}

async fn interception_filters(db: Arc<TestDb>) {
    let s = seed(&db).await;
    let list = |filter: InterceptionFilter| {
        let db = db.clone();
        async move {
            all_interceptions(&db, filter)
                .await
                .into_iter()
                .map(|d| d.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(InterceptionFilter::default()).await,
        vec![
            s.i5.as_str(),
            s.i4.as_str(),
            s.i3.as_str(),
            s.i2.as_str(),
            s.i1.as_str()
        ]
    );
    assert_eq!(
        list(InterceptionFilter {
            user: Some("bob".into()),
            ..Default::default()
        })
        .await,
        vec![s.i4.as_str(), s.i3.as_str()]
    );
    assert_eq!(
        list(InterceptionFilter {
            status: Some(500),
            ..Default::default()
        })
        .await,
        vec![s.i2.as_str()]
    );
    assert_eq!(
        list(InterceptionFilter {
            outcome: Some("completed".into()),
            ..Default::default()
        })
        .await,
        vec![s.i3.as_str(), s.i1.as_str()]
    );
    assert_eq!(
        list(InterceptionFilter {
            since: Some(D0 + DAY + HOUR),
            ..Default::default()
        })
        .await,
        vec![s.i5.as_str(), s.i4.as_str(), s.i3.as_str()]
    );
    assert_eq!(
        list(InterceptionFilter {
            until: Some(D0 + DAY + HOUR),
            ..Default::default()
        })
        .await,
        vec![s.i2.as_str(), s.i1.as_str()]
    );
    assert_eq!(
        list(InterceptionFilter {
            user: Some("alice".into()),
            outcome: Some("completed".into()),
            since: Some(D0),
            until: Some(D0 + DAY),
            status: Some(200),
            ..Default::default()
        })
        .await,
        vec![s.i1.as_str()]
    );

    // The seeded records come back with their interceptions.
    let items = all_interceptions(&db, InterceptionFilter::default()).await;
    let i1 = items.iter().find(|d| d.id == s.i1).unwrap();
    assert_eq!(
        i1.attempts
            .iter()
            .map(|a| (
                a.number,
                a.key_hint.as_deref(),
                a.failover_reason.as_deref()
            ))
            .collect::<Vec<_>>(),
        vec![
            (1, Some("sk-ant...a0"), Some("rate_limited")),
            (2, Some("sk-ant...a1"), None)
        ]
    );
    assert_eq!(
        i1.usage.iter().map(|u| u.input).collect::<Vec<_>>(),
        vec![100, 200]
    );
    let i4 = items.iter().find(|d| d.id == s.i4).unwrap();
    assert_eq!(
        (i4.kind, i4.model.as_deref(), i4.method.as_str()),
        (RequestKind::Passthrough, None, "GET")
    );
    let i5 = items.iter().find(|d| d.id == s.i5).unwrap();
    assert_eq!((i5.ended_at, i5.outcome.as_deref()), (None, None));
}

async fn pagination(db: Arc<TestDb>) {
    let store = &db.store;
    // 23 interceptions, start times tied in threes so that the id breaks ties.
    for n in 0..23_i64 {
        let mut i = new_interception(
            &uuid(),
            if n % 2 == 0 { "alice" } else { "bob" },
            "anthropic",
            None,
        );
        i.started_at = D0 + (n / 3) * 1_000;
        store.start_interception(&i).await.unwrap();
    }
    let everything = all_interceptions(&db, InterceptionFilter::default()).await;
    assert_eq!(everything.len(), 23);
    assert!(
        everything
            .windows(2)
            .all(|w| (w[0].started_at, &w[0].id) > (w[1].started_at, &w[1].id)),
        "newest first, ties by id"
    );

    for (user, limit) in [(None, 5_u32), (None, 1), (None, 23), (Some("bob"), 4)] {
        let mut seen = Vec::new();
        let mut before = None;
        let mut pages = 0;
        loop {
            let page = store
                .interceptions(&InterceptionFilter {
                    user: user.map(str::to_owned),
                    limit,
                    before: before.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
            pages += 1;
            assert!(page.items.len() <= limit as usize);
            seen.extend(page.items.iter().map(|d| d.id.clone()));
            match page.next {
                Some(next) => {
                    assert_eq!(Some(&next), seen.last(), "cursor is the last item");
                    before = Some(next);
                }
                None => break,
            }
            assert!(pages < 100, "pagination does not end");
        }
        let expected: Vec<String> = everything
            .iter()
            .filter(|d| user.is_none_or(|u| d.user == u))
            .map(|d| d.id.clone())
            .collect();
        assert_eq!(
            seen, expected,
            "user {user:?} limit {limit}: no gap, no duplicate"
        );
        assert_eq!(pages, expected.len().div_ceil(limit as usize).max(1));
    }

    // limit 0 means 50; an unknown cursor gives an empty page.
    let page = store
        .interceptions(&InterceptionFilter::default())
        .await
        .unwrap();
    assert_eq!((page.items.len(), page.next), (23, None));
    let page = store
        .interceptions(&InterceptionFilter {
            before: Some(uuid()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((page.items.len(), page.next), (0, None));
    assert_eq!(ids(&everything).len(), 23);
}

async fn served_by_key(db: Arc<TestDb>) {
    let store = &db.store;
    let mut records = Vec::new();
    for (n, (provider, key, credential)) in [
        ("anthropic", Some("sk-ant...aaaa"), CredentialKind::Pool),
        ("anthropic", Some("sk-ant...aaaa"), CredentialKind::Pool),
        ("anthropic", Some("sk-ant...aaaa"), CredentialKind::Pool),
        ("anthropic", Some("sk-ant...bbbb"), CredentialKind::Pool),
        ("anthropic", None, CredentialKind::Pool),
        ("anthropic", None, CredentialKind::Byok),
        ("anthropic-eu", Some("sk-ant...cccc"), CredentialKind::Pool),
    ]
    .into_iter()
    .enumerate()
    {
        let id = uuid();
        let mut i = new_interception(&id, "alice", provider, None);
        i.credential = credential;
        i.started_at = D0 + n as i64;
        store.start_interception(&i).await.unwrap();
        records.push(ended(&id, D0 + 10, 200, "completed", key, 1));
    }
    // Not ended yet: not served.
    store
        .start_interception(&new_interception(&uuid(), "bob", "anthropic", None))
        .await
        .unwrap();
    store.write_batch(&records).await.unwrap();
    assert_eq!(
        store.served_by_key("anthropic").await.unwrap(),
        BTreeMap::from([("sk-ant...aaaa".into(), 3), ("sk-ant...bbbb".into(), 1)])
    );
    assert_eq!(
        store.served_by_key("anthropic-eu").await.unwrap(),
        BTreeMap::from([("sk-ant...cccc".into(), 1)])
    );
    assert!(store.served_by_key("openai").await.unwrap().is_empty());
}

async fn survives_reopen(db: Arc<TestDb>) {
    let s = seed(&db).await;
    db.store.create_user("alice", D0).await.unwrap();
    db.store
        .create_token(NewToken {
            id: "tok".into(),
            user: "alice".into(),
            label: None,
            admin: true,
            secret_hash: "hash".into(),
            created_at: D0,
        })
        .await
        .unwrap();
    let before = all_interceptions(&db, InterceptionFilter::default()).await;
    db.store.close().await;

    let again = db.open_again().await;
    again.migrate().await.unwrap();
    let after = again
        .interceptions(&InterceptionFilter {
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(after.items, before);
    assert_eq!(
        after.items.last().map(|d| d.id.as_str()),
        Some(s.i1.as_str())
    );
    assert_eq!(again.users().await.unwrap().len(), 1);
    assert!(
        again
            .token_by_hash("hash", D0)
            .await
            .unwrap()
            .unwrap()
            .admin
    );
    assert_eq!(
        again
            .usage(&UsageFilter::default(), GroupBy::User)
            .await
            .unwrap()
            .len(),
        2
    );
    again.close().await;
}

async fn concurrent_batches(db: Arc<TestDb>) {
    let id = uuid();
    db.store
        .start_interception(&new_interception(&id, "alice", "anthropic", None))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let store = db.store.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..5 {
                let batch: Vec<_> = (0..20)
                    .map(|n| prompt(&id, &format!("{t}-{b}-{n}")))
                    .collect();
                store.write_batch(&batch).await.unwrap();
                store
                    .usage(&UsageFilter::default(), GroupBy::User)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let d = &all_interceptions(&db, InterceptionFilter::default()).await[0];
    assert_eq!(d.prompts.len(), 4 * 5 * 20);
}

// ---------------------------------------------------------------------------------------------
// backend-specific

#[tokio::test]
async fn sqlite_in_memory() {
    let store = aibridge_store::open("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    let id = uuid();
    store
        .start_interception(&new_interception(&id, "local", "anthropic", None))
        .await
        .unwrap();
    store
        .write_batch(&[prompt(&id, "hello"), usage(&id, 5, 6, 0, 0)])
        .await
        .unwrap();
    // A request's usage counts once it ends (its totals are written with its end), or, when it
    // never ends (the gateway was killed), from the next start's migration.
    assert_eq!(
        store
            .usage(&UsageFilter::default(), GroupBy::User)
            .await
            .unwrap()[0]
            .input_tokens,
        0
    );
    store.migrate().await.unwrap();
    let page = store
        .interceptions(&InterceptionFilter::default())
        .await
        .unwrap();
    assert_eq!(page.items[0].prompts, vec!["hello"]);
    assert_eq!(
        store
            .usage(&UsageFilter::default(), GroupBy::User)
            .await
            .unwrap(),
        vec![row("local", 1, 0, 0, 5, 6, 0, 0)]
    );
    store.close().await;
}

#[tokio::test]
async fn sqlite_file_settings() {
    use sqlx::Connection;
    let db = TestDb::sqlite().await;
    let path = db.url.trim_start_matches("sqlite://").to_owned();
    crate::common::run(Some(db), |_db| async move {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
            .await
            .unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        // Commits carry many requests' rows: 4 KiB pages take a third of the WAL writes of
        // 1 KiB ones.
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(page_size, 4096);
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        for table in [
            "attempts",
            "interceptions",
            "prompts",
            "thoughts",
            "token_usages",
            "tokens",
            "tool_calls",
            "users",
        ] {
            assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
        }
        conn.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn unsupported_url_hides_the_password() {
    let err = aibridge_store::open("mysql://root:hunter2@db.internal/aibridge")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::UnsupportedUrl(_)), "{err:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("db.internal/aibridge"), "{text}");
}

async fn starts_commit_with_records(db: Arc<TestDb>) {
    let store = &db.store;
    let starts: Vec<NewInterception> = (0..50)
        .map(|n| {
            new_interception(
                &format!("grp-{n:02}"),
                "gina",
                "anthropic",
                Some("claude-x"),
            )
        })
        .collect();
    // Records about starts in the same batch are written after them.
    let records = (0..10)
        .map(|n| ended(&format!("grp-{n:02}"), D0 + 5, 429, "exhausted", None, 2))
        .collect();
    store
        .commit(Arc::new(WriteBatch { starts, records }))
        .await
        .unwrap();
    let report = store
        .usage(&UsageFilter::default(), GroupBy::User)
        .await
        .unwrap();
    assert_eq!(report.len(), 1);
    assert_eq!(
        (
            report[0].group.as_str(),
            report[0].requests,
            report[0].failed_requests
        ),
        ("gina", 50, 10)
    );

    // A start already there (a batch retried after its first commit went through after all)
    // is left as it is; a row whose start and end ride together takes the end again.
    for _ in 0..2 {
        store
            .commit(Arc::new(WriteBatch {
                starts: vec![
                    new_interception("grp-00", "gina", "anthropic", Some("claude-x")),
                    new_interception("grp-new", "gina", "anthropic", Some("claude-x")),
                ],
                records: vec![ended("grp-new", D0 + 5, 429, "exhausted", None, 2)],
            }))
            .await
            .unwrap();
    }
    let report = store
        .usage(&UsageFilter::default(), GroupBy::User)
        .await
        .unwrap();
    assert_eq!(
        (report[0].requests, report[0].failed_requests),
        (51, 11),
        "each request once, grp-00 still ended"
    );

    // A record that cannot be written does not cost the batch its starts.
    let err = store
        .commit(Arc::new(WriteBatch {
            starts: vec![new_interception("grp-50", "gina", "anthropic", None)],
            records: vec![
                ended("grp-50", D0 + 5, 429, "exhausted", None, 2),
                prompt("no-such-interception", "lost"),
            ],
        }))
        .await
        .unwrap_err();
    match err {
        StoreError::PartialBatch { total, failures } => {
            assert_eq!(total, 2);
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].index, 1);
            assert_eq!(failures[0].interception_id, "no-such-interception");
        }
        other => panic!("expected a partial batch, got {other:?}"),
    }
    let report = store
        .usage(&UsageFilter::default(), GroupBy::User)
        .await
        .unwrap();
    assert_eq!((report[0].requests, report[0].failed_requests), (52, 12));

    store.commit(Arc::new(WriteBatch::default())).await.unwrap();
}

/// Automatic checkpoints are off on the write connections: the store's own checkpointer copies
/// the WAL back into the database file, so the WAL does not grow without bound.
#[tokio::test]
async fn sqlite_wal_is_checkpointed_in_the_background() {
    let db = TestDb::sqlite().await;
    let path = db.url.trim_start_matches("sqlite://").to_owned();
    crate::common::run(Some(db), |db| async move {
        let records: Vec<Record> = (0..2_000)
            .map(|n| prompt("wal-1", &format!("{n} {}", "x".repeat(1_000))))
            .collect();
        db.store
            .commit(Arc::new(WriteBatch {
                starts: vec![new_interception("wal-1", "wally", "anthropic", None)],
                records,
            }))
            .await
            .unwrap();
        // Nothing else checkpoints while the store is open, so the database file grows only
        // when the store's checkpointer copies the WAL into it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let size = std::fs::metadata(&path).unwrap().len();
            if size > 2_000_000 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "WAL not checkpointed: the database file is {size} bytes"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let wal = std::fs::metadata(format!("{path}-wal")).unwrap().len();
        assert!(
            wal > 2_000_000,
            "the prompts went through the WAL ({wal} bytes)"
        );
    })
    .await;
}

/// A request whose start and end ride in one batch is written as one row (on SQLite, with
/// totals summed from the batch); it must read back exactly like one written over several
/// batches, its start first.
async fn a_request_in_one_batch_is_written_as_over_several(db: Arc<TestDb>) {
    let store = &db.store;
    let records = |id: &str| {
        vec![
            attempt(id, 1, Some("k1"), 429, Some("rate_limited")),
            attempt(id, 2, Some("k2"), 200, None),
            usage(id, 100, 20, 5, 1),
            usage(id, 30, 7, 0, 2),
            prompt(id, "hello"),
            Record::ToolCall(ToolCallRow {
                interception_id: id.to_owned(),
                seq: 1,
                provider_response_id: Some("msg_1".into()),
                tool_call_id: Some("toolu_1".into()),
                name: "bmcp_tools_search".into(),
                input: r#"{"q":"x"}"#.into(),
                injected: true,
                run: Some(aibridge_store::ToolRun {
                    server_name: "tools".into(),
                    server_url: "http://127.0.0.1:9000/mcp".into(),
                    tool_name: "search".into(),
                    result: Some("found".into()),
                    error: None,
                    duration_ms: 12,
                }),
                created_at: D0 + 3,
            }),
            Record::Thought(ThoughtRow {
                interception_id: id.to_owned(),
                seq: 2,
                content: "thinking".into(),
                source: "thinking".into(),
                created_at: D0 + 4,
            }),
            ended(id, D0 + 5, 200, "completed", Some("k2"), 2),
        ]
    };
    let (whole, split) = (uuid(), uuid());
    store
        .commit(Arc::new(WriteBatch {
            starts: vec![new_interception(
                &whole,
                "wendy",
                "anthropic",
                Some("claude-x"),
            )],
            records: records(&whole),
        }))
        .await
        .unwrap();
    store
        .start_interception(&new_interception(
            &split,
            "sam",
            "anthropic",
            Some("claude-x"),
        ))
        .await
        .unwrap();
    for record in records(&split) {
        store
            .commit(Arc::new(WriteBatch {
                starts: vec![],
                records: vec![record],
            }))
            .await
            .unwrap();
    }
    let mut report = store
        .usage(&UsageFilter::default(), GroupBy::User)
        .await
        .unwrap();
    report.sort_by(|a, b| a.group.cmp(&b.group));
    assert_eq!(
        report,
        vec![
            row("sam", 1, 0, 1, 130, 27, 5, 3),
            row("wendy", 1, 0, 1, 130, 27, 5, 3)
        ]
    );
    let details = all_interceptions(&db, InterceptionFilter::default()).await;
    let by_id = |id: &str| details.iter().find(|d| d.id == id).unwrap().clone();
    let (mut whole, split) = (by_id(&whole), by_id(&split));
    assert_eq!(whole.outcome.as_deref(), Some("completed"));
    assert_eq!(whole.key_hint.as_deref(), Some("k2"));
    assert_eq!(whole.attempts.len(), 2);
    assert_eq!((whole.tool_calls.len(), whole.thoughts.len()), (1, 1));
    whole.id.clone_from(&split.id);
    whole.user.clone_from(&split.user);
    assert_eq!(
        format!("{whole:?}").replace(&split.id, "ID"),
        format!("{split:?}").replace(&split.id, "ID")
    );
}
