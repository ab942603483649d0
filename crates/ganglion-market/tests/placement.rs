#![allow(clippy::unwrap_used)] // test helpers build known-good values
//! Placement against hand-built books (physics, domains, price, reasons) and against the brute
//! force reference on random books.

use std::collections::HashMap;

use ganglion_market::place::{PlaceError, PlaceParams, SessionAsk};
use ganglion_market::{Book, Domains, Load, Offer};
use ganglion_types::{AcceleratorClass, Coordinates, MicroTokens, ModelHash, NodeId, NodeKey};
use proptest::prelude::*;

const NOW: u64 = 1_000;

fn model() -> ModelHash {
    ModelHash::of(b"blazeface")
}

fn id(n: u64) -> NodeId {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    NodeKey::from_seed(seed).id()
}

fn at(lat: f64, lon: f64) -> Coordinates {
    Coordinates::new(lat, lon).unwrap()
}

const PARIS: (f64, f64) = (48.8566, 2.3522);
const LYON: (f64, f64) = (45.764, 4.8357);
const NEW_YORK: (f64, f64) = (40.7128, -74.006);

struct Spec {
    n: u64,
    place: (f64, f64),
    price: u64,
    operator: u64,
    p95_us: u32,
    accelerator: AcceleratorClass,
}

fn offer(s: &Spec) -> Offer {
    Offer {
        provider: id(s.n),
        domains: Domains {
            operator: s.operator,
            machine: s.n,
        },
        at: at(s.place.0, s.place.1),
        models: vec![model()],
        price: MicroTokens(s.price),
        slots: 4,
        gpus: 1,
        accelerator: s.accelerator,
        expires_at_ms: NOW + 60_000,
    }
}

fn book(specs: &[Spec]) -> Book {
    let mut book = Book::new();
    for s in specs {
        let o = offer(s);
        let load = Load {
            free_slots: o.slots,
            service_p95_us: s.p95_us,
        };
        book.insert(o, load, NOW).unwrap();
    }
    book
}

fn ask(robot: (f64, f64), deadline_us: u32, k: usize) -> SessionAsk<'static> {
    SessionAsk {
        robot: at(robot.0, robot.1),
        model: model(),
        deadline_us,
        k,
        max_price: MicroTokens(1_000),
        measured_rtt_us: None,
        exclude: &[],
        accelerator: AcceleratorClass::Cpu,
    }
}

fn spec(n: u64, place: (f64, f64), price: u64, operator: u64) -> Spec {
    Spec {
        n,
        place,
        price,
        operator,
        p95_us: 1_000,
        accelerator: AcceleratorClass::Cpu,
    }
}

fn class(n: u8) -> AcceleratorClass {
    [
        AcceleratorClass::Cpu,
        AcceleratorClass::Gpu,
        AcceleratorClass::DatacenterGpu,
    ][usize::from(n % 3)]
}

#[test]
fn a_session_that_needs_a_gpu_skips_cpu_providers_and_says_why() {
    let gpu = Spec {
        accelerator: AcceleratorClass::DatacenterGpu,
        ..spec(2, PARIS, 90, 2)
    };
    let book = book(&[spec(1, PARIS, 10, 1), gpu]);
    let params = PlaceParams::default();
    let mut a = ask(PARIS, 20_000, 1);
    a.accelerator = AcceleratorClass::Gpu;
    let placed = book.place(&a, &params).unwrap();
    assert_eq!(
        placed.providers[0].provider,
        id(2),
        "the cheaper CPU provider is skipped"
    );
    let cpu_only = book_cpu_only();
    let err = cpu_only.place(&a, &params).unwrap_err();
    assert!(matches!(err, PlaceError::NoAccelerator { .. }), "{err:?}");
    assert!(err.to_string().contains("gpu accelerator"), "{err}");
}

#[test]
fn spares_follow_in_the_order_the_market_would_place_them_and_skip_what_physics_rules_out() {
    let book = book(&[
        spec(1, PARIS, 30, 1),
        spec(2, LYON, 10, 2),
        spec(3, PARIS, 50, 3),
        spec(4, NEW_YORK, 1, 4),
        spec(5, LYON, 20, 5),
    ]);
    let params = PlaceParams::default();
    let a = ask(PARIS, 10_000, 2);
    let (placed, spares) = book.place_with_spares(&a, &params, 5).unwrap();
    let chosen: Vec<NodeId> = placed.providers.iter().map(|c| c.provider).collect();
    assert_eq!(
        chosen,
        vec![id(2), id(1)],
        "the cheapest within reach on two different sites"
    );
    let spares: Vec<NodeId> = spares.iter().map(|c| c.provider).collect();
    // New York is the cheapest of all but 5,800 km away: never a spare for a 10 ms deadline.
    assert_eq!(spares, vec![id(5), id(3)]);
    // A session asking for every provider gets no spare and no error.
    let (_, none) = book
        .place_with_spares(&ask(PARIS, 10_000, 4), &params, 3)
        .unwrap();
    assert!(none.is_empty());
    // The spares stop at the number asked for.
    let (_, one) = book.place_with_spares(&a, &params, 1).unwrap();
    assert_eq!(one.len(), 1);
}

fn book_cpu_only() -> Book {
    book(&[spec(1, PARIS, 10, 1), spec(3, PARIS, 20, 3)])
}

#[test]
fn physics_rules_out_the_far_provider_and_says_why_in_numbers() {
    let book = book(&[spec(1, NEW_YORK, 10, 1), spec(2, PARIS, 50, 2)]);
    let params = PlaceParams::default();
    let placed = book.place(&ask(PARIS, 5_000, 1), &params).unwrap();
    assert_eq!(
        placed.providers[0].provider,
        id(2),
        "New York is cheaper but 5,800 km away"
    );

    let lonely = self::book(&[spec(1, NEW_YORK, 10, 1)]);
    let err = lonely.place(&ask(PARIS, 5_000, 1), &params).unwrap_err();
    let PlaceError::TooFar {
        nearest_km,
        min_rtt_ms,
        deadline_ms,
    } = err
    else {
        panic!("{err:?}")
    };
    assert!((nearest_km - 5_837.0).abs() < 20.0, "{nearest_km}");
    assert!(min_rtt_ms > 80.0 && deadline_ms == 5.0);
    assert!(
        err.to_string()
            .starts_with("nearest provider with this model is 58"),
        "{err}"
    );
    // With a 1 s deadline, New York is fine.
    assert!(lonely.place(&ask(PARIS, 1_000_000, 1), &params).is_ok());
}

#[test]
fn k_providers_never_share_an_operator_or_a_machine_and_prefer_different_sites() {
    // Operator 1 runs the two cheapest; two more at Paris; one at Lyon.
    let book = book(&[
        spec(1, PARIS, 10, 1),
        spec(2, PARIS, 11, 1),
        spec(3, PARIS, 12, 2),
        spec(4, PARIS, 13, 3),
        spec(5, LYON, 20, 4),
    ]);
    let placed = book
        .place(&ask(PARIS, 20_000, 2), &PlaceParams::default())
        .unwrap();
    let ids: Vec<NodeId> = placed.providers.iter().map(|c| c.provider).collect();
    assert_eq!(
        ids,
        vec![id(1), id(5)],
        "cheapest, then the cheapest at another site"
    );
    // Three from independent operators: a second Paris provider of another operator joins.
    let placed = book
        .place(&ask(PARIS, 20_000, 3), &PlaceParams::default())
        .unwrap();
    let ids: Vec<NodeId> = placed.providers.iter().map(|c| c.provider).collect();
    assert_eq!(ids, vec![id(1), id(3), id(5)]);
}

#[test]
fn everyone_is_paid_the_first_losing_bid() {
    const BRUSSELS: (f64, f64) = (50.85, 4.35);
    const LONDON: (f64, f64) = (51.507, -0.128);
    let book = book(&[
        spec(1, PARIS, 10, 1),
        spec(2, LYON, 30, 2),
        spec(3, BRUSSELS, 20, 3),
        spec(4, LONDON, 40, 4),
    ]);
    let placed = book
        .place(&ask(PARIS, 20_000, 2), &PlaceParams::default())
        .unwrap();
    assert_eq!(placed.first_losing_bid, Some(MicroTokens(30)));
    assert_eq!(placed.price, MicroTokens(30));
    let placed = book
        .place(&ask(PARIS, 20_000, 4), &PlaceParams::default())
        .unwrap();
    assert_eq!(placed.first_losing_bid, None);
    assert_eq!(
        placed.price,
        MicroTokens(1_000),
        "no loser: the robot's maximum (reserve) price"
    );

    // Site preference skips the 20 at Paris (same site as the 10): winners 10 and 30 are paid
    // the next bid after the last winner, 40, never less than a winning bid.
    let same_site = self::book(&[
        spec(1, PARIS, 10, 1),
        spec(2, LYON, 30, 2),
        spec(3, PARIS, 20, 3),
        spec(4, LYON, 40, 4),
    ]);
    let placed = same_site
        .place(&ask(PARIS, 20_000, 2), &PlaceParams::default())
        .unwrap();
    let bids: Vec<u64> = placed.providers.iter().map(|c| c.bid.0).collect();
    assert_eq!(bids, vec![10, 30]);
    assert_eq!(placed.price, MicroTokens(40));
}

#[test]
fn budget_capacity_and_service_time_each_say_why() {
    let params = PlaceParams::default();
    let mut cheap_ask = ask(PARIS, 20_000, 1);
    cheap_ask.max_price = MicroTokens(5);
    let book1 = book(&[spec(1, PARIS, 10, 1)]);
    let err = book1.place(&cheap_ask, &params).unwrap_err();
    assert!(
        matches!(
            err,
            PlaceError::OverBudget {
                cheapest: MicroTokens(10),
                ..
            }
        ),
        "{err:?}"
    );

    let mut full = book(&[spec(1, PARIS, 10, 1)]);
    full.set_load(
        &id(1),
        Load {
            free_slots: 0,
            service_p95_us: 1_000,
        },
    );
    assert!(matches!(
        full.place(&ask(PARIS, 20_000, 1), &params),
        Err(PlaceError::Full { .. })
    ));

    let slow = book(&[Spec {
        n: 1,
        place: PARIS,
        price: 10,
        operator: 1,
        p95_us: 30_000,
        accelerator: AcceleratorClass::Cpu,
    }]);
    let err = slow.place(&ask(PARIS, 20_000, 1), &params).unwrap_err();
    assert!(matches!(err, PlaceError::TooSlow { .. }), "{err:?}");

    let two = book(&[spec(1, PARIS, 10, 1), spec(2, PARIS, 10, 1)]);
    assert_eq!(
        two.place(&ask(PARIS, 20_000, 2), &params),
        Err(PlaceError::TooFew { found: 1, k: 2 })
    );
}

#[test]
fn measured_round_trips_beat_declared_coordinates() {
    let params = PlaceParams::default();
    // Claims Paris but measures 30 ms away; another claims New York but measures 2 ms.
    let book = book(&[spec(1, PARIS, 10, 1), spec(2, NEW_YORK, 20, 2)]);
    let measured: HashMap<NodeId, u32> = [(id(1), 30_000), (id(2), 2_000)].into_iter().collect();
    let mut a = ask(PARIS, 5_000, 1);
    a.measured_rtt_us = Some(&measured);
    let placed = book.place(&a, &params).unwrap();
    assert_eq!(placed.providers[0].provider, id(2));
    assert_eq!(book.place_brute_force(&a, &params), Ok(placed));
}

#[test]
fn excluded_and_expired_offers_are_not_placed() {
    let mut book = book(&[spec(1, PARIS, 10, 1), spec(2, PARIS, 20, 2)]);
    let exclude = [id(1)];
    let mut a = ask(PARIS, 20_000, 1);
    a.exclude = &exclude;
    assert_eq!(
        book.place(&a, &PlaceParams::default()).unwrap().providers[0].provider,
        id(2)
    );
    assert_eq!(book.expire(NOW + 60_000), 2);
    assert!(book.is_empty());
    assert!(matches!(
        book.place(&a, &PlaceParams::default()),
        Err(PlaceError::NoModel(_))
    ));
}

fn city() -> impl Strategy<Value = (f64, f64)> {
    prop_oneof![
        Just(PARIS),
        Just(LYON),
        Just(NEW_YORK),
        (-60.0f64..70.0, -180.0f64..180.0)
    ]
}

proptest! {
    /// The index and merge find exactly what a scan of the whole book finds.
    #[test]
    fn placement_matches_brute_force(
        offers in prop::collection::vec((city(), 1u64..50, 0u64..6, 0u32..3, 100u32..20_000, 0u8..3), 1..60),
        robot in city(),
        deadline_us in prop_oneof![Just(5_000u32), Just(20_000), Just(100_000), Just(1_000_000)],
        k in 1usize..4,
        max_price in 1u64..60,
        heartbeats in prop::collection::vec((0usize..60, 0u32..3, 100u32..20_000), 0..20),
        reprices in prop::collection::vec((0usize..60, 1u64..50), 0..10),
        wanted in 0u8..3,
    ) {
        let mut book = Book::new();
        for (n, (place, price, operator, free, p95, accel)) in offers.into_iter().enumerate() {
            let s = Spec { n: n as u64, place, price, operator, p95_us: p95, accelerator: class(accel) };
            let o = offer(&s);
            book.insert(o, Load { free_slots: free, service_p95_us: p95 }, NOW).unwrap();
        }
        let count = book.len();
        // Updates in place: heartbeats change load, new offers change price.
        for (n, free, p95) in heartbeats {
            book.set_load(&id((n % count) as u64), Load { free_slots: free, service_p95_us: p95 });
        }
        for (n, price) in reprices {
            let provider = id((n % count) as u64);
            let (offer, load) = book.offer(&provider).map(|(o, l)| (o.clone(), *l)).unwrap();
            book.insert(Offer { price: MicroTokens(price), ..offer }, load, NOW).unwrap();
        }
        let mut a = ask(robot, deadline_us, k);
        a.max_price = MicroTokens(max_price);
        a.accelerator = class(wanted);
        let params = PlaceParams::default();
        let fast = book.place(&a, &params);
        let slow = book.place_brute_force(&a, &params);
        prop_assert_eq!(fast.is_ok(), slow.is_ok(), "index {:?} vs scan {:?}", fast, slow);
        if let (Ok(fast), Ok(slow)) = (fast, slow) {
            prop_assert_eq!(fast, slow);
        }
    }
}
