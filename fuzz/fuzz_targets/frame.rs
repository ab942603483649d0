//! Bytes from the network, as a provider or a robot reads them: split into frames (pushed in
//! chunks whose sizes the input chooses), each decoded as a robot's and a provider's message.
//! Nothing may panic, and no frame may exceed the limit.
#![no_main]

use ganglion_types::frame::FrameDecoder;
use ganglion_types::proto::{ToProvider, ToRobot};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = FrameDecoder::new(LIMIT);
    for piece in rest.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= LIMIT);
                    let _ = ToProvider::decode(&frame);
                    let _ = ToRobot::decode(&frame);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
