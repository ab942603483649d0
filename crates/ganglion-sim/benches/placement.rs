//! Placement of one session among 435,000 GPUs: the market's index against a brute-force scan
//! of the whole book, per deadline class; and the cost of a book update (a heartbeat).
//! `cargo bench -p ganglion-sim --bench placement`. `ganglion bench placement` measures the
//! same with percentiles and the ratio printed.
#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ganglion_market::hedge::Class;
use ganglion_market::place::{PlaceParams, SessionAsk};
use ganglion_market::Load;
use ganglion_sim::planet::{cities, planet, Population};
use ganglion_sim::rng::Rng;
use ganglion_types::{MicroTokens, ModelHash};

const ASKS: usize = 512;

fn placement(c: &mut Criterion) {
    let model = ModelHash::of(b"criterion: one vision model");
    let world = planet(435_000, 250, model, 7, u64::MAX).unwrap();
    let mut book = world.book(0).unwrap();
    let cities = cities().unwrap();
    let population = Population::new(&cities).unwrap();
    let mut rng = Rng::new(11);
    let robots: Vec<_> = (0..ASKS).map(|_| population.robot_at(&mut rng)).collect();
    let params = PlaceParams::default();
    let ask = |i: usize, class: Class| SessionAsk {
        robot: robots[i % ASKS],
        model,
        deadline_us: class.deadline_us(),
        k: 2,
        max_price: MicroTokens(400),
        measured_rtt_us: None,
        exclude: &[],
        accelerator: ganglion_types::AcceleratorClass::Cpu,
    };
    let mut group = c.benchmark_group("placement");
    for class in Class::ALL {
        let name = format!("{} ms", class.deadline_us() / 1000);
        let mut i = 0;
        group.bench_function(BenchmarkId::new("index", &name), |b| {
            b.iter(|| {
                i += 1;
                book.place(&ask(i, class), &params).is_ok()
            })
        });
    }
    group.sample_size(10);
    let mut i = 0;
    group.bench_function(BenchmarkId::new("brute force", "20 ms"), |b| {
        b.iter(|| {
            i += 1;
            book.place_brute_force(&ask(i, Class::Perception), &params)
                .is_ok()
        })
    });
    group.finish();
    let ids: Vec<_> = world.machines.iter().map(|m| m.offer.provider).collect();
    let mut n = 0usize;
    c.bench_function("book/heartbeat", |b| {
        b.iter(|| {
            n += 1;
            book.set_load(
                &ids[n % ids.len()],
                Load {
                    free_slots: (n % 32) as u32,
                    service_p95_us: 900,
                },
            )
        })
    });
}

criterion_group!(benches, placement);
criterion_main!(benches);
