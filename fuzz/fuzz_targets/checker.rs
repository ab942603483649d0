//! What reaches a checker from the network (samples and confirmations), evidence files a third
//! party is handed, and attestations (reached in real life only after a valid signature, so
//! decoded and validated directly here). Nothing may panic; no fuzzed evidence may verify.
#![no_main]

use ganglion_types::envelope::Message;
use ganglion_types::limits::ENVELOPE_BYTES_MAX;
use ganglion_types::verify::{Attestation, SignedEvidence, ToChecker};
use ganglion_types::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = ToChecker::decode(data) {
        let sample = message.sample();
        for answer in &sample.answers {
            // No fuzzed answer carries a provider's valid signature.
            assert!(answer
                .verify(sample.request, &sample.inputs, sample.model)
                .is_err());
        }
    }
    if let Ok(evidence) = SignedEvidence::from_bytes(data) {
        assert!(evidence.verify().is_err(), "fuzzed evidence verified");
        let _ = evidence.hash();
    }
    if let Ok(attestation) = wire::decode::<Attestation>(data, ENVELOPE_BYTES_MAX) {
        let _ = attestation.validate();
    }
});
