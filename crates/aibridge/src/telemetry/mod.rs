//! What operators see of the gateway: structured logs on stderr (text or JSON), the Prometheus
//! metrics (`metrics`, with `histogram`), and each request's tally of both (`tally`). Keys and
//! tokens never reach a log line or a metric: only masked hints are ever passed on.

pub mod histogram;
pub mod metrics;
pub mod tally;

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Level filter from `AIBRIDGE_LOG` (or `RUST_LOG`), default `info`.
pub fn init(format: LogFormat) {
    let filter = std::env::var("AIBRIDGE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // Colours only for a person at a terminal; files, pipes and NO_COLOR get plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}
