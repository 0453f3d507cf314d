//! Runs a built gateway until shutdown: binds, serves, re-validates disabled keys in the
//! background, and on SIGTERM drains in-flight requests and the recorder.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// After the shutdown deadline cuts the open streams, how long their connections get to deliver
/// the error event and close.
const CUT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A gateway bound to its listening socket, not yet serving.
pub struct Gateway {
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
}

impl Gateway {
    pub async fn bind(state: AppState) -> Result<Self, ServeError> {
        let addr = state.config.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
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
    ) -> Result<(), ServeError> {
        let addr = self.local_addr().map_err(ServeError::Serve)?;
        let stop = CancellationToken::new();
        let probes = tokio::spawn(crate::upstream::probe::run(
            self.state.client.general().clone(),
            self.state.providers.values().cloned().collect(),
            self.state.config.key_pool.probe_initial_interval,
            stop.clone(),
        ));
        tracing::info!(addr = %addr, "aibridge listening on http://{addr}");

        let deadline = self.state.config.shutdown_timeout;
        let signal_stop = stop.clone();
        let app = crate::ingress::MakeEntry::new(self.state.clone());
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
        let mut server = std::pin::pin!(server.into_future());
        tokio::select! {
            result = &mut server => result.map_err(ServeError::Serve)?,
            () = forced => {
                tracing::warn!("shutdown deadline passed: cutting the streams still open");
                // Each cut stream ends with its dialect's error event and writes its record;
                // the connections then close by themselves.
                self.state.cut_streams.cancel();
                if tokio::time::timeout(CUT_GRACE, &mut server).await.is_err() {
                    tracing::warn!("connections still open after the streams were cut: closing them");
                }
            }
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
