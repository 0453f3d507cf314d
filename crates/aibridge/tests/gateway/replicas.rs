//! Several real gateway processes sharing key state in Redis (and, for the restart, records in
//! one PostgreSQL): a mark on one is seen by the others, deadlines merge, exhaustion agrees,
//! a Redis outage costs no request, and a rolling restart under load loses and doubles nothing.
//! On the Redis of `AIBRIDGE_TEST_REDIS_URL` (skipped with a printed reason outside CI without
//! it); the outage runs on a private `redis-server`. Each test uses keys of its own, so tests
//! sharing the one Redis never see each other's state.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aibridge_mock::{MockUpstream, Reply};
use serde_json::Value;

use crate::common::*;

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

/// Two keys no other test uses.
fn keys() -> [String; 2] {
    let run = uuid::Uuid::new_v4().simple().to_string();
    [format!("sk-rep-{run}-0"), format!("sk-rep-{run}-1")]
}

async fn replica(
    mock: &MockUpstream,
    redis: &str,
    keys: &[String],
    extra: &[(&str, &str)],
) -> Gateway {
    let mut env = pool_env(&mock.url(), &keys.join(","));
    env.push(("AIBRIDGE_KEY_STATE_URL".into(), redis.into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Gateway::start(&env).await
}

async fn state_of(gw: &Gateway, index: usize) -> (String, f64) {
    let key = &gw.keys("anthropic").await[index];
    (
        key["state"].as_str().unwrap().to_string(),
        key["cooldown_remaining_secs"].as_f64().unwrap_or(0.0),
    )
}

#[tokio::test]
async fn a_cooldown_on_one_replica_is_seen_by_the_others_at_once() {
    let Some(redis) = redis_url() else { return };
    let mock = MockUpstream::start().await.unwrap();
    let [k0, k1] = keys();
    let replicas = [
        replica(&mock, &redis, &[k0.clone(), k1.clone()], &[]).await,
        replica(&mock, &redis, &[k0.clone(), k1.clone()], &[]).await,
        replica(&mock, &redis, &[k0.clone(), k1.clone()], &[]).await,
    ];
    mock.script(&k0, vec![Reply::status(429).header("retry-after", "30")]);
    assert_eq!(
        post_messages(&replicas[0], &messages_body(false))
            .await
            .status(),
        200
    );
    assert_eq!(mock.seen_keys(), [k0.clone(), k1.clone()]);
    for gw in &replicas[1..] {
        let (state, left) = state_of(gw, 0).await;
        assert_eq!(state, "cooling");
        assert!(left > 25.0 && left <= 30.0, "{left}");
        mock.reset();
        assert_eq!(post_messages(gw, &messages_body(false)).await.status(), 200);
        assert_eq!(
            mock.seen_keys(),
            std::slice::from_ref(&k1),
            "the cooling key is skipped at once"
        );
    }
    // Re-enabled on one: valid on all.
    let enabled = client()
        .post(replicas[2].url("/api/v1/keys/anthropic/0/enable"))
        .send()
        .await
        .unwrap();
    assert_eq!(enabled.status(), 200);
    assert_eq!(state_of(&replicas[0], 0).await.0, "valid");
}

#[tokio::test]
async fn replicas_cooling_the_same_key_at_once_keep_the_later_deadline() {
    let Some(redis) = redis_url() else { return };
    let mock = MockUpstream::start().await.unwrap();
    let [k0, k1] = keys();
    let a = replica(&mock, &redis, &[k0.clone(), k1.clone()], &[]).await;
    let b = replica(&mock, &redis, &[k0.clone(), k1.clone()], &[]).await;
    // Both requests reach k0 before either answer is in.
    mock.script(
        &k0,
        vec![
            Reply::status(429)
                .header("retry-after", "100")
                .delay_ms(300),
            Reply::status(429).header("retry-after", "10").delay_ms(300),
        ],
    );
    let body = messages_body(false);
    let (first, second) = tokio::join!(post_messages(&a, &body), post_messages(&b, &body));
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    assert_eq!(mock.hits(&k0), 2);
    for gw in [&a, &b] {
        let (state, left) = state_of(gw, 0).await;
        assert_eq!(state, "cooling");
        assert!(left > 95.0, "the later deadline wins: {left}");
    }
}

#[tokio::test]
async fn exhaustion_on_one_replica_gives_the_soonest_retry_after_on_another() {
    let Some(redis) = redis_url() else { return };
    let mock = MockUpstream::start().await.unwrap();
    let [k0, k1] = keys();
    let a = replica(&mock, &redis, &[k0.clone(), k1.clone()], &[]).await;
    let b = replica(&mock, &redis, &[k0.clone(), k1.clone()], &[]).await;
    mock.script(&k0, vec![Reply::status(429).header("retry-after", "40")]);
    mock.script(&k1, vec![Reply::status(429).header("retry-after", "20")]);
    let exhausted = Outcome::of(post_messages(&a, &messages_body(false)).await).await;
    assert_eq!(exhausted.status, 429);
    mock.reset();
    let on_b = Outcome::of(post_messages(&b, &messages_body(false)).await).await;
    assert_eq!(on_b.status, 429);
    let retry_after: u64 = on_b.retry_after.unwrap().parse().unwrap();
    assert!((19..=20).contains(&retry_after), "{retry_after}");
    assert!(
        mock.requests().is_empty(),
        "no key was tried on the second replica"
    );
}

#[tokio::test]
async fn a_rate_limited_key_is_hit_about_once_per_replica_not_once_per_request() {
    let Some(redis) = redis_url() else { return };
    let mock = MockUpstream::start().await.unwrap();
    let [k0, k1] = keys();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(&mock, &redis, &[k0.clone(), k1.clone()], &[]).await);
    }
    mock.script(
        &k0,
        (0..100)
            .map(|_| Reply::status(429).header("retry-after", "30"))
            .collect(),
    );
    let per_replica = 10;
    let runs = replicas.iter().map(|gw| async move {
        for _ in 0..per_replica {
            assert_eq!(post_messages(gw, &messages_body(false)).await.status(), 200);
        }
    });
    futures_util::future::join_all(runs).await;
    let hits = mock.hits(&k0);
    assert!(
        (1..=replicas.len()).contains(&hits),
        "k0 hit {hits} times for {} requests",
        per_replica * replicas.len()
    );
    assert_eq!(mock.hits(&k1), per_replica * replicas.len());
}

/// A `redis-server` of this test's own, on a free port, keeping nothing on disk.
struct PrivateRedis {
    port: u16,
    child: Child,
}

impl PrivateRedis {
    fn start_on(port: u16) -> PrivateRedis {
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

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn readyz(gw: &Gateway) -> (u16, Value) {
    let response = client().get(gw.url("/readyz")).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_redis_outage_costs_no_request_and_local_marks_are_merged_back() {
    if redis_url().is_none() {
        return;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = PrivateRedis::start_on(port);
    let mock = MockUpstream::start().await.unwrap();
    let [k0, k1] = keys();
    let a = replica(&mock, &redis.url(), &[k0.clone(), k1.clone()], &[]).await;
    let b = replica(&mock, &redis.url(), &[k0.clone(), k1.clone()], &[]).await;
    assert_eq!(readyz(&a).await.1["key_state"], "ok");

    drop(redis);
    // Every request is served through the outage, on each replica's own state.
    for gw in [&a, &b, &a, &b] {
        assert_eq!(post_messages(gw, &messages_body(false)).await.status(), 200);
    }
    let (status, body) = readyz(&a).await;
    assert_eq!(
        status, 200,
        "a degraded key state does not make the gateway unready"
    );
    assert_eq!(body["key_state"], "degraded");
    let metrics = client()
        .get(a.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("aibridge_key_state_store_up 0"),
        "{metrics}"
    );
    assert!(a.logs().contains("Redis key state unreachable"));
    // A mark during the outage, on a only.
    mock.script(&k0, vec![Reply::status(429).header("retry-after", "60")]);
    assert_eq!(post_messages(&a, &messages_body(false)).await.status(), 200);
    assert_eq!(state_of(&a, 0).await.0, "cooling");
    assert_eq!(state_of(&b, 0).await.0, "valid", "b cannot know yet");

    // Redis is back (empty): a's mark reaches b within 10 s.
    let _redis = PrivateRedis::start_on(port);
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    while state_of(&b, 0).await.0 != "cooling" {
        assert!(
            std::time::Instant::now() < deadline,
            "a's mark was not merged back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(readyz(&a).await.1["key_state"], "ok");
}

#[tokio::test]
async fn a_replica_started_while_redis_is_down_serves_and_joins_later() {
    if redis_url().is_none() {
        return;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mock = MockUpstream::start().await.unwrap();
    let [k0, k1] = keys();
    let gw = replica(&mock, &format!("redis://127.0.0.1:{port}"), &[k0, k1], &[]).await;
    assert_eq!(
        post_messages(&gw, &messages_body(false)).await.status(),
        200
    );
    assert_eq!(readyz(&gw).await.1["key_state"], "degraded");
    let _redis = PrivateRedis::start_on(port);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while readyz(&gw).await.1["key_state"] != "ok" {
        assert!(std::time::Instant::now() < deadline, "did not join Redis");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_rolling_restart_under_load_loses_and_doubles_nothing() {
    let Some(redis) = redis_url() else { return };
    let Some(schema) = PgSchema::create() else {
        return;
    };
    let mock = MockUpstream::start().await.unwrap();
    let [k0, k1] = keys();
    let env = [("AIBRIDGE_DATABASE_URL", schema.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Two replicas start together on a fresh database: the migrations run once.
    let pool = [k0.clone(), k1.clone()];
    let (a, b) = tokio::join!(
        replica(&mock, &redis, &pool, &env),
        replica(&mock, &redis, &pool, &env)
    );
    let mut replicas = vec![a, b];

    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let bases: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::new(
        std::sync::Mutex::new(replicas.iter().map(|g| g.base.clone()).collect()),
    );
    // A load balancer's view: round robin over the replicas that are in rotation.
    let load = {
        let (served, stop, bases) = (served.clone(), stop.clone(), bases.clone());
        tokio::spawn(async move {
            let mut turn = 0usize;
            while !stop.is_cancelled() {
                let base = {
                    let bases = bases.lock().unwrap();
                    turn += 1;
                    bases[turn % bases.len()].clone()
                };
                let response = client()
                    .post(format!("{base}/anthropic/v1/messages"))
                    .header("x-api-key", "abk_gateway_token")
                    .header("anthropic-version", "2023-06-01")
                    .json(&messages_body(false))
                    .send()
                    .await;
                if let Ok(response) = response
                    && response.status() == 200
                {
                    response.bytes().await.unwrap();
                    served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Roll: a replacement joins, then the old replica leaves rotation and gets SIGTERM.
    let replacement = replica(&mock, &redis, &pool, &env).await;
    {
        let mut bases = bases.lock().unwrap();
        bases.retain(|b| *b != replicas[0].base);
        bases.push(replacement.base.clone());
    }
    let old = replicas.remove(0);
    assert!(old.terminate().await.success());
    replicas.push(replacement);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    load.await.unwrap();
    let served = served.load(std::sync::atomic::Ordering::SeqCst);
    assert!(served > 20, "load ran: {served}");
    // Every replica drains its records on SIGTERM: stop them all and count what PostgreSQL has.
    for gw in replicas {
        assert!(gw.terminate().await.success());
    }
    let (ok, out, err) = run_cli(&schema.url(), &["usage", "--by", "user", "--json"]);
    assert!(ok, "{err}");
    let usage: Value = serde_json::from_str(&out).unwrap();
    let totals = &usage["totals"];
    assert_eq!(totals["requests"], served as u64, "{usage}");
    assert_eq!(totals["failed_requests"], 0, "{usage}");
    assert_eq!(totals["input_tokens"], 11 * served as u64);
}

#[tokio::test]
async fn nothing_in_redis_is_a_key_or_a_token() {
    let Some(redis) = redis_url() else { return };
    let mock = MockUpstream::start().await.unwrap();
    let [k0, k1] = keys();
    let gw = replica(&mock, &redis, &[k0.clone(), k1.clone()], &[]).await;
    mock.script(&k0, vec![Reply::status(429).header("retry-after", "30")]);
    mock.script(&k1, vec![Reply::status(401)]);
    post_messages(&gw, &messages_body(false)).await;
    let scan = Command::new("redis-cli")
        .args(["-u", &redis, "--scan", "--pattern", "aibridge:*"])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&scan.stdout).into_owned();
    assert!(names.contains("aibridge:keystate:anthropic:"), "{names}");
    for name in names.lines() {
        let kind = Command::new("redis-cli")
            .args(["-u", &redis, "TYPE", name])
            .output()
            .unwrap();
        let dump = if String::from_utf8_lossy(&kind.stdout).trim() == "hash" {
            Command::new("redis-cli")
                .args(["-u", &redis, "HGETALL", name])
                .output()
                .unwrap()
        } else {
            Command::new("redis-cli")
                .args(["-u", &redis, "GET", name])
                .output()
                .unwrap()
        };
        let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
        for secret in [&k0, &k1] {
            assert!(
                !name.contains(secret.as_str()) && !dump.contains(secret.as_str()),
                "{name}: {dump}"
            );
        }
        assert!(!dump.contains("abk_"), "{dump}");
    }
}

#[tokio::test]
async fn check_config_says_whether_redis_answers() {
    let Some(redis) = redis_url() else { return };
    let check = |url: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_aibridge"))
            .arg("check-config")
            .env("AIBRIDGE_KEY_STATE_URL", url)
            .env_remove("AIBRIDGE_CONFIG")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (ok, out) = check(&redis);
    assert!(ok, "{out}");
    assert!(out.contains("key state: Redis answers"), "{out}");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ok, out) = check(&format!("redis://:hunter2@127.0.0.1:{port}/0"));
    assert!(
        ok,
        "a Redis that does not answer is not a configuration error: {out}"
    );
    assert!(out.contains("WARNING"), "{out}");
    assert!(!out.contains("hunter2"), "no password shown: {out}");
}

#[tokio::test]
async fn a_401_seen_by_several_replicas_at_once_costs_one_confirmation() {
    let Some(redis) = redis_url() else { return };
    let mock = MockUpstream::start().await.unwrap();
    let [k0, k1] = keys();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(&mock, &redis, &[k0.clone(), k1.clone()], &[]).await);
    }
    // Every answer of k0 (requests and the check of the key) takes 300 ms: the 401s arrive
    // together on every replica, and the check is in flight when the others need it.
    mock.then(&k0, Reply::status(401).delay_ms(300));
    let body = messages_body(false);
    let calls = replicas
        .iter()
        .flat_map(|gw| (0..3).map(|_| post_messages(gw, &body)));
    for response in futures_util::future::join_all(calls).await {
        assert_eq!(response.status(), 200, "failed over to k1");
    }
    let checks = checked_keys(&mock).len();
    assert_eq!(
        checks, 1,
        "9 concurrent 401s on 3 replicas cost {checks} checks"
    );
    for gw in &replicas {
        assert_eq!(state_of(gw, 0).await.0, "disabled");
    }
}

#[tokio::test]
async fn a_killed_replica_leaves_what_it_committed_and_its_in_flight_requests_unfinished() {
    let Some(schema) = PgSchema::create() else {
        return;
    };
    let mock = MockUpstream::start().await.unwrap();
    let [k0, k1] = keys();
    let env = [("AIBRIDGE_DATABASE_URL", schema.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gw = Gateway::start(&{
        let mut all = pool_env(&mock.url(), &format!("{k0},{k1}"));
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        all
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            post_messages(&gw, &messages_body(false)).await.status(),
            200
        );
    }
    let finished = wait_for_ended(&gw, None, 3).await;
    assert_eq!(finished.len(), 3);
    // A stream in flight when the replica is killed. Its start rides with the next batch (at
    // most ~20 ms later); the key listing commits what is queued before it reads, so the start
    // is known to be committed when the replica dies.
    mock.script(&k0, vec![Reply::ok().stream_deltas(50).event_delay_ms(100)]);
    let stream = post_messages(&gw, &messages_body(true)).await;
    assert_eq!(stream.status(), 200);
    let keys = client().get(gw.url("/api/v1/keys")).send().await.unwrap();
    assert_eq!(keys.status(), 200);
    let listed: Value = get_json(&gw, "/api/v1/interceptions?limit=10").await;
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        4,
        "the stream's start is committed: {listed:#}"
    );
    let base = gw.base.clone();
    gw.kill().await;
    drop(stream);
    let (ok, out, err) = run_cli(&schema.url(), &["usage", "--by", "user", "--json"]);
    assert!(ok, "{err}");
    let usage: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        usage["totals"]["requests"], 4,
        "committed starts stay: {usage}"
    );
    // A new replica on the same database reads them back: three ended, one never finished.
    let next = Gateway::start(&{
        let mut all = pool_env(&mock.url(), &format!("{k0},{k1}"));
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        all
    })
    .await;
    assert_ne!(next.base, base);
    let page: Value = get_json(&next, "/api/v1/interceptions?limit=10").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    let unfinished: Vec<&Value> = items.iter().filter(|i| i["outcome"].is_null()).collect();
    assert_eq!(unfinished.len(), 1, "{page:#}");
    assert_eq!(unfinished[0]["streaming"], true);
}
