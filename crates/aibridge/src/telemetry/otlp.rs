//! OpenTelemetry traces over OTLP/HTTP (protobuf), plus W3C trace-context propagation.
//!
//! Off unless an OTLP endpoint is configured. The exporter sends through the gateway's own
//! `reqwest` 0.12 client (no second HTTP/TLS stack): the SDK's `BatchSpanProcessor` runs its
//! exports on a dedicated OS thread under `futures_executor::block_on`, where no Tokio runtime
//! exists, so [`TokioHttpClient`] spawns each POST onto the gateway's runtime and awaits the
//! `JoinHandle` (a plain future that any executor can poll). Spans are handed to that thread
//! through a bounded queue with `try_send`: a full queue drops spans, and a slow or unreachable
//! collector costs the batch thread's time and an error log line, never a request's.

use std::time::Duration;

use bytes::Bytes;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_http::{HeaderExtractor, HeaderInjector, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

/// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "aibridge";
/// Per export attempt (and the retry budget of one batch). Short, because a batch that cannot
/// be delivered in a few seconds is better dropped than queued behind.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Collector responses are tiny (`ExportTraceServiceResponse`); anything larger is refused.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Crates whose spans must never be exported: the exporter's own HTTP stack would otherwise
/// trace its exports and feed itself (h2 and hyper emit spans at debug/trace level).
const NEVER_EXPORTED: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "reqwest",
    "rustls",
    "tower",
    "tokio",
    "runtime",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "opentelemetry_http",
];

/// Why the OTLP settings or exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("{var}={value:?} is not an http:// or https:// URL")]
    InvalidEndpoint { var: &'static str, value: String },
    #[error("{var}={value:?} is not supported: aibridge exports traces as http/protobuf only")]
    UnsupportedProtocol { var: &'static str, value: String },
    #[error("{var}={value:?} is not a whole number of milliseconds")]
    InvalidTimeout { var: &'static str, value: String },
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// What the trace exporter needs, read from the standard `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// Full URL the spans are POSTed to, e.g. `http://collector:4318/v1/traces`.
    pub endpoint: String,
    pub service_name: String,
    pub timeout: Duration,
}

impl OtlpSettings {
    /// `Ok(None)` when tracing is not configured (no endpoint variable, or disabled with
    /// `OTEL_SDK_DISABLED=true` / `OTEL_TRACES_EXPORTER=none`). Takes a lookup function rather
    /// than reading the process environment so tests need not touch it. Empty values count as
    /// unset, as the OpenTelemetry spec asks.
    ///
    /// The exporter is then built with these values set explicitly, which take precedence over
    /// its own reading of the same variables. It still reads `OTEL_EXPORTER_OTLP_HEADERS` (and
    /// `..._TRACES_HEADERS`) and `OTEL_EXPORTER_OTLP_COMPRESSION` from the process itself; the SDK
    /// reads `OTEL_BSP_*`, `OTEL_TRACES_SAMPLER*` and `OTEL_RESOURCE_ATTRIBUTES`.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, OtlpError> {
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || get("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }

        let endpoint = if let Some(url) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            // The signal-specific variable is used exactly as given.
            check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)?
        } else if let Some(base) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            check_url("OTEL_EXPORTER_OTLP_ENDPOINT", base.clone())?;
            format!("{}/v1/traces", base.trim_end_matches('/'))
        } else {
            return Ok(None);
        };

        for var in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(value) = get(var) {
                if value != "http/protobuf" {
                    return Err(OtlpError::UnsupportedProtocol { var, value });
                }
                break; // the signal-specific variable wins
            }
        }

        let mut timeout = DEFAULT_EXPORT_TIMEOUT;
        for var in [
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ] {
            if let Some(value) = get(var) {
                let millis = value
                    .parse::<u64>()
                    .map_err(|_| OtlpError::InvalidTimeout { var, value })?;
                timeout = Duration::from_millis(millis.max(1));
                break;
            }
        }

        // Spec precedence: OTEL_SERVICE_NAME, then service.name in OTEL_RESOURCE_ATTRIBUTES.
        let service_name = get("OTEL_SERVICE_NAME")
            .or_else(|| get("OTEL_RESOURCE_ATTRIBUTES").and_then(|a| service_name_in(&a)))
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());

        Ok(Some(OtlpSettings {
            endpoint,
            service_name,
            timeout,
        }))
    }
}

fn check_url(var: &'static str, value: String) -> Result<String, OtlpError> {
    let ok = value.parse::<http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
    });
    if ok {
        Ok(value)
    } else {
        Err(OtlpError::InvalidEndpoint { var, value })
    }
}

/// `service.name` from a `key=value,key=value` list (values may be percent-encoded; a name
/// needing that is unusual enough to take verbatim).
fn service_name_in(attributes: &str) -> Option<String> {
    attributes.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == "service.name" && !value.trim().is_empty()).then(|| value.trim().to_owned())
    })
}

/// [`HttpClient`] for the OTLP exporter over the gateway's `reqwest::Client`.
///
/// `send_bytes` is polled by the batch processor's own thread, outside any Tokio runtime, where
/// reqwest cannot run; the request is therefore spawned onto `runtime` and only its
/// `JoinHandle` is awaited there. If the runtime has shut down the task is cancelled and the
/// export fails with an error instead of hanging. The timeout is enforced here because the
/// exporter's own timeout only bounds retries, not an attempt in flight.
#[derive(Debug, Clone)]
pub struct TokioHttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl TokioHttpClient {
    pub fn new(
        client: reqwest::Client,
        runtime: tokio::runtime::Handle,
        timeout: Duration,
    ) -> Self {
        TokioHttpClient {
            client,
            runtime,
            timeout,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ExportHttpError {
    #[error("export task did not complete: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("collector response larger than {MAX_RESPONSE_BYTES} bytes")]
    ResponseTooLarge,
    #[error("building the collector response: {0}")]
    Response(#[from] http::Error),
}

#[async_trait::async_trait]
impl HttpClient for TokioHttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let mut request = reqwest::Request::try_from(request)?;
        *request.timeout_mut() = Some(self.timeout);
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let mut response = client.execute(request).await?;
            let mut reply = http::Response::builder()
                .status(response.status())
                .version(response.version());
            if let Some(headers) = reply.headers_mut() {
                *headers = std::mem::take(response.headers_mut());
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(HttpError::from(ExportHttpError::ResponseTooLarge));
                }
                body.extend_from_slice(&chunk);
            }
            reply
                .body(Bytes::from(body))
                .map_err(|e| HttpError::from(ExportHttpError::Response(e)))
        });
        task.await.map_err(ExportHttpError::Task)?
    }
}

/// A tracer provider exporting in batches to `settings.endpoint` through `client`, which must be
/// called from within (or given the handle of) the Tokio runtime that will run the exports.
pub fn build_provider(
    settings: &OtlpSettings,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
) -> Result<SdkTracerProvider, OtlpError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(TokioHttpClient::new(client, runtime, settings.timeout))
        .with_endpoint(settings.endpoint.clone())
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(settings.timeout)
        .build()?;
    // `Resource::builder()` keeps the SDK's telemetry.sdk.* and OTEL_RESOURCE_ATTRIBUTES.
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The `tracing` layer that turns spans into OpenTelemetry spans of `provider`.
///
/// It carries its own per-layer filter (INFO and up, minus the HTTP stack and the OTel crates),
/// so exported spans do not depend on the log level chosen with `AIBRIDGE_LOG`, and the
/// exporter's own HTTP calls are never traced.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync + 'static,
{
    let scope = InstrumentationScope::builder("aibridge")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    // The gateway's own spans down to DEBUG: the per-attempt spans are DEBUG so that logs at
    // INFO do not format them, yet they are exported.
    let filter = NEVER_EXPORTED.iter().fold(
        Targets::new()
            .with_default(LevelFilter::INFO)
            .with_target("aibridge", LevelFilter::DEBUG),
        |targets, target| targets.with_target(*target, LevelFilter::OFF),
    );
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer_with_scope(scope))
        .with_threads(false)
        .with_filter(filter)
}

/// Keeps the provider so it can be flushed at exit. The global subscriber holds the tracer (and
/// through it the provider) forever, so dropping this guard does nothing: call
/// [`OtlpGuard::shutdown`].
#[must_use = "call shutdown() at exit, or buffered spans are lost"]
#[derive(Debug)]
pub struct OtlpGuard {
    provider: SdkTracerProvider,
    timeout: Duration,
}

impl OtlpGuard {
    pub fn new(provider: SdkTracerProvider, export_timeout: Duration) -> Self {
        OtlpGuard {
            provider,
            timeout: export_timeout,
        }
    }

    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Exports what is buffered and stops the batch thread, waiting at most one export timeout
    /// plus a second. Runs the blocking SDK call on the blocking pool, so the runtime stays free
    /// to run the export it triggers (calling `SdkTracerProvider::shutdown` directly on a
    /// current-thread runtime would deadlock until its timeout). Must run before the runtime is
    /// dropped.
    pub async fn shutdown(self) {
        let OtlpGuard { provider, timeout } = self;
        let budget = timeout + Duration::from_secs(1);
        let blocking = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(budget));
        match tokio::time::timeout(budget + Duration::from_millis(500), blocking).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "OTLP trace shutdown incomplete"),
            Ok(Err(error)) => tracing::warn!(%error, "OTLP trace shutdown task failed"),
            Err(_) => tracing::warn!("OTLP trace shutdown timed out"),
        }
    }
}

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans are exported: without it, requests skip reading and writing trace context.
pub fn is_exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

pub(super) fn set_exporting() {
    EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The OpenTelemetry context a client sent in `traceparent`/`tracestate` (W3C trace context).
/// Extracted against an empty context, so with no or a malformed header the result carries no
/// span (check with [`has_remote_parent`]) rather than whatever context is current.
pub fn extract(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract_with_context(&Context::new(), &HeaderExtractor(headers))
}

/// Whether `cx` (from [`extract`]) holds a valid remote span to parent on.
pub fn has_remote_parent(cx: &Context) -> bool {
    cx.span().span_context().is_valid()
}

/// Makes the client's trace (if it sent one) the parent of `span`. Must be called right after
/// the span is created: before it is entered, before a child is created under it and before
/// [`inject`] — any of those starts the OTel span, after which its parent is fixed. A no-op when
/// no OTel layer is installed or the span is disabled.
pub fn set_parent_from(span: &tracing::Span, headers: &http::HeaderMap) {
    if !is_exporting() {
        return;
    }
    let cx = extract(headers);
    if has_remote_parent(&cx) {
        // Err only means: no OTel layer, span filtered out, or already started.
        let _ = span.set_parent(cx);
    }
}

/// Writes `traceparent` (and `tracestate` when non-empty) for `span` into outgoing `headers`,
/// replacing any the client sent. Writes nothing when `span` has no OTel span (tracing off), so
/// a forwarded client header then passes through unchanged.
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    if !is_exporting() {
        return;
    }
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<OtlpSettings>, OtlpError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtlpSettings::from_env(&|name| vars.get(name).cloned())
    }

    #[test]
    fn unset_means_off() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(settings(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]).unwrap(),
            None
        );
    }

    #[test]
    fn generic_endpoint_gets_the_traces_path() {
        let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")])
            .unwrap()
            .unwrap();
        assert_eq!(s.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(s.service_name, "aibridge");
        assert_eq!(s.timeout, DEFAULT_EXPORT_TIMEOUT);

        let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c.example/otlp/")])
            .unwrap()
            .unwrap();
        assert_eq!(s.endpoint, "https://c.example/otlp/v1/traces");
    }

    #[test]
    fn traces_endpoint_is_used_as_is_and_wins() {
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:9999/custom",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://traces:9999/custom");
    }

    #[test]
    fn bad_endpoints_are_errors() {
        for bad in ["collector:4318", "ftp://x/", "not a url", "http://"] {
            let err = settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", bad)]).unwrap_err();
            assert!(
                matches!(err, OtlpError::InvalidEndpoint { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn service_name_precedence() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let name = |vars: &[(&str, &str)]| {
            let mut all = vec![base];
            all.extend_from_slice(vars);
            settings(&all).unwrap().unwrap().service_name
        };
        assert_eq!(name(&[]), "aibridge");
        assert_eq!(
            name(&[(
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod, service.name=gw"
            )]),
            "gw"
        );
        assert_eq!(
            name(&[
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=gw"),
                ("OTEL_SERVICE_NAME", "edge")
            ]),
            "edge"
        );
    }

    #[test]
    fn disabled_switches() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert_eq!(
            settings(&[base, ("OTEL_SDK_DISABLED", "TRUE")]).unwrap(),
            None
        );
        assert_eq!(
            settings(&[base, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(),
            None
        );
        assert!(
            settings(&[base, ("OTEL_SDK_DISABLED", "false")])
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn protocol_must_be_http_protobuf() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert!(
            settings(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])
                .unwrap()
                .is_some()
        );
        let err = settings(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert!(matches!(err, OtlpError::UnsupportedProtocol { .. }));
        // The traces-specific variable wins over the generic one.
        assert!(
            settings(&[
                base,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ])
            .unwrap()
            .is_some()
        );
    }

    #[test]
    fn timeout_in_milliseconds() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let s = settings(&[base, ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")])
            .unwrap()
            .unwrap();
        assert_eq!(s.timeout, Duration::from_millis(2500));
        let s = settings(&[
            base,
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.timeout, Duration::from_millis(700));
        let err = settings(&[base, ("OTEL_EXPORTER_OTLP_TIMEOUT", "5s")]).unwrap_err();
        assert!(matches!(err, OtlpError::InvalidTimeout { .. }));
    }

    #[test]
    fn extract_without_header_has_no_parent() {
        let headers = http::HeaderMap::new();
        assert!(!has_remote_parent(&extract(&headers)));
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_static("garbage"));
        assert!(!has_remote_parent(&extract(&headers)));
    }

    #[test]
    fn extract_reads_traceparent() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        );
        let cx = extract(&headers);
        assert!(has_remote_parent(&cx));
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(
            sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
        assert!(sc.is_remote() && sc.is_sampled());
    }

    #[test]
    fn inject_without_otel_layer_writes_nothing() {
        let span = tracing::info_span!("no subscriber");
        let mut headers = http::HeaderMap::new();
        inject(&span, &mut headers);
        assert!(headers.is_empty());
    }
}
