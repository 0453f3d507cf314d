//! `aibridge-mock [--listen ADDR] [load mode flags]`: serves the mock upstream until SIGTERM or
//! Ctrl-C.
//!
//! Load mode (for `bench/run.sh`): `--latency-ms`, `--stream-events`, `--event-delay-ms` set
//! server-wide defaults ([`aibridge_mock::MockOptions`]), `--no-record` keeps no request history
//! (flat memory under load), `--workers` sizes the runtime. `--mcp-listen ADDR` also serves a
//! real MCP server (tools `add`, `echo`, `fail`, `secret_lookup`, `sleep`).

use std::io::Write;
use std::net::SocketAddr;

use aibridge_mock::{MockOptions, MockUpstream};
use clap::Parser;

/// Fake Anthropic/OpenAI upstream for tests and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "aibridge-mock", version, about)]
struct Args {
    /// Address to listen on (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Fixed delay before every response's headers, in milliseconds (added to a scripted
    /// reply's own delay).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Text delta events per streaming success (0 = 5), unless a script says otherwise.
    #[arg(long, default_value_t = 0)]
    stream_events: usize,
    /// Pause between consecutive SSE events, in milliseconds, unless a script says otherwise.
    #[arg(long, default_value_t = 0)]
    event_delay_ms: u64,
    /// Keep no history of requests (`/_mock/requests` stays empty; `/_mock/stats` still counts).
    #[arg(long)]
    no_record: bool,
    /// Runtime worker threads (default: one per CPU the process may run on).
    #[arg(long)]
    workers: Option<usize>,
    /// Also serve a real MCP server (streamable HTTP, at `/mcp`) on this address.
    #[arg(long)]
    mcp_listen: Option<SocketAddr>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = args.workers {
        runtime.worker_threads(n.max(1));
    }
    runtime.build()?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let options = MockOptions::default()
        .latency_ms(args.latency_ms)
        .stream_events(args.stream_events)
        .event_delay_ms(args.event_delay_ms)
        .record(!args.no_record);
    let mock = MockUpstream::start_with(args.listen, options).await?;
    let mcp = match args.mcp_listen {
        Some(addr) => Some(
            aibridge_mock::mcp::McpMock::new(aibridge_mock::mcp::McpMockOptions {
                noop_tools: 0,
                ..Default::default()
            })
            .start_on(addr)
            .await?,
        ),
        None => None,
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "aibridge-mock listening on {}", mock.url())?;
        if let Some(mcp) = &mcp {
            writeln!(out, "aibridge-mock MCP server on {}", mcp.url())?;
        }
        out.flush()?;
    }
    wait_for_signal().await?;
    mock.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
