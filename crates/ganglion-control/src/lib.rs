//! The control plane: how every node learns which providers exist, what they offer, where they
//! are and how loaded they are, with no registry.
//!
//! Parts:
//! - [`view`]: sans-IO. Signed offers and heartbeats (from `ganglion_types::control`) folded
//!   into a bounded view: the market's book plus what robots need to reach each provider.
//!   Time is an argument.
//!
//! The gossip driver (libp2p) that feeds the view is still to come.

pub mod view;

pub use view::{Heard, IngestError, View, ViewConfig};
