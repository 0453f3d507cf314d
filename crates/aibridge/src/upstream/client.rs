//! The gateway's HTTP clients, built here with explicit timeouts.
//!
//! Bridged calls go through hyper's pooled client directly: reqwest wraps every request in
//! layers the gateway never uses (a redirect policy and a retry policy, which parse the URL
//! twice more, and a proxy matcher), and they were a fifth of a request's instructions. When
//! the environment names a proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`), bridged calls go
//! through reqwest instead, which honours it. Everything else (MCP servers, key checks, trace
//! export) uses the general reqwest client.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyDataStream, BodyExt, Full, StreamBody};
use hyper::body::{Body, Frame, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::Url;
use tokio::time::Sleep;

use crate::config::UpstreamSettings;
use crate::error::{Failure, TransportError};

const USER_AGENT: &str = concat!("aibridge/", env!("CARGO_PKG_VERSION"));
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const POOL_MAX_IDLE_PER_HOST: usize = 256;
/// Variables reqwest reads a proxy from.
const PROXY_VARIABLES: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// How long one upstream call may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallDeadline {
    /// A blocking call: the whole of it, body included (`request_timeout`).
    Whole(Duration),
    /// A stream or a passthrough answer: the response head must come within this
    /// (`first_byte_timeout`); the relay bounds the body.
    Head(Duration),
}

type DirectClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The clients every outgoing call uses; cloning shares their connection pools.
#[derive(Clone, Debug)]
pub struct HttpClient {
    general: reqwest::Client,
    /// `None` when a proxy is configured: bridged calls then go through `general`.
    direct: Option<DirectClient>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error(transparent)]
    Reqwest(#[from] reqwest::Error),
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Builds the clients. Redirects are never followed: a redirect would carry a pool key to
/// wherever the upstream points.
pub fn build(settings: &UpstreamSettings) -> Result<HttpClient, ClientBuildError> {
    let proxied = PROXY_VARIABLES
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
    build_with_roots(settings, !proxied, Vec::new())
}

/// `extra_roots`: certificates trusted besides the public roots (tests' own CA).
fn build_with_roots(
    settings: &UpstreamSettings,
    direct: bool,
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<HttpClient, ClientBuildError> {
    let general = reqwest::Client::builder()
        // The only client-wide bound: each call brings its own deadlines (a blocking call's
        // whole duration, a stream's head and first event, the silence between events), set
        // where the call is made, so no one limit cuts another kind of call short.
        .connect_timeout(settings.connect_timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .build()?;
    let direct = if direct {
        Some(direct_client(settings, extra_roots)?)
    } else {
        None
    };
    Ok(HttpClient { general, direct })
}

fn direct_client(
    settings: &UpstreamSettings,
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<DirectClient, ClientBuildError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for root in extra_roots {
        roots.add(root)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(settings.connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .build(connector))
}

impl HttpClient {
    /// The reqwest client for everything that is not a bridged call.
    pub fn general(&self) -> &reqwest::Client {
        &self.general
    }

    /// Sends one upstream request. Its answer's head must come within `deadline`; for a
    /// `Whole` deadline the body too, and reading it after the deadline fails with a timeout.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        mut headers: HeaderMap,
        body: Bytes,
        deadline: CallDeadline,
    ) -> Result<UpstreamResponse, TransportError> {
        let sending = async {
            match &self.direct {
                Some(direct) => {
                    let uri = Uri::try_from(url.as_str())
                        .map_err(|e| TransportError::new(Failure::Request, Some(&e)))?;
                    if !headers.contains_key(header::USER_AGENT) {
                        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
                    }
                    let mut request = http::Request::new(Full::new(body));
                    *request.method_mut() = method;
                    *request.uri_mut() = uri;
                    *request.headers_mut() = headers;
                    let (head, body) = direct
                        .request(request)
                        .await
                        .map_err(|e| from_hyper(&e))?
                        .into_parts();
                    Ok((head, UpstreamBody::new(body.map_err(|e| body_error(&e)))))
                }
                None => {
                    let response = self
                        .general
                        .request(method, url.clone())
                        .headers(headers)
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| from_reqwest(&e))?;
                    let (head, body) = http::Response::<reqwest::Body>::from(response).into_parts();
                    Ok((head, UpstreamBody::new(body.map_err(|e| from_reqwest(&e)))))
                }
            }
        };
        // One timer for the whole call: a `Whole` deadline's goes on to bound the body.
        let (limit, whole) = match deadline {
            CallDeadline::Whole(limit) => (limit, true),
            CallDeadline::Head(limit) => (limit, false),
        };
        let mut timer = Box::pin(tokio::time::sleep(limit));
        let (head, body) = tokio::select! {
            biased;
            sent = sending => sent?,
            () = timer.as_mut() => return Err(TransportError::new(Failure::Timeout, None)),
        };
        let body = if whole {
            UpstreamBody::new(DeadlineBody {
                inner: body,
                deadline: timer,
            })
        } else {
            body
        };
        Ok(UpstreamResponse { head, body })
    }
}

/// An upstream answer: its head now, its body as it is read.
#[derive(Debug)]
pub struct UpstreamResponse {
    head: http::response::Parts,
    body: UpstreamBody,
}

/// The body of an upstream answer, boxed so that adapters (Bedrock's event stream, the API
/// dump) can stand in for it.
pub struct UpstreamBody(BoxBody<Bytes, TransportError>);

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamBody")
    }
}

impl UpstreamBody {
    fn new<B>(body: B) -> Self
    where
        B: Body<Data = Bytes, Error = TransportError> + Send + Sync + 'static,
    {
        Self(BoxBody::new(body))
    }

    pub fn from_bytes(bytes: Bytes) -> Self {
        Self::new(Full::new(bytes).map_err(|never| match never {}))
    }

    /// A body made of the chunks of `stream`; an error item ends it as a body failure.
    pub fn from_stream<S, E>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Sync + 'static,
        E: std::error::Error + 'static,
    {
        use futures_util::TryStreamExt as _;
        Self::new(StreamBody::new(
            stream.map_ok(Frame::data).map_err(|e| body_error(&e)),
        ))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = TransportError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TransportError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

impl UpstreamResponse {
    pub fn from_parts(head: http::response::Parts, body: UpstreamBody) -> Self {
        Self { head, body }
    }

    /// An answer made here (a converted error), with `body` and no headers.
    pub fn new(status: StatusCode, body: Bytes) -> Self {
        let (mut head, ()) = http::Response::new(()).into_parts();
        head.status = status;
        Self::from_parts(head, UpstreamBody::from_bytes(body))
    }

    pub fn into_parts(self) -> (http::response::Parts, UpstreamBody) {
        (self.head, self.body)
    }

    pub fn status(&self) -> StatusCode {
        self.head.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.head.headers
    }

    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.head.headers
    }

    /// The next chunk of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, TransportError> {
        while let Some(frame) = self.body.frame().await {
            if let Ok(data) = frame?.into_data() {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }

    /// The whole body.
    pub async fn bytes(self) -> Result<Bytes, TransportError> {
        Ok(self.body.collect().await?.to_bytes())
    }

    /// The body's chunks as they come.
    pub fn bytes_stream(self) -> BodyDataStream<UpstreamBody> {
        BodyDataStream::new(self.body)
    }
}

/// Fails the body with a timeout once `deadline` has passed.
struct DeadlineBody {
    inner: UpstreamBody,
    deadline: Pin<Box<Sleep>>,
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = TransportError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TransportError>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(TransportError::new(Failure::Timeout, None))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }
}

fn body_error(error: &(dyn std::error::Error + 'static)) -> TransportError {
    if let Some(failed) = error.downcast_ref::<TransportError>() {
        return failed.clone();
    }
    let failure = if timed_out(error) {
        Failure::Timeout
    } else {
        Failure::Body
    };
    TransportError::new(failure, Some(error))
}

fn from_hyper(error: &hyper_util::client::legacy::Error) -> TransportError {
    let failure = if timed_out(error) {
        Failure::Timeout
    } else if error.is_connect() {
        Failure::Connect
    } else {
        Failure::Request
    };
    TransportError::new(failure, Some(error))
}

fn from_reqwest(error: &reqwest::Error) -> TransportError {
    let failure = if error.is_timeout() {
        Failure::Timeout
    } else if error.is_connect() {
        Failure::Connect
    } else if error.is_body() || error.is_decode() {
        Failure::Body
    } else {
        Failure::Request
    };
    TransportError::new(failure, Some(error))
}

/// An I/O time-out anywhere in the chain (the connect timeout ends as one).
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        next = error.source();
    }
    false
}

#[cfg(test)]
mod tests;
