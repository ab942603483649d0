//! Re-executed outputs against a provider's. Floats are compared element by element with
//! [`Tolerance`] (`|provider − checker| ≤ abs + rel × |checker|`); other types must be equal.

use ganglion_types::verify::Tolerance;
use ganglion_types::{DType, Tensor};

/// `Ok` when `got` (a provider's outputs) matches `expected` (the checker's) within `tolerance`;
/// otherwise how they differ, in words (the worst element, or the first structural
/// difference).
pub fn compare(expected: &[Tensor], got: &[Tensor], tolerance: Tolerance) -> Result<(), String> {
    if expected.len() != got.len() {
        return Err(format!(
            "{} outputs, expected {}",
            got.len(),
            expected.len()
        ));
    }
    for (i, (want, have)) in expected.iter().zip(got).enumerate() {
        if want.dtype != have.dtype || want.shape != have.shape {
            return Err(format!(
                "output {i} is {:?} of shape {:?}, expected {:?} of shape {:?}",
                have.dtype, have.shape, want.dtype, want.shape
            ));
        }
        if want.dtype != DType::F32 {
            if let Some(at) = want.data.iter().zip(&have.data).position(|(a, b)| a != b) {
                return Err(format!("output {i} differs at byte {at}"));
            }
            continue;
        }
        let (Ok(want), Ok(have)) = (want.to_f32(), have.to_f32()) else {
            return Err(format!("output {i} is not readable as f32"));
        };
        // The worst element, relative to what it may differ by.
        let mut worst: Option<(usize, f32, f32, f32)> = None;
        for (j, (&a, &b)) in want.iter().zip(&have).enumerate() {
            let ratio = excess(a, b, tolerance);
            if ratio > 1.0 && worst.is_none_or(|(_, _, _, r)| ratio > r) {
                worst = Some((j, a, b, ratio));
            }
        }
        if let Some((j, a, b, ratio)) = worst {
            let count = want
                .iter()
                .zip(&have)
                .filter(|(&a, &b)| excess(a, b, tolerance) > 1.0)
                .count();
            return Err(format!(
                "output {i}: {count} of {} elements off; worst [{j}]: {b} against {a} ({ratio:.1}× the tolerance of {} + {} × |value|)",
                want.len(),
                tolerance.abs,
                tolerance.rel
            ));
        }
    }
    Ok(())
}

/// How far `got` is from `want`, as a multiple of what the tolerance allows (above 1: too
/// far). Equal values (the same infinity, NaN for NaN) always match: inputs that make a model
/// overflow on every machine frame nobody. A non-finite value against a finite one never
/// matches, whichever side it is on.
fn excess(want: f32, got: f32, tolerance: Tolerance) -> f32 {
    if want == got || (want.is_nan() && got.is_nan()) {
        return 0.0;
    }
    if !want.is_finite() || !got.is_finite() {
        return f32::INFINITY;
    }
    let allowed = tolerance.abs + tolerance.rel * want.abs();
    (want - got).abs() / allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(values: &[f32]) -> Tensor {
        Tensor::from_f32(&[values.len() as u32], values).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn floats_within_the_tolerance_match_and_beyond_it_do_not() {
        let tol = Tolerance::default();
        let want = [t(&[1.0, -20.0, 0.0])];
        assert_eq!(
            compare(&want, &[t(&[1.0005, -20.01, 0.00005])], tol),
            Ok(())
        );
        let err = compare(&want, &[t(&[1.0, -20.0, 0.5])], tol).unwrap_err();
        assert!(err.contains("1 of 3") && err.contains("[2]"), "{err}");
        let err = compare(&want, &[t(&[1.0, -20.0, f32::NAN])], tol).unwrap_err();
        assert!(err.contains("[2]"), "{err}");
        // What overflows on every machine overflows alike: no mismatch. Finite against
        // non-finite is one, either way round.
        let odd = [t(&[f32::INFINITY, f32::NAN, f32::NEG_INFINITY])];
        assert_eq!(compare(&odd, &odd.clone(), tol), Ok(()));
        assert!(compare(&odd, &[t(&[1.0, 1.0, 1.0])], tol).is_err());
        assert!(compare(&[t(&[1.0])], &[t(&[f32::INFINITY])], tol).is_err());
        let err = compare(&want, &[t(&[1.0, -20.0])], tol).unwrap_err();
        assert!(err.contains("shape"), "{err}");
        assert!(compare(&want, &[], tol).unwrap_err().contains("0 outputs"));
    }

    #[test]
    fn integers_must_be_equal() {
        let a = Tensor {
            dtype: DType::I64,
            shape: vec![1],
            data: 5i64.to_le_bytes().to_vec(),
        };
        let mut b = a.clone();
        assert_eq!(
            compare(
                std::slice::from_ref(&a),
                std::slice::from_ref(&b),
                Tolerance::default()
            ),
            Ok(())
        );
        b.data[0] = 6;
        assert!(compare(&[a], &[b], Tolerance::default()).is_err());
    }
}
