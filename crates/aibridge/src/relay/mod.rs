//! The upstream's answer on its way back to the client: blocking bodies whole (`blocking`),
//! streams event by event with an explicit commit point (`stream`), passthrough answers as they
//! come (`passthrough`).

pub mod blocking;
pub mod passthrough;
pub mod stream;
