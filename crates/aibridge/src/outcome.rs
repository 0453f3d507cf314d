//! How a request ended: one word, the same in the record, the metrics and the log line.

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream answered with success and the answer reached the client whole.
    Completed,
    /// The upstream answered with an error that is not the key's fault; relayed.
    UpstreamError,
    /// Every key of the pool was cooling or disabled.
    Exhausted,
    /// The gateway could not complete the call (unreachable upstream, timeout, store down).
    GatewayError,
    /// A stream broke off after its first event.
    StreamFailed,
    /// The client went away before the answer was complete.
    ClientDisconnected,
    /// Refused before any upstream call: a client mistake (token, body, method) or an open
    /// circuit breaker.
    Rejected,
}

impl Outcome {
    /// Every outcome, in the order of [`Outcome::index`].
    pub const ALL: [Outcome; 7] = [
        Self::Completed,
        Self::UpstreamError,
        Self::Exhausted,
        Self::GatewayError,
        Self::StreamFailed,
        Self::ClientDisconnected,
        Self::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::UpstreamError => "upstream_error",
            Self::Exhausted => "exhausted",
            Self::GatewayError => "gateway_error",
            Self::StreamFailed => "stream_failed",
            Self::ClientDisconnected => "client_disconnected",
            Self::Rejected => "rejected",
        }
    }

    /// Position in [`Outcome::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_the_position_in_all() {
        for (position, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(outcome.index(), position, "{}", outcome.as_str());
        }
    }
}
