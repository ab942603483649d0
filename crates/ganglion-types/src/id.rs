//! Node identities: an Ed25519 key per machine, shown as a W3C `did:key` identifier
//! (multicodec `ed25519-pub` = 0xed01, base58btc, multibase prefix `z`).
//!
//! Every signature is domain-separated: the bytes signed are `ganglion/<domain>\0<message>`,
//! so a signature made for one kind of message can never be replayed as another.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Multicodec prefix of an Ed25519 public key (varint of 0xed).
const MULTICODEC_ED25519_PUB: [u8; 2] = [0xed, 0x01];
const DID_KEY_PREFIX: &str = "did:key:z";

/// A random number from the operating system, or `None` where it has none to give (callers
/// that only spread or shuffle things fall back to something of their own).
pub fn random_u64() -> Option<u64> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// A node's secret key. Never serialised by this crate; persistence is the binary's job.
pub struct NodeKey(SigningKey);

impl NodeKey {
    /// A fresh key from the operating system's randomness.
    ///
    /// # Panics
    /// If the OS has no randomness to give, which leaves nothing safe to do.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        #[allow(clippy::expect_used)]
        getrandom::getrandom(&mut seed).expect("the operating system must provide randomness");
        Self::from_seed(seed)
    }

    /// The key whose 32-byte Ed25519 seed is `seed` (deterministic; for tests and key files).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The Ed25519 key, for signers that need its parts (see [`crate::presign`]).
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.0
    }

    /// The 32-byte seed, for writing a key file.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public identity of this key.
    pub fn id(&self) -> NodeId {
        NodeId(self.0.verifying_key().to_bytes())
    }

    /// Signs `message` for `domain`.
    pub fn sign(&self, domain: &str, message: &[u8]) -> Signature {
        let bytes = signed_bytes(domain, message);
        Signature(self.0.sign(&bytes).to_bytes())
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NodeKey").field(&self.id()).finish()
    }
}

pub(crate) fn signed_bytes(domain: &str, message: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(9 + domain.len() + 1 + message.len());
    bytes.extend_from_slice(b"ganglion/");
    bytes.extend_from_slice(domain.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(message);
    bytes
}

/// A node's public identity: the 32 bytes of its Ed25519 public key. Shown as `did:key:z6Mk…`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId([u8; 32]);

impl NodeId {
    /// The identity with these public-key bytes (not checked to be a valid curve point: use
    /// [`NodeId::public_key`] before verifying).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw public-key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key that verifies this node's signatures, or an error if the bytes are not a valid
    /// Ed25519 public key.
    pub fn public_key(&self) -> Result<PublicKey, SignatureError> {
        VerifyingKey::from_bytes(&self.0)
            .map(|key| PublicKey { id: *self, key })
            .map_err(|_| SignatureError::BadKey)
    }

    /// Checks that this node signed `message` for `domain`. Decompresses the key each call:
    /// hot paths keep a [`PublicKey`] instead.
    pub fn verify(
        &self,
        domain: &str,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        self.public_key()?.verify(domain, message, signature)
    }

    /// A short form for logs and tables: the last 8 characters of the did:key.
    pub fn short(&self) -> String {
        let did = self.to_string();
        did[did.len().saturating_sub(8)..].to_owned()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = [0u8; 34];
        bytes[..2].copy_from_slice(&MULTICODEC_ED25519_PUB);
        bytes[2..].copy_from_slice(&self.0);
        write!(f, "{DID_KEY_PREFIX}{}", bs58::encode(bytes).into_string())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Why a string is not a `did:key` of an Ed25519 key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DidError {
    #[error("expected a did:key identifier starting with \"{DID_KEY_PREFIX}\"")]
    Prefix,
    #[error("did:key is not valid base58btc: {0}")]
    Base58(String),
    #[error(
        "did:key is not an Ed25519 key (multicodec 0xed01 followed by 32 bytes); got {0} bytes"
    )]
    NotEd25519(usize),
}

impl FromStr for NodeId {
    type Err = DidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let encoded = s.strip_prefix(DID_KEY_PREFIX).ok_or(DidError::Prefix)?;
        if encoded.len() > 64 {
            return Err(DidError::NotEd25519(encoded.len()));
        }
        let bytes = bs58::decode(encoded)
            .into_vec()
            .map_err(|e| DidError::Base58(e.to_string()))?;
        match bytes.split_first_chunk::<2>() {
            Some((codec, key)) if *codec == MULTICODEC_ED25519_PUB && key.len() == 32 => {
                let mut id = [0u8; 32];
                id.copy_from_slice(key);
                Ok(Self(id))
            }
            _ => Err(DidError::NotEd25519(bytes.len())),
        }
    }
}

/// A verified-to-be-valid Ed25519 public key with its identity, for repeated verification.
#[derive(Clone, Copy, Debug)]
pub struct PublicKey {
    id: NodeId,
    key: VerifyingKey,
}

impl PublicKey {
    /// The identity this key belongs to.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Checks (strictly: no malleable or small-order signatures) that this key signed
    /// `message` for `domain`.
    pub fn verify(
        &self,
        domain: &str,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        let bytes = signed_bytes(domain, message);
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.key
            .verify_strict(&bytes, &signature)
            .map_err(|_| SignatureError::Invalid)
    }
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "sig_bytes")] pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Signature({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("the public key is not a valid Ed25519 point")]
    BadKey,
    #[error("the signature does not match the message and key")]
    Invalid,
}

/// serde for `[u8; 64]` (serde's array support stops at 32).
mod sig_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let bytes: &[u8] = serde_bytes::deserialize(d)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"64 signature bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_key_round_trips_and_has_the_ed25519_prefix() {
        let id = NodeKey::from_seed([7; 32]).id();
        let did = id.to_string();
        assert!(did.starts_with("did:key:z6Mk"), "{did}");
        assert_eq!(did.parse::<NodeId>(), Ok(id));
    }

    #[test]
    fn did_key_matches_the_w3c_test_vector() {
        // From the did:key spec's Ed25519 test vectors (ed25519-x25519.json), whose first key
        // is derived from the all-zero seed.
        let did = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp";
        let id: NodeId = did.parse().expect("valid did:key");
        assert_eq!(id.to_string(), did);
        assert_eq!(NodeKey::from_seed([0; 32]).id(), id);
    }

    #[test]
    fn bad_did_strings_are_rejected_with_a_reason() {
        assert_eq!(
            "did:web:example.com".parse::<NodeId>(),
            Err(DidError::Prefix)
        );
        assert!(matches!(
            "did:key:z0OIl".parse::<NodeId>(),
            Err(DidError::Base58(_))
        ));
        assert!(matches!(
            "did:key:z6Mk".parse::<NodeId>(),
            Err(DidError::NotEd25519(_))
        ));
    }

    #[test]
    fn signatures_are_bound_to_their_domain_and_message() {
        let key = NodeKey::from_seed([1; 32]);
        let sig = key.sign("answer", b"hello");
        let id = key.id();
        assert_eq!(id.verify("answer", b"hello", &sig), Ok(()));
        assert_eq!(
            id.verify("offer", b"hello", &sig),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            id.verify("answer", b"hellp", &sig),
            Err(SignatureError::Invalid)
        );
        let other = NodeKey::from_seed([2; 32]).id();
        assert_eq!(
            other.verify("answer", b"hello", &sig),
            Err(SignatureError::Invalid)
        );
    }
}
