//! Builds the gateway from a configuration and runs it until shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use aibridge_keypool::{
    Clock, CooldownPolicy, KeyPool, KeyStateStore, MemoryStore, ProbePolicy, SystemClock,
};
use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use aibridge_store::Store;

use crate::auth::{Authenticator, StoredTokens};
use crate::config::{Config, KeyStateBackend};
use crate::provider::Provider;
use crate::recorder::Recorder;

/// Shared by every request.
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub client: reqwest::Client,
    pub providers: HashMap<String, Arc<Provider>>,
    pub auth: Authenticator,
    pub key_store: Arc<dyn KeyStateStore>,
    pub recorder: Arc<Recorder>,
}

impl AppState {
    /// Opens (and migrates) the recording database and builds the pools.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store = open_store(&config.database_url).await?;
        Self::build_with(config, store, Arc::new(SystemClock))
    }

    pub fn build_with(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let key_store: Arc<dyn KeyStateStore> = match config.key_state {
            KeyStateBackend::Memory => Arc::new(MemoryStore::new()),
        };
        let cooldown = CooldownPolicy {
            default: config.key_pool.default_cooldown,
            max: config.key_pool.max_cooldown,
        };
        let probe = ProbePolicy {
            initial: config.key_pool.probe_initial_interval,
            max: config.key_pool.probe_max_interval,
        };
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
                .with_context(|| format!("provider `{}`", pc.name))?;
                Some(Arc::new(pool))
            };
            providers.insert(
                pc.name.clone(),
                Arc::new(Provider {
                    name: pc.name.clone(),
                    kind: pc.kind,
                    base_url: pc.base_url.clone(),
                    pool,
                }),
            );
        }
        let client = crate::upstream::build_client(&config.upstream)
            .context("building the upstream HTTP client")?;
        let auth = Authenticator::new(config.auth, Arc::new(StoredTokens(store.clone())));
        let recorder = Recorder::start(store, config.record_requests);
        Ok(Self {
            config,
            client,
            providers,
            auth,
            key_store,
            recorder,
        })
    }
}

/// A gateway bound to its listening socket, not yet serving.
pub struct Gateway {
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
}

impl Gateway {
    pub async fn bind(state: AppState) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(state.config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", state.config.listen))?;
        Ok(Self {
            state: Arc::new(state),
            listener,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests and
    /// streams finish for up to the configured shutdown timeout.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        let stop = CancellationToken::new();
        let probes = tokio::spawn(crate::probe::run(self.state.clone(), stop.clone()));
        tracing::info!(addr = %addr, "aibridge listening on http://{addr}");

        let deadline = self.state.config.shutdown_timeout;
        let signal_stop = stop.clone();
        let app = crate::routes::router(self.state.clone())
            .into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(self.listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!(
                deadline_secs = deadline.as_secs_f64(),
                "shutting down: no new connections, waiting for in-flight requests"
            );
            signal_stop.cancel();
        });
        let forced = async {
            stop.cancelled().await;
            tokio::time::sleep(deadline).await;
        };
        tokio::select! {
            result = server => result.context("serving")?,
            () = forced => tracing::warn!("shutdown deadline passed: closing the remaining connections"),
        }
        stop.cancel();
        let _ = probes.await;
        // Every request has finished (or been cut at the deadline): write what they recorded.
        self.state.recorder.shutdown().await;
        tracing::info!("aibridge stopped");
        Ok(())
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Opens the recording database named by the URL and applies the embedded migrations.
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    let store = aibridge_store::open(url)
        .await
        .with_context(|| format!("opening the database {}", redact_url(url)))?;
    store
        .migrate()
        .await
        .context("applying database migrations")?;
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
