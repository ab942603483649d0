//! Offers and load, as the market sees them.

use ganglion_types::{AcceleratorClass, Coordinates, MicroTokens, ModelHash, NodeId, UnixMs};

/// The failure domains an offer belongs to. Two providers of one session must not share an
/// operator or a machine, and should not share a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Domains {
    /// Who runs it (an operator's identity, hashed to 64 bits).
    pub operator: u64,
    /// The physical machine.
    pub machine: u64,
}

/// What a provider offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub provider: NodeId,
    pub domains: Domains,
    /// Where it says it is (checkers bound this with measured round trips).
    pub at: Coordinates,
    pub models: Vec<ModelHash>,
    /// Asked price per answer: the provider's standing bid.
    pub price: MicroTokens,
    /// Sessions it takes at once.
    pub slots: u32,
    /// Accelerators (GPUs) behind the offer; 0 for CPU-only.
    pub gpus: u32,
    /// The best accelerator class behind the offer (what a session may require).
    pub accelerator: AcceleratorClass,
    pub expires_at_ms: UnixMs,
}

/// What a provider's heartbeats say about its load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Sessions it can still take.
    pub free_slots: u32,
    /// 95th percentile service time (queue and inference), microseconds.
    pub service_p95_us: u32,
}

impl Load {
    /// The load a fresh offer is assumed to have until a heartbeat says otherwise.
    pub fn idle(offer: &Offer, service_p95_us: u32) -> Self {
        Self {
            free_slots: offer.slots,
            service_p95_us,
        }
    }
}
