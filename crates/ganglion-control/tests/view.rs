//! The view: what offers and heartbeats do to it, what it refuses, and that every node hearing
//! the same messages in any order ends with the same view.
#![allow(clippy::unwrap_used)]

use ganglion_control::{Heard, IngestError, View, ViewConfig};
use ganglion_market::place::{PlaceParams, SessionAsk};
use ganglion_types::control::{Heartbeat, Listing, ModelLoad, Offer};
use ganglion_types::{AcceleratorClass, Coordinates, Envelope, MicroTokens, ModelHash, NodeKey};
use proptest::prelude::*;

const NOW: u64 = 1_000_000;

fn model() -> ModelHash {
    ModelHash::of(b"blazeface")
}

fn key(n: u8) -> NodeKey {
    NodeKey::from_seed([n; 32])
}

fn offer(price: u64) -> Offer {
    Offer {
        addr: "127.0.0.1:7000".parse().unwrap(),
        at: Coordinates::new(48.85, 2.35).unwrap(),
        operator: 1,
        models: vec![Listing {
            model: model(),
            alias: "blazeface".into(),
        }],
        price: MicroTokens(price),
        slots: 8,
        cpu_cores: 2,
        accelerators: Vec::new(),
    }
}

fn sealed_offer(n: u8, seq: u64, price: u64) -> Vec<u8> {
    Envelope::seal(&key(n), seq, NOW + 60_000, &offer(price)).to_bytes()
}

fn sealed_beat(n: u8, seq: u64, offer_seq: u64, free: u32, p95_us: u32) -> Vec<u8> {
    let beat = Heartbeat {
        offer_seq,
        queued: 3,
        free_slots: free,
        models: vec![ModelLoad {
            model: model(),
            p50_us: p95_us / 2,
            p95_us,
        }],
        accelerator_busy_percent: None,
    };
    Envelope::seal(&key(n), seq, NOW + 60_000, &beat).to_bytes()
}

fn ask() -> SessionAsk<'static> {
    SessionAsk {
        robot: Coordinates::new(48.86, 2.34).unwrap(),
        model: model(),
        deadline_us: 20_000,
        k: 1,
        max_price: MicroTokens(1_000),
        measured_rtt_us: None,
        exclude: &[],
        accelerator: AcceleratorClass::Cpu,
    }
}

fn place(view: &View) -> Result<ganglion_market::Placement, ganglion_market::PlaceError> {
    view.book().place(&ask(), &PlaceParams::default())
}

#[test]
fn a_newer_offer_replaces_an_older_one_never_the_reverse() {
    let mut view = View::new(ViewConfig::default());
    let id = key(1).id();
    assert_eq!(
        view.ingest(&sealed_offer(1, 10, 100), NOW),
        Ok(Heard::New(id))
    );
    assert_eq!(
        view.ingest(&sealed_offer(1, 20, 200), NOW),
        Ok(Heard::Replaced(id))
    );
    assert_eq!(place(&view).unwrap().providers[0].bid, MicroTokens(200));
    let old = view.ingest(&sealed_offer(1, 15, 50), NOW).unwrap_err();
    assert!(
        matches!(old, IngestError::Stale { seq: 15, held: 20 }),
        "{old:?}"
    );
    assert_eq!(
        old.penalty(),
        0,
        "late messages are not held against the forwarder"
    );
    assert_eq!(place(&view).unwrap().providers[0].bid, MicroTokens(200));
    assert_eq!(view.provider(&id).unwrap().offer_seq, 20);
}

#[test]
fn heartbeats_carry_load_into_placement() {
    let mut view = View::new(ViewConfig::default());
    let id = key(1).id();
    assert_eq!(
        view.ingest(&sealed_beat(1, 1, 10, 4, 900), NOW),
        Err(IngestError::Unknown),
        "a heartbeat before its offer is dropped"
    );
    view.ingest(&sealed_offer(1, 10, 100), NOW).unwrap();
    assert_eq!(
        view.ingest(&sealed_beat(1, 1, 10, 0, 900), NOW),
        Ok(Heard::Load(id))
    );
    assert!(place(&view).is_err(), "no free slot left");
    view.ingest(&sealed_beat(1, 2, 10, 5, 25_000), NOW).unwrap();
    assert!(place(&view).is_err(), "25 ms p95 misses a 20 ms deadline");
    view.ingest(&sealed_beat(1, 3, 10, 5, 2_000), NOW).unwrap();
    assert!(place(&view).is_ok());
    assert!(
        view.ingest(&sealed_beat(1, 3, 10, 5, 2_000), NOW).is_err(),
        "replay"
    );
    assert_eq!(view.provider(&id).unwrap().queued, 3);
    let other = view
        .ingest(&sealed_beat(1, 4, 9, 5, 2_000), NOW)
        .unwrap_err();
    assert!(matches!(other, IngestError::OtherOffer { .. }), "{other:?}");
}

#[test]
fn silent_providers_leave_and_restarted_ones_come_back() {
    let config = ViewConfig::default();
    let mut view = View::new(config);
    let id = key(1).id();
    view.ingest(&sealed_offer(1, 10, 100), NOW).unwrap();
    view.ingest(&sealed_beat(1, 1, 10, 4, 900), NOW + 2_000)
        .unwrap();
    assert!(view.tick(NOW + 2_000 + config.silence_ms).is_empty());
    assert_eq!(view.tick(NOW + 2_001 + config.silence_ms), vec![id]);
    assert!(view.is_empty() && place(&view).is_err());
    // Restarted: a new offer with a later sequence number (its clock moved on).
    let back = NOW + 30_000;
    assert_eq!(
        view.ingest(&sealed_offer(1, back, 100), back),
        Ok(Heard::New(id))
    );
    assert!(place(&view).is_ok());
}

#[test]
fn forged_garbage_and_expired_messages_are_dropped_and_scored() {
    let mut view = View::new(ViewConfig::default());
    let garbage = view.ingest(b"\x01not an envelope", NOW).unwrap_err();
    assert_eq!(garbage.penalty(), 1);
    let mut forged = Envelope::seal(&key(1), 10, NOW + 60_000, &offer(100));
    forged.author = key(2).id();
    let err = view.ingest(&forged.to_bytes(), NOW).unwrap_err();
    assert_eq!(err.penalty(), 1, "{err}");
    let expired = Envelope::seal(&key(1), 10, NOW - 1, &offer(100)).to_bytes();
    assert!(view.ingest(&expired, NOW).is_err());
    let lying = Offer {
        slots: 0,
        ..offer(100)
    };
    let err = view
        .ingest(
            &Envelope::seal(&key(1), 10, NOW + 60_000, &lying).to_bytes(),
            NOW,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("slots") && err.penalty() == 1,
        "{err}"
    );
    assert!(view.is_empty());
}

#[test]
fn a_full_view_refuses_new_providers_and_says_so() {
    let mut view = View::new(ViewConfig {
        providers_max: 2,
        ..ViewConfig::default()
    });
    view.ingest(&sealed_offer(1, 10, 100), NOW).unwrap();
    view.ingest(&sealed_offer(2, 10, 100), NOW).unwrap();
    let full = view.ingest(&sealed_offer(3, 10, 100), NOW).unwrap_err();
    assert_eq!(full, IngestError::Full(2));
    assert!(full.to_string().contains("full"));
    // Known providers still update.
    assert!(view.ingest(&sealed_offer(1, 11, 90), NOW).is_ok());
    assert_eq!(view.len(), 2);
}

proptest! {
    /// Gossip delivers in any order, with duplicates: every node ends with the same view (the
    /// newest offer of each provider).
    #[test]
    fn the_same_messages_in_any_order_give_the_same_view(
        messages in prop::collection::vec((1u8..6, 1u64..20, 1u64..500), 1..40),
        order in prop::collection::vec(any::<prop::sample::Index>(), 40),
    ) {
        let bytes: Vec<Vec<u8>> = messages.iter().map(|(n, seq, price)| sealed_offer(*n, *seq, *price)).collect();
        let mut a = View::new(ViewConfig::default());
        for b in &bytes {
            let _ = a.ingest(b, NOW);
        }
        let mut b_view = View::new(ViewConfig::default());
        let mut shuffled = bytes.clone();
        for (i, idx) in order.iter().enumerate().take(shuffled.len()) {
            let j = idx.index(shuffled.len());
            shuffled.swap(i, j);
        }
        for b in shuffled.iter().chain(bytes.iter()) {
            let _ = b_view.ingest(b, NOW);
        }
        let summary = |v: &View| {
            let mut s: Vec<_> = v.providers().map(|(id, k)| (*id, k.offer_seq)).collect();
            s.sort();
            s
        };
        prop_assert_eq!(summary(&a), summary(&b_view));
    }

    /// Whatever arrives, the view never panics and never holds more than its bound.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut view = View::new(ViewConfig { providers_max: 4, ..ViewConfig::default() });
        let _ = view.ingest(&bytes, NOW);
        prop_assert!(view.len() <= 4);
    }
}

#[test]
fn a_robot_places_from_its_view_and_reaches_providers_at_their_offered_addresses() {
    let mut view = View::new(ViewConfig::default());
    for n in 1..=4u8 {
        let offer = Offer {
            addr: format!("127.0.0.1:{}", 7000 + u16::from(n))
                .parse()
                .unwrap(),
            operator: u64::from(n),
            ..offer(100 * u64::from(n))
        };
        let sealed = Envelope::seal(&key(n), 1, NOW + 60_000, &offer).to_bytes();
        view.ingest(&sealed, NOW).unwrap();
    }
    let exclude = [key(1).id()];
    let ask = SessionAsk {
        robot: Coordinates::new(48.86, 2.34).unwrap(),
        model: model(),
        deadline_us: 20_000,
        k: 2,
        max_price: MicroTokens(1_000),
        measured_rtt_us: None,
        exclude: &exclude,
        accelerator: AcceleratorClass::Cpu,
    };
    let placed = view.place(&ask, &PlaceParams::default(), 4).unwrap();
    let ports = |list: &[(ganglion_market::place::Chosen, std::net::SocketAddr)]| {
        list.iter().map(|(_, a)| a.port()).collect::<Vec<_>>()
    };
    assert_eq!(ports(&placed.providers), vec![7002, 7003]);
    assert_eq!(
        ports(&placed.spares),
        vec![7004],
        "the excluded provider is no spare"
    );
    assert_eq!(placed.providers[0].0.provider, key(2).id());
    // Everyone silent: nothing to place on, and the reason says so.
    view.tick(NOW + ViewConfig::default().silence_ms + 1);
    let err = view.place(&ask, &PlaceParams::default(), 4).unwrap_err();
    assert!(err.to_string().contains("no provider serves"), "{err}");
}

fn down_attestation(provider: ganglion_types::NodeId) -> ganglion_types::verify::Attestation {
    ganglion_types::verify::Attestation {
        provider,
        checker_at: Coordinates::new(48.85, 2.35).unwrap(),
        checker_addr: None,
        up: false,
        probes: 5,
        answered: 0,
        on_time: 0,
        rtt_min_us: None,
        rtt_min_service_us: None,
        rtt_p95_us: None,
        checked: 0,
        wrong: 0,
        evidence: None,
    }
}

#[test]
fn attestations_that_are_forged_or_replayed_are_refused_and_two_checkers_take_a_provider_out_of_placement(
) {
    let mut view = View::new(ViewConfig::default());
    view.ingest(&sealed_offer(1, 1, 100), NOW).unwrap();
    view.ingest(&sealed_offer(2, 1, 100), NOW).unwrap();
    let target = key(1).id();
    let attest = |checker: u8, seq: u64| {
        Envelope::seal(&key(checker), seq, NOW + 60_000, &down_attestation(target)).to_bytes()
    };
    // Forged: the signature no longer covers what it says. Penalised at the gossip layer.
    let mut forged = Envelope::from_bytes(&attest(10, 1)).unwrap();
    forged.author = key(11).id();
    let err = view.ingest(&forged.to_bytes(), NOW).unwrap_err();
    assert_eq!(err.penalty(), 1, "{err}");
    // Replayed: ignored without penalty (gossip delivers duplicates).
    assert!(matches!(
        view.ingest(&attest(10, 1), NOW),
        Ok(Heard::Attested { .. })
    ));
    let err = view.ingest(&attest(10, 1), NOW).unwrap_err();
    assert_eq!(err.penalty(), 0, "{err}");
    let placed = |view: &View| -> Vec<ganglion_types::NodeId> {
        let placed = view.place(&ask(), &PlaceParams::default(), 4).unwrap();
        placed
            .providers
            .iter()
            .chain(&placed.spares)
            .map(|(c, _)| c.provider)
            .collect()
    };
    // One checker saying "down" is not enough to exclude the provider (it is only no longer
    // preferred)...
    let alone = view.verdict(&target).unwrap();
    assert!(
        !alone.down && !alone.excluded && !alone.preferred,
        "{alone:?}"
    );
    // ...two are.
    view.ingest(&attest(12, 1), NOW).unwrap();
    assert!(view.verdict(&target).unwrap().down);
    let now = placed(&view);
    assert!(!now.contains(&target) && now.len() == 1, "{now:?}");
}
