//! Control-plane messages from the network: the offer and heartbeat decoders (reached in real
//! life only after a valid signature, so fuzzed directly here), and the view as a whole, which
//! must drop anything a fuzzer makes (no valid signatures) without panicking or growing; and
//! the view-sync response decoder, whose offers go through the same view.
#![no_main]

use ganglion_control::{View, ViewConfig};
use ganglion_types::control::{Heartbeat, Offer};
use ganglion_types::envelope::Message;
use ganglion_types::limits::ENVELOPE_BYTES_MAX;
use ganglion_types::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(offer) = wire::decode::<Offer>(data, ENVELOPE_BYTES_MAX) {
        let _ = offer.validate();
    }
    if let Ok(beat) = wire::decode::<Heartbeat>(data, ENVELOPE_BYTES_MAX) {
        let _ = beat.validate();
    }
    let mut view = View::new(ViewConfig {
        providers_max: 4,
        ..ViewConfig::default()
    });
    assert!(view.ingest(data, 1_000).is_err(), "a fuzzed message was accepted");
    if let Ok(offers) = ganglion_control::sync::decode_offers(data) {
        assert!(offers.len() <= ganglion_control::sync::OFFERS_MAX);
        for offer in offers {
            assert!(view.ingest(&offer, 1_000).is_err(), "a fuzzed offer was accepted");
        }
    }
    assert!(view.is_empty());
});
