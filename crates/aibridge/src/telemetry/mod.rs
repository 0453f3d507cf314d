//! What operators see of the gateway: structured logs on stderr (text or JSON), the Prometheus
//! metrics (`metrics`, with `histogram`), each request's tally of both (`tally`), and OpenTelemetry traces over OTLP (`otlp`). Keys and
//! tokens never reach a log line or a metric: only masked hints are ever passed on.

pub mod histogram;
pub mod metrics;
pub mod otlp;
pub mod tally;

use std::io::IsTerminal as _;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Log lines on stderr, as text or JSON.
fn log_layer<S>(format: LogFormat) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    // Colours only for a person at a terminal; files, pipes and NO_COLOR get plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    }
}

/// Logs on stderr with the level filter from `AIBRIDGE_LOG` (or `RUST_LOG`), default `info`;
/// and, when the standard `OTEL_EXPORTER_OTLP_*ENDPOINT` is set, traces exported through
/// `client` (the gateway's general reqwest client). Call inside the runtime; the guard flushes the
/// traces at exit.
pub fn init(
    format: LogFormat,
    client: Option<reqwest::Client>,
) -> Result<Option<otlp::OtlpGuard>, otlp::OtlpError> {
    let settings = match client {
        Some(_) => otlp::OtlpSettings::from_env(&|name| std::env::var(name).ok())?,
        None => None,
    };
    let provider = match (&settings, client) {
        (Some(settings), Some(client)) => Some(otlp::build_provider(
            settings,
            client,
            tokio::runtime::Handle::current(),
        )?),
        _ => None,
    };
    let filter = std::env::var("AIBRIDGE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        // rmcp logs MCP session ids at INFO.
        .unwrap_or_else(|| EnvFilter::new("info,rmcp=warn"));
    let Some(provider) = provider else {
        // Without traces the log filter is the whole subscriber's: spans and events it leaves
        // out are never built (a per-layer filter would still build them for the registry).
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(log_layer(format))
            .try_init();
        return Ok(None);
    };
    // With traces each layer filters for itself: the log level does not decide which spans are
    // exported.
    let _ = tracing_subscriber::registry()
        .with(log_layer(format).with_filter(filter))
        .with(otlp::layer(&provider))
        .try_init();
    let Some(settings) = settings else {
        return Ok(None);
    };
    otlp::set_exporting();
    tracing::info!(
        endpoint = %settings.endpoint,
        service = %settings.service_name,
        "exporting traces over OTLP/HTTP"
    );
    Ok(Some(otlp::OtlpGuard::new(provider, settings.timeout)))
}
