//! The market: which providers a session goes to, at what price. Sans-IO and deterministic:
//! time comes in as an argument, nothing here reads a clock, a socket or a random source.
//!
//! Parts:
//! - [`offer`]: what a provider offers (models, price, place, capacity, failure domains) and
//!   its live load.
//! - [`book`]: the book of offers, indexed by place (1° cells holding locations, each holding
//!   its offers per model in price order), updated in place.
//! - [`place`]: placement of a session: physics admission (light in fiber × route inflation +
//!   service time + margin within the deadline), capacity, budget, k providers in different
//!   failure domains, and the reason in numbers when no placement exists.
//! - [`price`]: the uniform-price sealed-bid reverse auction (first losing bid sets the price).
//! - [`hedge`]: when the second copy of a request goes out, and what hedging costs in load.

pub mod book;
pub mod hedge;
pub mod offer;
pub mod place;
pub mod price;

pub use book::Book;
pub use offer::{Domains, Load, Offer};
pub use place::{PlaceError, PlaceParams, Placement, SessionAsk};
