//! The command line: `serve`, `check-config`, `demo`, and the operator's commands for users,
//! tokens, usage and migrations. `anyhow` stops here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use aibridge_keypool::{RedisSettings, RedisStore, RedisTime, SystemClock};
use aibridge_store::{NewToken, Store, UsageFilter};
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, KeyStateBackend, ProcessEnv};
use crate::serve::{Gateway, shutdown_signal};
use crate::state::{AppState, open_store, redact_url};
use crate::telemetry::{self, LogFormat};
use crate::time::now_millis;
use crate::usage_report::{Grouping, parse_point, usage_json, usage_table};

mod demo;

#[derive(Debug, Parser)]
#[command(
    name = "aibridge",
    version,
    about = "AI gateway for coding agents: central provider keys with automatic failover",
    long_about = "aibridge sits between AI clients (Claude Code, Codex, the Anthropic and OpenAI SDKs) \
and the model providers. Clients point their base URL at it; each request is served with a key \
from a central pool that fails over automatically: a rate-limited key cools down for as long as \
the provider asked, a rejected key leaves the rotation until it works again. Every request is \
recorded per user.\n\n\
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

    /// TOML configuration file (every command reads it: the database URL lives there too).
    #[arg(long, global = true, env = "AIBRIDGE_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway until SIGTERM or Ctrl-C.
    ///
    /// Without a config file it runs on built-in defaults plus the environment: listen on
    /// 127.0.0.1:8080 (AIBRIDGE_LISTEN), providers `anthropic` and `openai` with keys from
    /// AIBRIDGE_ANTHROPIC_KEYS / AIBRIDGE_OPENAI_KEYS, recording to the SQLite file aibridge.db,
    /// key state in memory. On shutdown it stops accepting connections, lets in-flight requests
    /// and streams finish up to `shutdown_timeout` (default 30s), and writes what they recorded.
    Serve,
    /// Validate the configuration (file and environment) and print a summary.
    ///
    /// Exits non-zero with one line per problem, naming the field at fault. Keys are shown only
    /// as masked hints.
    CheckConfig,
    /// Run the gateway against a built-in fake upstream whose first key is rate-limited.
    ///
    /// Needs no provider account: it starts a fake Anthropic/OpenAI upstream on a free local
    /// port, configures pools of two demo keys whose first always answers 429, sends requests
    /// itself to show the failover and the recording, and prints ready-to-paste commands.
    Demo {
        /// Address for the gateway (default: AIBRIDGE_LISTEN or 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Apply the database migrations (serve does this at start too).
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage gateway tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print usage totals: requests, failovers and tokens by type.
    Usage(UsageArgs),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Create { name: String },
    /// List users.
    List,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a gateway token for a user. Prints only the token on stdout; it is shown once and
    /// only its hash is stored.
    Create {
        #[arg(long)]
        user: String,
        /// A note to recognise the token by (e.g. the laptop it is on).
        #[arg(long)]
        label: Option<String>,
        /// Allow the token to use the operator API under /api/v1/.
        #[arg(long)]
        admin: bool,
    },
    /// List tokens (ids, users, labels; never the secrets).
    List,
    /// Revoke a token by id. It stops working at once.
    Revoke { id: String },
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Only requests from this long ago on (e.g. 7d, 24h, 30m), or since a date (YYYY-MM-DD).
    #[arg(long)]
    pub since: Option<String>,
    /// Only requests before this point (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this user's requests.
    #[arg(long)]
    pub user: Option<String>,
    /// Group the totals.
    #[arg(long, value_enum, default_value = "user")]
    pub by: Grouping,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let load = || Config::load(cli.config.as_deref(), &ProcessEnv);
    match cli.command {
        Command::Serve => {
            let config = load()?;
            let client = crate::upstream::client::build(&config.upstream)
                .context("building the HTTP client")?;
            let traces = telemetry::init(cli.log_format, Some(client.general().clone()))?;
            let served = async {
                let gateway = Gateway::bind(AppState::build(config, client).await?).await?;
                gateway.run(shutdown_signal()).await?;
                anyhow::Ok(())
            }
            .await;
            if let Some(traces) = traces {
                traces.shutdown().await;
            }
            served?;
        }
        Command::CheckConfig => match load() {
            Ok(config) => {
                print!("{}", summary(&config));
                if let KeyStateBackend::Redis { url, timeout } = &config.key_state {
                    println!("{}", redis_answers(url, *timeout).await);
                }
            }
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::from(2));
            }
        },
        Command::Demo { listen } => {
            telemetry::init(cli.log_format, None)?;
            demo::run(listen).await.context("demo")?;
        }
        Command::Migrate => {
            let config = load()?;
            let store = open_store(&config.database_url).await?;
            println!(
                "database {} is up to date ({})",
                redact_url(&config.database_url),
                store.backend()
            );
        }
        Command::User(command) => {
            let store = open_store(&load()?.database_url).await?;
            match command {
                UserCommand::Create { name } => {
                    let user = store.create_user(&name, now_millis()).await?;
                    println!("created user {}", user.name);
                }
                UserCommand::List => {
                    for user in store.users().await? {
                        println!("{}\tcreated {}", user.name, format_time(user.created_at));
                    }
                }
            }
        }
        Command::Token(command) => {
            let store = open_store(&load()?.database_url).await?;
            token_command(&*store, command).await?;
        }
        Command::Usage(args) => {
            let store = open_store(&load()?.database_url).await?;
            let now = now_millis();
            let filter = UsageFilter {
                since: args
                    .since
                    .as_deref()
                    .map(|s| parse_point(s, now))
                    .transpose()?,
                until: args
                    .until
                    .as_deref()
                    .map(|s| parse_point(s, now))
                    .transpose()?,
                user: args.user,
            };
            let rows = store.usage(&filter, args.by.into()).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&usage_json(&rows))?);
            } else {
                print!("{}", usage_table(&rows, args.by));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn token_command(store: &dyn Store, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { user, label, admin } => {
            let secret = crate::intake::auth::new_token_secret()
                .map_err(|e| anyhow::anyhow!("no randomness from the operating system: {e}"))?;
            let id = format!("tok_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let token = store
                .create_token(NewToken {
                    id,
                    user,
                    label,
                    admin,
                    secret_hash: crate::intake::auth::token_hash(&secret),
                    created_at: now_millis(),
                })
                .await?;
            eprintln!(
                "token {} for user {}{}: shown once, keep it safe",
                token.id,
                token.user,
                if token.admin { " (admin)" } else { "" }
            );
            println!("{secret}");
        }
        TokenCommand::List => {
            println!("ID\tUSER\tADMIN\tLABEL\tCREATED\tLAST USED\tREVOKED");
            for token in store.tokens().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    token.id,
                    token.user,
                    if token.admin { "yes" } else { "no" },
                    token.label.as_deref().unwrap_or("-"),
                    format_time(token.created_at),
                    token
                        .last_used_at
                        .map(format_time)
                        .unwrap_or_else(|| "-".into()),
                    token
                        .revoked_at
                        .map(format_time)
                        .unwrap_or_else(|| "-".into()),
                );
            }
        }
        TokenCommand::Revoke { id } => {
            if store.revoke_token(&id, now_millis()).await? {
                println!("revoked {id}");
            } else {
                anyhow::bail!("no live token with id {id}");
            }
        }
    }
    Ok(())
}

fn format_time(millis: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(millis / 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| millis.to_string())
}

/// Human-readable summary of a valid configuration.
/// Whether the Redis of the key state answers, as `check-config` says it.
async fn redis_answers(url: &str, timeout: std::time::Duration) -> String {
    let settings = RedisSettings {
        timeout,
        time: RedisTime::Server,
        ..RedisSettings::default()
    };
    let answer = match RedisStore::open(url, settings, Arc::new(SystemClock)) {
        Ok(store) => store.answers().await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(()) => "key state: Redis answers".to_string(),
        Err(e) => format!(
            "key state: WARNING: {e}; the gateway would start anyway and serve on each replica's own key state until Redis answers"
        ),
    }
}

pub fn summary(config: &Config) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("configuration is valid\n");
    let _ = writeln!(out, "listen: {}", config.listen);
    let _ = writeln!(
        out,
        "key state: {}",
        match &config.key_state {
            KeyStateBackend::Memory => "memory (this process only)".to_string(),
            KeyStateBackend::Redis { url, timeout } => format!(
                "{} (shared; every call bounded by {})",
                redact_url(url),
                humantime::format_duration(*timeout)
            ),
        }
    );
    let _ = writeln!(out, "database: {}", redact_url(&config.database_url));
    let _ = writeln!(
        out,
        "auth: {}",
        match config.auth {
            crate::config::AuthMode::Tokens => "tokens",
            crate::config::AuthMode::None => "none",
        }
    );
    if let Some(breaker) = &config.circuit_breaker {
        let _ = writeln!(
            out,
            "circuit breaker: opens after {} failures for {}, {} request(s) let through half-open",
            breaker.failure_threshold,
            humantime::format_duration(breaker.open_for),
            breaker.half_open_max_requests
        );
    }
    for server in &config.mcp.servers {
        let headers: Vec<&str> = server
            .headers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        let _ = writeln!(
            out,
            "mcp server: {} -> {}{}",
            server.name,
            crate::mcp::client::redacted_url(&server.url),
            if headers.is_empty() {
                String::new()
            } else {
                format!(" (headers: {}; values not shown)", headers.join(", "))
            }
        );
    }
    if let Some(dir) = &config.apidump_dir {
        let _ = writeln!(out, "apidump: {}", dir.display());
    }
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
