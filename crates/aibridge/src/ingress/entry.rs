//! The service each connection is served by. A provider's route (`/<provider>/…`, the hot
//! path) goes straight to [`super::dispatch`], boxed once, without the router's matching,
//! middleware and boxed layers in between; everything else (health, metrics, the operator
//! API and dashboard, unknown paths) goes to the router. Provider names cannot take the
//! router's first segments (the config reserves them), so the split changes no route.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use axum::routing::future::RouteFuture;
use axum::serve::IncomingStream;
use futures_util::future::{BoxFuture, Either, FutureExt};
use tokio::net::TcpListener;
use tower_service::Service;

use crate::state::AppState;

/// Makes each connection's [`Entry`], with the peer's address.
#[derive(Clone)]
pub struct MakeEntry {
    state: Arc<AppState>,
    router: Router,
}

impl MakeEntry {
    pub fn new(state: Arc<AppState>) -> Self {
        let router = super::router(state.clone());
        Self { state, router }
    }
}

impl Service<IncomingStream<'_, TcpListener>> for MakeEntry {
    type Response = Entry;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Entry, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'_, TcpListener>) -> Self::Future {
        std::future::ready(Ok(Entry {
            state: self.state.clone(),
            router: self.router.clone(),
            client_addr: *stream.remote_addr(),
        }))
    }
}

/// One connection's service.
#[derive(Clone)]
pub struct Entry {
    state: Arc<AppState>,
    router: Router,
    client_addr: SocketAddr,
}

impl Service<Request> for Entry {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<BoxFuture<'static, Result<Response, Infallible>>, RouteFuture<Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if self
            .state
            .providers
            .contains_key(first_segment(request.uri().path()))
        {
            if let Some(refused) = super::refuse_foreign(&self.state, &request) {
                return Either::Left(std::future::ready(Ok(refused)).boxed());
            }
            let state = self.state.clone();
            let client_addr = self.client_addr;
            return Either::Left(
                async move { Ok(super::dispatch(state, request, Some(client_addr)).await) }.boxed(),
            );
        }
        // What the router's handlers read the peer's address from.
        request
            .extensions_mut()
            .insert(ConnectInfo(self.client_addr));
        Either::Right(self.router.call(request))
    }
}

/// `/<first>/…` → `first`.
pub(super) fn first_segment(path: &str) -> &str {
    let path = path.trim_start_matches('/');
    path.split_once('/').map_or(path, |(first, _)| first)
}
