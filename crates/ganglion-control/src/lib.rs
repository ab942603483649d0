//! The control plane: how every node learns which providers exist, what they offer, where they
//! are and how loaded they are, with no registry.
//!
//! Parts:
//! - [`view`]: sans-IO. Signed offers and heartbeats (from `ganglion_types::control`) folded
//!   into a bounded view: the market's book plus what robots need to reach each provider.
//!   Time is an argument.
//! - [`swarm`]: the driver. A libp2p swarm (QUIC, TCP, identify, Kademlia, gossipsub with peer
//!   scoring, ping, mDNS) that publishes a provider's offer and heartbeats and validates every
//!   message through the view before gossip forwards it.

pub mod swarm;
pub mod sync;
pub mod view;

pub use swarm::{Node, Publish, SwarmConfig};
pub use view::{Heard, IngestError, View, ViewConfig};
