//! What only the Redis store has to get right: replicas whose clocks disagree, concurrent marks
//! from many replicas, an outage and the merge after it, leases, and no key in Redis. On the
//! Redis of `AIBRIDGE_TEST_REDIS_URL` (skipped with a printed reason without it, outside CI) and,
//! for the outage, on a private `redis-server` started on a free port.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aibridge_keypool::{
    ApiKey, CheckClaim, Clock, CooldownSource, DisableReason, Disabled, KeyId, KeyState,
    KeyStateStore, ManualClock, ProbeOutcome, RedisSettings, RedisStore, RedisTime, StoreHealth,
    SystemClock, Timestamp,
};

use crate::common::{secs, unique_pool};

fn redis_url() -> Option<String> {
    match std::env::var("AIBRIDGE_TEST_REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but AIBRIDGE_TEST_REDIS_URL is not set")
        }
        Err(_) => {
            eprintln!("SKIPPED: AIBRIDGE_TEST_REDIS_URL is not set");
            None
        }
    }
}

fn settings(time: RedisTime) -> RedisSettings {
    RedisSettings {
        timeout: Duration::from_millis(500),
        time,
        retention: Duration::from_secs(600),
    }
}

fn key(name: &str) -> KeyId {
    KeyId::of(&ApiKey::new(name))
}

#[tokio::test]
async fn replicas_whose_clocks_disagree_see_the_same_cooldown() {
    let Some(url) = redis_url() else { return };
    let pool = unique_pool("clocks");
    let id = key("sk-clock-test-key");
    let honest: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = honest.now();
    // A replica whose clock is an hour ahead.
    let ahead = ManualClock::new(now.saturating_add(secs(3600)));
    let a = RedisStore::connect(&url, settings(RedisTime::Server), honest.clone())
        .await
        .unwrap();
    let b = RedisStore::connect(&url, settings(RedisTime::Server), Arc::new(ahead.clone()))
        .await
        .unwrap();
    assert!(
        a.extend_cooldown(
            &pool,
            &id,
            now,
            now.saturating_add(secs(30)),
            CooldownSource::RetryAfter,
            429
        )
        .await
        .unwrap()
    );
    let seen_by_b = b
        .load(&pool, std::slice::from_ref(&id))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(seen_by_b.state(ahead.now()), KeyState::Cooling);
    let left = seen_by_b.cooldown_remaining(ahead.now()).unwrap();
    assert!(left > secs(28) && left <= secs(30), "{left:?}");
    // B, an hour ahead, cools the key for 10 s: A's 30 s still win (later deadline).
    assert!(
        !b.extend_cooldown(
            &pool,
            &id,
            ahead.now(),
            ahead.now().saturating_add(secs(10)),
            CooldownSource::RetryAfter,
            429
        )
        .await
        .unwrap()
    );
    let seen_by_a = a
        .load(&pool, std::slice::from_ref(&id))
        .await
        .unwrap()
        .remove(0);
    let left = seen_by_a.cooldown_remaining(honest.now()).unwrap();
    assert!(left > secs(28), "the later deadline is kept: {left:?}");
}

#[tokio::test]
async fn concurrent_marks_from_many_replicas_keep_the_latest_deadline_and_one_transition() {
    let Some(url) = redis_url() else { return };
    let pool = unique_pool("concurrent");
    let id = key("sk-concurrent-test-key");
    let clock = ManualClock::new(Timestamp::from_unix_micros(1_700_000_000_000_000));
    let mut tasks = Vec::new();
    for replica in 0..8u64 {
        let store = RedisStore::connect(&url, settings(RedisTime::Clock), Arc::new(clock.clone()))
            .await
            .unwrap();
        let (pool, id, now) = (pool.clone(), id.clone(), clock.now());
        tasks.push(tokio::spawn(async move {
            let mut transitions = 0;
            for mark in 0..10u64 {
                let until = now.saturating_add(secs(10 + replica * 10 + mark));
                if store
                    .extend_cooldown(&pool, &id, now, until, CooldownSource::RetryAfter, 429)
                    .await
                    .unwrap()
                {
                    transitions += 1;
                }
            }
            transitions
        }));
    }
    let mut transitions = 0;
    for task in tasks {
        transitions += task.await.unwrap();
    }
    assert_eq!(transitions, 1, "one valid -> cooling transition");
    let reader = RedisStore::connect(&url, settings(RedisTime::Clock), Arc::new(clock.clone()))
        .await
        .unwrap();
    let record = reader.load(&pool, &[id]).await.unwrap().remove(0);
    assert_eq!(
        record.cooldown_until,
        Some(clock.now().saturating_add(secs(10 + 70 + 9))),
        "the latest of 80 deadlines"
    );
}

#[tokio::test]
async fn disabled_wins_over_cooling_and_leases_go_to_one_replica() {
    let Some(url) = redis_url() else { return };
    let pool = unique_pool("leases");
    let id = key("sk-lease-test-key");
    let clock = ManualClock::new(Timestamp::from_unix_micros(1_700_000_000_000_000));
    let a = RedisStore::connect(&url, settings(RedisTime::Clock), Arc::new(clock.clone()))
        .await
        .unwrap();
    let b = RedisStore::connect(&url, settings(RedisTime::Clock), Arc::new(clock.clone()))
        .await
        .unwrap();
    let now = clock.now();
    let disabled = Disabled {
        reason: DisableReason::Unauthorized,
        since: now,
        next_probe_at: now.saturating_add(secs(60)),
        probe_interval: secs(60),
    };
    assert!(a.disable(&pool, &id, 401, disabled.clone()).await.unwrap());
    assert!(
        !b.disable(&pool, &id, 401, disabled.clone()).await.unwrap(),
        "once"
    );
    assert!(
        !b.extend_cooldown(
            &pool,
            &id,
            now,
            now.saturating_add(secs(5)),
            CooldownSource::Default,
            429
        )
        .await
        .unwrap()
    );
    let record = b
        .load(&pool, std::slice::from_ref(&id))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(record.state(now), KeyState::Disabled);
    assert_eq!(record.disabled, Some(disabled));

    assert!(a.claim_probe(&pool, &id, secs(5)).await);
    assert!(
        !b.claim_probe(&pool, &id, secs(5)).await,
        "one prober at a time"
    );
    assert_eq!(a.claim_check(&pool, &id, secs(5)).await, CheckClaim::Leader);
    assert_eq!(
        b.claim_check(&pool, &id, secs(5)).await,
        CheckClaim::Follower
    );
    assert_eq!(b.checked(&pool, &id).await, None);
    a.publish_check(&pool, &id, ProbeOutcome::StillRejected, secs(5))
        .await;
    assert_eq!(
        b.checked(&pool, &id).await,
        Some(ProbeOutcome::StillRejected)
    );

    assert!(b.revalidated(&pool, &id).await.unwrap());
    let record = a
        .load(&pool, std::slice::from_ref(&id))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(record.state(now), KeyState::Valid);
}

#[tokio::test]
async fn nothing_in_redis_is_a_key() {
    let Some(url) = redis_url() else { return };
    let pool = unique_pool("secrets");
    let secret = "sk-ant-api03-this-must-never-reach-redis";
    let id = KeyId::of(&ApiKey::new(secret));
    let store = RedisStore::connect(&url, settings(RedisTime::Server), Arc::new(SystemClock))
        .await
        .unwrap();
    let now = SystemClock.now();
    store
        .extend_cooldown(
            &pool,
            &id,
            now,
            now.saturating_add(secs(30)),
            CooldownSource::Default,
            429,
        )
        .await
        .unwrap();
    let dump = redis_cli(&url, &["--scan", "--pattern", "aibridge:*"]);
    assert!(dump.contains(&pool), "the record is there: {dump}");
    for redis_key in dump.lines() {
        assert!(!redis_key.contains(secret), "{redis_key}");
        let fields = redis_cli(&url, &["HGETALL", redis_key]);
        assert!(!fields.contains(secret), "{fields}");
        assert!(!fields.contains("sk-ant"), "{fields}");
    }
}

fn redis_cli(url: &str, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-u")
        .arg(url)
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A `redis-server` of this test's own, on a free port, keeping nothing on disk.
pub struct PrivateRedis {
    pub port: u16,
    child: Child,
}

impl PrivateRedis {
    pub fn start_on(port: u16) -> PrivateRedis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateRedis { port, child }
    }

    pub fn start() -> PrivateRedis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn an_outage_is_served_locally_and_merged_back_when_redis_returns() {
    if redis_url().is_none() {
        return;
    }
    let redis = PrivateRedis::start();
    let url = redis.url();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = RedisStore::connect(&url, settings(RedisTime::Server), clock.clone())
        .await
        .unwrap();
    let pool = "outage";
    let (cooled, disabled) = (key("sk-outage-cooled-key"), key("sk-outage-disabled-key"));
    assert_eq!(store.health().await, StoreHealth::Up);

    let port = redis.stop();
    let now = clock.now();
    // Marks during the outage: answered from the local copy, at once.
    let started = std::time::Instant::now();
    assert!(
        store
            .extend_cooldown(
                pool,
                &cooled,
                now,
                now.saturating_add(secs(120)),
                CooldownSource::RetryAfter,
                429
            )
            .await
            .unwrap()
    );
    let disable = Disabled {
        reason: DisableReason::Forbidden,
        since: now,
        next_probe_at: now.saturating_add(secs(60)),
        probe_interval: secs(60),
    };
    assert!(store.disable(pool, &disabled, 403, disable).await.unwrap());
    let both = [cooled.clone(), disabled.clone()];
    let states: Vec<KeyState> = store
        .load(pool, &both)
        .await
        .unwrap()
        .iter()
        .map(|r| r.state(clock.now()))
        .collect();
    assert_eq!(states, [KeyState::Cooling, KeyState::Disabled]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "never more than one bounded wait for a Redis that is gone"
    );
    assert!(matches!(store.health().await, StoreHealth::Degraded(_)));

    // Redis comes back empty (it kept nothing): the marks are merged back within 10 s.
    let redis = PrivateRedis::start_on(port);
    let fresh = RedisStore::connect(&redis.url(), settings(RedisTime::Server), clock.clone())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let records = fresh.load(pool, &both).await.unwrap();
        if records[0].state(clock.now()) == KeyState::Cooling
            && records[1].state(clock.now()) == KeyState::Disabled
        {
            let left = records[0].cooldown_remaining(clock.now()).unwrap();
            assert!(left > secs(100) && left <= secs(120), "{left:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not merged back: {records:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.health().await != StoreHealth::Up {
        assert!(std::time::Instant::now() < deadline, "still degraded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
