//! Tensors as they travel: element type, shape, and the elements as little-endian bytes (so a
//! 1 MiB tensor is copied, not serialised element by element).

use serde::{Deserialize, Serialize};

use crate::limits::{TENSORS_MAX, TENSOR_RANK_MAX};

/// Element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    F32,
    I64,
    U8,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::I64 => 8,
            Self::U8 => 1,
        }
    }
}

/// A tensor on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<u32>,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Why a tensor is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TensorError {
    #[error("tensor of rank {0} exceeds the limit of {TENSOR_RANK_MAX}")]
    Rank(usize),
    #[error("tensor shape {0:?} has too many elements")]
    Overflow(Vec<u32>),
    #[error("tensor of shape {shape:?} and type {dtype:?} needs {expected} bytes, got {got}")]
    Length {
        shape: Vec<u32>,
        dtype: DType,
        expected: usize,
        got: usize,
    },
    #[error("expected a {expected:?} tensor, got {got:?}")]
    DType { expected: DType, got: DType },
    #[error("{0} tensors exceed the limit of {TENSORS_MAX}")]
    Count(usize),
}

impl Tensor {
    /// An f32 tensor of `shape` holding `values` (row-major).
    pub fn from_f32(shape: &[u32], values: &[f32]) -> Result<Self, TensorError> {
        let tensor = Self {
            dtype: DType::F32,
            shape: shape.to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        tensor.check()?;
        Ok(tensor)
    }

    /// Number of elements the shape implies, or `None` on overflow.
    pub fn element_count(shape: &[u32]) -> Option<usize> {
        shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
    }

    /// Checks that rank and byte length agree with shape and type.
    pub fn check(&self) -> Result<(), TensorError> {
        if self.shape.len() > TENSOR_RANK_MAX {
            return Err(TensorError::Rank(self.shape.len()));
        }
        let expected = Self::element_count(&self.shape)
            .and_then(|n| n.checked_mul(self.dtype.size()))
            .ok_or_else(|| TensorError::Overflow(self.shape.clone()))?;
        if expected != self.data.len() {
            return Err(TensorError::Length {
                shape: self.shape.clone(),
                dtype: self.dtype,
                expected,
                got: self.data.len(),
            });
        }
        Ok(())
    }

    /// The elements as f32, if this is a well-formed f32 tensor.
    pub fn to_f32(&self) -> Result<Vec<f32>, TensorError> {
        if self.dtype != DType::F32 {
            return Err(TensorError::DType {
                expected: DType::F32,
                got: self.dtype,
            });
        }
        self.check()?;
        Ok(self
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// Checks a list of tensors: count within limit, each well formed.
pub fn check_all(tensors: &[Tensor]) -> Result<(), TensorError> {
    if tensors.len() > TENSORS_MAX {
        return Err(TensorError::Count(tensors.len()));
    }
    tensors.iter().try_for_each(Tensor::check)
}

/// BLAKE3 over the tensors' types, shapes and bytes: what an answer's signature commits to.
pub fn hash_all(tensors: &[Tensor]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(tensors.len() as u64).to_le_bytes());
    for t in tensors {
        hasher.update(&[t.dtype as u8, t.shape.len() as u8]);
        for d in &t.shape {
            hasher.update(&d.to_le_bytes());
        }
        hasher.update(&(t.data.len() as u64).to_le_bytes());
        hasher.update(&t.data);
    }
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_bytes_must_agree() {
        let t = Tensor::from_f32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        assert!(matches!(
            Tensor::from_f32(&[2, 3], &[1.0]),
            Err(TensorError::Length {
                expected: 24,
                got: 4,
                ..
            })
        ));
        let huge = Tensor {
            dtype: DType::F32,
            shape: vec![u32::MAX; 8],
            data: vec![],
        };
        assert!(matches!(huge.check(), Err(TensorError::Overflow(_))));
        let deep = Tensor {
            dtype: DType::U8,
            shape: vec![1; 9],
            data: vec![0],
        };
        assert_eq!(deep.check(), Err(TensorError::Rank(9)));
    }

    #[test]
    fn hash_commits_to_shape_as_well_as_bytes() {
        let a = Tensor::from_f32(&[4], &[1.0; 4]).unwrap();
        let b = Tensor::from_f32(&[2, 2], &[1.0; 4]).unwrap();
        assert_ne!(hash_all(std::slice::from_ref(&a)), hash_all(&[b]));
        assert_eq!(hash_all(std::slice::from_ref(&a)), hash_all(&[a]));
    }
}
