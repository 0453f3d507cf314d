//! A Bedrock provider's settings and credentials, and how a request carries a credential: signed
//! with SigV4 (service `bedrock`, the path double-encoded as AWS does) or with a Bedrock API key
//! as a bearer token. The body, path and answers are `aibridge_protocol::bedrock`'s.

use std::collections::BTreeMap;
use std::time::SystemTime;

use aibridge_keypool::ApiKey;
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};

/// The SigV4 service name of Bedrock's runtime and control plane.
const SIGNING_SERVICE: &str = "bedrock";

/// One credential of a Bedrock pool.
#[derive(Clone, PartialEq)]
pub enum BedrockCredential {
    /// An access key pair (and the session token of temporary credentials): requests are signed.
    AccessKey {
        access_key_id: String,
        secret_access_key: ApiKey,
        session_token: Option<ApiKey>,
    },
    /// A Bedrock API key: sent as `Authorization: Bearer`.
    ApiKey(ApiKey),
}

impl std::fmt::Debug for BedrockCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.pool_key().hint())
    }
}

impl BedrockCredential {
    /// What stands for the credential in the key pool (its id in the key-state store, its hint
    /// in logs and records): the access key id, or the API key. Never the secret key.
    pub fn pool_key(&self) -> ApiKey {
        match self {
            Self::AccessKey { access_key_id, .. } => ApiKey::new(access_key_id.clone()),
            Self::ApiKey(key) => key.clone(),
        }
    }
}

/// Everything a `type = "bedrock"` provider adds to the others' settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BedrockSettings {
    pub region: String,
    /// Client model name → Bedrock model id (or inference profile).
    pub models: BTreeMap<String, String>,
    /// For client models not in `models`; without it such a model is refused.
    pub default_model: Option<String>,
    /// In priority order, the same order as the pool's keys.
    pub credentials: Vec<BedrockCredential>,
}

/// Signing failed (a URL the signer cannot read): not the credential's fault.
#[derive(Debug, thiserror::Error)]
#[error("the request could not be signed: {0}")]
pub struct SigningFailed(String);

impl BedrockSettings {
    /// The Bedrock model id a client's `model` maps to.
    pub fn model_id(&self, client_model: &str) -> Option<&str> {
        self.models
            .get(client_model)
            .or(self.default_model.as_ref())
            .map(String::as_str)
    }

    /// The default runtime endpoint of the region.
    pub fn default_base_url(region: &str) -> String {
        format!("https://bedrock-runtime.{region}.amazonaws.com")
    }

    /// Puts `credential` on a request about to be sent: the API key as a bearer token, or the
    /// SigV4 headers (`authorization`, `x-amz-date`, `x-amz-security-token`) for exactly this
    /// method, URL, content type and body, at `now`.
    pub fn authorize(
        &self,
        credential: &BedrockCredential,
        method: &Method,
        url: &str,
        headers: &mut HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SigningFailed> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        use aws_sigv4::sign::v4;

        let (access_key_id, secret_access_key, session_token) = match credential {
            BedrockCredential::ApiKey(key) => {
                if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", key.expose())) {
                    value.set_sensitive(true);
                    headers.insert(header::AUTHORIZATION, value);
                }
                return Ok(());
            }
            BedrockCredential::AccessKey {
                access_key_id,
                secret_access_key,
                session_token,
            } => (access_key_id, secret_access_key, session_token),
        };
        let identity = aws_credential_types::Credentials::new(
            access_key_id.clone(),
            secret_access_key.expose().to_string(),
            session_token
                .as_ref()
                .map(|token| token.expose().to_string()),
            None,
            "aibridge",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SIGNING_SERVICE)
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| SigningFailed(e.to_string()))?
            .into();
        // Only what cannot change on the way is signed: the host (from the URL) and the
        // content type; the client's other headers travel unsigned.
        let signed: Vec<(&str, &str)> = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| ("content-type", value))
            .into_iter()
            .collect();
        let request = SignableRequest::new(
            method.as_str(),
            url,
            signed.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| SigningFailed(e.to_string()))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| SigningFailed(e.to_string()))?
            .into_parts();
        for (name, value) in instructions.headers() {
            let (Ok(name), Ok(mut value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                return Err(SigningFailed(format!("an unusable header {name}")));
            };
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BedrockSettings {
        BedrockSettings {
            region: "us-east-1".into(),
            models: [(
                "claude-sonnet-4-5".to_string(),
                "anthropic.claude-v1:0".to_string(),
            )]
            .into_iter()
            .collect(),
            default_model: None,
            credentials: vec![],
        }
    }

    #[test]
    fn models_map_to_bedrock_ids() {
        let mut s = settings();
        assert_eq!(
            s.model_id("claude-sonnet-4-5"),
            Some("anthropic.claude-v1:0")
        );
        assert_eq!(s.model_id("claude-opus"), None);
        s.default_model = Some("anthropic.default".into());
        assert_eq!(s.model_id("claude-opus"), Some("anthropic.default"));
    }

    #[test]
    fn signing_adds_the_sigv4_headers_and_a_bearer_key_its_header() {
        let credential = BedrockCredential::AccessKey {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: ApiKey::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: Some(ApiKey::new("session-token")),
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        settings()
            .authorize(
                &credential,
                &Method::POST,
                "https://bedrock-runtime.us-east-1.amazonaws.com/model/a%3A0/invoke",
                &mut headers,
                b"{}",
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            )
            .unwrap();
        let authorization = headers[header::AUTHORIZATION].to_str().unwrap();
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-1/bedrock/aws4_request"
            ),
            "{authorization}"
        );
        assert!(authorization.contains("content-type"), "{authorization}");
        assert_eq!(headers["x-amz-date"], "20231114T221320Z");
        assert_eq!(headers["x-amz-security-token"], "session-token");
        assert_eq!(format!("{credential:?}"), credential.pool_key().hint());
        assert!(!format!("{credential:?}").contains("EXAMPLEKEY"));

        let mut headers = HeaderMap::new();
        settings()
            .authorize(
                &BedrockCredential::ApiKey(ApiKey::new("bedrock-key-1")),
                &Method::POST,
                "http://127.0.0.1:1/model/x/invoke",
                &mut headers,
                b"{}",
                SystemTime::now(),
            )
            .unwrap();
        assert_eq!(headers[header::AUTHORIZATION], "Bearer bedrock-key-1");
    }
}
