//! A node's view of the providers: every signed offer and heartbeat it hears, folded in.
//!
//! Rules:
//! - An offer is accepted when its envelope opens (signature, kind, expiry) and it validates;
//!   it replaces the provider's current offer only with a higher sequence number (a restarted
//!   provider publishes with a fresh, higher one: sequence numbers are its clock's ms).
//! - A heartbeat is accepted for the current offer only, with a higher sequence number than
//!   the last heartbeat; it updates the load (free slots, service p95) in the book.
//! - A provider silent for [`ViewConfig::silence_ms`] (three heartbeat intervals by default),
//!   or whose offer expired, leaves the view at the next [`View::tick`].
//! - The view holds at most [`ViewConfig::providers_max`] providers. When full, offers from
//!   new providers are refused ([`IngestError::Full`]) until silent or expired ones leave;
//!   known providers still update. Nothing a peer sends grows it past that.
//! - An attestation (a checker's findings about a provider) is accepted when its envelope opens
//!   and it validates, and is about a provider the view holds (or already has attestations
//!   about); it is folded into the view's [`Reputation`] (`ganglion-verify`), a newer
//!   one from the same checker about the same provider replacing the older. It lasts until its
//!   envelope expires, and outlives the provider's offer (a provider that went down stays known
//!   as down).
//! - Placement ([`View::place`]) leaves out providers the reputation excludes, tries the
//!   preferred ones first, and where checkers of quorum weight prove with their round trips
//!   that a provider is further from the robot than it declares, uses the proven distance.

use std::net::SocketAddr;

use ganglion_market::book::BookError;
use ganglion_market::place::{Chosen, PlaceError, PlaceParams, SessionAsk};
use ganglion_market::{Book, Domains, Load, Offer as MarketOffer};
use ganglion_types::accel::best_class;
use ganglion_types::control::{Heartbeat, Listing, Offer};
use ganglion_types::envelope::{EnvelopeError, MessageKind};
use ganglion_types::verify::Attestation;
use ganglion_types::{DecodeError, Envelope, MicroTokens, NodeId, UnixMs};
use ganglion_verify::reputation::FoldError;
use ganglion_verify::{Reputation, Verdict};
use rustc_hash::FxHashMap as HashMap;

/// Default heartbeat interval.
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 2_000;

/// Default number of providers a view holds (about 2.5× the largest decentralised GPU cloud's
/// machine count).
pub const PROVIDERS_MAX_DEFAULT: usize = 1_000_000;

/// How a view forgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewConfig {
    /// Silence after which a provider leaves the view.
    pub silence_ms: u64,
    pub providers_max: usize,
}

impl Default for ViewConfig {
    fn default() -> Self {
        Self {
            silence_ms: 3 * HEARTBEAT_INTERVAL_MS_DEFAULT,
            providers_max: PROVIDERS_MAX_DEFAULT,
        }
    }
}

/// What a message changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A provider the view did not hold.
    New(NodeId),
    /// A newer offer from a known provider.
    Replaced(NodeId),
    /// Fresh load from a known provider.
    Load(NodeId),
    /// A checker's attestation about a provider.
    Attested { checker: NodeId, provider: NodeId },
}

/// Why a message was dropped. [`IngestError::penalty`] says how much the gossip layer should
/// hold it against the peer that forwarded it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("not a control-plane message: {0:?}")]
    Kind(MessageKind),
    #[error("offer {seq} is not newer than the one held ({held})")]
    Stale { seq: u64, held: u64 },
    #[error("heartbeat from a provider whose offer is not in the view")]
    Unknown,
    #[error("heartbeat for offer {for_offer}, the view holds offer {held}")]
    OtherOffer { for_offer: u64, held: u64 },
    #[error("the view is full ({0} providers): new providers wait until silent ones leave")]
    Full(usize),
    #[error("the market refused the offer: {0}")]
    Book(#[from] BookError),
    #[error("attestation not folded: {0}")]
    Attestation(#[from] FoldError),
}

impl IngestError {
    /// 0 for what honest peers also forward (late or reordered messages, a full view), 1 for
    /// what only a broken or hostile author produces (bad signatures, garbage, lies).
    pub fn penalty(&self) -> u8 {
        match self {
            Self::Stale { .. } | Self::Unknown | Self::OtherOffer { .. } | Self::Full(_) => 0,
            Self::Envelope(EnvelopeError::Replayed { .. } | EnvelopeError::Expired { .. }) => 0,
            Self::Attestation(FoldError::Stale { .. } | FoldError::Full) => 0,
            _ => 1,
        }
    }
}

/// What the view knows of one provider beyond its market entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    pub addr: SocketAddr,
    pub models: Vec<Listing>,
    pub offer_seq: u64,
    pub offer_expires_ms: UnixMs,
    pub heartbeat_seq: u64,
    pub last_heard_ms: UnixMs,
    pub queued: u32,
    pub accelerator_busy_percent: Option<u8>,
    /// The signed offer as heard, handed on to nodes that join later ([`View::offers`]).
    pub envelope: Vec<u8>,
}

/// A placement from a view: who, where to reach them, at what price.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub providers: Vec<(Chosen, SocketAddr)>,
    /// Standbys, in the order the market would place them next.
    pub spares: Vec<(Chosen, SocketAddr)>,
    /// What each provider is paid per answer.
    pub price: MicroTokens,
}

/// A node's view of the providers.
#[derive(Debug, Default)]
pub struct View {
    book: Book,
    known: HashMap<NodeId, Known>,
    config: ViewConfig,
    reputation: Reputation,
}

impl View {
    pub fn new(config: ViewConfig) -> Self {
        Self {
            book: Book::new(),
            known: HashMap::default(),
            config,
            reputation: Reputation::new(),
        }
    }

    /// What checkers said, folded.
    pub fn reputation(&self) -> &Reputation {
        &self.reputation
    }

    /// A provider's standing, judged against the position its offer declares (when the view
    /// holds the offer); `None` when no checker has attested it.
    pub fn verdict(&self, id: &NodeId) -> Option<Verdict> {
        let declared = self.book.offer(id).map(|(offer, _)| offer.at);
        self.reputation.verdict(id, declared)
    }

    /// The market's book: the input of placement.
    pub fn book(&self) -> &Book {
        &self.book
    }

    pub fn provider(&self, id: &NodeId) -> Option<&Known> {
        self.known.get(id)
    }

    pub fn providers(&self) -> impl Iterator<Item = (&NodeId, &Known)> {
        self.known.iter()
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Folds one message (an encoded envelope) heard at `now_ms` into the view.
    pub fn ingest(&mut self, bytes: &[u8], now_ms: UnixMs) -> Result<Heard, IngestError> {
        let envelope = Envelope::from_bytes(bytes)?;
        match envelope.kind {
            MessageKind::Offer => self.offer(&envelope, bytes, now_ms),
            MessageKind::Heartbeat => self.heartbeat(&envelope, now_ms),
            MessageKind::Attestation => self.attestation(&envelope, now_ms),
            other => Err(IngestError::Kind(other)),
        }
    }

    fn offer(
        &mut self,
        envelope: &Envelope,
        bytes: &[u8],
        now_ms: UnixMs,
    ) -> Result<Heard, IngestError> {
        let id = envelope.author;
        // Cheap checks before the signature: staleness and room.
        let held = self.known.get(&id).map(|k| k.offer_seq);
        if let Some(held) = held {
            if envelope.seq <= held {
                return Err(IngestError::Stale {
                    seq: envelope.seq,
                    held,
                });
            }
        } else if self.known.len() >= self.config.providers_max {
            return Err(IngestError::Full(self.known.len()));
        }
        let offer: Offer = envelope.open(now_ms, None)?;
        let market = MarketOffer {
            provider: id,
            domains: Domains {
                operator: offer.operator,
                // One key, one machine: a provider process serves from one machine.
                machine: machine_of(&id),
            },
            at: offer.at,
            models: offer.models.iter().map(|l| l.model).collect(),
            price: offer.price,
            slots: offer.slots,
            gpus: offer.accelerators.len() as u32,
            accelerator: best_class(&offer.accelerators),
            expires_at_ms: envelope.expires_at_ms,
        };
        let load = match self.book.offer(&id) {
            // Same machine, newer offer: keep the last load heard, capped by the new capacity.
            Some((_, load)) => Load {
                free_slots: load.free_slots.min(offer.slots),
                ..*load
            },
            None => Load::idle(&market, 0),
        };
        self.book.insert(market, load, now_ms)?;
        let heard = self.known.get(&id);
        let (heartbeat_seq, queued, busy) = heard.map_or((0, 0, None), |k| {
            (k.heartbeat_seq, k.queued, k.accelerator_busy_percent)
        });
        self.known.insert(
            id,
            Known {
                addr: offer.addr,
                models: offer.models,
                offer_seq: envelope.seq,
                offer_expires_ms: envelope.expires_at_ms,
                heartbeat_seq,
                last_heard_ms: now_ms,
                queued,
                accelerator_busy_percent: busy,
                envelope: bytes.to_vec(),
            },
        );
        Ok(if held.is_some() {
            Heard::Replaced(id)
        } else {
            Heard::New(id)
        })
    }

    fn heartbeat(&mut self, envelope: &Envelope, now_ms: UnixMs) -> Result<Heard, IngestError> {
        let id = envelope.author;
        let Some(known) = self.known.get(&id) else {
            return Err(IngestError::Unknown);
        };
        if envelope.seq <= known.heartbeat_seq {
            return Err(IngestError::Envelope(EnvelopeError::Replayed {
                seq: envelope.seq,
                last: known.heartbeat_seq,
            }));
        }
        let beat: Heartbeat = envelope.open(now_ms, None)?;
        if beat.offer_seq != known.offer_seq {
            return Err(IngestError::OtherOffer {
                for_offer: beat.offer_seq,
                held: known.offer_seq,
            });
        }
        let slowest = beat.models.iter().map(|m| m.p95_us).max().unwrap_or(0);
        if let Some((offer, _)) = self.book.offer(&id) {
            let load = Load {
                free_slots: beat.free_slots.min(offer.slots),
                service_p95_us: slowest,
            };
            self.book.set_load(&id, load);
        }
        if let Some(known) = self.known.get_mut(&id) {
            known.heartbeat_seq = envelope.seq;
            known.last_heard_ms = now_ms;
            known.queued = beat.queued;
            known.accelerator_busy_percent = beat.accelerator_busy_percent;
        }
        Ok(Heard::Load(id))
    }

    fn attestation(&mut self, envelope: &Envelope, now_ms: UnixMs) -> Result<Heard, IngestError> {
        let attestation: Attestation = envelope.open(now_ms, None)?;
        // About a provider this view holds, or one already attested (it may have gone down
        // since): attestations about made-up providers never take room.
        let provider = attestation.provider;
        if !self.known.contains_key(&provider) && !self.reputation.knows(&provider) {
            return Err(IngestError::Unknown);
        }
        self.reputation.fold(
            envelope.author,
            envelope.seq,
            envelope.expires_at_ms,
            now_ms,
            attestation,
        )?;
        Ok(Heard::Attested {
            checker: envelope.author,
            provider: attestation.provider,
        })
    }

    /// Up to `max` signed offers this view holds, as heard: what a node that just joined is
    /// sent so that it need not wait for every provider to republish.
    pub fn offers(&self, max: usize) -> impl Iterator<Item = &[u8]> {
        self.known.values().take(max).map(|k| k.envelope.as_slice())
    }

    /// Places a session on the providers this view holds (the market's rules over the live
    /// book), with up to `spares` standbys after them, each with its data-plane address.
    /// Providers the reputation excludes are never placed; preferred ones (and those no checker
    /// has judged yet) are tried first, the rest only when those cannot make the placement.
    pub fn place(
        &self,
        ask: &SessionAsk<'_>,
        params: &PlaceParams,
        spares: usize,
    ) -> Result<Placed, PlaceError> {
        let mut excluded: Vec<NodeId> = ask.exclude.to_vec();
        let mut unpreferred = Vec::new();
        let mut measured: std::collections::HashMap<NodeId, u32> =
            ask.measured_rtt_us.cloned().unwrap_or_default();
        for id in self.reputation.providers() {
            let Some(verdict) = self.verdict(id) else {
                continue;
            };
            if verdict.excluded {
                excluded.push(*id);
                continue;
            }
            if !verdict.preferred {
                unpreferred.push(*id);
            }
            // Checkers of quorum weight prove the provider at least this far from the robot.
            if let (Some(proven_km), Some((offer, _))) = (
                self.reputation.proven_km(id, ask.robot),
                self.book.offer(id),
            ) {
                if proven_km > ask.robot.distance_km(&offer.at) && !measured.contains_key(id) {
                    let rtt = params.rtt_us(proven_km).min(f64::from(u32::MAX)) as u32;
                    measured.insert(*id, rtt);
                }
            }
        }
        let measured = (!measured.is_empty()).then_some(&measured);
        fn with<'a>(
            ask: &SessionAsk<'a>,
            exclude: &'a [NodeId],
            measured: Option<&'a std::collections::HashMap<NodeId, u32>>,
        ) -> SessionAsk<'a> {
            SessionAsk {
                exclude,
                measured_rtt_us: measured,
                ..*ask
            }
        }
        let mut first = excluded.clone();
        first.extend(&unpreferred);
        let (placement, next) = if unpreferred.is_empty() {
            self.book
                .place_with_spares(&with(ask, &excluded, measured), params, spares)?
        } else {
            match self
                .book
                .place_with_spares(&with(ask, &first, measured), params, spares)
            {
                Ok(found) => found,
                Err(_) => {
                    self.book
                        .place_with_spares(&with(ask, &excluded, measured), params, spares)?
                }
            }
        };
        let addr = |c: &Chosen| self.known.get(&c.provider).map(|k| (*c, k.addr));
        Ok(Placed {
            providers: placement.providers.iter().filter_map(addr).collect(),
            spares: next.iter().filter_map(addr).collect(),
            price: placement.price,
        })
    }

    /// Removes providers silent for too long or whose offer expired; returns them.
    pub fn tick(&mut self, now_ms: UnixMs) -> Vec<NodeId> {
        let silence = self.config.silence_ms;
        let gone: Vec<NodeId> = self
            .known
            .iter()
            .filter(|(_, k)| {
                now_ms.saturating_sub(k.last_heard_ms) > silence || k.offer_expires_ms <= now_ms
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            self.known.remove(id);
            self.book.remove(id);
        }
        self.reputation.tick(now_ms);
        gone
    }
}

/// A machine id for the failure domain, from the provider's key.
fn machine_of(id: &NodeId) -> u64 {
    let b = id.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}
