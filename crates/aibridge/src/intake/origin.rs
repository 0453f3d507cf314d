//! With `AIBRIDGE_AUTH=none` nothing proves who is calling, so the gateway must not answer what
//! a web page could make the operator's browser send: a cross-origin request would spend the
//! pool, and a DNS-rebound name would read the operator API. Browsers say where a request comes
//! from (`Origin`, `Sec-Fetch-Site`) and what name they resolved (`Host`).

use std::net::IpAddr;

use http::header::{HOST, ORIGIN};
use http::{HeaderMap, HeaderName};

/// Named once: a header looked up by a string is parsed on every look-up.
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

pub use crate::error::Foreign;

/// `Ok` for a request the gateway may answer without a token. `loopback` is whether it listens
/// on a loopback address only.
pub fn check(headers: &HeaderMap, loopback: bool) -> Result<(), Foreign> {
    let text = |name: &HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let host = text(&HOST);
    if let Some(origin) = text(&ORIGIN) {
        let same = host.is_some_and(|host| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
        });
        if !same {
            return Err(Foreign::Origin(origin.chars().take(100).collect()));
        }
    }
    if text(&SEC_FETCH_SITE).is_some_and(|site| site.eq_ignore_ascii_case("cross-site")) {
        return Err(Foreign::CrossSite);
    }
    if loopback
        && let Some(host) = host
        && !is_loopback_host(host)
    {
        return Err(Foreign::Host(host.chars().take(100).collect()));
    }
    Ok(())
}

/// `localhost` (and its subdomains), `127.0.0.0/8`, `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(ip, _)| ip),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::headers;

    #[test]
    fn same_origin_and_plain_clients_pass() {
        assert_eq!(check(&headers(&[("host", "127.0.0.1:8080")]), true), Ok(()));
        assert_eq!(check(&HeaderMap::new(), true), Ok(()));
        let same = headers(&[
            ("host", "localhost:8080"),
            ("origin", "http://localhost:8080"),
        ]);
        assert_eq!(check(&same, true), Ok(()));
        let fetch_same = headers(&[("host", "[::1]:9"), ("sec-fetch-site", "same-origin")]);
        assert_eq!(check(&fetch_same, true), Ok(()));
        assert_eq!(
            check(&headers(&[("host", "gateway.internal:8080")]), false),
            Ok(()),
            "a gateway listening beyond loopback serves any name"
        );
    }

    #[test]
    fn foreign_origins_sites_and_hosts_are_refused() {
        let evil = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ]);
        assert!(matches!(check(&evil, true), Err(Foreign::Origin(_))));
        let null = headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]);
        assert!(matches!(check(&null, true), Err(Foreign::Origin(_))));
        let other_port = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:3000"),
        ]);
        assert!(matches!(check(&other_port, true), Err(Foreign::Origin(_))));
        let cross = headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")]);
        assert_eq!(check(&cross, true), Err(Foreign::CrossSite));
        let rebound = headers(&[("host", "attacker.example:8080")]);
        assert!(matches!(check(&rebound, true), Err(Foreign::Host(_))));
        assert!(matches!(
            check(&headers(&[("host", "127.0.0.1.evil.example")]), true),
            Err(Foreign::Host(_))
        ));
    }
}
