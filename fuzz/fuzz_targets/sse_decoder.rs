//! The SSE decoder on arbitrary bytes, split at an arbitrary point: it must not panic and must
//! give the same events however the bytes are split.
#![no_main]

use aibridge_protocol::SseDecoder;
use libfuzzer_sys::fuzz_target;

fn decode(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(event) = decoder.next_event() {
            let _ = (event.event_type(), event.data());
            events.push(event.raw().to_vec());
        }
    }
    events
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let at = usize::from(split) % (bytes.len() + 1);
    let whole = decode(&[bytes]);
    let split = decode(&[&bytes[..at], &bytes[at..]]);
    assert_eq!(whole, split);
});
