//! Control-plane messages: what a provider tells the network about itself. Both travel in
//! signed [`Envelope`](crate::Envelope)s, so the author is the provider and its sequence number
//! orders them.
//!
//! - [`Offer`]: what it serves, where, at what price, and where to reach it. Republished before
//!   it expires; a newer sequence number replaces an older offer, never the reverse.
//! - [`Heartbeat`]: its load, every few seconds. Small (a few dozen bytes per model).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::accel::{Accelerator, ACCELERATOR_NAME_BYTES_MAX};
use crate::envelope::{Message, MessageKind};
use crate::geo::Coordinates;
use crate::money::MicroTokens;
use crate::ModelHash;

/// Models one offer may list.
pub const OFFER_MODELS_MAX: usize = 64;

/// Accelerators one offer may list.
pub const OFFER_ACCELERATORS_MAX: usize = 16;

/// Sessions one provider may offer at once.
pub const OFFER_SLOTS_MAX: u32 = 100_000;

/// Highest price per answer an offer may ask (a thousand tokens): anything above is a typo or
/// an attempt to overflow someone's arithmetic.
pub const OFFER_PRICE_MAX: MicroTokens = MicroTokens(1_000_000_000);

/// CPU cores an offer may declare.
pub const OFFER_CPU_CORES_MAX: u32 = 4_096;

/// Models one heartbeat may report on.
pub const HEARTBEAT_MODELS_MAX: usize = OFFER_MODELS_MAX;

/// A served model: its hash and the alias it is known by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub model: ModelHash,
    pub alias: String,
}

/// What a provider offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    /// Where robots open sessions (QUIC).
    pub addr: SocketAddr,
    /// Where it says it is (checkers bound this with measured round trips).
    pub at: Coordinates,
    /// The operator running it (failure domain), e.g. a hash of the operator's key.
    pub operator: u64,
    pub models: Vec<Listing>,
    pub price: MicroTokens,
    pub slots: u32,
    pub cpu_cores: u32,
    pub accelerators: Vec<Accelerator>,
}

impl Message for Offer {
    const KIND: MessageKind = MessageKind::Offer;

    fn validate(&self) -> Result<(), String> {
        if self.models.is_empty() || self.models.len() > OFFER_MODELS_MAX {
            return Err(format!(
                "lists {} models, expected 1 to {OFFER_MODELS_MAX}",
                self.models.len()
            ));
        }
        if let Some(bad) = self.models.iter().find(|l| !valid_alias(&l.alias)) {
            return Err(format!(
                "model alias {:?} is not 1 to 64 bytes of [a-z0-9-_.]",
                bad.alias
            ));
        }
        if self.slots == 0 || self.slots > OFFER_SLOTS_MAX {
            return Err(format!(
                "offers {} slots, expected 1 to {OFFER_SLOTS_MAX}",
                self.slots
            ));
        }
        if self.price > OFFER_PRICE_MAX {
            return Err(format!(
                "asks {} per answer, more than {OFFER_PRICE_MAX}",
                self.price
            ));
        }
        if self.cpu_cores > OFFER_CPU_CORES_MAX {
            return Err(format!("declares {} CPU cores", self.cpu_cores));
        }
        if self.accelerators.len() > OFFER_ACCELERATORS_MAX {
            return Err(format!("lists {} accelerators", self.accelerators.len()));
        }
        if let Some(bad) = self
            .accelerators
            .iter()
            .find(|a| a.name.len() > ACCELERATOR_NAME_BYTES_MAX || a.memory_mib == 0)
        {
            return Err(format!("accelerator {:?} is malformed", bad.name));
        }
        if self.addr.port() == 0 || self.addr.ip().is_unspecified() {
            return Err(format!("data-plane address {} is not reachable", self.addr));
        }
        Ok(())
    }
}

/// Load figures of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelLoad {
    pub model: ModelHash,
    pub p50_us: u32,
    pub p95_us: u32,
}

/// A provider's load, every few seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The offer this load belongs to (its envelope's sequence number).
    pub offer_seq: u64,
    /// Requests waiting or running.
    pub queued: u32,
    pub free_slots: u32,
    pub models: Vec<ModelLoad>,
    /// Mean GPU utilisation, percent, when it has GPUs.
    pub accelerator_busy_percent: Option<u8>,
}

impl Message for Heartbeat {
    const KIND: MessageKind = MessageKind::Heartbeat;

    fn validate(&self) -> Result<(), String> {
        if self.models.len() > HEARTBEAT_MODELS_MAX {
            return Err(format!("reports on {} models", self.models.len()));
        }
        if self.free_slots > OFFER_SLOTS_MAX {
            return Err(format!("reports {} free slots", self.free_slots));
        }
        if self.models.iter().any(|m| m.p50_us > m.p95_us) {
            return Err("a model's p50 is above its p95".into());
        }
        if self.accelerator_busy_percent.is_some_and(|p| p > 100) {
            return Err("utilisation above 100%".into());
        }
        Ok(())
    }
}

fn valid_alias(alias: &str) -> bool {
    !alias.is_empty()
        && alias.len() <= crate::limits::ALIAS_BYTES_MAX
        && alias
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Envelope, NodeKey};

    pub(crate) fn offer() -> Offer {
        Offer {
            addr: "127.0.0.1:7000".parse().unwrap_or_else(|_| unreachable!()),
            at: Coordinates::new(48.85, 2.35).unwrap_or_else(|_| unreachable!()),
            operator: 1,
            models: vec![Listing {
                model: ModelHash::of(b"m"),
                alias: "blazeface".into(),
            }],
            price: MicroTokens(100),
            slots: 8,
            cpu_cores: 2,
            accelerators: Vec::new(),
        }
    }

    #[test]
    fn inconsistent_offers_are_refused_with_a_reason() {
        let key = NodeKey::from_seed([3; 32]);
        let cases: [(&str, Offer); 5] = [
            (
                "slots",
                Offer {
                    slots: 0,
                    ..offer()
                },
            ),
            (
                "models",
                Offer {
                    models: Vec::new(),
                    ..offer()
                },
            ),
            (
                "per answer",
                Offer {
                    price: MicroTokens(u64::MAX),
                    ..offer()
                },
            ),
            (
                "address",
                Offer {
                    addr: "0.0.0.0:7000".parse().unwrap_or_else(|_| unreachable!()),
                    ..offer()
                },
            ),
            (
                "alias",
                Offer {
                    models: vec![Listing {
                        model: ModelHash::of(b"m"),
                        alias: "Bad!".into(),
                    }],
                    ..offer()
                },
            ),
        ];
        for (needle, bad) in cases {
            let envelope = Envelope::seal(&key, 1, 10_000, &bad);
            let err = envelope.open::<Offer>(1_000, None).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let good = Envelope::seal(&key, 1, 10_000, &offer());
        assert_eq!(good.open::<Offer>(1_000, None).ok(), Some(offer()));
        // A heartbeat's signature is worthless as an offer's.
        let beat = Heartbeat {
            offer_seq: 1,
            queued: 0,
            free_slots: 8,
            models: Vec::new(),
            accelerator_busy_percent: None,
        };
        let mut forged = Envelope::seal(&key, 2, 10_000, &beat);
        forged.kind = MessageKind::Offer;
        assert!(forged.open::<Offer>(1_000, None).is_err());
    }
}
