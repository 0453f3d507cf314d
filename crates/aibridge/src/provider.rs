//! Provider instances: a name (the route prefix), an API type, an upstream base URL and, when
//! central keys are configured, the key pool that pays for its requests.

use std::sync::Arc;

use aibridge_keypool::KeyPool;
use aibridge_protocol::Dialect;

/// The API family an instance speaks; decides routes, auth header and error dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    Anthropic,
    OpenAi,
}

impl ProviderKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "anthropic" => Some(Self::Anthropic),
            "openai" => Some(Self::OpenAi),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::OpenAi => "openai",
        }
    }

    pub fn default_base_url(self) -> &'static str {
        match self {
            Self::Anthropic => crate::config::DEFAULT_ANTHROPIC_BASE_URL,
            Self::OpenAi => crate::config::DEFAULT_OPENAI_BASE_URL,
        }
    }

    /// `AIBRIDGE_<PREFIX>_KEYS` / `AIBRIDGE_<PREFIX>_BASE_URL`.
    pub fn env_prefix(self) -> &'static str {
        match self {
            Self::Anthropic => "ANTHROPIC",
            Self::OpenAi => "OPENAI",
        }
    }

    pub fn dialect(self) -> Dialect {
        match self {
            Self::Anthropic => Dialect::Anthropic,
            Self::OpenAi => Dialect::OpenAi,
        }
    }

    /// Path prefix clients add after `/<name>`: OpenAI base URLs end in `/v1` on both sides
    /// (`/openai/v1/chat/completions` → `https://api.openai.com/v1/chat/completions`).
    pub fn client_path_prefix(self) -> &'static str {
        match self {
            Self::Anthropic => "",
            Self::OpenAi => "/v1",
        }
    }

    /// The cheap authenticated call used to re-validate a disabled key.
    pub fn probe_path(self) -> &'static str {
        match self {
            Self::Anthropic => "/v1/models?limit=1",
            Self::OpenAi => "/models",
        }
    }
}

/// One configured upstream.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// Without a trailing slash.
    pub base_url: String,
    /// `None` when no central keys are configured: only BYOK requests can be served.
    pub pool: Option<Arc<KeyPool>>,
}

impl Provider {
    /// Upstream URL for a path relative to the base URL, keeping the client's query string.
    pub fn upstream_url(&self, path: &str, query: Option<&str>) -> String {
        match query {
            Some(q) if !q.is_empty() => format!("{}{path}?{q}", self.base_url),
            _ => format!("{}{path}", self.base_url),
        }
    }
}
