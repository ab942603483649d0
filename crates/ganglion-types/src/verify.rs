//! What checkers say and keep.
//!
//! - [`Attestation`]: a checker's findings about one provider over its recent probes and
//!   re-executions, gossiped on the control plane in a signed [`Envelope`](crate::Envelope).
//!   Every node folds them into a reputation (`ganglion-verify`).
//! - [`Sample`]: what a robot forwards to a checker for one sampled request: the inputs and every
//!   provider's signed answer. The provider signatures make it evidence: nobody can forward a
//!   wrong answer a provider never gave.
//! - [`SignedEvidence`]: a checker's signed record of a wrong answer, with everything a third
//!   party needs to re-check it (inputs, the provider's signed outputs, the checker's outputs,
//!   the tolerance).
//! - [`ToChecker`]: the frames a checker accepts on its data-plane endpoint.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::envelope::{Message, MessageKind};
use crate::geo::Coordinates;
use crate::id::{NodeId, NodeKey, Signature, SignatureError};
use crate::limits::FRAME_BYTES_MAX;
use crate::proto::{AnswerClaim, RequestId};
use crate::tensor::{self, Tensor};
use crate::wire::{self, DecodeError};
use crate::ModelHash;

/// Most probes one attestation may summarise.
pub const ATTESTATION_PROBES_MAX: u32 = 100_000;

/// Most re-executions one attestation may summarise.
pub const ATTESTATION_CHECKS_MAX: u32 = 10_000_000;

/// Most answers one sample carries (one per provider the request went to).
pub const SAMPLE_ANSWERS_MAX: usize = 8;

/// Signing domain of evidence.
pub const EVIDENCE_DOMAIN: &str = "evidence/v1";

/// A checker's findings about one provider, over its recent window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Attestation {
    pub provider: NodeId,
    /// Where the checker is: the centre of the disk its round trips draw.
    pub checker_at: Coordinates,
    /// Where robots forward samples to this checker (QUIC, the checker's own identity).
    pub checker_addr: Option<SocketAddr>,
    /// Whether the latest probe was answered.
    pub up: bool,
    /// Probes in the window, those answered with a valid signed result, and those answered
    /// within the probe's deadline.
    pub probes: u32,
    pub answered: u32,
    pub on_time: u32,
    /// Least round trip of the window's answered probes, µs, timed by the checker from sending a
    /// fresh random input to receiving the provider's signed answer over it. Nothing answers a
    /// question before it is asked, so the provider is within this round trip's light-travel
    /// disk of the checker.
    pub rtt_min_us: Option<u32>,
    /// The service time the provider stated in that answer, µs: what of the round trip it
    /// says was computing. Only ever used to excuse slowness, never to shrink a disk.
    pub rtt_min_service_us: Option<u32>,
    /// The 95th percentile of the window's round trips, µs: the latency robots near this
    /// checker would see.
    pub rtt_p95_us: Option<u32>,
    /// Answers re-executed in the window (probes and robots' samples), and those that differed
    /// beyond the tolerance.
    pub checked: u32,
    pub wrong: u32,
    /// BLAKE3 of the latest [`SignedEvidence`] of a wrong answer, kept by the checker.
    pub evidence: Option<[u8; 32]>,
}

impl Message for Attestation {
    const KIND: MessageKind = MessageKind::Attestation;

    fn validate(&self) -> Result<(), String> {
        if self.probes > ATTESTATION_PROBES_MAX || self.checked > ATTESTATION_CHECKS_MAX {
            return Err(format!(
                "summarises {} probes and {} checks, more than one window holds",
                self.probes, self.checked
            ));
        }
        if self.answered > self.probes || self.on_time > self.answered {
            return Err(format!(
                "{} probes, {} answered, {} on time: inconsistent",
                self.probes, self.answered, self.on_time
            ));
        }
        if self.wrong > self.checked {
            return Err(format!(
                "{} wrong out of {} checked",
                self.wrong, self.checked
            ));
        }
        if self.rtt_min_us.is_some() && self.answered == 0 {
            return Err("a round trip without an answered probe".into());
        }
        if self
            .rtt_min_service_us
            .is_some_and(|s| self.rtt_min_us.is_none_or(|r| s > r))
        {
            return Err("a service time longer than its round trip".into());
        }
        if self
            .rtt_p95_us
            .is_some_and(|p| self.rtt_min_us.is_none_or(|r| p < r))
        {
            return Err("a round-trip p95 below its least round trip".into());
        }
        if let Some(addr) = self.checker_addr {
            if addr.port() == 0 || addr.ip().is_unspecified() {
                return Err(format!("sample address {addr} is not reachable"));
            }
        }
        Ok(())
    }
}

/// One provider's signed answer to a sampled request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedAnswer {
    pub provider: NodeId,
    pub outputs: Vec<Tensor>,
    /// The provider's signature over the [`AnswerClaim`] (request, inputs, outputs, model).
    pub signature: Signature,
}

impl SignedAnswer {
    /// Checks the provider's signature over this answer to `request` on `inputs` with `model`.
    pub fn verify(
        &self,
        request: RequestId,
        inputs: &[Tensor],
        model: ModelHash,
    ) -> Result<(), SignatureError> {
        let key = self.provider.public_key()?;
        AnswerClaim::new(request, inputs, &self.outputs, model).verify(&key, &self.signature)
    }
}

/// A sampled request, as a robot forwards it to a checker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub model: ModelHash,
    pub request: RequestId,
    pub inputs: Vec<Tensor>,
    pub answers: Vec<SignedAnswer>,
}

/// What a checker accepts on its endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToChecker {
    /// From a robot: re-run this request and compare the answers.
    Sample(Sample),
    /// From another checker that found a wrong answer in this sample: re-run it too, so that
    /// the finding does not rest on one checker's word. Not forwarded again.
    Confirm(Sample),
}

impl ToChecker {
    /// Decodes and validates a frame.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let message: Self = wire::decode(bytes, FRAME_BYTES_MAX)?;
        let (Self::Sample(sample) | Self::Confirm(sample)) = &message;
        if sample.answers.is_empty() || sample.answers.len() > SAMPLE_ANSWERS_MAX {
            return Err(DecodeError::Invalid(format!(
                "a sample carries {} answers, expected 1 to {SAMPLE_ANSWERS_MAX}",
                sample.answers.len()
            )));
        }
        let invalid = |e: tensor::TensorError| DecodeError::Invalid(e.to_string());
        tensor::check_all(&sample.inputs).map_err(invalid)?;
        for answer in &sample.answers {
            tensor::check_all(&answer.outputs).map_err(invalid)?;
        }
        Ok(message)
    }

    pub fn sample(&self) -> &Sample {
        let (Self::Sample(sample) | Self::Confirm(sample)) = self;
        sample
    }
}

/// How far re-executed outputs may differ from a provider's before the answer counts as wrong:
/// element by element, `|provider − checker| ≤ abs + rel × |checker|` for floats (hardware,
/// kernels and batch sizes differ in the last bits); integers and bytes must be equal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    pub rel: f32,
    pub abs: f32,
}

impl Default for Tolerance {
    /// 1e-3 relative plus 1e-4 absolute: about a thousand times the differences measured
    /// between tract's CPU kernels and onnxruntime on the bundled models (≤ 5e-7), and far
    /// below what changes a decoded detection.
    fn default() -> Self {
        Self {
            rel: 1e-3,
            abs: 1e-4,
        }
    }
}

/// A wrong answer, as a checker found it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub model: ModelHash,
    pub request: RequestId,
    pub inputs: Vec<Tensor>,
    /// The provider's signed answer.
    pub answer: SignedAnswer,
    /// What the checker's own run of the model gave.
    pub expected: Vec<Tensor>,
    pub tolerance: Tolerance,
    /// How the outputs differ, in words.
    pub found: String,
    pub checker: NodeId,
    pub at_ms: crate::UnixMs,
}

/// Evidence signed by the checker that found it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedEvidence {
    pub evidence: Evidence,
    pub signature: Signature,
}

impl SignedEvidence {
    pub fn sign(key: &NodeKey, evidence: Evidence) -> Self {
        let signature = key.sign(EVIDENCE_DOMAIN, &wire::encode(&evidence));
        Self {
            evidence,
            signature,
        }
    }

    /// Checks both signatures: the checker's over the evidence, the provider's over its answer.
    pub fn verify(&self) -> Result<(), String> {
        let e = &self.evidence;
        let checker = e.checker.public_key().map_err(|err| err.to_string())?;
        checker
            .verify(EVIDENCE_DOMAIN, &wire::encode(e), &self.signature)
            .map_err(|err| format!("the checker's signature does not verify: {err}"))?;
        e.answer
            .verify(e.request, &e.inputs, e.model)
            .map_err(|err| format!("the provider's signature does not verify: {err}"))
    }

    /// BLAKE3 of the encoded evidence: what attestations name.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&wire::encode(self)).as_bytes()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decodes evidence (at most a data-plane frame's size) and checks its tensors.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let evidence: Self = wire::decode(bytes, 2 * FRAME_BYTES_MAX)?;
        let e = &evidence.evidence;
        for tensors in [&e.inputs, &e.answer.outputs, &e.expected] {
            tensor::check_all(tensors).map_err(|err| DecodeError::Invalid(err.to_string()))?;
        }
        Ok(evidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Envelope;

    fn attestation(provider: NodeId) -> Attestation {
        Attestation {
            provider,
            checker_at: Coordinates::new(48.85, 2.35).unwrap_or_else(|_| unreachable!()),
            checker_addr: Some("127.0.0.1:9000".parse().unwrap_or_else(|_| unreachable!())),
            up: true,
            probes: 10,
            answered: 9,
            on_time: 9,
            rtt_min_us: Some(1_200),
            rtt_min_service_us: Some(300),
            rtt_p95_us: Some(2_000),
            checked: 9,
            wrong: 0,
            evidence: None,
        }
    }

    #[test]
    fn inconsistent_attestations_are_refused_with_a_reason() {
        let key = NodeKey::from_seed([5; 32]);
        let provider = NodeKey::from_seed([6; 32]).id();
        let good = attestation(provider);
        let cases = [
            (
                "answered",
                Attestation {
                    answered: 11,
                    ..good
                },
            ),
            ("wrong out of", Attestation { wrong: 10, ..good }),
            (
                "round trip",
                Attestation {
                    answered: 0,
                    on_time: 0,
                    ..good
                },
            ),
            (
                "service time",
                Attestation {
                    rtt_min_service_us: Some(5_000),
                    ..good
                },
            ),
            (
                "window",
                Attestation {
                    probes: ATTESTATION_PROBES_MAX + 1,
                    ..good
                },
            ),
        ];
        for (needle, bad) in cases {
            let err = Envelope::seal(&key, 1, 10_000, &bad)
                .open::<Attestation>(1_000, None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let sealed = Envelope::seal(&key, 1, 10_000, &good);
        assert_eq!(sealed.open::<Attestation>(1_000, None).ok(), Some(good));
    }

    #[test]
    fn evidence_verifies_only_as_signed() {
        let provider = NodeKey::from_seed([1; 32]);
        let checker = NodeKey::from_seed([2; 32]);
        let model = ModelHash::of(b"m");
        let inputs = vec![Tensor::from_f32(&[2], &[1.0, 2.0]).unwrap()];
        let outputs = vec![Tensor::from_f32(&[1], &[9.0]).unwrap()];
        let signature = AnswerClaim::new(RequestId(3), &inputs, &outputs, model).sign(&provider);
        let evidence = Evidence {
            model,
            request: RequestId(3),
            inputs,
            answer: SignedAnswer {
                provider: provider.id(),
                outputs,
                signature,
            },
            expected: vec![Tensor::from_f32(&[1], &[3.0]).unwrap()],
            tolerance: Tolerance::default(),
            found: "output 0 [0]: 9 against 3".into(),
            checker: checker.id(),
            at_ms: 1,
        };
        let signed = SignedEvidence::sign(&checker, evidence);
        assert_eq!(signed.verify(), Ok(()));
        let back = SignedEvidence::from_bytes(&signed.to_bytes()).unwrap();
        assert_eq!(back, signed);
        // The checker cannot change what the provider said, nor anyone what the checker said.
        let mut forged = signed.clone();
        forged.evidence.answer.outputs = vec![Tensor::from_f32(&[1], &[8.0]).unwrap()];
        assert!(forged.verify().is_err());
        let mut forged = signed;
        forged.evidence.found = "nothing".into();
        assert!(forged.verify().unwrap_err().contains("checker"));
    }
}
