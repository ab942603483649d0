//! `ganglion bench runtime --batch N`: N requests for one model arriving together, through
//! `ganglion-runtime` (which stacks them into one run), against tract running the same batch
//! directly and against tract running them one at a time. Per request: the time of a round
//! divided by N, so the ratio is the inverse of the throughput ratio.

use std::time::{Duration, Instant};

use anyhow::Context;
use ganglion_runtime::zoo::{self, Bundled};
use ganglion_runtime::{Device, LoadOptions, Model, Runtime, RuntimeConfig};
use ganglion_types::Tensor;
use tract_onnx::prelude::tvec;

use crate::bench::{line, stats, Line};

fn to_tract(t: &Tensor) -> anyhow::Result<tract_onnx::prelude::Tensor> {
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    tract_onnx::prelude::Tensor::from_shape(&shape, &t.to_f32()?)
}

pub fn batched(
    alias: &str,
    batch: usize,
    rounds: usize,
    device: Device,
) -> anyhow::Result<Vec<Line>> {
    let bundled =
        Bundled::by_alias(alias).with_context(|| format!("unknown bundled model {alias:?}"))?;
    let frames = zoo::frames()?;
    let inputs: Vec<Tensor> = (0..batch)
        .map(|i| bundled.input(&frames[i % frames.len()]))
        .collect::<Result<_, _>>()?;
    let options = LoadOptions {
        device,
        batch_max: batch,
    };
    let model = Model::load_with(bundled.alias(), bundled.bytes(), &options)?;
    if model.batch_max() < batch {
        println!(
            "batch: {alias} runs unbatched (a batch of its outputs does not split back per request), so there is no batch to measure"
        );
        return Ok(Vec::new());
    }
    println!(
        "batch: {rounds} rounds of {batch} {alias} requests arriving together, on the {}",
        model.backend()
    );
    let hash = model.hash();
    let single = model.plan().clone();
    let whole = model
        .batch_plan(batch)
        .cloned()
        .context("no plan for the batch size")?;
    let runtime = Runtime::new(
        vec![model],
        RuntimeConfig {
            workers: 1,
            queue: batch * 2,
            batch_window: Duration::from_millis(50),
        },
    );
    let mut stacked = inputs[0].clone();
    stacked.shape[0] = batch as u32;
    stacked.data = inputs.iter().flat_map(|t| t.data.iter().copied()).collect();
    let stacked = to_tract(&stacked)?;
    let one_by_one: Vec<_> = inputs.iter().map(to_tract).collect::<Result<_, _>>()?;
    let (mut single_state, mut whole_state) = (single.spawn()?, whole.spawn()?);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut ours, mut tract_batch, mut tract_single) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let t = Instant::now();
        let far = Instant::now() + Duration::from_secs(30);
        let pending: Vec<_> = inputs
            .iter()
            .map(|input| runtime.submit(&hash, vec![input.clone()], far, Instant::now()))
            .collect::<Result<_, _>>()?;
        tokio.block_on(async {
            for rx in pending {
                let _ = std::hint::black_box(rx.await);
            }
        });
        let ours_took = t.elapsed();
        let t = Instant::now();
        std::hint::black_box(whole_state.run(tvec!(stacked.clone().into()))?);
        let batch_took = t.elapsed();
        let t = Instant::now();
        for input in &one_by_one {
            std::hint::black_box(single_state.run(tvec!(input.clone().into()))?);
        }
        let single_took = t.elapsed();
        if round >= 3 {
            ours.push(ours_took / batch as u32);
            tract_batch.push(batch_took / batch as u32);
            tract_single.push(single_took / batch as u32);
        }
    }
    let batches = runtime.batch_stats(&hash).unwrap_or_default();
    println!(
        "  the runtime ran {} batches carrying {} requests",
        batches.batches, batches.requests
    );
    let ours = stats(&mut ours);
    let name = format!("  {alias} ×{batch} /req");
    Ok(vec![
        line(&name, ours, "tract batch", stats(&mut tract_batch), None),
        line(&name, ours, "tract 1 by 1", stats(&mut tract_single), None),
    ])
}
