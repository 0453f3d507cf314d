//! Key pool behaviour: construction, states, marking, walker, exhaustion, concurrency, probes.
//! Rows of spec §9.1 are named after the reference tests; "permanent" there is "disabled" here.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{
    exhausted, fixture, fixture_with, key_names, new_store, secs, start, unique_pool,
};
use aibridge_keypool::{
    ApiKey, CooldownPolicy, CooldownSource, DisableReason, Exhausted, KeyId, KeyPool, KeyRecord,
    KeyState, KeyStateStore, ManualClock, MemoryStore, PoolConfigError, ProbeOutcome, ProbePolicy,
    StoreError, Timestamp, Verdict, WalkError,
};

fn rate_limited(retry_after: Duration) -> Exhausted {
    Exhausted::RateLimited { retry_after }
}

fn new_pool(keys: &[&str]) -> Result<KeyPool, PoolConfigError> {
    KeyPool::new(
        "p",
        keys.iter().map(|k| ApiKey::new(*k)).collect(),
        Arc::new(MemoryStore::new()),
        Arc::new(ManualClock::new(start())),
        CooldownPolicy::default(),
        ProbePolicy::default(),
    )
}

// ---- Pool construction (TestNew*) ----

#[test]
fn construction_without_keys_fails() {
    let err = new_pool(&[]).unwrap_err();
    assert!(matches!(err, PoolConfigError::NoKeys));
    assert_eq!(err.to_string(), "no keys provided");
}

#[test]
fn construction_with_duplicate_key_fails() {
    let err = new_pool(&["key-0", "key-1", "key-0"]).unwrap_err();
    assert!(matches!(
        err,
        PoolConfigError::DuplicateKey { index: 3, first: 1 }
    ));
    assert_eq!(err.to_string(), "key #3 duplicates key #1");
}

#[test]
fn construction_with_empty_key_fails() {
    let err = new_pool(&["key-0", "  "]).unwrap_err();
    assert!(matches!(err, PoolConfigError::EmptyKey { index: 2 }));
    assert_eq!(err.to_string(), "key #2 is empty");
}

#[tokio::test]
async fn one_key_is_walked_then_exhausted_with_zero_retry() {
    let f = fixture(1);
    assert_eq!(f.pool.len(), 1);
    assert!(!f.pool.is_empty());
    assert_eq!(f.state(0).await, KeyState::Valid);
    let (seen, err, attempts) = f.walk_all().await;
    assert_eq!(seen, ["key-0"]);
    assert_eq!(attempts, 1);
    assert_eq!(exhausted(err), rate_limited(Duration::ZERO));
}

#[tokio::test]
async fn three_keys_are_walked_in_order_then_exhausted_with_zero_retry() {
    let f = fixture(3);
    let keys = f.pool.keys();
    assert_eq!(keys.iter().map(|k| k.index).collect::<Vec<_>>(), [0, 1, 2]);
    for index in 0..3 {
        assert_eq!(f.state(index).await, KeyState::Valid);
    }
    let (seen, err, attempts) = f.walk_all().await;
    assert_eq!(seen, ["key-0", "key-1", "key-2"]);
    assert_eq!(attempts, 3);
    assert_eq!(exhausted(err), rate_limited(Duration::ZERO));
}

// ---- State (TestState) ----

#[tokio::test]
async fn state_transitions() {
    let f = fixture(1);
    assert_eq!(f.state(0).await, KeyState::Valid, "fresh");

    f.cool(0, "60").await;
    assert_eq!(f.state(0).await, KeyState::Cooling, "cooled 60 s");

    let f = fixture(1);
    f.cool(0, "30").await;
    f.advance(secs(35));
    assert_eq!(f.state(0).await, KeyState::Valid, "cooled 30 s, 35 s later");

    let f = fixture(1);
    f.disable(0).await;
    assert_eq!(f.state(0).await, KeyState::Disabled, "disabled");

    let f = fixture(1);
    f.cool(0, "60").await;
    f.disable(0).await;
    assert_eq!(f.state(0).await, KeyState::Disabled, "cooled then disabled");
}

#[test]
fn state_names() {
    assert_eq!(KeyState::Valid.as_str(), "valid");
    assert_eq!(KeyState::Cooling.as_str(), "cooling");
    assert_eq!(KeyState::Disabled.as_str(), "disabled");
}

#[test]
fn record_state_is_derived_from_the_clock() {
    let now = start();
    let record = KeyRecord {
        cooldown_until: Some(now.saturating_add(secs(10))),
        ..KeyRecord::default()
    };
    assert_eq!(record.state(now), KeyState::Cooling);
    assert_eq!(record.cooldown_remaining(now), Some(secs(10)));
    let at_deadline = now.saturating_add(secs(10));
    assert_eq!(record.state(at_deadline), KeyState::Valid);
    assert_eq!(record.cooldown_remaining(at_deadline), None);
}

// ---- MarkTemporary (TestMarkTemporary): 429 marks and their `transitioned` flag ----

#[tokio::test]
async fn mark_temporary_valid_to_cooling_transitions() {
    let f = fixture(1);
    let outcome = f.cool(0, "60").await;
    assert!(outcome.transitioned);
    assert_eq!(
        outcome.verdict,
        Verdict::RateLimited {
            cooldown: secs(60),
            source: CooldownSource::RetryAfter
        }
    );
    assert_eq!(f.state(0).await, KeyState::Cooling);
}

#[tokio::test]
async fn mark_temporary_extending_an_active_cooldown_is_not_a_transition() {
    let f = fixture(1);
    assert!(f.cool(0, "10").await.transitioned);
    assert!(!f.cool(0, "60").await.transitioned);
    let snapshot = f.snapshot(0).await;
    assert_eq!(snapshot.state, KeyState::Cooling);
    assert_eq!(
        snapshot.cooldown_remaining,
        Some(secs(60)),
        "extended to 60 s"
    );
}

#[tokio::test]
async fn mark_temporary_shorter_cooldown_keeps_the_longer_one() {
    let f = fixture(1);
    assert!(f.cool(0, "60").await.transitioned);
    assert!(!f.cool(0, "10").await.transitioned);
    let snapshot = f.snapshot(0).await;
    assert_eq!(snapshot.state, KeyState::Cooling);
    assert_eq!(snapshot.cooldown_remaining, Some(secs(60)), "longer kept");
}

#[tokio::test]
async fn mark_temporary_on_a_disabled_key_is_a_no_op() {
    let f = fixture(1);
    assert!(f.disable(0).await.transitioned);
    let before = f.record(0).await;
    let outcome = f.cool(0, "60").await;
    assert!(!outcome.transitioned);
    assert!(outcome.verdict.is_failover(), "still a failover trigger");
    assert_eq!(f.state(0).await, KeyState::Disabled);
    assert_eq!(
        f.record(0).await,
        before,
        "record untouched, last_status stays 401"
    );
    assert_eq!(before.last_status, Some(401));
    assert_eq!(before.cooldown_until, None);
}

#[tokio::test]
async fn mark_temporary_after_expiry_transitions_again() {
    let f = fixture(1);
    assert!(f.cool(0, "10").await.transitioned);
    f.advance(secs(10));
    assert!(
        f.cool(0, "10").await.transitioned,
        "expired cooldown counts as valid"
    );
}

// ---- MarkPermanent: 401/403 disable ----

#[tokio::test]
async fn mark_permanent_transitions() {
    let f = fixture(2);
    let outcome = f.disable(0).await;
    assert!(outcome.transitioned, "valid -> disabled");
    assert_eq!(
        outcome.verdict,
        Verdict::Rejected {
            reason: DisableReason::Unauthorized
        }
    );
    assert!(!f.disable(0).await.transitioned, "disabled -> disabled");
    assert!(
        !f.mark(0, 403, &[]).await.transitioned,
        "403 on a key disabled by 401"
    );
    assert_eq!(
        f.snapshot(0).await.disabled_reason,
        Some(DisableReason::Unauthorized),
        "first reason kept"
    );

    f.cool(1, "60").await;
    let outcome = f.mark(1, 403, &[]).await;
    assert!(outcome.transitioned, "cooling -> disabled");
    assert_eq!(f.state(1).await, KeyState::Disabled);
    assert_eq!(f.snapshot(1).await.cooldown_remaining, None);
}

// ---- Walker table (TestWalkerNext) ----

enum Setup {
    /// 429 with this Retry-After on key i.
    Cool(usize, &'static str),
    /// 401 on key i.
    Disable(usize),
}

struct WalkerCase {
    name: &'static str,
    keys: usize,
    setup: &'static [Setup],
    advance: u64,
    yields: &'static [&'static str],
    exhaustion: Exhausted,
}

#[tokio::test]
async fn walker_table() {
    use Setup::{Cool, Disable};
    let zero = rate_limited(Duration::ZERO);
    let cases = [
        WalkerCase {
            name: "all_keys_valid",
            keys: 3,
            setup: &[],
            advance: 0,
            yields: &["key-0", "key-1", "key-2"],
            exhaustion: zero.clone(),
        },
        WalkerCase {
            name: "skips_temporary_keys",
            keys: 3,
            setup: &[Cool(0, "60")],
            advance: 0,
            yields: &["key-1", "key-2"],
            exhaustion: zero.clone(),
        },
        WalkerCase {
            name: "skips_permanent_keys",
            keys: 3,
            setup: &[Disable(0), Disable(1)],
            advance: 0,
            yields: &["key-2"],
            exhaustion: zero.clone(),
        },
        WalkerCase {
            name: "expired_temporary_is_available",
            keys: 2,
            setup: &[Cool(0, "30")],
            advance: 35,
            yields: &["key-0", "key-1"],
            exhaustion: zero.clone(),
        },
        WalkerCase {
            name: "default_cooldown_not_expired",
            keys: 2,
            setup: &[Cool(0, "0")],
            advance: 50,
            yields: &["key-1"],
            exhaustion: zero.clone(),
        },
        WalkerCase {
            name: "default_cooldown_expired",
            keys: 2,
            setup: &[Cool(0, "0")],
            advance: 65,
            yields: &["key-0", "key-1"],
            exhaustion: zero.clone(),
        },
        WalkerCase {
            name: "negative_cooldown_uses_default",
            keys: 2,
            setup: &[Cool(0, "-10")],
            advance: 65,
            yields: &["key-0", "key-1"],
            exhaustion: zero.clone(),
        },
        WalkerCase {
            name: "shorter_cooldown_preserves_longer_not_expired",
            keys: 1,
            setup: &[Cool(0, "60"), Cool(0, "10")],
            advance: 15,
            yields: &[],
            exhaustion: rate_limited(secs(45)),
        },
        WalkerCase {
            name: "shorter_cooldown_preserves_longer_expired",
            keys: 1,
            setup: &[Cool(0, "60"), Cool(0, "10")],
            advance: 65,
            yields: &["key-0"],
            exhaustion: zero.clone(),
        },
        WalkerCase {
            name: "smallest_cooldown_across_temporary_keys",
            keys: 3,
            setup: &[Cool(0, "60"), Cool(1, "10"), Cool(2, "30")],
            advance: 0,
            yields: &[],
            exhaustion: rate_limited(secs(10)),
        },
        WalkerCase {
            name: "all_temporary_exhausted",
            keys: 2,
            setup: &[Cool(0, "60"), Cool(1, "60")],
            advance: 0,
            yields: &[],
            exhaustion: rate_limited(secs(60)),
        },
        WalkerCase {
            name: "all_permanent_exhausted",
            keys: 2,
            setup: &[Disable(0), Disable(1)],
            advance: 0,
            yields: &[],
            exhaustion: Exhausted::AllDisabled,
        },
        WalkerCase {
            name: "mixed_states_exhausted",
            keys: 3,
            setup: &[Disable(0), Cool(1, "60"), Disable(2)],
            advance: 0,
            yields: &[],
            exhaustion: rate_limited(secs(60)),
        },
    ];
    for case in cases {
        let f = fixture(case.keys);
        for step in case.setup {
            match *step {
                Cool(index, retry_after) => {
                    f.cool(index, retry_after).await;
                }
                Disable(index) => {
                    f.disable(index).await;
                }
            }
        }
        f.advance(secs(case.advance));
        let (seen, err, attempts) = f.walk_all().await;
        assert_eq!(seen, case.yields, "{}: yielded keys", case.name);
        assert_eq!(
            attempts as usize,
            case.yields.len(),
            "{}: attempts",
            case.name
        );
        assert_eq!(exhausted(err), case.exhaustion, "{}: exhaustion", case.name);
    }
}

#[tokio::test]
async fn walker_never_returns_a_key_twice_even_if_still_valid() {
    let f = fixture(2);
    let mut walker = f.pool.walker();
    assert_eq!(walker.next().await.unwrap().index, 0);
    // A non-key-specific failure leaves key-0 valid; the walker still moves on.
    f.mark(0, 500, &[]).await;
    assert_eq!(walker.next().await.unwrap().index, 1);
    let err = exhausted(walker.next().await.unwrap_err());
    assert_eq!(
        err,
        rate_limited(Duration::ZERO),
        "key-0 is valid: retry now"
    );
    assert_eq!(walker.attempts(), 2);
}

#[tokio::test]
async fn walker_picks_up_a_later_key_whose_cooldown_expired_mid_walk() {
    let f = fixture(2);
    f.cool(1, "5").await;
    let mut walker = f.pool.walker();
    assert_eq!(walker.next().await.unwrap().index, 0);
    f.cool(0, "60").await;
    f.advance(secs(5));
    assert_eq!(walker.next().await.unwrap().index, 1);
}

// ---- Concurrency (TestKeyConcurrent) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cooldowns_longest_wins() {
    let f = fixture(1);
    let fixture = Arc::new(f);
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let f = Arc::clone(&fixture);
            tokio::spawn(async move { f.cool(0, if i % 2 == 0 { "60" } else { "10" }).await })
        })
        .collect();
    let mut transitions = 0;
    for task in tasks {
        transitions += usize::from(task.await.unwrap().transitioned);
    }
    assert_eq!(transitions, 1, "only one mark moves the key");
    fixture.advance(secs(50));
    assert_eq!(fixture.state(0).await, KeyState::Cooling, "at +50 s");
    fixture.advance(secs(15));
    assert_eq!(fixture.state(0).await, KeyState::Valid, "at +65 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_disable_and_cool_ends_disabled() {
    let fixture = Arc::new(fixture(1));
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let f = Arc::clone(&fixture);
            tokio::spawn(async move {
                let disabling = i % 2 == 0;
                let outcome = if disabling {
                    f.disable(0).await
                } else {
                    f.cool(0, "60").await
                };
                (disabling, outcome.transitioned)
            })
        })
        .collect();
    let mut disable_transitions = 0;
    for task in tasks {
        let (disabling, transitioned) = task.await.unwrap();
        disable_transitions += usize::from(disabling && transitioned);
    }
    assert_eq!(disable_transitions, 1);
    assert_eq!(fixture.state(0).await, KeyState::Disabled);
    fixture.advance(secs(65));
    assert_eq!(fixture.state(0).await, KeyState::Disabled, "not a cooldown");
}

// ---- Walker independence ----

#[tokio::test]
async fn walkers_see_each_others_marks() {
    let f = fixture(3);
    let mut walker_a = f.pool.walker();
    let key = walker_a.next().await.unwrap();
    assert_eq!(key.index, 0);
    f.cool(0, "60").await;
    let key = walker_a.next().await.unwrap();
    assert_eq!(key.index, 1);
    f.disable(1).await;
    assert_eq!(walker_a.next().await.unwrap().index, 2);

    let mut walker_b = f.pool.walker();
    assert_eq!(walker_b.next().await.unwrap().index, 2);
    assert_eq!(walker_b.attempts(), 1);
}

// ---- Exhaustion error rendering ----

#[test]
fn exhaustion_retry_after_header_is_ceiled_seconds() {
    assert_eq!(
        rate_limited(Duration::from_millis(1500)).retry_after_header_secs(),
        Some(2)
    );
    assert_eq!(rate_limited(secs(3)).retry_after_header_secs(), Some(3));
    assert_eq!(
        rate_limited(Duration::from_micros(1)).retry_after_header_secs(),
        Some(1)
    );
    assert_eq!(rate_limited(Duration::ZERO).retry_after_header_secs(), None);
    assert_eq!(Exhausted::AllDisabled.retry_after_header_secs(), None);
}

#[test]
fn exhaustion_messages() {
    assert_eq!(
        rate_limited(Duration::from_millis(1500)).to_string(),
        "all configured keys are rate-limited (retry after 2s)",
        "the same whole seconds as the Retry-After header"
    );
    assert_eq!(
        rate_limited(Duration::ZERO).to_string(),
        "all configured keys are rate-limited (a key is usable again; retry now)"
    );
    assert!(
        Exhausted::AllDisabled
            .to_string()
            .starts_with("all configured keys failed authentication")
    );
    let walk_error = WalkError::from(Exhausted::AllDisabled);
    assert_eq!(walk_error.to_string(), Exhausted::AllDisabled.to_string());
}

// ---- Probe bookkeeping and re-enabling ----

#[tokio::test]
async fn disabled_key_is_due_for_probe_after_the_initial_interval() {
    let f = fixture(2);
    f.mark(1, 403, &[]).await;
    let record = f.record(1).await;
    let disabled = record.disabled.unwrap();
    assert_eq!(disabled.reason, DisableReason::Forbidden);
    assert_eq!(disabled.since, start());
    assert_eq!(disabled.next_probe_at, start().saturating_add(secs(60)));
    assert_eq!(disabled.probe_interval, secs(60));

    f.advance(secs(59));
    assert!(f.pool.due_for_probe().await.unwrap().is_empty());
    f.advance(secs(1));
    let due = f.pool.due_for_probe().await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].index, 1);
}

#[tokio::test]
async fn still_rejected_doubles_the_interval_up_to_max() {
    let f = fixture(1);
    f.disable(0).await;
    let mut expected_interval = 60;
    for expected_next in [120, 240, 480, 960, 1920, 3600, 3600] {
        f.advance(secs(expected_interval));
        let due = f.pool.due_for_probe().await.unwrap();
        assert_eq!(due.len(), 1, "due after {expected_interval} s");
        f.pool
            .record_probe(&due[0], ProbeOutcome::StillRejected)
            .await
            .unwrap();
        let disabled = f.record(0).await.disabled.unwrap();
        assert_eq!(disabled.probe_interval, secs(expected_next));
        assert_eq!(
            disabled.next_probe_at,
            f.pool.now().saturating_add(secs(expected_next))
        );
        assert!(f.pool.due_for_probe().await.unwrap().is_empty());
        f.advance(secs(expected_next - 1));
        assert!(
            f.pool.due_for_probe().await.unwrap().is_empty(),
            "not due 1 s early"
        );
        f.advance(secs(1));
        expected_interval = 0;
    }
    assert_eq!(f.state(0).await, KeyState::Disabled);
}

#[tokio::test]
async fn probe_interval_cap_is_configurable() {
    let probe = ProbePolicy {
        initial: secs(10),
        max: secs(25),
    };
    let f = fixture_with(1, CooldownPolicy::default(), probe);
    f.disable(0).await;
    for expected in [20, 25, 25] {
        f.pool
            .record_probe(&f.key(0), ProbeOutcome::StillRejected)
            .await
            .unwrap();
        assert_eq!(
            f.record(0).await.disabled.unwrap().probe_interval,
            secs(expected)
        );
    }
}

#[tokio::test]
async fn inconclusive_probe_keeps_the_interval() {
    let f = fixture(1);
    f.disable(0).await;
    f.advance(secs(60));
    f.pool
        .record_probe(&f.key(0), ProbeOutcome::StillRejected)
        .await
        .unwrap();
    f.advance(secs(120));
    f.pool
        .record_probe(&f.key(0), ProbeOutcome::Inconclusive)
        .await
        .unwrap();
    let disabled = f.record(0).await.disabled.unwrap();
    assert_eq!(disabled.probe_interval, secs(120));
    assert_eq!(
        disabled.next_probe_at,
        start().saturating_add(secs(60 + 120 + 120))
    );
    assert_eq!(disabled.since, start(), "since is not moved by probes");
    assert_eq!(f.state(0).await, KeyState::Disabled);
}

#[tokio::test]
async fn healthy_probe_re_enables_and_the_walker_hands_the_key_out_again() {
    let f = fixture(2);
    f.disable(0).await;
    let (seen, _, _) = f.walk_all().await;
    assert_eq!(seen, ["key-1"]);

    f.advance(secs(60));
    let due = f.pool.due_for_probe().await.unwrap();
    f.pool
        .record_probe(&due[0], ProbeOutcome::Healthy)
        .await
        .unwrap();
    assert_eq!(f.state(0).await, KeyState::Valid);
    assert!(f.pool.due_for_probe().await.unwrap().is_empty());
    let (seen, _, _) = f.walk_all().await;
    assert_eq!(seen, ["key-0", "key-1"]);
}

/// Review item 6: a probe that was in flight while an operator re-enabled the key, which was
/// then rate-limited, must not wipe the live cooldown when it comes back healthy.
#[tokio::test]
async fn a_healthy_probe_does_not_wipe_a_live_cooldown() {
    let f = fixture(1);
    f.disable(0).await;
    f.advance(secs(60));
    let due = f.pool.due_for_probe().await.unwrap();
    assert!(f.pool.enable(0).await.unwrap());
    f.cool(0, "30").await;
    f.pool
        .record_probe(&due[0], ProbeOutcome::Healthy)
        .await
        .unwrap();
    assert_eq!(f.state(0).await, KeyState::Cooling);
    assert_eq!(
        f.record(0).await.cooldown_remaining(f.pool.now()),
        Some(secs(30))
    );
}

#[tokio::test]
async fn probe_result_for_a_key_no_longer_disabled_is_ignored() {
    let f = fixture(1);
    f.disable(0).await;
    assert!(f.pool.enable(0).await.unwrap());
    f.pool
        .record_probe(&f.key(0), ProbeOutcome::StillRejected)
        .await
        .unwrap();
    assert_eq!(f.state(0).await, KeyState::Valid);
    assert_eq!(f.record(0).await.disabled, None);
}

#[tokio::test]
async fn operator_enable() {
    let f = fixture(4);
    f.disable(0).await;
    f.cool(1, "60").await;
    f.cool(3, "5").await;
    f.advance(secs(5));

    assert!(f.pool.enable(0).await.unwrap(), "disabled key");
    assert!(f.pool.enable(1).await.unwrap(), "cooling key");
    assert!(!f.pool.enable(2).await.unwrap(), "valid key");
    assert!(
        !f.pool.enable(3).await.unwrap(),
        "expired cooldown: key was already valid"
    );
    assert!(!f.pool.enable(4).await.unwrap(), "out of range");
    for index in 0..4 {
        assert_eq!(f.state(index).await, KeyState::Valid, "key {index}");
    }
    let (seen, _, _) = f.walk_all().await;
    assert_eq!(seen, key_names(4));
    assert!(!f.pool.enable(0).await.unwrap(), "enabling twice");
}

// ---- Snapshot ----

#[tokio::test]
async fn snapshot_reports_every_key() {
    let f = fixture(3);
    f.cool(0, "30").await;
    f.mark(1, 403, &[]).await;
    f.mark(2, 500, &[]).await;
    f.advance(secs(10));
    let snapshot = f.pool.snapshot().await.unwrap();
    assert_eq!(snapshot.len(), 3);

    assert_eq!(snapshot[0].index, 0);
    assert_eq!(snapshot[0].hint, "k...0");
    assert_eq!(snapshot[0].state, KeyState::Cooling);
    assert_eq!(snapshot[0].cooldown_remaining, Some(secs(20)));
    assert_eq!(snapshot[0].disabled_reason, None);
    assert_eq!(snapshot[0].last_status, Some(429));

    assert_eq!(snapshot[1].state, KeyState::Disabled);
    assert_eq!(snapshot[1].cooldown_remaining, None);
    assert_eq!(snapshot[1].disabled_reason, Some(DisableReason::Forbidden));
    assert_eq!(snapshot[1].last_status, Some(403));

    assert_eq!(snapshot[2].state, KeyState::Valid);
    assert_eq!(
        snapshot[2].last_status, None,
        "500 is not recorded on the key"
    );
}

// ---- Identity and secrecy ----

#[test]
fn key_id_is_stable_short_hex_and_not_the_key() {
    let key = ApiKey::new("key-0");
    let id = KeyId::of(&key);
    // First 16 hex chars of SHA-256("key-0").
    assert_eq!(id.as_str(), "d5ead6fdd3d16630");
    assert_eq!(KeyId::of(&ApiKey::new("key-0")), id, "stable");
    assert_ne!(KeyId::of(&ApiKey::new("key-1")), id);

    let secret = ApiKey::new("sk-ant-api03-secretvalue");
    let secret_id = KeyId::of(&secret);
    assert_eq!(secret_id.as_str().len(), 16);
    assert!(secret_id.as_str().chars().all(|c| c.is_ascii_hexdigit()));
    assert!(!secret_id.as_str().contains("secret"));
    assert!(!format!("{secret_id:?}").contains("sk-ant"));
}

#[test]
fn key_id_does_not_depend_on_list_order() {
    let forward = new_pool(&["alpha-key", "beta-key"]).unwrap();
    let backward = new_pool(&["beta-key", "alpha-key"]).unwrap();
    assert_eq!(forward.keys()[0].id, backward.keys()[1].id);
    assert_eq!(forward.keys()[1].id, backward.keys()[0].id);
}

#[test]
fn debug_output_of_pool_and_keys_never_shows_values() {
    let pool = new_pool(&["sk-very-secret-number-one", "sk-very-secret-number-two"]).unwrap();
    let debug = format!("{pool:?} {:?}", pool.keys()[0]);
    assert!(!debug.contains("very-secret"), "{debug}");
    assert!(debug.contains("sk-v...-one"), "{debug}");
    assert_eq!(pool.keys()[1].hint(), "sk-v...-two");
    assert_eq!(pool.keys()[1].secret.expose(), "sk-very-secret-number-two");
}

// ---- Store ----

/// The store's own rules, on the store this run of the suite is on (memory or Redis).
#[tokio::test]
async fn store_rules() {
    let clock = ManualClock::new(start());
    let store = new_store(&clock);
    let (p, other_pool) = (unique_pool("p"), unique_pool("other"));
    let (p, other_pool) = (p.as_str(), other_pool.as_str());
    let id = KeyId::of(&ApiKey::new("k"));
    let now = start();
    assert_eq!(store.health().await, aibridge_keypool::StoreHealth::Up);
    assert_eq!(
        store.load(p, std::slice::from_ref(&id)).await.unwrap(),
        [KeyRecord::default()]
    );

    let later = now.saturating_add(secs(60));
    let sooner = now.saturating_add(secs(10));
    let source = CooldownSource::RetryAfter;
    assert!(
        store
            .extend_cooldown(p, &id, now, sooner, source, 429)
            .await
            .unwrap()
    );
    assert!(
        !store
            .extend_cooldown(p, &id, now, later, CooldownSource::Default, 429)
            .await
            .unwrap()
    );
    assert!(
        !store
            .extend_cooldown(p, &id, now, sooner, source, 429)
            .await
            .unwrap()
    );
    let record = store
        .load(p, std::slice::from_ref(&id))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(record.cooldown_until, Some(later), "longest wins");
    assert_eq!(
        record.cooldown_source,
        Some(CooldownSource::Default),
        "source of the kept deadline"
    );

    // Pools are separate namespaces.
    let other = store
        .load(other_pool, std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(other, [KeyRecord::default()]);

    assert!(store.enable(p, &id).await.unwrap());
    assert!(!store.enable(p, &id).await.unwrap());
    store
        .reschedule_probe(p, &id, later, secs(5))
        .await
        .unwrap();
    let record = store
        .load(p, std::slice::from_ref(&id))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(record.disabled, None, "rescheduling does not disable");
}

/// A store that is down, or that answers with the wrong number of records.
#[derive(Debug)]
struct BrokenStore {
    unreachable: bool,
}

#[async_trait::async_trait]
impl KeyStateStore for BrokenStore {
    async fn load(&self, _pool: &str, _keys: &[KeyId]) -> Result<Vec<KeyRecord>, StoreError> {
        if self.unreachable {
            Err(StoreError("connection refused".into()))
        } else {
            Ok(Vec::new())
        }
    }
    async fn extend_cooldown(
        &self,
        _pool: &str,
        _key: &KeyId,
        _now: Timestamp,
        _until: Timestamp,
        _source: CooldownSource,
        _status: u16,
    ) -> Result<bool, StoreError> {
        Err(StoreError("connection refused".into()))
    }
    async fn disable(
        &self,
        _pool: &str,
        _key: &KeyId,
        _status: u16,
        _disabled: aibridge_keypool::Disabled,
    ) -> Result<bool, StoreError> {
        Err(StoreError("connection refused".into()))
    }
    async fn enable(&self, _pool: &str, _key: &KeyId) -> Result<bool, StoreError> {
        Err(StoreError("connection refused".into()))
    }
    async fn revalidated(&self, _pool: &str, _key: &KeyId) -> Result<bool, StoreError> {
        Err(StoreError("connection refused".into()))
    }
    async fn reschedule_probe(
        &self,
        _pool: &str,
        _key: &KeyId,
        _next_probe_at: Timestamp,
        _probe_interval: Duration,
    ) -> Result<(), StoreError> {
        Err(StoreError("connection refused".into()))
    }
}

fn pool_over(store: BrokenStore) -> Arc<KeyPool> {
    Arc::new(
        KeyPool::new(
            "p",
            vec![ApiKey::new("key-0")],
            Arc::new(store),
            Arc::new(ManualClock::new(start())),
            CooldownPolicy::default(),
            ProbePolicy::default(),
        )
        .unwrap(),
    )
}

#[tokio::test]
async fn store_failures_surface_as_store_errors() {
    let pool = pool_over(BrokenStore { unreachable: true });
    let err = pool.walker().next().await.unwrap_err();
    assert!(matches!(err, WalkError::Store(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "key state store unavailable: connection refused"
    );
    let key = pool.keys()[0].clone();
    let headers = http::HeaderMap::new();
    assert!(
        pool.mark(&key, http::StatusCode::TOO_MANY_REQUESTS, &headers)
            .await
            .is_err()
    );
    // A status that needs no store operation does not touch the store.
    let outcome = pool
        .mark(&key, http::StatusCode::INTERNAL_SERVER_ERROR, &headers)
        .await
        .unwrap();
    assert!(!outcome.transitioned);
}

#[tokio::test]
async fn store_answering_with_the_wrong_record_count_is_an_error() {
    let pool = pool_over(BrokenStore { unreachable: false });
    let err = pool.walker().next().await.unwrap_err();
    assert!(matches!(err, WalkError::Store(_)), "{err:?}");
    assert!(pool.snapshot().await.is_err());
}

#[test]
fn timestamps_are_whole_microseconds() {
    let t = Timestamp::from_unix_micros(1_500_000);
    assert_eq!(t.saturating_add(Duration::from_nanos(999)), t);
}
