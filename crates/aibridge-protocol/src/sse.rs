use bytes::{Bytes, BytesMut};

/// One complete server-sent event, kept as the exact bytes the upstream sent (including the
/// blank line that ends it) so it can be relayed verbatim; fields are parsed on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    raw: Bytes,
}

impl SseEvent {
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    fn lines(&self) -> impl Iterator<Item = &[u8]> {
        let raw: &[u8] = &self.raw;
        let mut start = 0;
        // Every line of a decoded event ends with '\n'; an event built by hand may not.
        memchr::memchr_iter(b'\n', raw)
            .chain(std::iter::once(raw.len()))
            .map(move |end| {
                let line = raw.get(start..end).unwrap_or_default();
                start = end + 1;
                line.strip_suffix(b"\r").unwrap_or(line)
            })
    }

    /// The `event:` field, if any (`None` means the default type, "message").
    pub fn event_type(&self) -> Option<&str> {
        self.lines()
            .find_map(|line| field_value(line, b"event"))
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All `data:` lines joined with `\n`, per the SSE specification: borrowed from the event
    /// when it has one data line (nearly always), so reading it allocates nothing.
    pub fn data(&self) -> std::borrow::Cow<'_, str> {
        let mut values = self.lines().filter_map(|line| field_value(line, b"data"));
        let Some(first) = values.next() else {
            return std::borrow::Cow::Borrowed("");
        };
        let Some(second) = values.next() else {
            // `from_utf8` checks ASCII a word at a time; the lossy path only for bad bytes.
            return match std::str::from_utf8(first) {
                Ok(text) => std::borrow::Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(first),
            };
        };
        let mut out = first.to_vec();
        for value in std::iter::once(second).chain(values) {
            out.push(b'\n');
            out.extend_from_slice(value);
        }
        std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
    }

    /// True for events that carry only comments (`: keep-alive`).
    pub fn is_comment_only(&self) -> bool {
        self.lines()
            .all(|line| line.is_empty() || line.starts_with(b":"))
    }
}

fn field_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(name)?;
    if rest.is_empty() {
        return Some(rest);
    }
    let value = rest.strip_prefix(b":")?;
    Some(value.strip_prefix(b" ").unwrap_or(value))
}

/// Incremental SSE splitter: push bytes as they arrive from the network, take out each event as
/// soon as its terminating blank line is in. Never waits for more than one event.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: BytesMut,
    /// Where the next line starts (bytes before it have been scanned already).
    line_start: usize,
    /// Whether the current event has any non-empty line yet.
    event_has_content: bool,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, if one is buffered.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let rel = self.buf[self.line_start..]
                .iter()
                .position(|b| *b == b'\n')?;
            let end = self.line_start + rel;
            let line = &self.buf[self.line_start..end];
            let blank = line.is_empty() || line == b"\r";
            self.line_start = end + 1;
            if !blank {
                self.event_has_content = true;
                continue;
            }
            if !self.event_has_content {
                // Stray blank lines between events: drop them.
                let _ = self.buf.split_to(self.line_start);
                self.line_start = 0;
                continue;
            }
            let raw = self.buf.split_to(self.line_start).freeze();
            self.line_start = 0;
            self.event_has_content = false;
            return Some(SseEvent { raw });
        }
    }

    /// Bytes of an event that never got its terminating blank line (the stream ended mid-event).
    pub fn has_partial_event(&self) -> bool {
        self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }

    /// Whether the event being assembled has grown past `limit` bytes without ending: a stream
    /// that never sends a blank line would otherwise be buffered without bound.
    pub fn is_over(&self, limit: usize) -> bool {
        self.buf.len() > limit
    }
}

/// Frames one event: `event: <type>\n` (when given), one `data:` line per line of `data`, and the
/// blank line.
pub fn encode_event(event: Option<&str>, data: &str) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 32);
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(decoder: &mut SseDecoder) -> Vec<SseEvent> {
        std::iter::from_fn(|| decoder.next_event()).collect()
    }

    #[test]
    fn splits_events_and_keeps_raw_bytes() {
        let input =
            b"event: message_start\ndata: {\"a\":1}\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\n";
        let mut d = SseDecoder::new();
        d.push(input);
        let events = drain(&mut d);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event_type(), Some("message_start"));
        assert_eq!(events[0].data(), "{\"a\":1}");
        assert_eq!(
            &events[0].raw()[..],
            b"event: message_start\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(events[1].event_type(), Some("ping"));
        let joined: Vec<u8> = events.iter().flat_map(|e| e.raw().to_vec()).collect();
        assert_eq!(joined, input.to_vec());
        assert!(!d.has_partial_event());
    }

    #[test]
    fn handles_every_split_point() {
        let input = b"event: a\r\ndata: 1\r\n\r\ndata: x\ndata: y\n\n: keep-alive\n\n";
        for split in 0..input.len() {
            let mut d = SseDecoder::new();
            d.push(&input[..split]);
            let mut events = drain(&mut d);
            d.push(&input[split..]);
            events.extend(drain(&mut d));
            assert_eq!(events.len(), 3, "split at {split}");
            assert_eq!(events[0].event_type(), Some("a"));
            assert_eq!(events[0].data(), "1");
            assert_eq!(events[1].event_type(), None);
            assert_eq!(events[1].data(), "x\ny");
            assert!(events[2].is_comment_only());
            assert!(!events[1].is_comment_only());
        }
    }

    #[test]
    fn incomplete_event_is_held_back() {
        let mut d = SseDecoder::new();
        d.push(b"event: content_block_delta\ndata: {\"partial\"");
        assert!(d.next_event().is_none());
        assert!(d.has_partial_event());
        d.push(b":true}\n\n");
        let ev = d.next_event().unwrap();
        assert_eq!(ev.data(), "{\"partial\":true}");
    }

    #[test]
    fn stray_blank_lines_are_dropped() {
        let mut d = SseDecoder::new();
        d.push(b"\n\n\ndata: [DONE]\n\n");
        let events = drain(&mut d);
        assert_eq!(events.len(), 1);
        assert_eq!(&events[0].raw()[..], b"data: [DONE]\n\n");
    }

    #[test]
    fn encode_round_trips_through_decoder() {
        let frame = encode_event(Some("error"), "line1\nline2");
        assert_eq!(&frame[..], b"event: error\ndata: line1\ndata: line2\n\n");
        let mut d = SseDecoder::new();
        d.push(&frame);
        let ev = d.next_event().unwrap();
        assert_eq!(ev.event_type(), Some("error"));
        assert_eq!(ev.data(), "line1\nline2");
        assert_eq!(&encode_event(None, "{}")[..], b"data: {}\n\n");
    }

    #[test]
    fn an_event_that_never_ends_is_over_the_limit() {
        let mut d = SseDecoder::new();
        d.push(b"data: ");
        d.push(&[b'x'; 100]);
        assert!(d.next_event().is_none());
        assert!(d.is_over(64));
        assert!(!d.is_over(1024));
        d.push(b"\n\n");
        assert_eq!(d.next_event().unwrap().data().len(), 100);
        assert!(!d.is_over(0), "nothing left once the event ended");
    }

    #[test]
    fn field_without_space_or_value() {
        let mut d = SseDecoder::new();
        d.push(b"event:x\ndata\n\n");
        let ev = d.next_event().unwrap();
        assert_eq!(ev.event_type(), Some("x"));
        assert_eq!(ev.data(), "");
    }
}
