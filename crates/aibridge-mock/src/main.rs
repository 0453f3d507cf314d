//! `aibridge-mock [--listen ADDR]`: serves the mock upstream until SIGTERM or Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;

use aibridge_mock::MockUpstream;
use clap::Parser;

/// Fake Anthropic/OpenAI upstream for tests and benchmarks.
#[derive(Debug, Parser)]
#[command(name = "aibridge-mock", version, about)]
struct Args {
    /// Address to listen on (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mock = MockUpstream::start_on(args.listen).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "aibridge-mock listening on {}", mock.url())?;
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
