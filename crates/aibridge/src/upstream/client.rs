//! The one HTTP client every upstream call goes through, built here with explicit timeouts.

use crate::config::UpstreamSettings;

/// Builds the shared client. Redirects are never followed: a redirect would carry a pool key
/// to wherever the upstream points.
pub fn build(settings: &UpstreamSettings) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        // Per read, so long streams live as long as they make progress; blocking calls also get
        // a whole-request timeout per request.
        .read_timeout(settings.stream_idle_timeout)
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("aibridge/", env!("CARGO_PKG_VERSION")))
        .build()
}
