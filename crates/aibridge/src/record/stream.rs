//! The record of a stream being relayed. It sees every event on its way to the client and ends
//! the record exactly once: when the stream completes or fails, or — when the client goes away
//! and the relay is dropped — with what was seen up to then.

use aibridge_protocol::{Api, SseEvent, StreamObserver};

use super::{Outcome, Recording};

#[derive(Debug)]
pub struct StreamRecording {
    recording: Recording,
    observer: Option<StreamObserver>,
    /// The status the client got (the stream's head).
    status: u16,
}

impl StreamRecording {
    pub fn new(recording: Recording, api: Api, status: u16) -> Self {
        // Observed with recording off too: the usage counts in the metrics.
        let observer = Some(api.stream_observer());
        Self {
            recording,
            observer,
            status,
        }
    }

    pub fn observe(&mut self, event: &SseEvent) {
        if let Some(observer) = &mut self.observer {
            observer.observe(event);
        }
    }

    /// The first event is on its way to the client after `waited` for it: the request is
    /// answered (200) as far as the breaker and the gateway's own time go.
    pub fn committed(&mut self, waited: std::time::Duration) {
        self.recording.waited(waited);
        self.recording.answered(self.status);
    }

    /// Ends the record with what was observed; `status` overrides the stream's own when the
    /// client got a different answer (a failure before the first event).
    pub fn finish(&mut self, outcome: Outcome, status: Option<u16>, error: Option<String>) {
        if self.recording.is_ended() {
            return;
        }
        if let Some(observer) = self.observer.take() {
            self.recording.observation(observer.finish());
        }
        self.recording
            .end(outcome, Some(status.unwrap_or(self.status)), error);
    }
}

impl Drop for StreamRecording {
    fn drop(&mut self) {
        self.finish(
            Outcome::ClientDisconnected,
            None,
            Some("the client closed the stream".into()),
        );
    }
}
