//! The data-plane protocol: what a robot and a provider say on a session's stream.
//!
//! ```text
//! robot                                   provider
//!   Open(envelope{SessionOpen})   ->
//!                                 <-  Opened{model, input specs} | Refused{reason}
//!   Request{id, budget, inputs}   ->
//!                                 <-  Answer{id, Done{outputs, signature} | Failed{error}}
//!   Voucher(signed voucher)       ->      (any time; cumulative, the latest counts)
//! ```
//!
//! Paid sessions: the open carries [`PayTerms`] (the robot's pay-key binding, the price per
//! answer it offers, its budget); the provider answers with the address vouchers must name.
//! Every answer the provider sends with a result is owed at that price, whether or not it won
//! the race (a hedge is a cost the robot chooses); the robot sends a new cumulative voucher
//! after each such answer, and a provider answers [`ServeError::Unpaid`] once a session is
//! more than its allowance behind.
//!
//! Requests may be pipelined; answers echo the request id and may come back in any order. A
//! successful answer is signed by the provider over [`AnswerClaim`]: request id, input hash,
//! output hash and model hash, so it can later serve as evidence of what the provider said.

use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, Message, MessageKind};
use crate::id::{NodeId, NodeKey, PublicKey, Signature, SignatureError};
use crate::limits::{
    ALIAS_BYTES_MAX, ERROR_TEXT_BYTES_MAX, FRAME_BYTES_MAX, TENSORS_MAX, TENSOR_RANK_MAX,
};
use crate::model::ModelHash;
use crate::money::MicroTokens;
use crate::pay::{Address, Binding, SignedVoucher};
use crate::tensor::{self, DType, Tensor};
use crate::wire::{self, DecodeError};

/// Signing domain of answers.
pub const ANSWER_DOMAIN: &str = "answer/v1";

/// A session, chosen at random by the robot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub u64);

/// A request within a session, counting up from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// A robot asks `provider` to serve `model` for `session`. Sent sealed in an [`Envelope`], so
/// the provider holds the robot's signed word for what it asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOpen {
    pub session: SessionId,
    pub provider: NodeId,
    pub model: ModelHash,
    /// How the robot pays; `None` for a provider that serves for free.
    pub pay: Option<PayTerms>,
}

/// A robot renewing a paid session: the most it will pay this provider for the whole session
/// is now `budget` (never lower than before). Sealed in an envelope by the robot's key, like the
/// open, and sent on the session's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRenew {
    pub session: SessionId,
    pub provider: NodeId,
    pub budget: MicroTokens,
}

impl Message for SessionRenew {
    const KIND: MessageKind = MessageKind::SessionRenew;
}

/// What a robot offers for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayTerms {
    /// The robot's pay key, bound to its node identity.
    pub binding: Binding,
    /// Price per answer offered.
    pub price: MicroTokens,
    /// Most the robot will pay this provider for the whole session.
    pub budget: MicroTokens,
}

impl Message for SessionOpen {
    const KIND: MessageKind = MessageKind::SessionOpen;
}

/// What a robot sends on a session stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToProvider {
    Open(Envelope),
    Request(Request),
    Voucher(SignedVoucher),
    /// A [`SessionRenew`] in an envelope.
    Renew(Envelope),
}

/// One inference request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    /// Microseconds the robot will wait for this answer; a provider that cannot answer in time
    /// says so at once instead of working for nothing.
    pub budget_us: u32,
    pub inputs: Vec<Tensor>,
}

/// What a provider sends on a session stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToRobot {
    Opened(SessionOpened),
    Refused(Refusal),
    Answer(Answer),
}

/// The provider accepted the session and says what inputs the model takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionOpened {
    pub session: SessionId,
    pub model: ModelHash,
    pub alias: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Where a paid session's vouchers must be made out to.
    pub pay_to: Option<Address>,
}

/// The expected type and shape of one model input. A `None` dimension takes any size (a
/// sequence length, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Option<u32>>,
}

impl TensorSpec {
    /// Checks that `tensor` is well formed and has this type and shape.
    pub fn check(&self, tensor: &Tensor) -> Result<(), String> {
        tensor.check().map_err(|e| e.to_string())?;
        let shape_ok = tensor.shape.len() == self.shape.len()
            && self
                .shape
                .iter()
                .zip(&tensor.shape)
                .all(|(want, got)| want.is_none_or(|w| w == *got));
        if tensor.dtype != self.dtype || !shape_ok {
            return Err(format!(
                "input {:?} expects {:?} of shape {}, got {:?} of shape {:?}",
                self.name,
                self.dtype,
                self.shape_text(),
                tensor.dtype,
                tensor.shape
            ));
        }
        Ok(())
    }

    /// The shape as text, `?` for a free dimension: `[1, 3, 128, 128]`, `[1, ?]`.
    pub fn shape_text(&self) -> String {
        let dims: Vec<String> = self
            .shape
            .iter()
            .map(|d| d.map_or_else(|| "?".to_owned(), |d| d.to_string()))
            .collect();
        format!("[{}]", dims.join(", "))
    }
}

/// Why a provider would not open a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("this provider does not serve model {0}")]
    UnknownModel(ModelHash),
    #[error("session open was not accepted: {0}")]
    BadOpen(String),
    #[error("the session open is addressed to another provider")]
    WrongProvider,
    #[error("every session slot is taken ({slots} sessions open)")]
    Full { slots: u32 },
    #[error("this provider serves paid sessions only")]
    Unpaid,
    #[error("the price offered is below the {asked} per answer this provider asks")]
    PriceTooLow { asked: MicroTokens },
    #[error("payment terms refused: {0}")]
    BadPayment(String),
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub id: RequestId,
    pub outcome: Outcome,
}

/// A result or the reason there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Done(Done),
    Failed(ServeError),
}

/// A signed result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub outputs: Vec<Tensor>,
    /// Time the provider spent on the request, queue included.
    pub service_us: u32,
    pub signature: Signature,
}

/// Why a provider did not answer a request with a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("provider busy: {queued} requests queued")]
    Busy { queued: u32 },
    #[error("the request's budget ran out before it could be served")]
    DeadlineExceeded,
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("no session is open on this stream")]
    NoSession,
    #[error("provider error: {0}")]
    Internal(String),
    #[error("the session's vouchers are {behind} behind what it owes")]
    Unpaid { behind: MicroTokens },
}

/// What a provider's answer signature commits to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerClaim {
    pub request: RequestId,
    pub input_hash: [u8; 32],
    pub output_hash: [u8; 32],
    pub model: ModelHash,
}

impl AnswerClaim {
    pub fn new(
        request: RequestId,
        inputs: &[Tensor],
        outputs: &[Tensor],
        model: ModelHash,
    ) -> Self {
        Self {
            request,
            input_hash: tensor::hash_all(inputs),
            output_hash: tensor::hash_all(outputs),
            model,
        }
    }

    fn bytes(&self) -> [u8; 104] {
        let mut out = [0u8; 104];
        out[..8].copy_from_slice(&self.request.0.to_le_bytes());
        out[8..40].copy_from_slice(&self.input_hash);
        out[40..72].copy_from_slice(&self.output_hash);
        out[72..].copy_from_slice(&self.model.0);
        out
    }

    pub fn sign(&self, key: &NodeKey) -> Signature {
        key.sign(ANSWER_DOMAIN, &self.bytes())
    }

    /// [`AnswerClaim::sign`] with a nonce made ahead of time: the same check passes it.
    pub fn presign(&self, signer: &crate::presign::Presigner) -> Signature {
        signer.sign(ANSWER_DOMAIN, &self.bytes())
    }

    pub fn verify(&self, key: &PublicKey, signature: &Signature) -> Result<(), SignatureError> {
        key.verify(ANSWER_DOMAIN, &self.bytes(), signature)
    }
}

fn check_text(what: &str, text: &str, max: usize) -> Result<(), DecodeError> {
    if text.len() > max {
        return Err(DecodeError::Invalid(format!(
            "{what} of {} bytes exceeds {max}",
            text.len()
        )));
    }
    Ok(())
}

fn check_tensors(tensors: &[Tensor]) -> Result<(), DecodeError> {
    tensor::check_all(tensors).map_err(|e| DecodeError::Invalid(e.to_string()))
}

impl ToProvider {
    /// Decodes and validates a frame from a robot.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let message: Self = wire::decode(bytes, FRAME_BYTES_MAX)?;
        if let Self::Request(request) = &message {
            check_tensors(&request.inputs)?;
        }
        Ok(message)
    }
}

impl ToRobot {
    /// Decodes and validates a frame from a provider.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let message: Self = wire::decode(bytes, FRAME_BYTES_MAX)?;
        match &message {
            Self::Opened(opened) => {
                check_text("alias", &opened.alias, ALIAS_BYTES_MAX)?;
                if opened.inputs.len() > TENSORS_MAX || opened.outputs.len() > TENSORS_MAX {
                    return Err(DecodeError::Invalid("too many tensor specs".into()));
                }
                for spec in opened.inputs.iter().chain(&opened.outputs) {
                    check_text("tensor name", &spec.name, ALIAS_BYTES_MAX)?;
                    if spec.shape.len() > TENSOR_RANK_MAX {
                        return Err(DecodeError::Invalid("tensor spec rank too large".into()));
                    }
                }
            }
            Self::Refused(Refusal::BadOpen(text)) => {
                check_text("refusal", text, ERROR_TEXT_BYTES_MAX)?
            }
            Self::Refused(_) => {}
            Self::Answer(Answer {
                outcome: Outcome::Done(done),
                ..
            }) => check_tensors(&done.outputs)?,
            Self::Answer(Answer {
                outcome: Outcome::Failed(error),
                ..
            }) => match error {
                ServeError::BadInput(text) | ServeError::Internal(text) => {
                    check_text("error", text, ERROR_TEXT_BYTES_MAX)?;
                }
                _ => {}
            },
        }
        Ok(message)
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary (for errors sent over the wire).
pub fn truncate_text(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_signature_commits_to_every_field() {
        let key = NodeKey::from_seed([9; 32]);
        let public = key.id().public_key().unwrap();
        let input = [Tensor::from_f32(&[2], &[1.0, 2.0]).unwrap()];
        let output = [Tensor::from_f32(&[1], &[3.0]).unwrap()];
        let model = ModelHash::of(b"model");
        let claim = AnswerClaim::new(RequestId(7), &input, &output, model);
        let sig = claim.sign(&key);
        assert_eq!(claim.verify(&public, &sig), Ok(()));

        let other_output = [Tensor::from_f32(&[1], &[3.5]).unwrap()];
        let wrong = AnswerClaim::new(RequestId(7), &input, &other_output, model);
        assert_eq!(wrong.verify(&public, &sig), Err(SignatureError::Invalid));
        let wrong = AnswerClaim::new(RequestId(8), &input, &output, model);
        assert_eq!(wrong.verify(&public, &sig), Err(SignatureError::Invalid));
        let wrong = AnswerClaim::new(RequestId(7), &input, &output, ModelHash::of(b"x"));
        assert_eq!(wrong.verify(&public, &sig), Err(SignatureError::Invalid));
    }

    #[test]
    fn inconsistent_tensors_in_a_request_are_rejected_at_decode() {
        let bad = Tensor {
            dtype: DType::F32,
            shape: vec![4],
            data: vec![0; 3],
        };
        let frame = wire::encode(&ToProvider::Request(Request {
            id: RequestId(1),
            budget_us: 1000,
            inputs: vec![bad],
        }));
        assert!(matches!(
            ToProvider::decode(&frame),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn oversized_error_text_is_rejected_and_truncation_respects_chars() {
        let text = "é".repeat(ERROR_TEXT_BYTES_MAX);
        let frame = wire::encode(&ToRobot::Answer(Answer {
            id: RequestId(1),
            outcome: Outcome::Failed(ServeError::Internal(text.clone())),
        }));
        assert!(matches!(
            ToRobot::decode(&frame),
            Err(DecodeError::Invalid(_))
        ));
        let cut = truncate_text(text, 5);
        assert_eq!(cut, "éé");
    }
}
