//! Signed envelopes: a message, its author, a sequence number and an expiry, signed together
//! with the message's kind (domain separation). Opening an envelope rejects what is forged,
//! expired, too far in the future, of the wrong kind, or a replay of something already accepted.

use std::collections::HashMap;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::id::{NodeId, NodeKey, Signature, SignatureError};
use crate::limits::{ENVELOPE_BYTES_MAX, ENVELOPE_TTL_MS_MAX, REPLAY_AUTHORS_MAX};
use crate::wire::{self, DecodeError};
use crate::UnixMs;

/// What an envelope carries. Part of the signed bytes, so a signature for one kind is worthless
/// for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MessageKind {
    /// A robot asks a provider to open a session ([`crate::proto::SessionOpen`]).
    SessionOpen,
    /// A provider's offer ([`crate::control::Offer`]).
    Offer,
    /// A provider's load ([`crate::control::Heartbeat`]).
    Heartbeat,
    /// A robot raises a paid session's budget ([`crate::proto::SessionRenew`]).
    SessionRenew,
    /// What a checker found about a provider ([`crate::verify::Attestation`]).
    Attestation,
}

impl MessageKind {
    /// The signing domain of this kind.
    pub const fn domain(self) -> &'static str {
        match self {
            Self::SessionOpen => "envelope/v1/session-open",
            Self::Offer => "envelope/v1/offer",
            Self::Heartbeat => "envelope/v1/heartbeat",
            Self::SessionRenew => "envelope/v1/session-renew",
            Self::Attestation => "envelope/v1/attestation",
        }
    }
}

/// A message that travels in an envelope.
pub trait Message: Serialize + DeserializeOwned {
    const KIND: MessageKind;

    /// Checks that go beyond decoding (ranges, consistency), with a reason when they fail.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A signed message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub kind: MessageKind,
    pub author: NodeId,
    pub seq: u64,
    pub expires_at_ms: UnixMs,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub signature: Signature,
}

/// Why an envelope was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("expected a {expected:?} message, got {got:?}")]
    Kind {
        expected: MessageKind,
        got: MessageKind,
    },
    #[error("message expired at {expires_at_ms} ms, now is {now_ms} ms")]
    Expired {
        expires_at_ms: UnixMs,
        now_ms: UnixMs,
    },
    #[error("message expires at {expires_at_ms} ms, more than {ENVELOPE_TTL_MS_MAX} ms after now ({now_ms} ms)")]
    TooLongLived {
        expires_at_ms: UnixMs,
        now_ms: UnixMs,
    },
    #[error("bad signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("replayed message: sequence {seq} is not above the last accepted {last}")]
    Replayed { seq: u64, last: u64 },
    #[error("invalid {kind:?} message: {reason}")]
    Invalid { kind: MessageKind, reason: String },
}

fn signed_fields(author: &NodeId, seq: u64, expires_at_ms: UnixMs, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(48 + payload.len());
    bytes.extend_from_slice(author.as_bytes());
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes.extend_from_slice(&expires_at_ms.to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

impl Envelope {
    /// Signs `message` as `key`'s `seq`-th message of its kind, valid until `expires_at_ms`.
    pub fn seal<M: Message>(key: &NodeKey, seq: u64, expires_at_ms: UnixMs, message: &M) -> Self {
        let author = key.id();
        let payload = wire::encode(message);
        let signature = key.sign(
            M::KIND.domain(),
            &signed_fields(&author, seq, expires_at_ms, &payload),
        );
        Self {
            kind: M::KIND,
            author,
            seq,
            expires_at_ms,
            payload,
            signature,
        }
    }

    /// Checks everything and returns the message. With a `guard`, a message whose sequence
    /// number is not above the last one accepted from the same author and kind is a replay.
    pub fn open<M: Message>(
        &self,
        now_ms: UnixMs,
        guard: Option<&mut ReplayGuard>,
    ) -> Result<M, EnvelopeError> {
        if self.kind != M::KIND {
            return Err(EnvelopeError::Kind {
                expected: M::KIND,
                got: self.kind,
            });
        }
        if self.expires_at_ms <= now_ms {
            return Err(EnvelopeError::Expired {
                expires_at_ms: self.expires_at_ms,
                now_ms,
            });
        }
        if self.expires_at_ms - now_ms > ENVELOPE_TTL_MS_MAX {
            return Err(EnvelopeError::TooLongLived {
                expires_at_ms: self.expires_at_ms,
                now_ms,
            });
        }
        let fields = signed_fields(&self.author, self.seq, self.expires_at_ms, &self.payload);
        self.author
            .verify(M::KIND.domain(), &fields, &self.signature)?;
        let message: M = wire::decode(&self.payload, ENVELOPE_BYTES_MAX)?;
        message
            .validate()
            .map_err(|reason| EnvelopeError::Invalid {
                kind: M::KIND,
                reason,
            })?;
        if let Some(guard) = guard {
            guard.accept(self.author, self.kind, self.seq, now_ms)?;
        }
        Ok(message)
    }

    /// Only the signature check of [`Envelope::open`]: the floor of what accepting a message
    /// costs (benchmarks compare against it).
    pub fn verify_signature(&self) -> Result<(), SignatureError> {
        let fields = signed_fields(&self.author, self.seq, self.expires_at_ms, &self.payload);
        self.author
            .verify(self.kind.domain(), &fields, &self.signature)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decodes an envelope (not yet opened: call [`Envelope::open`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        wire::decode(bytes, ENVELOPE_BYTES_MAX)
    }
}

/// Remembers the highest sequence number accepted per (author, kind). Bounded: past
/// [`REPLAY_AUTHORS_MAX`] entries the least recently used one is forgotten.
#[derive(Debug)]
pub struct ReplayGuard {
    last: HashMap<(NodeId, MessageKind), Seen>,
    capacity: usize,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    seq: u64,
    at_ms: UnixMs,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::with_capacity(REPLAY_AUTHORS_MAX)
    }
}

impl ReplayGuard {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            last: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `seq` if it is above the last accepted one, else reports a replay.
    pub fn accept(
        &mut self,
        author: NodeId,
        kind: MessageKind,
        seq: u64,
        now_ms: UnixMs,
    ) -> Result<(), EnvelopeError> {
        let key = (author, kind);
        if let Some(seen) = self.last.get(&key) {
            if seq <= seen.seq {
                return Err(EnvelopeError::Replayed {
                    seq,
                    last: seen.seq,
                });
            }
        } else if self.last.len() >= self.capacity {
            self.evict_oldest();
        }
        self.last.insert(key, Seen { seq, at_ms: now_ms });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .last
            .iter()
            .min_by_key(|(_, seen)| seen.at_ms)
            .map(|(k, _)| *k);
        if let Some(key) = oldest {
            self.last.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelHash;
    use crate::proto::{SessionId, SessionOpen};

    fn open_msg(provider: NodeId) -> SessionOpen {
        SessionOpen {
            session: SessionId(42),
            provider,
            model: ModelHash::of(b"m"),
            pay: None,
        }
    }

    #[test]
    fn sealed_envelope_opens_once() {
        let robot = NodeKey::from_seed([1; 32]);
        let provider = NodeKey::from_seed([2; 32]).id();
        let env = Envelope::seal(&robot, 1, 10_000, &open_msg(provider));
        let bytes = env.to_bytes();
        let env = Envelope::from_bytes(&bytes).unwrap();
        let mut guard = ReplayGuard::default();
        let msg: SessionOpen = env.open(5_000, Some(&mut guard)).unwrap();
        assert_eq!(msg, open_msg(provider));
        assert_eq!(
            env.open::<SessionOpen>(5_001, Some(&mut guard)),
            Err(EnvelopeError::Replayed { seq: 1, last: 1 })
        );
        let next = Envelope::seal(&robot, 2, 10_000, &open_msg(provider));
        assert!(next.open::<SessionOpen>(5_002, Some(&mut guard)).is_ok());
    }

    #[test]
    fn forged_and_expired_envelopes_are_rejected() {
        let robot = NodeKey::from_seed([1; 32]);
        let mallory = NodeKey::from_seed([3; 32]);
        let env = Envelope::seal(&robot, 1, 10_000, &open_msg(robot.id()));

        let mut forged = env.clone();
        forged.author = mallory.id();
        assert!(matches!(
            forged.open::<SessionOpen>(0, None),
            Err(EnvelopeError::Signature(_))
        ));

        let mut tampered = env.clone();
        tampered.seq = 99;
        assert!(matches!(
            tampered.open::<SessionOpen>(0, None),
            Err(EnvelopeError::Signature(_))
        ));

        let mut stretched = env.clone();
        stretched.expires_at_ms = 20_000;
        assert!(matches!(
            stretched.open::<SessionOpen>(0, None),
            Err(EnvelopeError::Signature(_))
        ));

        assert!(matches!(
            env.open::<SessionOpen>(10_000, None),
            Err(EnvelopeError::Expired { .. })
        ));
        let far = Envelope::seal(
            &robot,
            1,
            ENVELOPE_TTL_MS_MAX + 1_001,
            &open_msg(robot.id()),
        );
        assert!(matches!(
            far.open::<SessionOpen>(1_000, None),
            Err(EnvelopeError::TooLongLived { .. })
        ));
    }

    #[test]
    fn a_rejected_envelope_does_not_advance_the_guard() {
        let robot = NodeKey::from_seed([1; 32]);
        let mut guard = ReplayGuard::default();
        let mut forged = Envelope::seal(&robot, 5, 10_000, &open_msg(robot.id()));
        forged.payload.push(0);
        assert!(forged.open::<SessionOpen>(0, Some(&mut guard)).is_err());
        assert!(guard.is_empty());
    }

    #[test]
    fn guard_stays_bounded() {
        let mut guard = ReplayGuard::with_capacity(3);
        for i in 0..10u8 {
            let id = NodeKey::from_seed([i; 32]).id();
            guard
                .accept(id, MessageKind::SessionOpen, 1, u64::from(i))
                .unwrap();
        }
        assert_eq!(guard.len(), 3);
    }
}
