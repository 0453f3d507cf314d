//! However the network splits a stream, the decoder yields the same events, byte for byte.

use aibridge_protocol::{SseDecoder, SseEvent};
use proptest::prelude::*;

/// One event as an upstream might write it: fields, comments, any line ending.
fn event() -> impl Strategy<Value = String> {
    let line_end = prop_oneof![Just("\n"), Just("\r\n")];
    let field = prop_oneof![
        "[a-z_.]{1,12}".prop_map(|t| format!("event: {t}")),
        "[ -~]{0,40}".prop_map(|d| format!("data: {d}")),
        "[ -~]{0,20}".prop_map(|c| format!(": {c}")),
        Just("data".to_string()),
    ];
    (proptest::collection::vec(field, 1..5), line_end).prop_map(|(fields, end)| {
        let mut text = String::new();
        for field in fields {
            text.push_str(&field);
            text.push_str(end);
        }
        text.push_str(end);
        text
    })
}

fn decode(chunks: &[&[u8]]) -> (Vec<SseEvent>, SseDecoder) {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(event) = decoder.next_event() {
            events.push(event);
        }
    }
    (events, decoder)
}

proptest! {
    #[test]
    fn any_split_gives_the_same_events(
        events in proptest::collection::vec(event(), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let stream = events.concat();
        let bytes = stream.as_bytes();
        let (whole, _) = decode(&[bytes]);
        prop_assert_eq!(whole.len(), events.len());
        // The raw bytes of the events are the stream itself: relayed verbatim.
        let joined: Vec<u8> = whole.iter().flat_map(|e| e.raw().to_vec()).collect();
        prop_assert_eq!(&joined[..], bytes);

        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for point in points {
            chunks.push(&bytes[start..point]);
            start = point;
        }
        chunks.push(&bytes[start..]);
        let (split, decoder) = decode(&chunks);
        prop_assert_eq!(&split, &whole);
        prop_assert!(!decoder.has_partial_event());
    }

    #[test]
    fn a_cut_stream_keeps_its_partial_event_back(event in event(), keep in 1usize..200) {
        let bytes = event.as_bytes();
        // Drop at least the final blank line.
        let end = bytes.len().saturating_sub(1).min(keep);
        let (events, decoder) = decode(&[&bytes[..end]]);
        prop_assert!(events.is_empty());
        prop_assert_eq!(
            decoder.has_partial_event(),
            bytes[..end].iter().any(|b| !b.is_ascii_whitespace())
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (events, _) = decode(&[&bytes]);
        for event in events {
            let _ = (event.event_type(), event.data(), event.is_comment_only());
        }
    }
}
