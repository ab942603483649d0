//! `ganglion bench ingest`: how fast a node folds offers into its view (decode, open: verify the
//! signature and validate, insert into the market's book) against Ed25519 verification of the
//! same envelopes alone, interleaved sample by sample; heartbeats too; and the memory a view
//! takes per 1,000 offers.

use std::time::Instant;

use ganglion_control::{View, ViewConfig};
use ganglion_types::control::{Heartbeat, Listing, ModelLoad, Offer};
use ganglion_types::{Coordinates, Envelope, MicroTokens, ModelHash, NodeKey};

use crate::bench::{line, stats, Line};

const NOW_MS: u64 = 1_000_000;

fn offer(i: u64, model: ModelHash) -> anyhow::Result<Offer> {
    Ok(Offer {
        addr: format!("10.{}.{}.{}:7000", (i >> 16) & 255, (i >> 8) & 255, i & 255).parse()?,
        at: Coordinates::new(-60.0 + (i % 120) as f64, -170.0 + (i % 340) as f64)?,
        operator: i % 2_000,
        models: vec![Listing {
            model,
            alias: "blazeface".into(),
        }],
        price: MicroTokens(50 + i % 450),
        slots: 32,
        cpu_cores: 16,
        accelerators: Vec::new(),
    })
}

/// Resident memory of this process, bytes (Linux; None elsewhere).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

pub fn ingest(samples: usize) -> anyhow::Result<Vec<Line>> {
    let model = ModelHash::of(b"blazeface");
    println!("ingest: sealing {samples} offers and heartbeats from {samples} providers…");
    let mut offers = Vec::with_capacity(samples);
    let mut beats = Vec::with_capacity(samples);
    for i in 0..samples as u64 {
        let mut seed = [7u8; 32];
        seed[..8].copy_from_slice(&i.to_le_bytes());
        let key = NodeKey::from_seed(seed);
        offers.push(Envelope::seal(&key, 10, NOW_MS + 60_000, &offer(i, model)?).to_bytes());
        let beat = Heartbeat {
            offer_seq: 10,
            queued: 1,
            free_slots: 30,
            models: vec![ModelLoad {
                model,
                p50_us: 900,
                p95_us: 1_800,
            }],
            accelerator_busy_percent: None,
        };
        beats.push(Envelope::seal(&key, 11, NOW_MS + 60_000, &beat).to_bytes());
    }
    let mut view = View::new(ViewConfig::default());
    let (mut ours, mut floor, mut beat_times) = (Vec::new(), Vec::new(), Vec::new());
    let before = resident_bytes();
    for (offer, beat) in offers.iter().zip(&beats) {
        // The floor: the signature check alone, on an envelope already decoded.
        let envelope = Envelope::from_bytes(offer)?;
        let t = Instant::now();
        std::hint::black_box(envelope.verify_signature().is_ok());
        floor.push(t.elapsed());
        let t = Instant::now();
        let heard = view.ingest(offer, NOW_MS);
        ours.push(t.elapsed());
        anyhow::ensure!(heard.is_ok(), "offer refused: {heard:?}");
        let t = Instant::now();
        let heard = view.ingest(beat, NOW_MS);
        beat_times.push(t.elapsed());
        anyhow::ensure!(heard.is_ok(), "heartbeat refused: {heard:?}");
    }
    let after = resident_bytes();
    anyhow::ensure!(view.len() == samples, "the view holds {}", view.len());
    if let (Some(before), Some(after)) = (before, after) {
        println!(
            "  view of {samples} providers: ~{:.0} KiB resident per 1,000 offers (process growth while ingesting)",
            after.saturating_sub(before) as f64 / 1024.0 / (samples as f64 / 1_000.0)
        );
    }
    let (ours, floor, beat) = (stats(&mut ours), stats(&mut floor), stats(&mut beat_times));
    println!(
        "  offers: {:.0} per second on one core; heartbeats {:.0} per second",
        1e6 / ours.p50_us,
        1e6 / beat.p50_us
    );
    Ok(vec![
        line("offer ingest", ours, "ed25519 verify", floor, Some(1.3)),
        line("heartbeat ingest", beat, "ed25519 verify", floor, None),
    ])
}
