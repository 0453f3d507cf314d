//! Properties of the wire pieces that every byte of every stream goes through, checked on
//! generated input (proptest): the SSE decoder and the request peek.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod request_peek;
mod sse_decoder;
