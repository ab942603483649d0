//! The data plane's framing, sans-IO: a little-endian u32 length, then that many bytes (one
//! wire-encoded message). The length is checked against a limit before any byte of the body is
//! read or allocated. The async readers and writers live in `ganglion-net`.

/// Bytes of the length prefix.
pub const HEADER_BYTES: usize = 4;

/// A frame announced a body over the limit. The stream cannot be resynchronised after this:
/// close it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes exceeds the limit of {max} bytes")]
pub struct LengthError {
    pub len: usize,
    pub max: usize,
}

/// Reads a frame header and checks the length it announces.
pub fn body_len(header: [u8; HEADER_BYTES], max: usize) -> Result<usize, LengthError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > max {
        return Err(LengthError { len, max });
    }
    Ok(len)
}

/// Push bytes as they arrive, pop whole frames. Holds at most one partial frame plus what was
/// pushed.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: usize,
}

impl FrameDecoder {
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame's body, `None` if more bytes are needed, or an error.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, LengthError> {
        let Some(header) = self.buf.first_chunk::<HEADER_BYTES>() else {
            return Ok(None);
        };
        let len = body_len(*header, self.max)?;
        if self.buf.len() < HEADER_BYTES + len {
            return Ok(None);
        }
        let body = self.buf[HEADER_BYTES..HEADER_BYTES + len].to_vec();
        self.buf.drain(..HEADER_BYTES + len);
        Ok(Some(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_yields_frames_split_anywhere() {
        let mut wire_bytes = Vec::new();
        for body in [&b"hello"[..], b"", b"world!"] {
            wire_bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
            wire_bytes.extend_from_slice(body);
        }
        for split in 0..wire_bytes.len() {
            let mut d = FrameDecoder::new(64);
            d.push(&wire_bytes[..split]);
            let mut frames = Vec::new();
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
            d.push(&wire_bytes[split..]);
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
            assert_eq!(frames, vec![b"hello".to_vec(), vec![], b"world!".to_vec()]);
        }
    }

    #[test]
    fn oversized_length_is_refused_before_the_body_arrives() {
        let mut d = FrameDecoder::new(1024);
        d.push(&u32::MAX.to_le_bytes());
        assert_eq!(
            d.next_frame(),
            Err(LengthError {
                len: u32::MAX as usize,
                max: 1024
            })
        );
    }
}
