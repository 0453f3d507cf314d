//! Provider instances: a name (the route prefix), an API type, an upstream base URL and, when
//! central keys are configured, the key pool that pays for its requests.

use std::sync::Arc;

use aibridge_keypool::{ApiKey, DisableReason, KeyPool, PoolKey, ProbeOutcome, Verdict};
use aibridge_protocol::bedrock::{self as bedrock_wire, ExceptionClass};
use aibridge_protocol::{Api, Dialect, RequestSummary};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use reqwest::Url;

use crate::bedrock::BedrockSettings;
use crate::error::GatewayError;

use crate::single_flight::SingleFlight;
use crate::telemetry::metrics::ProviderMetrics;

pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_COPILOT_BASE_URL: &str = "https://api.individual.githubcopilot.com";

/// The API family an instance speaks; decides routes, auth header and error dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    Anthropic,
    OpenAi,
    /// GitHub Copilot's OpenAI-compatible API: always the user's own Copilot token, no pool.
    Copilot,
    /// AWS Bedrock's InvokeModel behind the Anthropic Messages API, with a pool of AWS
    /// credentials (`crate::bedrock`).
    Bedrock,
}

impl ProviderKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "anthropic" => Some(Self::Anthropic),
            "openai" => Some(Self::OpenAi),
            "copilot" => Some(Self::Copilot),
            "bedrock" => Some(Self::Bedrock),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::OpenAi => "openai",
            Self::Copilot => "copilot",
            Self::Bedrock => "bedrock",
        }
    }

    /// `gen_ai.provider.name` in traces (OpenTelemetry's well-known values where one exists).
    pub fn gen_ai_name(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::OpenAi => "openai",
            Self::Copilot => "github.copilot",
            Self::Bedrock => "aws.bedrock",
        }
    }

    pub fn default_base_url(self) -> &'static str {
        match self {
            Self::Anthropic => DEFAULT_ANTHROPIC_BASE_URL,
            Self::OpenAi => DEFAULT_OPENAI_BASE_URL,
            Self::Copilot => DEFAULT_COPILOT_BASE_URL,
            // Made from the region (`BedrockSettings::default_base_url`).
            Self::Bedrock => "",
        }
    }

    /// `AIBRIDGE_<PREFIX>_KEYS` / `AIBRIDGE_<PREFIX>_BASE_URL`, for the types the contract names.
    pub fn env_prefix(self) -> Option<&'static str> {
        match self {
            Self::Anthropic => Some("ANTHROPIC"),
            Self::OpenAi => Some("OPENAI"),
            Self::Copilot | Self::Bedrock => None,
        }
    }

    /// Whether central keys can pay for this type's requests.
    pub fn has_key_pool(self) -> bool {
        !matches!(self, Self::Copilot)
    }

    pub fn dialect(self) -> Dialect {
        match self {
            Self::Anthropic | Self::Bedrock => Dialect::Anthropic,
            Self::OpenAi | Self::Copilot => Dialect::OpenAi,
        }
    }

    /// Path prefix clients add after `/<name>`: OpenAI base URLs end in `/v1` on both sides
    /// (`/openai/v1/chat/completions` → `https://api.openai.com/v1/chat/completions`).
    pub fn client_path_prefix(self) -> &'static str {
        match self {
            Self::Anthropic | Self::Copilot | Self::Bedrock => "",
            Self::OpenAi => "/v1",
        }
    }

    /// The bridged APIs this type serves.
    pub fn apis(self) -> &'static [Api] {
        match self {
            Self::Anthropic | Self::Bedrock => &[Api::AnthropicMessages],
            Self::OpenAi | Self::Copilot => &[Api::OpenAiChat, Api::OpenAiResponses],
        }
    }

    /// The bridged API served at `upstream_path` (the client's path after `/<name>` and the
    /// client path prefix), if any.
    pub fn bridged_api(self, upstream_path: &str) -> Option<Api> {
        self.apis()
            .iter()
            .copied()
            .find(|api| api.path() == upstream_path)
    }

    /// Puts a pool key where the provider expects it: Anthropic `x-api-key`, OpenAI
    /// `Authorization: Bearer`.
    pub fn attach_key(self, headers: &mut HeaderMap, key: &ApiKey) {
        if let Some((name, value)) = self.key_header(key) {
            headers.insert(name, value);
        }
    }

    /// The header that carries `key` upstream (marked sensitive); `None` only for a key that
    /// is no header value, which config load refuses.
    pub fn key_header(self, key: &ApiKey) -> Option<(HeaderName, HeaderValue)> {
        let (name, value) = match self {
            Self::Anthropic => (
                HeaderName::from_static("x-api-key"),
                key.expose().to_string(),
            ),
            // Bedrock's access keys are signed for (`Provider::authorize`); an API key is a
            // bearer token.
            Self::OpenAi | Self::Copilot | Self::Bedrock => {
                (header::AUTHORIZATION, format!("Bearer {}", key.expose()))
            }
        };
        let mut value = HeaderValue::from_str(&value).ok()?;
        value.set_sensitive(true);
        Some((name, value))
    }

    /// Whether `upstream_path` may be reverse-proxied. An allow-list, because a central key may
    /// have privileges (files, batches, fine-tuning, admin) that users must not reach through it.
    pub fn passthrough_allowed(self, upstream_path: &str) -> bool {
        self.passthrough_route(upstream_path).is_some()
    }

    /// The allow-list entry that lets `upstream_path` through: an exact path, or a subtree
    /// written `prefix/*`. It is the request's `route` in metrics, so that ids in paths do not
    /// make a series each.
    pub fn passthrough_route(self, upstream_path: &str) -> Option<&'static str> {
        if !is_plain_path(upstream_path) {
            return None;
        }
        self.passthrough_routes()
            .iter()
            .copied()
            .find(|route| match route.strip_suffix('*') {
                Some(prefix) => {
                    upstream_path.len() > prefix.len() && upstream_path.starts_with(prefix)
                }
                None => upstream_path == *route,
            })
    }

    fn passthrough_routes(self) -> &'static [&'static str] {
        match self {
            Self::Anthropic => &["/v1/models", "/v1/messages/count_tokens", "/v1/models/*"],
            Self::OpenAi => &[
                "/models",
                "/conversations",
                "/models/*",
                "/responses/*",
                "/conversations/*",
            ],
            Self::Copilot => &[
                "/models",
                "/models/*",
                "/agents/*",
                "/mcp/*",
                "/.well-known/*",
            ],
            // Not reverse-proxied: answered or translated by the gateway (`ingress/bedrock.rs`).
            Self::Bedrock => &["/v1/models", "/v1/messages/count_tokens"],
        }
    }

    /// Every route this type serves, bridged then passthrough: the `route` label's values.
    pub fn routes(self) -> Vec<&'static str> {
        self.apis()
            .iter()
            .map(|api| api.path())
            .chain(self.passthrough_routes().iter().copied())
            .collect()
    }

    /// Where the model list is (relative to the base URL): a pool request to it without
    /// request-scoped headers is itself the key's check.
    pub fn models_path(self) -> &'static str {
        match self {
            Self::Anthropic | Self::Bedrock => "/v1/models",
            Self::OpenAi | Self::Copilot => "/models",
        }
    }

    /// The cheap authenticated call used to re-validate a disabled key.
    pub fn probe_path(self) -> &'static str {
        match self {
            Self::Anthropic => "/v1/models?limit=1",
            Self::OpenAi | Self::Copilot => "/models",
            // On the control plane's path; the runtime endpoint of a test or VPC serves it too.
            Self::Bedrock => "/foundation-models",
        }
    }
}

/// The OpenAI organization and project a pool key belongs to: sent with the key on every call,
/// in place of whatever the client asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyScope {
    pub organization: Option<String>,
    pub project: Option<String>,
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
    /// Confirmations of a 401/403 in flight, one per key (by its index in the pool).
    pub key_checks: SingleFlight<usize, ProbeOutcome>,
    /// Each pool key's scope, by its index.
    pub key_scopes: Vec<KeyScope>,
    /// Each pool key's header, by its index, made once (not formatted and validated again on
    /// every attempt).
    pub key_headers: Vec<Option<(HeaderName, HeaderValue)>>,
    /// Its series in `/metrics`.
    pub metrics: Arc<ProviderMetrics>,
    /// `type = "bedrock"`: region, models and the credential behind each pool key.
    pub bedrock: Option<Arc<BedrockSettings>>,
    /// The upstream URL of each of its routes, parsed once: a URL parse is a measurable part
    /// of a request's cost.
    pub route_urls: Vec<(&'static str, Url)>,
}

/// What an error answer means for the pool key that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    pub verdict: Verdict,
    /// The answer alone names the key as the fault (a Bedrock credential refused by its
    /// exception's name): no check of the key is needed before it is disabled.
    pub named: bool,
}

impl Provider {
    /// Puts a pool key on a request about to be sent as `method url` with `body`: where the
    /// provider expects it, with its scope; a Bedrock access key signs the request.
    pub fn authorize(
        &self,
        headers: &mut HeaderMap,
        key: &PoolKey,
        method: &Method,
        url: &str,
        body: &[u8],
    ) -> Result<(), GatewayError> {
        match self
            .bedrock
            .as_ref()
            .and_then(|bedrock| Some((bedrock, bedrock.credentials.get(key.index)?)))
        {
            Some((bedrock, credential)) => Ok(bedrock.authorize(
                credential,
                method,
                url,
                headers,
                body,
                std::time::SystemTime::now(),
            )?),
            None => {
                self.attach_key(headers, key);
                Ok(())
            }
        }
    }

    /// What the error answer `status` + `headers` means for the key that got it. Bedrock says
    /// it by the exception's name: throttling and quotas cool the credential (the pool's
    /// default cooldown without a hint), a refused credential is named as such, anything else
    /// (a model not enabled, a model not ready, a bad request) is relayed.
    pub fn judge(&self, pool: &KeyPool, status: StatusCode, headers: &HeaderMap) -> Judged {
        let exception = match self.kind {
            ProviderKind::Bedrock => bedrock_wire::exception_name(headers),
            _ => None,
        };
        let Some(exception) = exception else {
            return Judged {
                verdict: pool.judge(status, headers),
                named: false,
            };
        };
        match bedrock_wire::classify_exception(exception) {
            ExceptionClass::Throttled => Judged {
                verdict: pool.judge(StatusCode::TOO_MANY_REQUESTS, headers),
                named: false,
            },
            ExceptionClass::CredentialRefused => Judged {
                verdict: Verdict::Rejected {
                    reason: if status == StatusCode::UNAUTHORIZED {
                        DisableReason::Unauthorized
                    } else {
                        DisableReason::Forbidden
                    },
                },
                named: true,
            },
            ExceptionClass::Other => Judged {
                verdict: Verdict::NotKeySpecific,
                named: false,
            },
        }
    }

    /// Puts a pool key, and the scope it belongs to, where the provider expects them.
    pub fn attach_key(&self, headers: &mut HeaderMap, key: &PoolKey) {
        match self.key_headers.get(key.index) {
            Some(Some((name, value))) => {
                headers.insert(name.clone(), value.clone());
            }
            _ => self.kind.attach_key(headers, &key.secret),
        }
        let Some(scope) = self.key_scopes.get(key.index) else {
            return;
        };
        for (name, value) in [
            ("openai-organization", &scope.organization),
            ("openai-project", &scope.project),
        ] {
            // Checked at config load: a valid header value.
            if let Some(value) = value
                && let Ok(value) = HeaderValue::from_str(value)
            {
                headers.insert(name, value);
            }
        }
    }

    /// Where a bridged request goes and what it carries: the API's path on the base URL with
    /// the client's body; for Bedrock, the mapped model's InvokeModel path with the body Bedrock
    /// takes (the client's `anthropic-beta` flags moved into it).
    pub fn bridged_target(
        &self,
        api: Api,
        summary: &RequestSummary,
        body: Bytes,
        client_headers: &HeaderMap,
        query: Option<&str>,
        pool_paid: bool,
    ) -> Result<(Box<Url>, Bytes), GatewayError> {
        let Some(bedrock) = &self.bedrock else {
            return Ok((self.upstream_url(api.path(), query)?, body));
        };
        let (model, body) =
            self.bedrock_invoke(bedrock, &summary.model, &body, client_headers, pool_paid)?;
        let path = bedrock_wire::invoke_path(model, summary.stream);
        Ok((self.upstream_url(&path, None)?, Bytes::from(body)))
    }

    /// What every Bedrock call needs before its URL: a pool request (the credentials are the
    /// gateway's), the Bedrock model id of the client's `model`, and the InvokeModel body.
    pub fn bedrock_invoke<'a>(
        &self,
        bedrock: &'a BedrockSettings,
        client_model: &str,
        body: &[u8],
        client_headers: &HeaderMap,
        pool_paid: bool,
    ) -> Result<(&'a str, Vec<u8>), GatewayError> {
        if !pool_paid {
            return Err(GatewayError::NotImplemented(
                "bedrock providers serve pool requests only: their credentials are the gateway's",
            ));
        }
        let model = bedrock
            .model_id(client_model)
            .ok_or_else(|| GatewayError::UnmappedModel {
                provider: self.name.clone(),
                model: client_model.to_string(),
            })?;
        Ok((model, bedrock_wire::invoke_body(body, client_headers)?))
    }

    /// The headers of a bridged request as this provider takes them: Bedrock's carry no
    /// `anthropic-*` header (the version and the flags are in the body).
    pub fn bridged_headers(&self, mut headers: HeaderMap) -> HeaderMap {
        if self.bedrock.is_some() {
            headers.remove("anthropic-beta");
            headers.remove("anthropic-version");
        }
        headers
    }

    /// Upstream URL for a path relative to the base URL, keeping the client's query string.
    /// Boxed: it is held in every request's future, which is moved whole into a box, and a
    /// `Url` is several times the size of a pointer.
    pub fn upstream_url(&self, path: &str, query: Option<&str>) -> Result<Box<Url>, GatewayError> {
        let known = self
            .route_urls
            .iter()
            .find_map(|(route, url)| (*route == path).then(|| url.clone()));
        let mut url = match known {
            Some(url) => url,
            None => Url::parse(&format!("{}{path}", self.base_url))
                .map_err(|_| GatewayError::BadPath(path.to_string()))?,
        };
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            url.set_query(Some(query));
        }
        Ok(Box::new(url))
    }

    /// Its routes' upstream URLs (those that parse: the base URL was checked at start).
    pub fn parse_route_urls(base_url: &str, routes: &[&'static str]) -> Vec<(&'static str, Url)> {
        routes
            .iter()
            .filter(|route| !route.ends_with('*'))
            .filter_map(|route| Some((*route, Url::parse(&format!("{base_url}{route}")).ok()?)))
            .collect()
    }
}

/// URL parsers and upstream servers resolve `.`/`..` segments (also percent-encoded), and some
/// take `\`, `%5C` or `%2F` for `/`, so a path such as `/v1/models/..%2F..%2Ffiles` could leave
/// the allowed subtree once the upstream reads it. Such paths are refused outright.
fn is_plain_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    !lower.contains('\\')
        && !lower.contains("%2f")
        && !lower.contains("%5c")
        && lower.split('/').all(|segment| {
            let decoded = segment.replace("%2e", ".");
            decoded != "." && decoded != ".."
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_the_parsed_base_and_path_with_the_clients_query() {
        let base = "http://127.0.0.1:9/api";
        let kind = ProviderKind::Anthropic;
        let metrics = crate::telemetry::metrics::Metrics::new(&["Unknown"]);
        let provider = Provider {
            name: "anthropic".into(),
            kind,
            base_url: base.into(),
            pool: None,
            key_checks: Default::default(),
            key_scopes: Vec::new(),
            key_headers: Vec::new(),
            metrics: Arc::new(metrics.provider("anthropic", &kind.routes(), &[], false)),
            bedrock: None,
            route_urls: Provider::parse_route_urls(base, &kind.routes()),
        };
        assert!(
            provider
                .route_urls
                .iter()
                .all(|(route, _)| !route.contains('*')),
            "wildcard routes are not URLs"
        );
        for (path, query) in [
            ("/v1/messages", None),
            ("/v1/messages", Some("beta=true")),
            ("/v1/messages", Some("")),
            ("/v1/models/claude x", Some("a=b c&d=é")),
        ] {
            let whole = match query {
                Some(q) if !q.is_empty() => format!("{base}{path}?{q}"),
                _ => format!("{base}{path}"),
            };
            assert_eq!(
                *provider.upstream_url(path, query).unwrap(),
                Url::parse(&whole).unwrap(),
                "{path} {query:?}"
            );
        }
    }

    #[test]
    fn passthrough_allow_list() {
        let anthropic = ProviderKind::Anthropic;
        assert!(anthropic.passthrough_allowed("/v1/models"));
        assert!(anthropic.passthrough_allowed("/v1/models/claude-sonnet-4-5"));
        assert!(anthropic.passthrough_allowed("/v1/messages/count_tokens"));
        assert!(!anthropic.passthrough_allowed("/v1/models/"));
        assert!(!anthropic.passthrough_allowed("/v1/files"));
        assert!(!anthropic.passthrough_allowed("/v1/messages/batches"));
        assert!(!anthropic.passthrough_allowed("/v1/messages"));

        let openai = ProviderKind::OpenAi;
        for ok in [
            "/models",
            "/models/gpt-5",
            "/responses/resp_1",
            "/responses/resp_1/input_items",
            "/conversations",
            "/conversations/c1/items",
        ] {
            assert!(openai.passthrough_allowed(ok), "{ok}");
        }
        for refused in [
            "/responses",
            "/completions",
            "/files",
            "/batches",
            "/fine_tuning/jobs",
            "/organization/admin_api_keys",
        ] {
            assert!(!openai.passthrough_allowed(refused), "{refused}");
        }
        assert!(ProviderKind::Copilot.passthrough_allowed("/agents/x"));
        for escape in [
            "/v1/models/../files",
            "/v1/models/%2e%2e/files",
            "/v1/models/.%2E/files",
            "/v1/models/..\\files",
            "/v1/models/./x",
            "/v1/models/x%2F..%2F..%2Ffiles",
            "/v1/models/x%2f..",
            "/v1/models/x%5C..%5Cfiles",
            "/v1/models/a\\b",
        ] {
            assert!(!anthropic.passthrough_allowed(escape), "{escape}");
        }
        assert!(!ProviderKind::Copilot.passthrough_allowed("/chat"));
        assert_eq!(
            anthropic.passthrough_route("/v1/models/claude-x"),
            Some("/v1/models/*")
        );
        assert_eq!(
            anthropic.passthrough_route("/v1/models"),
            Some("/v1/models")
        );
        assert_eq!(
            openai.passthrough_route("/responses/resp_1/input_items"),
            Some("/responses/*")
        );
        assert!(
            !openai.passthrough_allowed("/responses/x%2F..%2F..%2Ffiles"),
            "review item 9"
        );
    }

    #[test]
    fn bridged_apis_by_path() {
        assert_eq!(
            ProviderKind::Anthropic.bridged_api("/v1/messages"),
            Some(Api::AnthropicMessages)
        );
        assert_eq!(ProviderKind::Anthropic.bridged_api("/responses"), None);
        assert_eq!(
            ProviderKind::Copilot.bridged_api("/responses"),
            Some(Api::OpenAiResponses)
        );
        assert_eq!(
            ProviderKind::OpenAi.bridged_api("/chat/completions"),
            Some(Api::OpenAiChat)
        );
    }

    #[test]
    fn attach_key_per_provider() {
        let key = ApiKey::new("sk-pool-1");
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer stale"),
        );
        ProviderKind::Anthropic.attach_key(&mut h, &key);
        assert_eq!(h["x-api-key"], "sk-pool-1");
        assert_eq!(
            h[header::AUTHORIZATION],
            "Bearer stale",
            "Anthropic leaves Authorization alone"
        );
        let mut h = HeaderMap::new();
        ProviderKind::OpenAi.attach_key(&mut h, &key);
        assert_eq!(h[header::AUTHORIZATION], "Bearer sk-pool-1");
        assert!(h[header::AUTHORIZATION].is_sensitive());
    }
}
