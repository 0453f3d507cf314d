//! The one HTTP client every upstream call goes through, built here with explicit timeouts.

use crate::config::UpstreamSettings;

/// Builds the shared client. Redirects are never followed: a redirect would carry a pool key
/// to wherever the upstream points.
pub fn build(settings: &UpstreamSettings) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        // The only client-wide bound: each call brings its own deadlines (a blocking call's
        // whole duration, a stream's head and first event, the silence between events), set
        // where the call is made, so no one limit cuts another kind of call short.
        .connect_timeout(settings.connect_timeout)
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("aibridge/", env!("CARGO_PKG_VERSION")))
        .build()
}
