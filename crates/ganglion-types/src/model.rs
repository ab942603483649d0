//! Models are named by the BLAKE3 hash of their bytes: two providers that claim to serve the same
//! hash serve the same model, whatever they call it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// BLAKE3 hash of a model file.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelHash(pub [u8; 32]);

impl ModelHash {
    /// The hash of a model's bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The first 12 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_owned()
    }
}

impl fmt::Display for ModelHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ModelHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelHash({})", self.short())
    }
}

/// Why a string is not a model hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a model hash is 64 hex digits (BLAKE3), got {0:?}")]
pub struct ModelHashError(String);

impl FromStr for ModelHash {
    type Err = ModelHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ModelHashError(s.chars().take(80).collect());
        if s.len() != 64 || !s.is_ascii() {
            return Err(err());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_names_the_bytes_and_round_trips_as_hex() {
        let a = ModelHash::of(b"model a");
        assert_ne!(a, ModelHash::of(b"model b"));
        assert_eq!(a.to_string().parse(), Ok(a));
        assert!("zz".parse::<ModelHash>().is_err());
        assert!("é".repeat(32).parse::<ModelHash>().is_err());
    }
}
