//! Where key state lives, behind a trait so a shared (Redis) store can replace the memory one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::classify::DisableReason;
use crate::clock::Timestamp;
use crate::cooldown::CooldownSource;
use crate::probe::ProbeOutcome;
use crate::secret::ApiKey;

/// Hex characters of the SHA-256 digest kept in a [`KeyId`]: enough to never collide within a
/// pool, too few to help anyone guess the key.
const KEY_ID_HEX_LEN: usize = 16;

/// Stable, non-secret identity of a key inside a pool: first 16 hex chars of SHA-256(key value).
/// Replicas that share a store agree on it whatever order their key lists have.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Arc<str>);

impl KeyId {
    /// Derives the identity of `key`.
    pub fn of(key: &ApiKey) -> Self {
        let digest = Sha256::digest(key.expose().as_bytes());
        let hex: String = digest
            .iter()
            .take(KEY_ID_HEX_LEN / 2)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Self(Arc::from(hex))
    }

    /// The id as text, for store keys and logs.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Persisted state of one key. The state (valid/cooling/disabled) is derived from it at read time,
/// so cooldown expiry needs no timer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key is skipped until this instant (may be in the past: then it is valid again).
    pub cooldown_until: Option<Timestamp>,
    /// Which hint set `cooldown_until`.
    pub cooldown_source: Option<CooldownSource>,
    /// Set while the key is out of rotation after a 401/403.
    pub disabled: Option<Disabled>,
    /// The last key-specific upstream status recorded for this key.
    pub last_status: Option<u16>,
}

/// Why and since when a key is disabled, and when the background probe next tries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disabled {
    /// The status that disabled the key.
    pub reason: DisableReason,
    /// When the key was disabled.
    pub since: Timestamp,
    /// When the probe should next re-validate the key.
    pub next_probe_at: Timestamp,
    /// The current back-off between probes.
    pub probe_interval: Duration,
}

/// Derived state of a key at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Usable now.
    Valid,
    /// Rate-limited; usable again once its cooldown passes.
    Cooling,
    /// Rejected by the provider; out of rotation until re-enabled.
    Disabled,
}

impl KeyState {
    /// Stable lowercase name for the operator API and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Cooling => "cooling",
            Self::Disabled => "disabled",
        }
    }
}

impl KeyRecord {
    /// Disabled wins over cooling; a cooldown whose deadline has passed counts as valid.
    pub fn state(&self, now: Timestamp) -> KeyState {
        if self.disabled.is_some() {
            KeyState::Disabled
        } else if self.is_cooling(now) {
            KeyState::Cooling
        } else {
            KeyState::Valid
        }
    }

    /// Time left in the cooldown; None unless the key is cooling at `now` (a disabled key
    /// reports None: its cooldown no longer matters).
    pub fn cooldown_remaining(&self, now: Timestamp) -> Option<Duration> {
        match self.state(now) {
            KeyState::Cooling => self
                .cooldown_until
                .map(|until| until.saturating_duration_since(now)),
            KeyState::Valid | KeyState::Disabled => None,
        }
    }

    fn is_cooling(&self, now: Timestamp) -> bool {
        self.cooldown_until.is_some_and(|until| until > now)
    }
}

/// Whether the store serves the state every replica shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    Up,
    /// Serving on this replica's own state while the shared store does not answer (why).
    Degraded(String),
}

/// Who confirms a key's 401/403 when several replicas saw one at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckClaim {
    /// This replica runs the check and publishes its result.
    Leader,
    /// Another replica runs it: wait for its published result.
    Follower,
}

/// The state store could not be reached or answered nonsense.
#[derive(Debug, thiserror::Error)]
#[error("key state store unavailable: {0}")]
pub struct StoreError(pub String);

/// Where key state lives. Memory now; a Redis implementation must be able to replace it without
/// touching callers, so every operation is async, addressed by (pool, KeyId), and the
/// read-modify-write rules (longest cooldown wins; disabled wins over cooling) live INSIDE the store
/// operation so they can be made atomic there (a Lua script for Redis).
#[async_trait::async_trait]
pub trait KeyStateStore: Send + Sync + std::fmt::Debug + 'static {
    /// One record per id, in order; unknown ids get KeyRecord::default().
    async fn load(&self, pool: &str, keys: &[KeyId]) -> Result<Vec<KeyRecord>, StoreError>;
    /// Extend the cooldown to `until` unless a later deadline is already stored (longest wins).
    /// Records `status`. Returns true only when the key was not cooling (at `now`) before and not
    /// disabled (a valid -> cooling transition). A disabled key stays disabled (no-op, false).
    async fn extend_cooldown(
        &self,
        pool: &str,
        key: &KeyId,
        now: Timestamp,
        until: Timestamp,
        source: CooldownSource,
        status: u16,
    ) -> Result<bool, StoreError>;
    /// Disable the key (wins over cooling). Returns true on the first transition only.
    async fn disable(
        &self,
        pool: &str,
        key: &KeyId,
        status: u16,
        disabled: Disabled,
    ) -> Result<bool, StoreError>;
    /// Clear disabled and cooldown. Returns true if the key was disabled or had a cooldown
    /// deadline stored (the store has no clock, so an already-expired deadline counts too;
    /// [`crate::KeyPool::enable`] narrows this to "cooling now").
    async fn enable(&self, pool: &str, key: &KeyId) -> Result<bool, StoreError>;
    /// The probe found a disabled key working again: clear `disabled` only. A cooldown stored
    /// meanwhile (an operator re-enabled the key, then it was rate-limited) stays: a cooldown
    /// only ever extends. Returns true if the key was disabled.
    async fn revalidated(&self, pool: &str, key: &KeyId) -> Result<bool, StoreError>;
    /// Reschedule the next probe of a disabled key (no-op if not disabled).
    async fn reschedule_probe(
        &self,
        pool: &str,
        key: &KeyId,
        next_probe_at: Timestamp,
        probe_interval: Duration,
    ) -> Result<(), StoreError>;
    /// For /readyz and the `aibridge_key_state_store_up` gauge.
    async fn health(&self) -> StoreHealth {
        StoreHealth::Up
    }
    /// Whether this replica may re-validate `key` now (one replica at a time, for `ttl`).
    async fn claim_probe(&self, _pool: &str, _key: &KeyId, _ttl: Duration) -> bool {
        true
    }
    /// Whether this replica confirms a 401/403 of `key` or waits for another's result.
    async fn claim_check(&self, _pool: &str, _key: &KeyId, _ttl: Duration) -> CheckClaim {
        CheckClaim::Leader
    }
    /// Shares the result of a check this replica led, for `ttl`.
    async fn publish_check(
        &self,
        _pool: &str,
        _key: &KeyId,
        _outcome: ProbeOutcome,
        _ttl: Duration,
    ) {
    }
    /// The result another replica published, if any yet.
    async fn checked(&self, _pool: &str, _key: &KeyId) -> Option<ProbeOutcome> {
        None
    }
}

/// Process-local store: one mutex over all records (critical sections are tiny and never held
/// across an await).
#[derive(Debug, Default)]
pub struct MemoryStore {
    pools: Mutex<HashMap<String, HashMap<KeyId, KeyRecord>>>,
}

impl MemoryStore {
    /// An empty store: every key starts valid.
    pub fn new() -> Self {
        Self::default()
    }

    /// A panic elsewhere cannot leave a record half-written (every update is a plain field
    /// assignment), so a poisoned lock is still safe to use.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<KeyId, KeyRecord>>> {
        self.pools.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every record with its pool and key: what a shared store merges back after an outage.
    pub fn records(&self) -> Vec<(String, KeyId, KeyRecord)> {
        self.lock()
            .iter()
            .flat_map(|(pool, records)| {
                records
                    .iter()
                    .map(|(key, record)| (pool.clone(), key.clone(), record.clone()))
            })
            .collect()
    }

    /// Sets the records of `keys` (what a shared store read), replacing what was there.
    pub fn replace(&self, pool: &str, keys: &[KeyId], records: &[KeyRecord]) {
        let mut pools = self.lock();
        let stored = pools.entry(pool.to_owned()).or_default();
        for (key, record) in keys.iter().zip(records) {
            if *record == KeyRecord::default() {
                stored.remove(key);
            } else {
                stored.insert(key.clone(), record.clone());
            }
        }
    }

    /// Runs `update` on the record of (pool, key), creating a default one first if needed.
    fn update<T>(&self, pool: &str, key: &KeyId, update: impl FnOnce(&mut KeyRecord) -> T) -> T {
        let mut pools = self.lock();
        let record = pools
            .entry(pool.to_owned())
            .or_default()
            .entry(key.clone())
            .or_default();
        update(record)
    }
}

#[async_trait::async_trait]
impl KeyStateStore for MemoryStore {
    async fn load(&self, pool: &str, keys: &[KeyId]) -> Result<Vec<KeyRecord>, StoreError> {
        let pools = self.lock();
        let records = pools.get(pool);
        Ok(keys
            .iter()
            .map(|key| {
                records
                    .and_then(|records| records.get(key))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect())
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
        Ok(self.update(pool, key, |record| {
            if record.disabled.is_some() {
                return false;
            }
            let was_cooling = record.is_cooling(now);
            record.last_status = Some(status);
            let extends = record.cooldown_until.is_none_or(|current| until > current);
            if extends {
                record.cooldown_until = Some(until);
                record.cooldown_source = Some(source);
            }
            !was_cooling && record.is_cooling(now)
        }))
    }

    async fn disable(
        &self,
        pool: &str,
        key: &KeyId,
        status: u16,
        disabled: Disabled,
    ) -> Result<bool, StoreError> {
        Ok(self.update(pool, key, |record| {
            record.last_status = Some(status);
            if record.disabled.is_some() {
                // Keep the original `since` and probe schedule.
                return false;
            }
            record.disabled = Some(disabled);
            true
        }))
    }

    async fn enable(&self, pool: &str, key: &KeyId) -> Result<bool, StoreError> {
        Ok(self.update(pool, key, |record| {
            let was_benched = record.disabled.is_some() || record.cooldown_until.is_some();
            record.disabled = None;
            record.cooldown_until = None;
            record.cooldown_source = None;
            was_benched
        }))
    }

    async fn revalidated(&self, pool: &str, key: &KeyId) -> Result<bool, StoreError> {
        Ok(self.update(pool, key, |record| record.disabled.take().is_some()))
    }

    async fn reschedule_probe(
        &self,
        pool: &str,
        key: &KeyId,
        next_probe_at: Timestamp,
        probe_interval: Duration,
    ) -> Result<(), StoreError> {
        self.update(pool, key, |record| {
            if let Some(disabled) = record.disabled.as_mut() {
                disabled.next_probe_at = next_probe_at;
                disabled.probe_interval = probe_interval;
            }
        });
        Ok(())
    }
}
