//! Shared fixtures: a pool of `key-N` keys driven by a ManualClock, over the store the suite
//! runs against: a MemoryStore, or with `AIBRIDGE_KEYPOOL_STORE=redis` a RedisStore on the Redis
//! of `AIBRIDGE_TEST_REDIS_URL` (each fixture a pool of its own, deadlines on the manual clock),
//! so that every rule is checked on both stores.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use aibridge_keypool::{
    ApiKey, CooldownPolicy, KeyPool, KeyRecord, KeySnapshot, KeyState, KeyStateStore, ManualClock,
    MarkOutcome, MemoryStore, PoolKey, ProbePolicy, RedisSettings, RedisStore, RedisTime,
    Timestamp,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// 2023-11-14T22:13:20Z, whole seconds so HTTP dates line up exactly.
pub const START_SECS: u64 = 1_700_000_000;

pub fn start() -> Timestamp {
    Timestamp::from_unix_micros(START_SECS * 1_000_000)
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub struct Fixture {
    pub clock: ManualClock,
    pub store: Arc<dyn KeyStateStore>,
    pub pool: Arc<KeyPool>,
}

/// Whether this run of the suite is on Redis (`AIBRIDGE_KEYPOOL_STORE=redis`).
pub fn on_redis() -> bool {
    std::env::var("AIBRIDGE_KEYPOOL_STORE").is_ok_and(|v| v == "redis")
}

/// A pool name no other fixture uses: on a shared Redis, tests must not see each other's keys.
pub fn unique_pool(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The suite's store, on `clock`. Must be called inside a Tokio runtime.
pub fn new_store(clock: &ManualClock) -> Arc<dyn KeyStateStore> {
    if !on_redis() {
        return Arc::new(MemoryStore::new());
    }
    let url = std::env::var("AIBRIDGE_TEST_REDIS_URL")
        .expect("AIBRIDGE_KEYPOOL_STORE=redis needs AIBRIDGE_TEST_REDIS_URL");
    let settings = RedisSettings {
        timeout: Duration::from_secs(2),
        time: RedisTime::Clock,
        // Tests leave nothing behind for long.
        retention: Duration::from_secs(600),
    };
    RedisStore::open(&url, settings, Arc::new(clock.clone())).unwrap()
}

pub fn key_names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("key-{i}")).collect()
}

pub fn fixture(count: usize) -> Fixture {
    fixture_with(count, CooldownPolicy::default(), ProbePolicy::default())
}

pub fn fixture_with(count: usize, cooldown: CooldownPolicy, probe: ProbePolicy) -> Fixture {
    let clock = ManualClock::new(start());
    let store = new_store(&clock);
    let keys = key_names(count).into_iter().map(ApiKey::new).collect();
    let pool = KeyPool::new(
        unique_pool("test-pool"),
        keys,
        store.clone(),
        Arc::new(clock.clone()),
        cooldown,
        probe,
    )
    .unwrap();
    Fixture {
        clock,
        store,
        pool: Arc::new(pool),
    }
}

/// Builds headers from (name, value) pairs; names may be in any case.
pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

impl Fixture {
    pub fn key(&self, index: usize) -> PoolKey {
        self.pool.keys()[index].clone()
    }

    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// 429 with `Retry-After: <retry_after>` ("0" or negative means: default cooldown).
    pub async fn cool(&self, index: usize, retry_after: &str) -> MarkOutcome {
        self.mark(index, 429, &[("Retry-After", retry_after)]).await
    }

    /// 401: the spec's "mark permanent".
    pub async fn disable(&self, index: usize) -> MarkOutcome {
        self.mark(index, 401, &[]).await
    }

    pub async fn mark(&self, index: usize, status: u16, pairs: &[(&str, &str)]) -> MarkOutcome {
        self.pool
            .mark(
                &self.key(index),
                StatusCode::from_u16(status).unwrap(),
                &headers(pairs),
            )
            .await
            .unwrap()
    }

    pub async fn snapshot(&self, index: usize) -> KeySnapshot {
        self.pool.snapshot().await.unwrap()[index].clone()
    }

    pub async fn state(&self, index: usize) -> KeyState {
        self.snapshot(index).await.state
    }

    pub async fn record(&self, index: usize) -> KeyRecord {
        self.store
            .load(self.pool.name(), &[self.key(index).id])
            .await
            .unwrap()
            .remove(0)
    }

    /// Walks a fresh walker to exhaustion: the key names it yielded and the final error.
    pub async fn walk_all(&self) -> (Vec<String>, aibridge_keypool::WalkError, u32) {
        let mut walker = self.pool.walker();
        let mut seen = Vec::new();
        loop {
            match walker.next().await {
                Ok(key) => seen.push(key.secret.expose().to_owned()),
                Err(err) => return (seen, err, walker.attempts()),
            }
        }
    }
}

/// Unwraps the exhaustion out of a walk error.
pub fn exhausted(err: aibridge_keypool::WalkError) -> aibridge_keypool::Exhausted {
    match err {
        aibridge_keypool::WalkError::Exhausted(exhausted) => exhausted,
        other => panic!("expected exhaustion, got {other:?}"),
    }
}
