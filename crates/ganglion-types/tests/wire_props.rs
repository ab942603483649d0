//! Property tests: every wire type survives a round trip, and no decoder panics or accepts
//! truncated or random bytes silently.

use ganglion_types::envelope::{Envelope, MessageKind};
use ganglion_types::id::{NodeId, Signature};
use ganglion_types::proto::{
    Answer, Done, Outcome, Refusal, Request, RequestId, ServeError, SessionId, SessionOpen,
    SessionOpened, TensorSpec, ToProvider, ToRobot,
};
use ganglion_types::{wire, Coordinates, DType, MicroTokens, ModelHash, Tensor};
use proptest::prelude::*;

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::I64), Just(DType::U8)]
}

fn tensor() -> impl Strategy<Value = Tensor> {
    (dtype(), prop::collection::vec(0u32..5, 0..4)).prop_flat_map(|(dtype, shape)| {
        let len = shape.iter().map(|&d| d as usize).product::<usize>() * dtype.size();
        prop::collection::vec(any::<u8>(), len).prop_map(move |data| Tensor {
            dtype,
            shape: shape.clone(),
            data,
        })
    })
}

fn node_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 32]>().prop_map(NodeId::from_bytes)
}

fn signature() -> impl Strategy<Value = Signature> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
        let mut s = [0u8; 64];
        s[..32].copy_from_slice(&a);
        s[32..].copy_from_slice(&b);
        Signature(s)
    })
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        node_id(),
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..64),
        signature(),
    )
        .prop_map(
            |(author, seq, expires_at_ms, payload, signature)| Envelope {
                kind: MessageKind::SessionOpen,
                author,
                seq,
                expires_at_ms,
                payload,
                signature,
            },
        )
}

fn serve_error() -> impl Strategy<Value = ServeError> {
    prop_oneof![
        any::<u32>().prop_map(|queued| ServeError::Busy { queued }),
        Just(ServeError::DeadlineExceeded),
        "[a-z ]{0,40}".prop_map(ServeError::BadInput),
        Just(ServeError::NoSession),
        "[a-z ]{0,40}".prop_map(ServeError::Internal),
    ]
}

fn to_provider() -> impl Strategy<Value = ToProvider> {
    prop_oneof![
        envelope().prop_map(ToProvider::Open),
        envelope().prop_map(ToProvider::Renew),
        (
            any::<u64>(),
            any::<u32>(),
            prop::collection::vec(tensor(), 0..3)
        )
            .prop_map(|(id, budget_us, inputs)| ToProvider::Request(Request {
                id: RequestId(id),
                budget_us,
                inputs
            })),
    ]
}

fn to_robot() -> impl Strategy<Value = ToRobot> {
    let spec = || {
        (
            "[a-z_0-9]{1,12}",
            dtype(),
            prop::collection::vec(any::<Option<u32>>(), 0..4),
        )
            .prop_map(|(name, dtype, shape)| TensorSpec { name, dtype, shape })
    };
    prop_oneof![
        (
            any::<u64>(),
            any::<[u8; 32]>(),
            "[a-z]{0,16}",
            prop::collection::vec(spec(), 0..3),
            prop::collection::vec(spec(), 0..3)
        )
            .prop_map(
                |(s, m, alias, inputs, outputs)| ToRobot::Opened(SessionOpened {
                    session: SessionId(s),
                    model: ModelHash(m),
                    alias,
                    inputs,
                    outputs,
                    pay_to: (s % 2 == 0).then_some(ganglion_types::pay::Address([7; 20])),
                })
            ),
        any::<[u8; 32]>().prop_map(|m| ToRobot::Refused(Refusal::UnknownModel(ModelHash(m)))),
        Just(ToRobot::Refused(Refusal::WrongProvider)),
        (
            any::<u64>(),
            prop::collection::vec(tensor(), 0..3),
            any::<u32>(),
            signature()
        )
            .prop_map(
                |(id, outputs, service_us, signature)| ToRobot::Answer(Answer {
                    id: RequestId(id),
                    outcome: Outcome::Done(Done {
                        outputs,
                        service_us,
                        signature
                    }),
                })
            ),
        (any::<u64>(), serve_error()).prop_map(|(id, e)| ToRobot::Answer(Answer {
            id: RequestId(id),
            outcome: Outcome::Failed(e)
        })),
    ]
}

/// Every strict prefix of a valid encoding is rejected (none is a valid message by accident).
fn assert_prefixes_rejected<T>(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, wire::DecodeError>,
) {
    for cut in 0..bytes.len() {
        assert!(
            decode(&bytes[..cut]).is_err(),
            "prefix of {cut}/{} bytes decoded",
            bytes.len()
        );
    }
}

proptest! {
    #[test]
    fn to_provider_round_trips(message in to_provider()) {
        let bytes = wire::encode(&message);
        prop_assert_eq!(ToProvider::decode(&bytes).unwrap(), message);
        assert_prefixes_rejected(&bytes, ToProvider::decode);
    }

    #[test]
    fn to_robot_round_trips(message in to_robot()) {
        let bytes = wire::encode(&message);
        prop_assert_eq!(ToRobot::decode(&bytes).unwrap(), message);
        assert_prefixes_rejected(&bytes, ToRobot::decode);
    }

    #[test]
    fn envelope_round_trips(env in envelope()) {
        let bytes = env.to_bytes();
        prop_assert_eq!(Envelope::from_bytes(&bytes).unwrap(), env);
        assert_prefixes_rejected(&bytes, Envelope::from_bytes);
    }

    #[test]
    fn session_open_money_and_coordinates_round_trip(
        s in any::<u64>(), p in node_id(), m in any::<[u8; 32]>(), micros in any::<u64>(),
        lat in -90.0f64..=90.0, lon in -180.0f64..=180.0,
    ) {
        let open = SessionOpen { session: SessionId(s), provider: p, model: ModelHash(m), pay: None };
        prop_assert_eq!(wire::decode::<SessionOpen>(&wire::encode(&open), 1024).unwrap(), open);
        let amount = MicroTokens(micros);
        prop_assert_eq!(wire::decode::<MicroTokens>(&wire::encode(&amount), 64).unwrap(), amount);
        prop_assert_eq!(amount.to_string().parse::<MicroTokens>().unwrap(), amount);
        let here = Coordinates::new(lat, lon).unwrap();
        prop_assert_eq!(wire::decode::<Coordinates>(&wire::encode(&here), 64).unwrap(), here);
        let did = p.to_string();
        prop_assert_eq!(did.parse::<NodeId>().unwrap(), p);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = ToProvider::decode(&bytes);
        let _ = ToRobot::decode(&bytes);
        let _ = Envelope::from_bytes(&bytes);
    }
}

#[test]
fn oversized_frames_are_refused_before_decoding() {
    let big = vec![0u8; ganglion_types::limits::FRAME_BYTES_MAX + 1];
    assert!(matches!(
        ToProvider::decode(&big),
        Err(wire::DecodeError::TooLarge { .. })
    ));
    let big = vec![0u8; ganglion_types::limits::ENVELOPE_BYTES_MAX + 1];
    assert!(matches!(
        Envelope::from_bytes(&big),
        Err(wire::DecodeError::TooLarge { .. })
    ));
}
