//! The command line: `serve`, `check-config`, `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{Config, ProcessEnv};
use crate::server::{AppState, Gateway, shutdown_signal};
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "aibridge",
    version,
    about = "AI gateway for coding agents: central provider keys with automatic failover",
    long_about = "aibridge sits between AI clients (Claude Code, Codex, the Anthropic and OpenAI SDKs) \
and the model providers. Clients point their base URL at it; each request is served with a key \
from a central pool that fails over automatically: a rate-limited key cools down for as long as \
the provider asked, a rejected key leaves the rotation until it works again.\n\n\
Configuration comes from an optional TOML file and the AIBRIDGE_* environment variables, the \
environment winning. See README.md for the reference."
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        env = "AIBRIDGE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway until SIGTERM or Ctrl-C.
    ///
    /// Without a config file it runs on built-in defaults plus the environment: listen on
    /// 127.0.0.1:8080 (AIBRIDGE_LISTEN), providers `anthropic` and `openai` with keys from
    /// AIBRIDGE_ANTHROPIC_KEYS / AIBRIDGE_OPENAI_KEYS, key state in memory. On shutdown it stops
    /// accepting connections and lets in-flight requests and streams finish up to
    /// `shutdown_timeout` (default 30s).
    Serve {
        /// TOML configuration file.
        #[arg(long, env = "AIBRIDGE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate the configuration (file and environment) and print a summary.
    ///
    /// Exits non-zero with one line per problem, naming the field at fault. Keys are shown only
    /// as masked hints.
    CheckConfig {
        /// TOML configuration file.
        #[arg(long, env = "AIBRIDGE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run the gateway against a built-in fake upstream whose first key is rate-limited.
    ///
    /// Needs no provider account: it starts a fake Anthropic upstream on a free local port,
    /// configures a pool of two demo keys whose first always answers 429, sends a request itself
    /// to show the failover, and prints ready-to-paste curl commands.
    Demo {
        /// Address for the gateway (default: AIBRIDGE_LISTEN or 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            telemetry::init(cli.log_format);
            let config = Config::load(config.as_deref(), &ProcessEnv)?;
            let gateway = Gateway::bind(AppState::build(config)?).await?;
            gateway.run(shutdown_signal()).await?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => match Config::load(config.as_deref(), &ProcessEnv) {
            Ok(config) => {
                print!("{}", summary(&config));
                Ok(std::process::ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(std::process::ExitCode::from(2))
            }
        },
        Command::Demo { listen } => {
            telemetry::init(cli.log_format);
            crate::demo::run(listen).await.context("demo")?;
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// Human-readable summary of a valid configuration.
pub fn summary(config: &Config) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("configuration is valid\n");
    let _ = writeln!(out, "listen: {}", config.listen);
    let _ = writeln!(
        out,
        "auth: {}",
        match config.auth {
            crate::config::AuthMode::Tokens => "tokens",
            crate::config::AuthMode::None => "none",
        }
    );
    let _ = writeln!(out, "providers:");
    for p in &config.providers {
        let keys: Vec<String> = p.keys.iter().map(|k| k.hint()).collect();
        let _ = writeln!(
            out,
            "  /{name} ({kind}) -> {url}, {n} key(s){list}",
            name = p.name,
            kind = p.kind.as_str(),
            url = p.base_url,
            n = keys.len(),
            list = if keys.is_empty() {
                String::new()
            } else {
                format!(": {}", keys.join(", "))
            },
        );
    }
    out
}
