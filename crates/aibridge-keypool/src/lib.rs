//! Provider key pool for aibridge: key states (valid, cooling, disabled), the per-request walker
//! that picks the next usable key, the marking rules applied to upstream responses, cooldown
//! hints read from provider headers, exhaustion errors, and the state store behind it all.
//!
//! Key state lives in a [`KeyStateStore`]: [`MemoryStore`] for one process, [`RedisStore`] for
//! replicas that share it.
//!
//! Behaviour follows the reference key pool (spec §3) with the extensions decided in PRODUCT.md:
//! every provider hint is read, cooldowns are capped, and 401/403 disable a key until a background
//! probe or an operator re-enables it.

mod classify;
mod clock;
mod cooldown;
mod pool;
mod probe;
mod redis_store;
mod secret;
mod store;

pub use classify::{DisableReason, Verdict, classify};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use cooldown::{CooldownPolicy, CooldownSource, cooldown_hint};
pub use pool::{
    Exhausted, KeyPool, KeySnapshot, MarkOutcome, PoolConfigError, PoolKey, WalkError, Walker,
};
pub use probe::{ProbeOutcome, ProbePolicy};
pub use redis_store::{DEFAULT_REDIS_TIMEOUT, RedisSettings, RedisStore, RedisTime};
pub use secret::{ApiKey, mask_secret};
pub use store::{
    CheckClaim, Disabled, KeyId, KeyRecord, KeyState, KeyStateStore, MemoryStore, StoreError,
    StoreHealth,
};
