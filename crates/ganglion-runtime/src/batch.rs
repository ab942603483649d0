//! Several requests for one model run as one batch: inputs stacked along their first axis,
//! outputs split along the axis that grows with the batch.
//!
//! Which output axis that is differs between models (BlazeFace flattens its batch into the
//! anchor axis, the hand model keeps it first), so it is found at load time by running two
//! different inputs as a batch of two and one by one, and checked: the split batch must equal
//! the single runs within [`F32_TOLERANCE`]. A model that fails the check is not batched.
//! Batches are planned for sizes 2, 4, 8, … up to the maximum; a batch between two sizes is
//! padded with zeros, whose outputs are dropped.

use std::io::Cursor;
use std::sync::Arc;

use ganglion_types::{DType, Tensor};
use tract_onnx::prelude::{Framework, InferenceFact, InferenceModelExt};
use tract_onnx::tract_core::runtime::Runnable;

use crate::backend::{self, Backend, Device};
use crate::model::{run_plain, Model, ModelState, RunError};

/// Largest batch a model may be planned for.
pub const BATCH_MAX: usize = 64;

/// How far a batched f32 output may stray from the single run, relative (with an absolute
/// floor of the same size for values near zero).
pub const F32_TOLERANCE: f32 = 1e-3;

/// A model's batch plans and how to split their outputs.
pub(crate) struct Batching {
    plans: Vec<(usize, Arc<dyn Runnable>)>,
    /// Per output: the axis the batch is stacked along.
    axes: Vec<usize>,
}

impl Batching {
    /// Plans `model` for batches up to `max`, or says (in the log) why it cannot be batched.
    pub(crate) fn plan(model: &Model, bytes: &[u8], max: usize) -> Option<Self> {
        match Self::try_plan(model, bytes, max.min(BATCH_MAX)) {
            Ok(batching) => Some(batching),
            Err(why) => {
                tracing::info!(model = model.alias(), reason = %why, "model runs unbatched");
                None
            }
        }
    }

    fn try_plan(model: &Model, bytes: &[u8], max: usize) -> Result<Self, String> {
        let mut shapes = Vec::new();
        for spec in model.inputs() {
            let shape: Option<Vec<u32>> = spec.shape.iter().copied().collect();
            match shape {
                Some(s) if s.first() == Some(&1) => shapes.push(s),
                _ => {
                    return Err(format!(
                        "input {:?} has no leading batch axis of 1",
                        spec.name
                    ))
                }
            }
        }
        let device = match model.backend() {
            Backend::Cpu => Device::Cpu,
            Backend::Cuda => Device::Cuda,
        };
        let mut plans = Vec::new();
        let mut size = 2;
        while size <= max {
            plans.push((size, plan_for(model, bytes, &shapes, size, device)?));
            size *= 2;
        }
        let Some((_, two)) = plans.first() else {
            return Err(format!("batch maximum {max} is below 2"));
        };
        let axes = probe(model, two.as_ref())?;
        Ok(Self { plans, axes })
    }

    pub(crate) fn max(&self) -> usize {
        self.plans.last().map_or(1, |p| p.0)
    }

    pub(crate) fn plans(&self) -> impl Iterator<Item = (usize, &Arc<dyn Runnable>)> {
        self.plans.iter().map(|(size, plan)| (*size, plan))
    }

    /// Runs checked `requests` (at most [`Batching::max`]) as one batch.
    pub(crate) fn run(
        &self,
        state: &mut ModelState,
        requests: &[&[Tensor]],
    ) -> Vec<Result<Vec<Tensor>, RunError>> {
        let n = requests.len();
        let Some(slot) = state.batched.iter_mut().find(|(size, _)| *size >= n) else {
            let e = RunError::Tract(format!("no batch plan for {n} requests"));
            return vec![Err(e); n];
        };
        let size = slot.0;
        let inputs = stack(requests, size);
        match run_plain(slot.1.as_mut(), &inputs) {
            Ok(outputs) => (0..n)
                .map(|i| split(&outputs, &self.axes, size, i))
                .collect(),
            Err(e) => vec![Err(e); n],
        }
    }
}

/// A plan for batches of `size`: the model re-read with its inputs' first axis set to `size`
/// and the shapes the file records for intermediate values dropped (they say batch 1).
fn plan_for(
    model: &Model,
    bytes: &[u8],
    shapes: &[Vec<u32>],
    size: usize,
    device: Device,
) -> Result<Arc<dyn Runnable>, String> {
    let err = |e: tract_onnx::prelude::TractError| format!("batch of {size}: {e:#}");
    let mut inference = tract_onnx::onnx()
        .model_for_read(&mut Cursor::new(bytes))
        .map_err(err)?;
    for node in inference.nodes_mut() {
        for output in node.outputs.iter_mut() {
            output.fact = InferenceFact::default();
        }
    }
    for i in 0..model.outputs().len() {
        inference
            .set_output_fact(i, InferenceFact::default())
            .map_err(err)?;
    }
    for (i, (spec, shape)) in model.inputs().iter().zip(shapes).enumerate() {
        let mut dims: Vec<usize> = shape.iter().map(|d| *d as usize).collect();
        dims[0] = size;
        let fact = InferenceFact::dt_shape(crate::model::datum_of(spec.dtype), dims);
        inference.set_input_fact(i, fact).map_err(err)?;
    }
    let typed = inference
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .map_err(err)?;
    backend::prepare(typed, device)
        .map(|(_, plan)| plan)
        .map_err(|e| e.to_string())
}

/// Finds, per output, the axis along which a batch of two splits into the two single runs.
fn probe(model: &Model, two: &dyn Runnable) -> Result<Vec<usize>, String> {
    let a = sample_inputs(model, 1);
    let b = sample_inputs(model, 2);
    let mut state = model.state().map_err(|e| e.to_string())?;
    let single_a = model.run(&mut state, &a).map_err(|e| e.to_string())?;
    let single_b = model.run(&mut state, &b).map_err(|e| e.to_string())?;
    let mut batch_state = two.spawn().map_err(|e| format!("{e:#}"))?;
    let both = run_plain(batch_state.as_mut(), &stack(&[&a, &b], 2)).map_err(|e| e.to_string())?;
    let mut axes = Vec::new();
    for (o, batched) in both.iter().enumerate() {
        let (sa, sb) = (&single_a[o], &single_b[o]);
        let axis = (0..batched.shape.len()).find(|&axis| {
            let grows = batched.shape[axis] == 2 * sa.shape[axis]
                && (0..batched.shape.len()).all(|d| d == axis || batched.shape[d] == sa.shape[d]);
            grows
                && split_one(batched, axis, 2, 0).is_some_and(|x| close(&x, sa))
                && split_one(batched, axis, 2, 1).is_some_and(|x| close(&x, sb))
        });
        match axis {
            Some(axis) => axes.push(axis),
            None => {
                return Err(format!(
                    "output {o}: a batch of two does not split into the single runs"
                ))
            }
        }
    }
    Ok(axes)
}

/// Inputs of the model's shapes filled with a deterministic pattern that differs by `seed`.
fn sample_inputs(model: &Model, seed: u64) -> Vec<Tensor> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    model
        .inputs()
        .iter()
        .map(|spec| {
            let shape: Vec<u32> = spec.shape.iter().map(|d| d.unwrap_or(1)).collect();
            let count = Tensor::element_count(&shape).unwrap_or(0);
            let data = match spec.dtype {
                DType::F32 => (0..count)
                    .flat_map(|_| ((next() % 1000) as f32 / 1000.0).to_le_bytes())
                    .collect(),
                DType::I64 => (0..count)
                    .flat_map(|_| ((next() % 100) as i64).to_le_bytes())
                    .collect(),
                DType::U8 => (0..count).map(|_| (next() % 256) as u8).collect(),
            };
            Tensor {
                dtype: spec.dtype,
                shape,
                data,
            }
        })
        .collect()
}

/// Stacks each input of `requests` along axis 0 and pads with zeros up to `size`.
fn stack(requests: &[&[Tensor]], size: usize) -> Vec<Tensor> {
    let Some(first) = requests.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|k| {
            let one = &first[k];
            let mut data = Vec::with_capacity(one.data.len() * size);
            for request in requests {
                data.extend_from_slice(&request[k].data);
            }
            data.resize(one.data.len() * size, 0);
            let mut shape = one.shape.clone();
            shape[0] = size as u32;
            Tensor {
                dtype: one.dtype,
                shape,
                data,
            }
        })
        .collect()
}

fn split(
    outputs: &[Tensor],
    axes: &[usize],
    size: usize,
    item: usize,
) -> Result<Vec<Tensor>, RunError> {
    outputs
        .iter()
        .zip(axes)
        .map(|(t, axis)| {
            split_one(t, *axis, size, item)
                .ok_or_else(|| RunError::Output(format!("cannot split output {:?}", t.shape)))
        })
        .collect()
}

/// Item `item` of a batch of `size` stacked along `axis` of `t`.
fn split_one(t: &Tensor, axis: usize, size: usize, item: usize) -> Option<Tensor> {
    let len = *t.shape.get(axis)? as usize;
    if size == 0 || !len.is_multiple_of(size) {
        return None;
    }
    let each = len / size;
    let outer: usize = t.shape[..axis].iter().map(|d| *d as usize).product();
    let inner: usize = t.shape[axis + 1..]
        .iter()
        .map(|d| *d as usize)
        .product::<usize>()
        * t.dtype.size();
    let mut data = Vec::with_capacity(outer * each * inner);
    for o in 0..outer {
        let start = (o * len + item * each) * inner;
        data.extend_from_slice(t.data.get(start..start + each * inner)?);
    }
    let mut shape = t.shape.clone();
    shape[axis] = each as u32;
    Some(Tensor {
        dtype: t.dtype,
        shape,
        data,
    })
}

/// Same shape and values, f32 within [`F32_TOLERANCE`], other types exactly.
pub(crate) fn close(a: &Tensor, b: &Tensor) -> bool {
    if a.shape != b.shape || a.dtype != b.dtype || a.data.len() != b.data.len() {
        return false;
    }
    if a.dtype != DType::F32 {
        return a.data == b.data;
    }
    a.data
        .chunks_exact(4)
        .zip(b.data.chunks_exact(4))
        .all(|(x, y)| {
            let x = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
            let y = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
            (x - y).abs() <= F32_TOLERANCE * (1.0 + y.abs())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(shape: &[u32], values: &[f32]) -> Tensor {
        Tensor {
            dtype: DType::F32,
            shape: shape.to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    #[test]
    fn split_takes_an_items_share_of_any_axis() {
        // [1, 4, 2]: a batch of 2 flattened into axis 1 (as BlazeFace does).
        let t = tensor(&[1, 4, 2], &[0., 1., 2., 3., 4., 5., 6., 7.]);
        assert_eq!(
            split_one(&t, 1, 2, 1).unwrap(),
            tensor(&[1, 2, 2], &[4., 5., 6., 7.])
        );
        // [2, 3]: batch first.
        let t = tensor(&[2, 3], &[0., 1., 2., 3., 4., 5.]);
        assert_eq!(
            split_one(&t, 0, 2, 0).unwrap(),
            tensor(&[1, 3], &[0., 1., 2.])
        );
        assert!(split_one(&t, 1, 2, 0).is_none(), "3 does not split in 2");
    }

    #[test]
    fn stacking_pads_with_zeros() {
        let a = [tensor(&[1, 2], &[1., 2.])];
        let stacked = stack(&[&a], 2);
        assert_eq!(stacked[0], tensor(&[2, 2], &[1., 2., 0., 0.]));
    }
}
