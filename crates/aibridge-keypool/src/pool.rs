//! The key pool: an ordered list of keys, per-request walkers over it, and the marking rules that
//! move keys between valid, cooling and disabled (spec §3.1–3.4).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::classify::{DisableReason, Verdict, classify};
use crate::clock::{Clock, Timestamp};
use crate::cooldown::CooldownPolicy;
use crate::probe::{ProbeOutcome, ProbePolicy};
use crate::secret::ApiKey;
use crate::store::{CheckClaim, Disabled, KeyId, KeyRecord, KeyState, KeyStateStore, StoreError};

/// One key of a pool as handed out by a walker.
#[derive(Debug, Clone)]
pub struct PoolKey {
    /// Position in the configured list (0-based); earlier keys are preferred.
    pub index: usize,
    /// Store identity of the key.
    pub id: KeyId,
    /// The key itself, for the upstream request.
    pub secret: ApiKey,
    /// `secret` masked, made once: every request's record and span names its key.
    hint: Arc<str>,
}

impl PoolKey {
    /// Masked key for logs and records.
    pub fn hint(&self) -> &str {
        &self.hint
    }
}

/// A key list that cannot form a pool.
#[derive(Debug, thiserror::Error)]
pub enum PoolConfigError {
    /// The list is empty.
    #[error("no keys provided")]
    NoKeys,
    /// A key is empty or only whitespace (`index` is 1-based for humans).
    #[error("key #{index} is empty")]
    EmptyKey {
        /// 1-based position of the empty key.
        index: usize,
    },
    /// The same key appears twice; it would share one state and be tried twice.
    #[error("key #{index} duplicates key #{first}")]
    DuplicateKey {
        /// 1-based position of the repeat.
        index: usize,
        /// 1-based position of its first occurrence.
        first: usize,
    },
}

/// The walker ran out of keys. Exhaustion rule (spec §3.4 + disabled): scan the WHOLE pool:
/// any key valid now -> RateLimited{retry_after: 0}; else the smallest remaining cooldown among
/// cooling keys -> RateLimited{retry_after: soonest}; else (every key disabled) -> AllDisabled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    /// Keys are only resting: a retry after `retry_after` will find one (429 to the client).
    #[error("all configured keys are rate-limited ({})", retry_advice(.retry_after))]
    RateLimited {
        /// Soonest moment a key is usable again; zero when one already is.
        retry_after: Duration,
    },
    /// Every key is disabled: only a probe or an operator can help (502 to the client).
    #[error(
        "all configured keys failed authentication; an operator must replace or re-enable them"
    )]
    AllDisabled,
}

impl Exhausted {
    /// ceil(retry_after seconds) when > 0, for the Retry-After header (1.5 s -> 2; 0 -> None).
    pub fn retry_after_header_secs(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after } if !retry_after.is_zero() => {
                Some(ceil_secs(*retry_after))
            }
            Self::RateLimited { .. } | Self::AllDisabled => None,
        }
    }

    /// Applies the exhaustion rule to the records of the whole pool.
    fn over(records: &[KeyRecord], now: Timestamp) -> Self {
        let mut soonest: Option<Duration> = None;
        for record in records {
            match record.state(now) {
                KeyState::Valid => {
                    return Self::RateLimited {
                        retry_after: Duration::ZERO,
                    };
                }
                KeyState::Cooling => {
                    let remaining = record.cooldown_remaining(now).unwrap_or(Duration::ZERO);
                    soonest = Some(soonest.map_or(remaining, |s| s.min(remaining)));
                }
                KeyState::Disabled => {}
            }
        }
        match soonest {
            Some(retry_after) => Self::RateLimited { retry_after },
            None => Self::AllDisabled,
        }
    }
}

/// Why a walker could not hand out a key.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// Whole seconds, as in the `Retry-After` header the client gets.
fn retry_advice(retry_after: &Duration) -> String {
    let secs = ceil_secs(*retry_after);
    if secs == 0 {
        "a key is usable again; retry now".to_string()
    } else {
        format!("retry after {secs}s")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// No usable key is left for this walk.
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    /// Key state could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What marking did, for logs and (later) the attempt record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkOutcome {
    /// How the upstream status was classified.
    pub verdict: Verdict,
    /// False when another request already moved the key (log and count only on true).
    pub transitioned: bool,
}

/// Read-only view of one key for /api/v1/keys, logs, demo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySnapshot {
    /// Position in the configured list (0-based).
    pub index: usize,
    /// Masked key.
    pub hint: String,
    /// State at snapshot time.
    pub state: KeyState,
    /// Time left in the cooldown, when cooling.
    pub cooldown_remaining: Option<Duration>,
    /// Why the key is disabled, when disabled.
    pub disabled_reason: Option<DisableReason>,
    /// The last upstream status this process saw for the key, else the last key-specific one
    /// the shared store knows.
    pub last_status: Option<u16>,
    /// Requests this process served with the key since it started.
    pub served_here: u64,
}

/// An ordered, immutable list of provider keys sharing state through a [`KeyStateStore`].
#[derive(Debug)]
pub struct KeyPool {
    name: String,
    keys: Vec<PoolKey>,
    /// The ids of `keys`, in order, ready for `store.load`.
    ids: Vec<KeyId>,
    store: Arc<dyn KeyStateStore>,
    clock: Arc<dyn Clock>,
    cooldown: CooldownPolicy,
    probe: ProbePolicy,
    /// What this process saw of each key, for the operator's view at once (the shared store
    /// keeps only key-specific failures).
    activity: Vec<KeyActivity>,
}

/// One key's answers as this process saw them.
#[derive(Debug, Default)]
struct KeyActivity {
    /// The last upstream status (0 before the first).
    last_status: AtomicU16,
    /// Requests whose answer came from this key.
    served: AtomicU64,
}

impl KeyPool {
    /// Builds a pool named `name` (its store namespace; replicas sharing state use the same name).
    /// Rejects an empty list, empty keys and duplicates.
    pub fn new(
        name: impl Into<String>,
        keys: Vec<ApiKey>,
        store: Arc<dyn KeyStateStore>,
        clock: Arc<dyn Clock>,
        cooldown: CooldownPolicy,
        probe: ProbePolicy,
    ) -> Result<Self, PoolConfigError> {
        if keys.is_empty() {
            return Err(PoolConfigError::NoKeys);
        }
        let mut first_position: HashMap<&str, usize> = HashMap::new();
        for (offset, key) in keys.iter().enumerate() {
            let index = offset + 1;
            if key.expose().trim().is_empty() {
                return Err(PoolConfigError::EmptyKey { index });
            }
            if let Some(&first) = first_position.get(key.expose()) {
                return Err(PoolConfigError::DuplicateKey { index, first });
            }
            first_position.insert(key.expose(), index);
        }
        let keys: Vec<PoolKey> = keys
            .into_iter()
            .enumerate()
            .map(|(index, secret)| PoolKey {
                index,
                id: KeyId::of(&secret),
                hint: secret.hint().into(),
                secret,
            })
            .collect();
        let ids = keys.iter().map(|key| key.id.clone()).collect();
        let activity = keys.iter().map(|_| KeyActivity::default()).collect();
        Ok(Self {
            name: name.into(),
            keys,
            ids,
            store,
            clock,
            cooldown,
            probe,
            activity,
        })
    }

    /// Notes an upstream answer to `key`; `served` when it is the answer the request got.
    pub fn note_answer(&self, key: &PoolKey, status: StatusCode, served: bool) {
        if let Some(activity) = self.activity.get(key.index) {
            activity
                .last_status
                .store(status.as_u16(), Ordering::Relaxed);
            if served {
                activity.served.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The pool's name (store namespace, log and metric label).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false for a constructed pool; here for API completeness.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys in preference order.
    pub fn keys(&self) -> &[PoolKey] {
        &self.keys
    }

    /// Current time of the pool's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A fresh walker; it starts at the first key (primary-with-fallback, not round robin).
    pub fn walker(self: &Arc<Self>) -> Walker {
        Walker {
            pool: Arc::clone(self),
            pos: 0,
            attempts: 0,
        }
    }

    /// What an upstream answer means for the key that got it, without changing anything.
    pub fn judge(&self, status: StatusCode, headers: &HeaderMap) -> Verdict {
        classify(status, headers, self.now(), &self.cooldown)
    }

    /// Applies a verdict to `key`: RateLimited -> extend_cooldown(now + cooldown); Rejected ->
    /// disable with next_probe_at = now + probe.initial; NotKeySpecific -> nothing. Returns
    /// whether the key changed state (log and count only then).
    pub async fn apply(
        &self,
        key: &PoolKey,
        verdict: Verdict,
        status: StatusCode,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        match verdict {
            Verdict::NotKeySpecific => Ok(false),
            Verdict::RateLimited { cooldown, source } => {
                let until = now.saturating_add(cooldown);
                self.store
                    .extend_cooldown(&self.name, &key.id, now, until, source, status.as_u16())
                    .await
            }
            Verdict::Rejected { reason } => {
                let interval = self.probe.first_interval();
                let disabled = Disabled {
                    reason,
                    since: now,
                    next_probe_at: now.saturating_add(interval),
                    probe_interval: interval,
                };
                self.store
                    .disable(&self.name, &key.id, status.as_u16(), disabled)
                    .await
            }
        }
    }

    /// [`Self::judge`] then [`Self::apply`]: the marking rules for an upstream answer.
    pub async fn mark(
        &self,
        key: &PoolKey,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<MarkOutcome, StoreError> {
        let verdict = self.judge(status, headers);
        let transitioned = self.apply(key, verdict, status).await?;
        Ok(MarkOutcome {
            verdict,
            transitioned,
        })
    }

    /// The state of every key, in pool order.
    pub async fn snapshot(&self) -> Result<Vec<KeySnapshot>, StoreError> {
        let records = self.load_all().await?;
        let now = self.now();
        Ok(self
            .keys
            .iter()
            .zip(records)
            .map(|(key, record)| KeySnapshot {
                index: key.index,
                hint: key.hint().to_owned(),
                state: record.state(now),
                cooldown_remaining: record.cooldown_remaining(now),
                disabled_reason: record.disabled.as_ref().map(|d| d.reason),
                last_status: self
                    .activity
                    .get(key.index)
                    .map(|a| a.last_status.load(Ordering::Relaxed))
                    .filter(|status| *status != 0)
                    .or(record.last_status),
                served_here: self
                    .activity
                    .get(key.index)
                    .map_or(0, |a| a.served.load(Ordering::Relaxed)),
            })
            .collect())
    }

    /// Operator or probe re-enable. Returns true if the key was disabled or cooling.
    /// An out-of-range index returns Ok(false).
    pub async fn enable(&self, index: usize) -> Result<bool, StoreError> {
        let Some(key) = self.keys.get(index) else {
            return Ok(false);
        };
        let was_out_of_rotation = self.load_one(key).await?.state(self.now()) != KeyState::Valid;
        let cleared = self.store.enable(&self.name, &key.id).await?;
        // The store also reports clearing an already-expired deadline; that key was valid.
        Ok(cleared && was_out_of_rotation)
    }

    /// Disabled keys whose next probe is due now.
    pub async fn due_for_probe(&self) -> Result<Vec<PoolKey>, StoreError> {
        let records = self.load_all().await?;
        let now = self.now();
        Ok(self
            .keys
            .iter()
            .zip(records)
            .filter(|(_, record)| {
                record
                    .disabled
                    .as_ref()
                    .is_some_and(|disabled| disabled.next_probe_at <= now)
            })
            .map(|(key, _)| key.clone())
            .collect())
    }

    /// Healthy -> no longer disabled (a cooldown set meanwhile stays); StillRejected -> interval = min(2*interval, probe.max), next = now +
    /// interval; Inconclusive -> next = now + interval (unchanged). A key that is no longer
    /// disabled (an operator re-enabled it meanwhile) is left alone.
    pub async fn record_probe(
        &self,
        key: &PoolKey,
        outcome: ProbeOutcome,
    ) -> Result<(), StoreError> {
        if outcome == ProbeOutcome::Healthy {
            self.store.revalidated(&self.name, &key.id).await?;
            return Ok(());
        }
        let Some(disabled) = self.load_one(key).await?.disabled else {
            return Ok(());
        };
        let interval = match outcome {
            ProbeOutcome::StillRejected => {
                self.probe.interval_after_rejection(disabled.probe_interval)
            }
            ProbeOutcome::Inconclusive | ProbeOutcome::Healthy => disabled.probe_interval,
        };
        let next_probe_at = self.now().saturating_add(interval);
        self.store
            .reschedule_probe(&self.name, &key.id, next_probe_at, interval)
            .await
    }

    /// Whether this replica re-validates `key` now (one replica at a time, for `ttl`).
    pub async fn claim_probe(&self, key: &PoolKey, ttl: Duration) -> bool {
        self.store.claim_probe(&self.name, &key.id, ttl).await
    }

    /// Whether this replica confirms a 401/403 of `key`, or another one already does.
    pub async fn claim_check(&self, key: &PoolKey, ttl: Duration) -> CheckClaim {
        self.store.claim_check(&self.name, &key.id, ttl).await
    }

    /// Shares what this replica's check of `key` found, for `ttl`.
    pub async fn publish_check(&self, key: &PoolKey, outcome: ProbeOutcome, ttl: Duration) {
        self.store
            .publish_check(&self.name, &key.id, outcome, ttl)
            .await;
    }

    /// What another replica's check of `key` found, if it has yet.
    pub async fn checked(&self, key: &PoolKey) -> Option<ProbeOutcome> {
        self.store.checked(&self.name, &key.id).await
    }

    /// Records of all keys in pool order; a store answering with the wrong count is an error
    /// rather than a silent misattribution of states.
    async fn load_all(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let records = self.store.load(&self.name, &self.ids).await?;
        if records.len() != self.ids.len() {
            return Err(StoreError(format!(
                "asked for {} key records of pool {:?}, got {}",
                self.ids.len(),
                self.name,
                records.len()
            )));
        }
        Ok(records)
    }

    async fn load_one(&self, key: &PoolKey) -> Result<KeyRecord, StoreError> {
        let records = self
            .store
            .load(&self.name, std::slice::from_ref(&key.id))
            .await?;
        Ok(records.into_iter().next().unwrap_or_default())
    }
}

/// Per upstream call sequence. Not shared between tasks; the pool is.
#[derive(Debug)]
pub struct Walker {
    pool: Arc<KeyPool>,
    /// Index of the first key not yet considered by this walk.
    pos: usize,
    attempts: u32,
}

impl Walker {
    /// Next key from `pos` whose CURRENT state is valid (one store.load per call); never returns a
    /// key twice; does not change key state. None left -> Err(Exhausted) computed over the whole
    /// pool.
    pub async fn next(&mut self) -> Result<PoolKey, WalkError> {
        let records = self.pool.load_all().await?;
        let now = self.pool.now();
        let next_valid = self
            .pool
            .keys
            .iter()
            .zip(&records)
            .skip(self.pos)
            .find(|(_, record)| record.state(now) == KeyState::Valid);
        match next_valid {
            Some((key, _)) => {
                self.pos = key.index + 1;
                self.attempts = self.attempts.saturating_add(1);
                Ok(key.clone())
            }
            None => Err(Exhausted::over(&records, now).into()),
        }
    }

    /// Number of keys this walker handed out.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}
