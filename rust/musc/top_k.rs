//! The mean of the k smallest per-pair minima of every patch.

use rayon::prelude::*;

use crate::error::{invalid, CoreResult};
use crate::linalg::Real;

/// The number of smallest values averaged per patch: max(1, floor(references * top_ratio)).
pub fn top_k(references: usize, top_ratio: f64) -> usize {
    (((references as f64) * top_ratio).floor() as usize).clamp(1, references.max(1))
}

pub(super) fn check_ratio(top_ratio: f64) -> CoreResult<()> {
    if !(top_ratio > 0.0 && top_ratio <= 1.0) {
        return invalid(format!("top_ratio: must lie in (0, 1], got {top_ratio}"));
    }
    Ok(())
}

/// Mean of the `k` smallest of `values` (reordered in place), by partial selection.
fn mean_of_smallest<T: Real>(values: &mut [T], k: usize) -> T {
    if k < values.len() {
        values.select_nth_unstable_by(k - 1, |x, y| {
            x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal)
        });
    }
    let s: f64 = values[..k].iter().map(|v| v.to_f64()).sum();
    T::from_f64(s / k as f64)
}

/// `out[i, p]` = mean of the `k` smallest of `minima[i, :, p]` for the chunk's queries.
pub(super) fn reduce_top_k<T: Real>(
    minima: &mut [T],
    out: &mut [T],
    refs: usize,
    p: usize,
    k: usize,
) {
    out.par_chunks_mut(p).enumerate().for_each_init(
        || vec![T::ZERO; refs],
        |values, (qi, out_row)| {
            let block = &minima[qi * refs * p..(qi + 1) * refs * p];
            for (patch, o) in out_row.iter_mut().enumerate() {
                for (j, v) in values.iter_mut().enumerate() {
                    *v = block[j * p + patch];
                }
                *o = mean_of_smallest(values, k);
            }
        },
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn top_k_rounds_down_with_at_least_one() {
        assert_eq!(top_k(1, 0.3), 1);
        assert_eq!(top_k(3, 0.3), 1);
        assert_eq!(top_k(10, 0.3), 3);
        assert_eq!(top_k(31, 0.3), 9);
        assert_eq!(top_k(4, 1.0), 4);
    }
}
