//! Envelopes from the network: decoded, then opened as a session open with a replay guard.
//! Nothing may panic; nothing unsigned may open.
#![no_main]

use ganglion_types::proto::SessionOpen;
use ganglion_types::{Envelope, ReplayGuard};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::from_bytes(data) {
        let mut guard = ReplayGuard::with_capacity(4);
        let opened = envelope.open::<SessionOpen>(1_000, Some(&mut guard));
        // No input made by the fuzzer carries a valid signature: one that opens is a forgery.
        assert!(opened.is_err(), "a fuzzed envelope opened: {envelope:?}");
        assert!(guard.is_empty(), "a rejected envelope advanced the replay guard");
    }
});
