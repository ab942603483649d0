//! The simulator end to end on a small planet over a day: what the strategies give robots.

use std::sync::OnceLock;

use ganglion_sim::tally::Row;
use ganglion_sim::{simulate, Config, Results};

fn config() -> Config {
    Config {
        gpus: 20_000,
        robots: 3_000,
        horizon_s: 24.0 * 3600.0,
        seed: 3,
        ..Config::default()
    }
}

fn results() -> &'static Results {
    static RESULTS: OnceLock<Results> = OnceLock::new();
    RESULTS.get_or_init(|| simulate(&config(), &mut |_| {}).expect("the planet builds"))
}

fn row(strategy: &str, class: &str) -> &'static Row {
    results()
        .rows
        .iter()
        .find(|r| r.strategy == strategy && r.class == class)
        .unwrap_or_else(|| panic!("no row for {strategy} / {class}"))
}

#[test]
fn every_strategy_faces_the_same_robots_and_every_class_is_reported() {
    let r = results();
    assert_eq!(r.rows.len(), 8 * 5, "8 strategies × (4 classes + all)");
    let requests = row("ganglion k=1", "all").requests;
    // 3,000 robots at 10–60 Hz for a day.
    assert!(
        requests > 3_000 * 10 * 86_400 && requests < 3_000 * 60 * 86_400,
        "{requests}"
    );
    for r in r.rows.iter().filter(|r| r.class == "all") {
        assert_eq!(r.requests, requests, "{}", r.strategy);
        assert_eq!(r.robots, 3_000);
    }
}

#[test]
fn the_fleet_has_the_configured_uptime() {
    let r = results();
    assert!(
        (r.uptime_measured - r.uptime_configured).abs() < 0.004,
        "{} vs {}",
        r.uptime_measured,
        r.uptime_configured
    );
    assert!(r.failures > 100, "{} failures in a day", r.failures);
}

#[test]
fn two_providers_with_healing_reach_four_nines_for_every_robot_physics_allows() {
    for class in ["reflex", "perception", "planning", "language", "all"] {
        let k2 = row("ganglion k=2", class);
        assert_eq!(k2.robots_below_target, 0, "{class}: {k2:?}");
        assert!(k2.within_deadline_placed >= 0.9999, "{class}: {k2:?}");
    }
    // Physics rules out some reflex robots (5 ms leaves ~100 km of fiber), no language ones.
    assert!(row("ganglion k=2", "reflex").ruled_out_by_physics > 0);
    assert_eq!(row("ganglion k=2", "language").ruled_out_by_physics, 0);
}

#[test]
fn healing_is_what_makes_the_difference() {
    let healed = row("ganglion k=2", "all");
    let unhealed = row("ganglion k=2 no healing", "all");
    assert!(
        unhealed.within_deadline_placed < healed.within_deadline_placed,
        "{unhealed:?} vs {healed:?}"
    );
    assert!(unhealed.availability < healed.availability, "{unhealed:?}");
    // One provider with healing loses the detection window of every failure.
    let k1 = row("ganglion k=1", "all");
    assert!(k1.within_deadline_placed < healed.within_deadline_placed);
}

#[test]
fn baselines_that_ignore_physics_miss_tight_deadlines() {
    for strategy in ["cheapest only", "random", "central cloud"] {
        let reflex = row(strategy, "reflex");
        assert!(reflex.within_deadline < 0.2, "{strategy}: {reflex:?}");
    }
    // Nearest only is fast but pays whatever the nearest asks; the market pays less.
    let nearest = row("nearest only", "all");
    let k1 = row("ganglion k=1", "all");
    assert!(
        k1.cost_per_1000 < nearest.cost_per_1000,
        "{k1:?} vs {nearest:?}"
    );
    // Hedging: hard classes send both copies, soft ones about 5% more (plus far pairs).
    let k2_reflex = row("ganglion k=2", "reflex");
    assert!((k2_reflex.extra_load - 1.0).abs() < 0.01, "{k2_reflex:?}");
    let k2_language = row("ganglion k=2", "language");
    assert!(k2_language.extra_load < 0.2, "{k2_language:?}");
}

#[test]
fn the_same_seed_gives_the_same_planet_and_results() {
    let small = Config {
        gpus: 2_000,
        robots: 300,
        horizon_s: 3_600.0,
        ..config()
    };
    let a = simulate(&small, &mut |_| {}).expect("runs");
    let b = simulate(&small, &mut |_| {}).expect("runs");
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}
