//! The streaming body: one chunk per SSE event, flushed as produced, with pauses between events and
//! the scripted mid-stream failure.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;

use crate::reply::{MidStreamFailure, Reply};

/// Pause before aborting the connection on `Cut`, so that the events before it are flushed to the
/// client first (the body stream is pending meanwhile, which makes hyper flush).
const CUT_GRACE: Duration = Duration::from_millis(20);

/// One step of a streaming body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// An SSE event, sent as its own chunk.
    Data(Bytes),
    /// Abort: the body stream ends with an error, so hyper drops the connection without the
    /// terminating chunk.
    Cut,
}

/// The frames to send for `frames` under `reply`'s `fail_after_events`/`failure`
/// (`error_frame(events_already_sent)` replaces the rest on an `ErrorEvent` failure).
pub(crate) fn plan(
    frames: Vec<Bytes>,
    error_frame: impl FnOnce(usize) -> Bytes,
    reply: &Reply,
) -> Vec<Frame> {
    let mut out: Vec<Frame> = frames.into_iter().map(Frame::Data).collect();
    if let Some(n) = reply.fail_after_events
        && n < out.len()
    {
        out.truncate(n);
        out.push(match reply.failure {
            MidStreamFailure::ErrorEvent => Frame::Data(error_frame(n)),
            MidStreamFailure::Cut => Frame::Cut,
        });
    }
    out
}

/// A body streaming `frames`, pausing `event_delay` between consecutive frames.
pub(crate) fn body(frames: Vec<Frame>, event_delay: Duration) -> Body {
    let stream = futures_util::stream::unfold(
        (frames.into_iter(), true),
        move |(mut frames, first)| async move {
            let frame = frames.next()?;
            if !first && !event_delay.is_zero() {
                tokio::time::sleep(event_delay).await;
            }
            let item = match frame {
                Frame::Data(bytes) => Ok(bytes),
                Frame::Cut => {
                    tokio::time::sleep(CUT_GRACE).await;
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "aibridge-mock: scripted mid-stream cut",
                    ))
                }
            };
            Some((item, (frames, false)))
        },
    );
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(n: usize) -> Bytes {
        Bytes::from(format!("err{n}"))
    }

    fn frames() -> Vec<Bytes> {
        vec![Bytes::from("a"), Bytes::from("b"), Bytes::from("c")]
    }

    #[test]
    fn plan_without_failure_is_all_frames() {
        let p = plan(frames(), err, &Reply::ok());
        assert_eq!(p.len(), 3);
        assert_eq!(p[2], Frame::Data(Bytes::from("c")));
    }

    #[test]
    fn plan_error_event_replaces_the_rest() {
        let r = Reply::ok().fail_after_events(1, MidStreamFailure::ErrorEvent);
        let p = plan(frames(), err, &r);
        assert_eq!(
            p,
            vec![
                Frame::Data(Bytes::from("a")),
                Frame::Data(Bytes::from("err1"))
            ]
        );
    }

    #[test]
    fn plan_cut_after_zero_events() {
        let r = Reply::ok().fail_after_events(0, MidStreamFailure::Cut);
        assert_eq!(plan(frames(), err, &r), vec![Frame::Cut]);
    }

    #[test]
    fn plan_failure_past_the_end_is_ignored() {
        let r = Reply::ok().fail_after_events(3, MidStreamFailure::Cut);
        assert_eq!(plan(frames(), err, &r).len(), 3);
    }
}
