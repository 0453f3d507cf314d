//! Key state shared by every replica through Redis.
//!
//! A key's record is one hash, `aibridge:keystate:<pool>:<key id>` (the id is a hash prefix:
//! no key ever reaches Redis). Every read-modify-write rule of [`KeyStateStore`] (the latest
//! deadline wins, disabled wins over cooling) runs in a Lua script, so concurrent replicas cannot
//! interleave; a pool is read in one round trip. Deadlines are kept on Redis's own clock (`TIME`):
//! a write sends durations, a read converts the deadlines back to this process's clock, so the
//! replicas' clocks never need to agree. Records expire by themselves once nothing in them
//! matters any more (a disabled key is kept for 30 days).
//!
//! Redis can go away. Every call is bounded (`timeout`); on a failure the store keeps serving
//! on a local copy of the state (every mark is written there too), says so once, reports itself
//! degraded, and from then on does not wait for Redis on the request path: a background task
//! pings it every second and, once it answers, merges the local marks back and returns to Redis.
//! A request never fails because of Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands as _, Script};

use crate::classify::DisableReason;
use crate::clock::{Clock, Timestamp};
use crate::cooldown::CooldownSource;
use crate::probe::ProbeOutcome;
use crate::store::{
    CheckClaim, Disabled, KeyId, KeyRecord, KeyStateStore, MemoryStore, StoreError, StoreHealth,
};

/// Every Redis call is bounded by this unless configured otherwise.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// How often a degraded store asks whether Redis is back.
const RECOVERY_PING: Duration = Duration::from_secs(1);

/// A disabled key's record lives this long without a write (a probe reschedules it far sooner),
/// unless `RedisSettings::retention` says otherwise.
const DISABLED_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a record outlives the end of its cooldown (its last status stays readable).
const COOLED_TTL: Duration = Duration::from_secs(3600);

/// Whose clock the deadlines are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisTime {
    /// Redis's `TIME`: replicas agree whatever their own clocks say (production).
    Server,
    /// The store's clock, passed to every script: a manual clock in tests drives expiry.
    Clock,
}

#[derive(Debug, Clone, Copy)]
pub struct RedisSettings {
    /// Bound of every Redis call.
    pub timeout: Duration,
    pub time: RedisTime,
    /// How long a disabled key's record is kept without a write.
    pub retention: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_REDIS_TIMEOUT,
            time: RedisTime::Server,
            retention: DISABLED_TTL,
        }
    }
}

/// Key state in Redis, with a local copy to serve on while Redis is unreachable.
pub struct RedisStore {
    redis: ConnectionManager,
    /// The URL without its password, for messages.
    shown_url: String,
    settings: RedisSettings,
    clock: Arc<dyn Clock>,
    local: MemoryStore,
    degraded: AtomicBool,
    /// Names this process's leases.
    replica: String,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shown_url)
            .field("degraded", &self.degraded.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

struct Scripts {
    load: Script,
    extend_cooldown: Script,
    disable: Script,
    enable: Script,
    revalidated: Script,
    reschedule_probe: Script,
}

/// `now`: ARGV[1] when given (the store's clock), else Redis's `TIME`, in microseconds.
/// Numbers are written with `%.0f`: Lua's `tostring` would print large ones in exponent form.
const PRELUDE: &str = r"
local function now_us()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function fmt(n) return string.format('%.0f', n) end
local function num(v) if v then return tonumber(v) end return nil end
local function expire(k, now)
  if redis.call('HEXISTS', k, 'dr') == 1 then
    redis.call('PEXPIRE', k, ARGV[2])
    return
  end
  local cu = num(redis.call('HGET', k, 'cu')) or now
  local left = math.max(cu - now, 0) / 1000
  redis.call('PEXPIRE', k, math.floor(left + tonumber(ARGV[3])))
end
";

/// KEYS: the records. Returns the script's `now`, then 7 fields per record.
const LOAD: &str = r"
local out = { fmt(now_us()) }
for i, k in ipairs(KEYS) do
  local f = redis.call('HMGET', k, 'cu', 'cs', 'ls', 'dr', 'ds', 'dn', 'di')
  for j = 1, 7 do out[#out + 1] = f[j] end
end
return out
";

/// ARGV[4] duration (µs), ARGV[5] source, ARGV[6] status. Returns 1 on valid -> cooling.
const EXTEND_COOLDOWN: &str = r"
local k = KEYS[1]
local now = now_us()
if redis.call('HEXISTS', k, 'dr') == 1 then return 0 end
local cu = num(redis.call('HGET', k, 'cu'))
local was = cu ~= nil and cu > now
redis.call('HSET', k, 'ls', ARGV[6])
local til = now + tonumber(ARGV[4])
if cu == nil or til > cu then
  redis.call('HSET', k, 'cu', fmt(til), 'cs', ARGV[5])
  cu = til
end
expire(k, now)
if (not was) and cu > now then return 1 end
return 0
";

/// ARGV[4] status, ARGV[5] reason, ARGV[6] delay to the first probe (µs), ARGV[7] interval
/// (µs). Returns 1 on the first transition.
const DISABLE: &str = r"
local k = KEYS[1]
local now = now_us()
redis.call('HSET', k, 'ls', ARGV[4])
if redis.call('HEXISTS', k, 'dr') == 1 then expire(k, now) return 0 end
redis.call('HSET', k, 'dr', ARGV[5], 'ds', fmt(now), 'dn', fmt(now + tonumber(ARGV[6])), 'di', ARGV[7])
expire(k, now)
return 1
";

const ENABLE: &str = r"
local k = KEYS[1]
local was = redis.call('HEXISTS', k, 'dr') == 1 or redis.call('HEXISTS', k, 'cu') == 1
redis.call('HDEL', k, 'dr', 'ds', 'dn', 'di', 'cu', 'cs')
expire(k, now_us())
if was then return 1 end
return 0
";

const REVALIDATED: &str = r"
local k = KEYS[1]
local was = redis.call('HEXISTS', k, 'dr') == 1
redis.call('HDEL', k, 'dr', 'ds', 'dn', 'di')
expire(k, now_us())
if was then return 1 end
return 0
";

/// ARGV[4] delay to the next probe (µs), ARGV[5] interval (µs).
const RESCHEDULE_PROBE: &str = r"
local k = KEYS[1]
if redis.call('HEXISTS', k, 'dr') == 0 then return 0 end
local now = now_us()
redis.call('HSET', k, 'dn', fmt(now + tonumber(ARGV[4])), 'di', ARGV[5])
expire(k, now)
return 1
";

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The URL with the password of its user info (`redis://user:PASSWORD@host`) masked.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            let masked = if user_info.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{masked}@{host}{path}")
        }
        None => url.to_string(),
    }
}

impl RedisStore {
    /// A store on `url` (`redis://HOST:PORT[/DB]`), having asked Redis once whether it answers:
    /// an unreachable Redis makes the store degraded, never an error here; only a URL that
    /// cannot be a Redis URL is.
    pub async fn connect(
        url: &str,
        settings: RedisSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, StoreError> {
        let store = Self::open(url, settings, clock)?;
        if let Err(e) = store.ping_redis().await {
            store.degrade(&e);
        }
        Ok(store)
    }

    /// As [`Self::connect`] without the first question: the connection is made by the first
    /// call. Must run inside a Tokio runtime (the recovery watcher is spawned on it).
    pub fn open(
        url: &str,
        settings: RedisSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, StoreError> {
        let shown_url = redact(url);
        let client = redis::Client::open(url)
            .map_err(|e| StoreError(format!("{shown_url} is not a Redis URL: {e}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let redis = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError(format!("{shown_url}: {e}")))?;
        let store = Arc::new(Self {
            redis,
            shown_url,
            settings,
            clock,
            local: MemoryStore::new(),
            degraded: AtomicBool::new(false),
            replica: replica_name(),
            scripts: Scripts {
                load: script(LOAD),
                extend_cooldown: script(EXTEND_COOLDOWN),
                disable: script(DISABLE),
                enable: script(ENABLE),
                revalidated: script(REVALIDATED),
                reschedule_probe: script(RESCHEDULE_PROBE),
            },
        });
        tokio::spawn(watch(Arc::downgrade(&store)));
        Ok(store)
    }

    /// The URL, without a password.
    pub fn url(&self) -> &str {
        &self.shown_url
    }

    /// Asks Redis whether it answers (for `check-config`), without changing the store's state.
    pub async fn answers(&self) -> Result<(), StoreError> {
        self.ping_redis().await
    }

    fn record_key(pool: &str, key: &KeyId) -> String {
        format!("aibridge:keystate:{pool}:{}", key.as_str())
    }

    fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    fn degrade(&self, error: &StoreError) {
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                url = %self.shown_url,
                error = %error.0,
                "Redis key state unreachable: serving on this replica's own key state until it answers again"
            );
        }
    }

    /// ARGV[1..3] of every script: `now` (empty: Redis's clock), the TTLs in ms.
    fn base_args(&self) -> (String, u64, u64) {
        let now = match self.settings.time {
            RedisTime::Server => String::new(),
            RedisTime::Clock => self.clock.now().as_unix_micros().to_string(),
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        (now, ms(self.settings.retention), ms(COOLED_TTL))
    }

    /// Runs `script` on `key` with the base arguments and `args`, within the timeout.
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<T, StoreError> {
        let (now, disabled_ttl, cooled_ttl) = self.base_args();
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation.arg(now).arg(disabled_ttl).arg(cooled_ttl);
        for arg in args {
            invocation.arg(arg);
        }
        let mut redis = self.redis.clone();
        self.bounded(invocation.invoke_async(&mut redis)).await
    }

    /// A Redis call within the timeout.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StoreError(format!("Redis at {}: {e}", self.shown_url))),
            Err(_) => Err(StoreError(format!(
                "Redis at {} did not answer within {:?}",
                self.shown_url, self.settings.timeout
            ))),
        }
    }

    /// A write: to the local copy always, to Redis unless degraded. Redis's answer wins (it
    /// knows the other replicas' marks); without it, the local one.
    async fn write(
        &self,
        script: &Script,
        pool: &str,
        key: &KeyId,
        args: &[String],
        local: bool,
    ) -> bool {
        if self.is_degraded() {
            return local;
        }
        match self
            .run::<i64>(script, &[Self::record_key(pool, key)], args)
            .await
        {
            Ok(changed) => changed == 1,
            Err(e) => {
                self.degrade(&e);
                local
            }
        }
    }

    async fn ping_redis(&self) -> Result<(), StoreError> {
        let mut redis = self.redis.clone();
        self.bounded(redis.ping::<String>()).await.map(drop)
    }

    /// Redis answers again: it is the state again at once, and the marks this replica made
    /// meanwhile (cooldowns by the time left, disabled keys as they are) are merged into it.
    async fn recover(&self) -> Result<(), StoreError> {
        self.ping_redis().await?;
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!(url = %self.shown_url, "Redis key state answers again: merging this replica's marks back");
        }
        if let Err(e) = self.merge_local().await {
            self.degrade(&e);
            return Err(e);
        }
        Ok(())
    }

    async fn merge_local(&self) -> Result<(), StoreError> {
        let now = self.clock.now();
        for (pool, key, record) in self.local.records() {
            let redis_key = [Self::record_key(&pool, &key)];
            if let Some(disabled) = &record.disabled {
                let status = record.last_status.unwrap_or(401).to_string();
                let delay = disabled.next_probe_at.saturating_duration_since(now);
                self.run::<i64>(
                    &self.scripts.disable,
                    &redis_key,
                    &[
                        status,
                        disabled.reason.as_str().to_string(),
                        micros(delay).to_string(),
                        micros(disabled.probe_interval).to_string(),
                    ],
                )
                .await?;
            } else if let Some(until) = record.cooldown_until.filter(|until| *until > now) {
                let status = record.last_status.unwrap_or(429).to_string();
                let source = record.cooldown_source.unwrap_or(CooldownSource::Default);
                self.run::<i64>(
                    &self.scripts.extend_cooldown,
                    &redis_key,
                    &[
                        micros(until.saturating_duration_since(now)).to_string(),
                        source.as_str().to_string(),
                        status,
                    ],
                )
                .await?;
            }
        }
        Ok(())
    }

    fn lease_key(kind: &str, pool: &str, key: &KeyId) -> String {
        format!("aibridge:{kind}:{pool}:{}", key.as_str())
    }

    /// `SET key value NX PX ttl`: whether this replica got it.
    async fn claim(&self, lease: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut redis = self.redis.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let mut cmd = redis::cmd("SET");
        cmd.arg(lease)
            .arg(&self.replica)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms);
        let set = self.bounded(cmd.query_async::<Option<String>>(&mut redis));
        set.await.map(|set| set.is_some())
    }
}

/// Pings Redis every second: an outage is noticed (and reported) even while no request needs
/// a key, and a degraded store merges back once Redis answers.
async fn watch(store: std::sync::Weak<RedisStore>) {
    loop {
        tokio::time::sleep(RECOVERY_PING).await;
        let Some(store) = store.upgrade() else { return };
        if store.is_degraded() {
            if let Err(e) = store.recover().await {
                tracing::debug!(error = %e.0, "Redis key state still unreachable");
            }
        } else if let Err(e) = store.ping_redis().await {
            store.degrade(&e);
        }
    }
}

fn replica_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".to_string());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}:{}:{nanos}", std::process::id())
}

fn field<T: std::str::FromStr>(value: Option<&String>) -> Option<T> {
    value.and_then(|v| v.parse().ok())
}

/// A record from the 7 fields `LOAD` returns, its deadlines moved to this process's clock.
fn decode(fields: &[Option<String>], shift: &dyn Fn(u64) -> Timestamp) -> KeyRecord {
    let get = |i: usize| fields.get(i).and_then(Option::as_ref);
    let disabled = get(3).and_then(|reason| {
        let reason = match reason.as_str() {
            "unauthorized" => DisableReason::Unauthorized,
            "forbidden" => DisableReason::Forbidden,
            _ => return None,
        };
        Some(Disabled {
            reason,
            since: shift(field(get(4))?),
            next_probe_at: shift(field(get(5))?),
            probe_interval: Duration::from_micros(field(get(6))?),
        })
    });
    KeyRecord {
        cooldown_until: field(get(0)).map(shift),
        cooldown_source: get(1).and_then(|s| CooldownSource::parse(s)),
        disabled,
        last_status: field(get(2)),
    }
}

#[async_trait::async_trait]
impl KeyStateStore for RedisStore {
    async fn load(&self, pool: &str, keys: &[KeyId]) -> Result<Vec<KeyRecord>, StoreError> {
        if self.is_degraded() {
            return self.local.load(pool, keys).await;
        }
        let redis_keys: Vec<String> = keys.iter().map(|k| Self::record_key(pool, k)).collect();
        let reply: Vec<Option<String>> = match self.run(&self.scripts.load, &redis_keys, &[]).await
        {
            Ok(reply) => reply,
            Err(e) => {
                self.degrade(&e);
                return self.local.load(pool, keys).await;
            }
        };
        let local_now = self.clock.now().as_unix_micros();
        let script_now: u64 = field(reply.first().and_then(Option::as_ref)).unwrap_or(local_now);
        // Deadlines on the script's clock, moved by the difference to ours.
        let shift = |at: u64| {
            Timestamp::from_unix_micros(
                (i128::from(at) + i128::from(local_now) - i128::from(script_now))
                    .clamp(0, i128::from(u64::MAX)) as u64,
            )
        };
        let records: Vec<KeyRecord> = reply
            .get(1..)
            .unwrap_or_default()
            .chunks(7)
            .map(|fields| decode(fields, &shift))
            .chain(std::iter::repeat_with(KeyRecord::default))
            .take(keys.len())
            .collect();
        // The local copy follows the shared state: an outage starts from what all replicas knew.
        self.local.replace(pool, keys, &records);
        Ok(records)
    }

    async fn extend_cooldown(
        &self,
        pool: &str,
        key: &KeyId,
        now: Timestamp,
        until: Timestamp,
        source: CooldownSource,
        status: u16,
    ) -> Result<bool, StoreError> {
        let local = self
            .local
            .extend_cooldown(pool, key, now, until, source, status)
            .await?;
        let args = [
            micros(until.saturating_duration_since(now)).to_string(),
            source.as_str().to_string(),
            status.to_string(),
        ];
        Ok(self
            .write(&self.scripts.extend_cooldown, pool, key, &args, local)
            .await)
    }

    async fn disable(
        &self,
        pool: &str,
        key: &KeyId,
        status: u16,
        disabled: Disabled,
    ) -> Result<bool, StoreError> {
        let delay = disabled
            .next_probe_at
            .saturating_duration_since(disabled.since);
        let args = [
            status.to_string(),
            disabled.reason.as_str().to_string(),
            micros(delay).to_string(),
            micros(disabled.probe_interval).to_string(),
        ];
        let local = self.local.disable(pool, key, status, disabled).await?;
        Ok(self
            .write(&self.scripts.disable, pool, key, &args, local)
            .await)
    }

    async fn enable(&self, pool: &str, key: &KeyId) -> Result<bool, StoreError> {
        let local = self.local.enable(pool, key).await?;
        Ok(self
            .write(&self.scripts.enable, pool, key, &[], local)
            .await)
    }

    async fn revalidated(&self, pool: &str, key: &KeyId) -> Result<bool, StoreError> {
        let local = self.local.revalidated(pool, key).await?;
        Ok(self
            .write(&self.scripts.revalidated, pool, key, &[], local)
            .await)
    }

    async fn reschedule_probe(
        &self,
        pool: &str,
        key: &KeyId,
        next_probe_at: Timestamp,
        probe_interval: Duration,
    ) -> Result<(), StoreError> {
        self.local
            .reschedule_probe(pool, key, next_probe_at, probe_interval)
            .await?;
        let delay = next_probe_at.saturating_duration_since(self.clock.now());
        let args = [
            micros(delay).to_string(),
            micros(probe_interval).to_string(),
        ];
        self.write(&self.scripts.reschedule_probe, pool, key, &args, false)
            .await;
        Ok(())
    }

    async fn health(&self) -> StoreHealth {
        if self.is_degraded() {
            StoreHealth::Degraded(format!("Redis at {} does not answer", self.shown_url))
        } else {
            StoreHealth::Up
        }
    }

    async fn claim_probe(&self, pool: &str, key: &KeyId, ttl: Duration) -> bool {
        if self.is_degraded() {
            return true;
        }
        match self.claim(&Self::lease_key("probe", pool, key), ttl).await {
            Ok(claimed) => claimed,
            Err(e) => {
                self.degrade(&e);
                true
            }
        }
    }

    async fn claim_check(&self, pool: &str, key: &KeyId, ttl: Duration) -> CheckClaim {
        if self.is_degraded() {
            return CheckClaim::Leader;
        }
        match self.claim(&Self::lease_key("check", pool, key), ttl).await {
            Ok(true) => CheckClaim::Leader,
            Ok(false) => CheckClaim::Follower,
            Err(e) => {
                self.degrade(&e);
                CheckClaim::Leader
            }
        }
    }

    async fn publish_check(&self, pool: &str, key: &KeyId, outcome: ProbeOutcome, ttl: Duration) {
        if self.is_degraded() {
            return;
        }
        let mut redis = self.redis.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(Self::lease_key("checked", pool, key))
            .arg(outcome.as_str())
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        if let Err(e) = self.bounded(cmd.query_async::<()>(&mut redis)).await {
            self.degrade(&e);
        }
    }

    async fn checked(&self, pool: &str, key: &KeyId) -> Option<ProbeOutcome> {
        if self.is_degraded() {
            return None;
        }
        let mut redis = self.redis.clone();
        let get = redis.get::<_, Option<String>>(Self::lease_key("checked", pool, key));
        match self.bounded(get).await {
            Ok(value) => value.as_deref().and_then(ProbeOutcome::parse),
            Err(e) => {
                self.degrade(&e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_leave_the_url() {
        assert_eq!(
            redact("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("redis://app:s3cr:et@redis.internal/1"),
            "redis://app:***@redis.internal/1"
        );
        assert_eq!(redact("redis://app@host"), "redis://app@host");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
