//! The binary encoding of every message: one version byte, then postcard.
//!
//! Decoding checks the size limit before it looks at a single field, rejects unknown versions
//! and trailing bytes, and never allocates more than the input's length.

use serde::{de::DeserializeOwned, Serialize};

/// Version of the wire encoding. A node refuses bytes of any other version.
pub const WIRE_VERSION: u8 = 1;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("empty message: expected a version byte")]
    Empty,
    #[error("wire version {0} is not supported (this node speaks version {WIRE_VERSION})")]
    Version(u8),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0} unexpected bytes after the end of the message")]
    Trailing(usize),
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// Appends the encoding of `message` to `buf` (which can be reused between messages).
pub fn encode_into<T: Serialize>(message: &T, buf: &mut Vec<u8>) {
    buf.push(WIRE_VERSION);
    // Serialising our own types into a Vec cannot fail: postcard only fails on unsupported
    // serde features (none are used) or on a full buffer (a Vec grows).
    #[allow(clippy::expect_used)]
    postcard::to_io(message, &mut *buf).expect("postcard encodes Ganglion types into a Vec");
}

/// The encoding of `message`.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_into(message, &mut buf);
    buf
}

/// Decodes `bytes`, refusing more than `max` bytes before reading anything.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != WIRE_VERSION {
        return Err(DecodeError::Version(version));
    }
    let (message, rest) =
        postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_checked_before_decoding() {
        let bytes = encode(&vec![0u8; 100]);
        assert_eq!(
            decode::<Vec<u8>>(&bytes, 50),
            Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: 50
            })
        );
        assert_eq!(decode::<Vec<u8>>(&bytes, 200), Ok(vec![0u8; 100]));
    }

    #[test]
    fn wrong_version_trailing_and_empty_are_rejected() {
        let mut bytes = encode(&7u32);
        bytes.push(0);
        assert_eq!(decode::<u32>(&bytes, 64), Err(DecodeError::Trailing(1)));
        bytes[0] = 9;
        assert_eq!(decode::<u32>(&bytes, 64), Err(DecodeError::Version(9)));
        assert_eq!(decode::<u32>(&[], 64), Err(DecodeError::Empty));
    }

    #[test]
    fn a_huge_claimed_length_does_not_allocate_it() {
        // Version, then a varint length of ~2^62 for a Vec<u8>, then nothing.
        let bytes = [
            WIRE_VERSION,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x3f,
        ];
        assert!(matches!(
            decode::<Vec<u8>>(&bytes, 64),
            Err(DecodeError::Malformed(_))
        ));
    }
}
