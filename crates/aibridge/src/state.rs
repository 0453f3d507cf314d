//! What every request shares, built once from the configuration.

use std::collections::HashMap;
use std::sync::Arc;

use aibridge_keypool::PoolConfigError;
use aibridge_keypool::{
    Clock, CooldownPolicy, KeyPool, KeyStateStore, MemoryStore, ProbePolicy, RedisSettings,
    RedisStore, RedisTime, SystemClock,
};
use aibridge_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::breaker::CircuitBreakers;
use crate::config::{Config, KeyStateBackend};
use crate::error::GatewayError;
use crate::intake::auth::{Authenticator, StoredTokens};
use crate::intake::client::CLIENT_NAMES;
use crate::intake::{Incoming, Intake};
use crate::mcp::tools::McpTools;
use crate::provider::Provider;
use crate::record::Recorder;
use crate::telemetry::metrics::Metrics;
use crate::upstream::apidump::ApiDump;
use crate::upstream::client::HttpClient;

/// Why the gateway cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the database {url}: {source}")]
    OpenDatabase { url: String, source: StoreError },
    #[error("applying database migrations: {0}")]
    Migrate(StoreError),
    #[error("key state: {0}")]
    KeyState(aibridge_keypool::StoreError),
    #[error("apidump directory {dir}: {source}")]
    ApiDump {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("provider `{provider}`: {source}")]
    Pool {
        provider: String,
        source: PoolConfigError,
    },
}

/// Shared by every request.
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub client: HttpClient,
    pub providers: HashMap<String, Arc<Provider>>,
    pub auth: Authenticator,
    pub key_store: Arc<dyn KeyStateStore>,
    pub recorder: Arc<Recorder>,
    pub metrics: Arc<Metrics>,
    /// `None` unless `[circuit_breaker]` is configured.
    pub breakers: Option<CircuitBreakers>,
    /// `None` unless `AIBRIDGE_APIDUMP_DIR` is set.
    pub apidump: Option<ApiDump>,
    /// `None` unless `[[mcp_servers]]` are configured.
    pub mcp: Option<Arc<McpTools>>,
    /// Cancelled when the shutdown deadline passes: streams still open are cut (with the
    /// dialect's SSE error event) so that their records are written before the process exits.
    pub cut_streams: CancellationToken,
}

impl AppState {
    /// The checks every provider route makes first, with this gateway's auth and body limit.
    pub async fn intake(
        &self,
        provider: &Provider,
        incoming: Incoming,
    ) -> Result<Intake, GatewayError> {
        crate::intake::intake(
            &self.auth,
            self.config.max_request_body_bytes,
            provider,
            incoming,
        )
        .await
    }

    /// Opens (and migrates) the recording database and builds the pools.
    /// `client` holds the gateway's HTTP clients (`upstream::client::build`).
    pub async fn build(config: Config, client: HttpClient) -> Result<Self, StartError> {
        let store = open_store(&config.database_url).await?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let key_store = open_key_state(&config.key_state, clock.clone()).await?;
        let mcp = if config.mcp.servers.is_empty() {
            None
        } else {
            Some(McpTools::start(client.general().clone(), &config.mcp).await)
        };
        Self::build_with(config, store, key_store, clock, client, mcp)
    }

    pub fn build_with(
        config: Config,
        store: Arc<dyn Store>,
        key_store: Arc<dyn KeyStateStore>,
        clock: Arc<dyn Clock>,
        client: HttpClient,
        mcp: Option<Arc<McpTools>>,
    ) -> Result<Self, StartError> {
        let cooldown = CooldownPolicy {
            default: config.key_pool.default_cooldown,
            max: config.key_pool.max_cooldown,
        };
        let probe = ProbePolicy {
            initial: config.key_pool.probe_initial_interval,
            max: config.key_pool.probe_max_interval,
        };
        let metrics = Arc::new(Metrics::new(&CLIENT_NAMES));
        let mut providers = HashMap::new();
        for pc in &config.providers {
            let pool = if pc.keys.is_empty() {
                tracing::warn!(
                    provider = %pc.name,
                    "no central keys configured: only BYOK requests (X-AIBridge-Token) can be served"
                );
                None
            } else {
                let pool = KeyPool::new(
                    pc.name.clone(),
                    pc.keys.clone(),
                    key_store.clone(),
                    clock.clone(),
                    cooldown,
                    probe,
                )
                .map_err(|source| StartError::Pool {
                    provider: pc.name.clone(),
                    source,
                })?;
                Some(Arc::new(pool))
            };
            let key_hints: Vec<String> = pc.keys.iter().map(|key| key.hint()).collect();
            let provider_metrics =
                metrics.provider(&pc.name, &pc.kind.routes(), &key_hints, pool.is_some());
            providers.insert(
                pc.name.clone(),
                Arc::new(Provider {
                    name: pc.name.clone(),
                    kind: pc.kind,
                    base_url: pc.base_url.clone(),
                    pool,
                    key_checks: Default::default(),
                    key_scopes: pc.key_scopes.clone(),
                    key_headers: pc.keys.iter().map(|key| pc.kind.key_header(key)).collect(),
                    metrics: Arc::new(provider_metrics),
                    bedrock: pc.bedrock.clone(),
                    route_urls: Provider::parse_route_urls(&pc.base_url, &pc.kind.routes()),
                }),
            );
        }
        let auth = Authenticator::new(config.auth, Arc::new(StoredTokens(store.clone())));
        let recorder = Recorder::start(store, config.record_requests);
        let apidump = config
            .apidump_dir
            .clone()
            .map(|dir| {
                ApiDump::start(dir.clone()).map_err(|source| StartError::ApiDump { dir, source })
            })
            .transpose()?;
        if let Some(dump) = &apidump {
            tracing::warn!(
                dir = %dump.dir().display(),
                "apidump is on: every upstream request and response is written to disk (secrets masked, prompts not)"
            );
        }
        let breakers = config
            .circuit_breaker
            .map(|settings| CircuitBreakers::new(settings, clock.clone(), &metrics));
        Ok(Self {
            config,
            client,
            providers,
            auth,
            key_store,
            recorder,
            metrics,
            breakers,
            apidump,
            mcp,
            cut_streams: CancellationToken::new(),
        })
    }
}

/// The key-state store the configuration names. Redis is asked once whether it answers; if it
/// does not, the gateway starts anyway, on its own key state, and says so.
pub async fn open_key_state(
    backend: &KeyStateBackend,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn KeyStateStore>, StartError> {
    Ok(match backend {
        KeyStateBackend::Memory => Arc::new(MemoryStore::new()),
        KeyStateBackend::Redis { url, timeout } => {
            let settings = RedisSettings {
                timeout: *timeout,
                time: RedisTime::Server,
                ..RedisSettings::default()
            };
            let store = RedisStore::connect(url, settings, clock)
                .await
                .map_err(StartError::KeyState)?;
            tracing::info!(url = %store.url(), "key state shared in Redis");
            store
        }
    })
}

/// Opens the recording database named by the URL and applies the embedded migrations.
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StartError> {
    let store = aibridge_store::open(url)
        .await
        .map_err(|source| StartError::OpenDatabase {
            url: redact_url(url),
            source,
        })?;
    store.migrate().await.map_err(StartError::Migrate)?;
    Ok(store)
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}
