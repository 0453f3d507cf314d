//! An independent AWS Signature Version 4 verifier for the Bedrock routes.
//!
//! It recomputes the signature of the request as received, following the SigV4 spec, with its own
//! code (hmac + sha2), not AWS's `aws-sigv4` signer: the point is to check the gateway's signer,
//! not to share its assumptions. Every access key id is known: its secret is
//! [`bedrock_secret_for`].

use std::time::Duration;

use hmac::{Hmac, Mac};
use http::HeaderMap;
use percent_encoding::percent_decode_str;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

/// The only algorithm verified (SigV4a's ECDSA is not).
pub(crate) const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The signing name of Bedrock and Bedrock Runtime.
const SERVICE: &str = "bedrock";

/// How far `x-amz-date` may be from the mock's clock, as on AWS.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// `x-amz-date`'s ISO-8601 basic format.
const AMZ_DATE: &[FormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

pub(crate) const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match \
     the signature you provided. Check your AWS Secret Access Key and signing method. Consult the \
     service documentation for details.";

/// The secret access key the mock assumes for `access_key_id` (`"<id>-secret"`), so that tests
/// can sign for any key id without set-up.
pub fn bedrock_secret_for(access_key_id: &str) -> String {
    format!("{access_key_id}-secret")
}

/// The parts of a request that SigV4 covers, as received.
pub(crate) struct Signed<'a> {
    pub method: &'a str,
    /// The raw (still percent-encoded) path.
    pub path: &'a str,
    /// The raw query string.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// A request whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    pub access_key_id: String,
    pub region: String,
}

/// Why a signed request is rejected: an AWS exception name and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejected {
    pub exception: &'static str,
    pub message: String,
}

/// The `Credential`, `SignedHeaders` and `Signature` of an `AWS4-HMAC-SHA256` Authorization.
#[derive(Debug, Default)]
struct Authorization<'a> {
    credential: Option<&'a str>,
    signed_headers: Option<&'a str>,
    signature: Option<&'a str>,
}

fn parse_authorization(value: &str) -> Authorization<'_> {
    let mut auth = Authorization::default();
    let Some(params) = value
        .strip_prefix(ALGORITHM)
        .filter(|rest| rest.starts_with(' '))
    else {
        return auth;
    };
    for param in params.split(',') {
        let Some((name, v)) = param.trim().split_once('=') else {
            continue;
        };
        match name {
            "Credential" => auth.credential = Some(v),
            "SignedHeaders" => auth.signed_headers = Some(v),
            "Signature" => auth.signature = Some(v),
            _ => {}
        }
    }
    auth
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The access key id an `AWS4-HMAC-SHA256` Authorization claims (its Credential's first
/// element), verified or not.
pub(crate) fn claimed_key_id(authorization: &str) -> Option<&str> {
    parse_authorization(authorization)
        .credential
        .and_then(|c| c.split('/').next())
}

/// Verifies the SigV4 `authorization` of `req` at `now`. Checks, in order: the header's shape,
/// the key id (`UNKNOWN…` is not a known key), the session token (`expired…` has expired), the
/// credential scope, the clock skew, then the signature itself.
pub(crate) fn verify(
    authorization: &str,
    req: &Signed<'_>,
    now: OffsetDateTime,
) -> Result<Verified, Rejected> {
    let auth = parse_authorization(authorization);
    let amz_date = header(req.headers, "x-amz-date");
    let (Some(credential), Some(signed_headers), Some(signature), Some(amz_date)) = (
        auth.credential,
        auth.signed_headers,
        auth.signature,
        amz_date,
    ) else {
        let mut missing = Vec::new();
        if auth.credential.is_none() {
            missing.push("Authorization header requires 'Credential' parameter.");
        }
        if auth.signature.is_none() {
            missing.push("Authorization header requires 'Signature' parameter.");
        }
        if auth.signed_headers.is_none() {
            missing.push("Authorization header requires 'SignedHeaders' parameter.");
        }
        if amz_date.is_none() {
            missing.push(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            );
        }
        return Err(Rejected {
            exception: "IncompleteSignatureException",
            message: format!("{} Authorization={authorization}", missing.join(" ")),
        });
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, scope_date, region, service, terminator] = scope.as_slice() else {
        return Err(Rejected {
            exception: "IncompleteSignatureException",
            message: format!(
                "Credential must have exactly 5 slash-delimited elements, e.g. \
                 keyid/date/region/service/term, got '{credential}'"
            ),
        });
    };
    let reject = |exception: &'static str, message: String| Rejected { exception, message };
    if key_id.starts_with("UNKNOWN") {
        return Err(reject(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.".to_owned(),
        ));
    }
    if header(req.headers, "x-amz-security-token").is_some_and(|t| t.starts_with("expired")) {
        return Err(reject(
            "ExpiredTokenException",
            "The security token included in the request is expired".to_owned(),
        ));
    }
    if *terminator != "aws4_request" {
        return Err(reject(
            "InvalidSignatureException",
            format!(
                "Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'. "
            ),
        ));
    }
    if *service != SERVICE {
        return Err(reject(
            "InvalidSignatureException",
            format!("Credential should be scoped to correct service: '{SERVICE}'. "),
        ));
    }
    if region.is_empty() {
        return Err(reject(
            "InvalidSignatureException",
            "Credential should be scoped to a valid region. ".to_owned(),
        ));
    }
    let Ok(signed_at) = time::PrimitiveDateTime::parse(amz_date, AMZ_DATE) else {
        return Err(reject(
            "IncompleteSignatureException",
            format!(
                "Date must be in ISO-8601 'basic format'. Got '{amz_date}'. See http://en.wikipedia.org/wiki/ISO_8601"
            ),
        ));
    };
    let signed_at = signed_at.assume_utc();
    let http_date = amz_date.get(..8).unwrap_or_default();
    if *scope_date != http_date {
        return Err(reject(
            "InvalidSignatureException",
            format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
                 from HTTP: '{scope_date}' != '{http_date}', from '{amz_date}'."
            ),
        ));
    }
    let now_text = format_amz_date(now);
    if signed_at < now - MAX_SKEW {
        return Err(reject(
            "InvalidSignatureException",
            format!(
                "Signature expired: {amz_date} is now earlier than {} ({now_text} - 15 min.)",
                format_amz_date(now - MAX_SKEW)
            ),
        ));
    }
    if signed_at > now + MAX_SKEW {
        return Err(reject(
            "InvalidSignatureException",
            format!(
                "Signature not yet current: {amz_date} is still later than {} ({now_text} + 15 min.)",
                format_amz_date(now + MAX_SKEW)
            ),
        ));
    }
    let mut names: Vec<String> = signed_headers
        .split(';')
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    names.sort();
    if !names.iter().any(|n| n == "host") {
        return Err(reject(
            "InvalidSignatureException",
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".to_owned(),
        ));
    }
    let canonical = canonical_request(req, &names);
    let scope = format!("{scope_date}/{region}/{service}/{terminator}");
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(&bedrock_secret_for(key_id), scope_date, region, service);
    let expected = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));
    if expected != signature {
        tracing::debug!(%canonical, %string_to_sign, "aibridge-mock: SigV4 mismatch");
        return Err(reject(
            "InvalidSignatureException",
            SIGNATURE_MISMATCH.to_owned(),
        ));
    }
    Ok(Verified {
        access_key_id: (*key_id).to_owned(),
        region: (*region).to_owned(),
    })
}

fn format_amz_date(t: OffsetDateTime) -> String {
    t.format(AMZ_DATE).unwrap_or_default()
}

/// The canonical request: method, canonical URI, canonical query, canonical headers (of the
/// sorted signed `names`), the signed headers list and the payload's hex SHA-256.
fn canonical_request(req: &Signed<'_>, names: &[String]) -> String {
    let mut out = String::with_capacity(512);
    out.push_str(req.method);
    out.push('\n');
    out.push_str(&canonical_uri(req.path));
    out.push('\n');
    out.push_str(&canonical_query(req.query.unwrap_or_default()));
    out.push('\n');
    for name in names {
        let values: Vec<String> = req
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| collapse_spaces(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&names.join(";"));
    out.push('\n');
    out.push_str(&hex::encode(Sha256::digest(req.body)));
    out
}

/// The path as received with each segment URI-encoded once more: services other than S3 sign the
/// double-encoded path (`%3A` in the request is `%253A` here).
fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".to_owned();
    }
    raw_path
        .split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// Query parameters decoded, re-encoded the strict way and sorted by name, then value.
fn canonical_query(raw: &str) -> String {
    let mut params: Vec<(String, String)> = raw
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&form_decode(name)),
                uri_encode(&form_decode(value)),
            )
        })
        .collect();
    params.sort();
    params
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-decodes a query component (`+` is a space, as the SDKs' signers read it).
fn form_decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// SigV4's URI encoding: every byte but `A-Z a-z 0-9 - _ . ~` as `%XX` (upper-case hex).
fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A header value trimmed, with runs of spaces collapsed to one.
fn collapse_spaces(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length: this never fails.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// `kSigning` = HMAC chain of "AWS4" + secret over the date, region, service and "aws4_request".
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// AWS's documented example (IAM ListUsers, from the SigV4 guide's "create a signed
    /// request" walkthrough) checks the key derivation and the string to sign's hashing.
    #[test]
    fn signing_key_matches_the_aws_example() {
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(&key),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
        let string_to_sign = "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\nf536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59";
        assert_eq!(
            hex::encode(hmac_sha256(&key, string_to_sign.as_bytes())),
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn canonical_uri_double_encodes() {
        assert_eq!(
            canonical_uri("/model/anthropic.claude-v1%3A0/invoke"),
            "/model/anthropic.claude-v1%253A0/invoke"
        );
        assert_eq!(
            canonical_uri("/model/anthropic.claude-v1:0/invoke"),
            "/model/anthropic.claude-v1%3A0/invoke"
        );
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
    }

    #[test]
    fn canonical_query_sorts_and_reencodes() {
        assert_eq!(canonical_query(""), "");
        assert_eq!(
            canonical_query("b=2&a=x+y&a=%2Fz&c"),
            "a=%2Fz&a=x%20y&b=2&c="
        );
    }

    #[test]
    fn parses_the_authorization_header() {
        let a = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc",
        );
        assert_eq!(
            a.credential,
            Some("AK/20240101/us-east-1/bedrock/aws4_request")
        );
        assert_eq!(a.signed_headers, Some("host;x-amz-date"));
        assert_eq!(a.signature, Some("abc"));
        let b = parse_authorization("AWS4-HMAC-SHA256Credential=x");
        assert!(b.credential.is_none());
    }

    #[test]
    fn garbled_authorization_lists_what_is_missing() {
        let headers = HeaderMap::new();
        let req = Signed {
            method: "POST",
            path: "/",
            query: None,
            headers: &headers,
            body: b"",
        };
        let err = verify("Basic xyz", &req, OffsetDateTime::now_utc()).unwrap_err();
        assert_eq!(err.exception, "IncompleteSignatureException");
        assert!(
            err.message
                .starts_with("Authorization header requires 'Credential' parameter.")
        );
        assert!(err.message.ends_with("Authorization=Basic xyz"));
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-date", HeaderValue::from_static("20240101T000000Z"));
        let req = Signed {
            headers: &headers,
            ..req
        };
        let err = verify(
            "AWS4-HMAC-SHA256 Credential=AK/20240101, SignedHeaders=host, Signature=00",
            &req,
            OffsetDateTime::now_utc(),
        )
        .unwrap_err();
        assert_eq!(err.exception, "IncompleteSignatureException");
        assert!(
            err.message.contains("exactly 5 slash-delimited"),
            "{}",
            err.message
        );
    }

    #[test]
    fn amz_dates_round_trip() {
        let t = time::PrimitiveDateTime::parse("20240229T235959Z", AMZ_DATE)
            .unwrap()
            .assume_utc();
        assert_eq!(format_amz_date(t), "20240229T235959Z");
        assert!(time::PrimitiveDateTime::parse("2024-02-29T23:59:59Z", AMZ_DATE).is_err());
    }
}
