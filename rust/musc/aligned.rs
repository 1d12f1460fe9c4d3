//! Aligned MuSc: for parts that sit at the same place in every image (boards, PCBs), each patch is
//! compared only with the patches within `window` grid cells of its own position in the other
//! images. The candidate set is small ((2 window + 1)^2 patches per other image), so distances are
//! measured directly and exactly (float64 sums of squared differences), without GEMM tiles.

use rayon::prelude::*;

use super::top_k;
use crate::error::{invalid, CoreResult};
use crate::linalg::Real;

fn exact_sq<T: Real>(a: &[T], b: &[T]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = x.to_f64() - y.to_f64();
            d * d
        })
        .sum()
}

/// Aligned mutual scores of `x [n, h, w, c]`: `[n, h * w]`. For image i, patch (y, x) and
/// every other image j, `a = min ||z_i(y, x) - z_j(y', x')||` over `|y' - y| <= window` and
/// `|x' - x| <= window`; the score is the mean of the `k = max(1, floor((n - 1) top_ratio))`
/// smallest `a` over j.
#[allow(clippy::too_many_arguments)]
pub fn aligned_mutual_scores<T: Real>(
    x: &[T],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    top_ratio: f64,
    window: usize,
) -> CoreResult<Vec<T>> {
    if n < 2 {
        return invalid(format!(
            "patches: mutual scoring needs at least 2 images, got {n}"
        ));
    }
    if h == 0 || w == 0 || c == 0 {
        return invalid("patches: empty patch grid or no channels");
    }
    if x.len() != n * h * w * c {
        return invalid("patches: length does not match its shape");
    }
    if !(top_ratio > 0.0 && top_ratio <= 1.0) {
        return invalid(format!("top_ratio: must lie in (0, 1], got {top_ratio}"));
    }
    let p = h * w;
    let k = top_k(n - 1, top_ratio);
    let mut out = vec![T::ZERO; n * p];
    out.par_chunks_mut(w).enumerate().for_each_init(
        || Vec::with_capacity(n),
        |minima: &mut Vec<f64>, (row, out_row)| {
            let (i, y) = (row / h, row % h);
            let (y0, y1) = (y.saturating_sub(window), (y + window).min(h - 1));
            for (xx, o) in out_row.iter_mut().enumerate() {
                let (x0, x1) = (xx.saturating_sub(window), (xx + window).min(w - 1));
                let a = &x[((i * h + y) * w + xx) * c..][..c];
                minima.clear();
                for j in (0..n).filter(|&j| j != i) {
                    let mut best = f64::INFINITY;
                    for yy in y0..=y1 {
                        for xb in x0..=x1 {
                            let b = &x[((j * h + yy) * w + xb) * c..][..c];
                            best = best.min(exact_sq(a, b));
                        }
                    }
                    minima.push(best.sqrt());
                }
                minima.sort_by(|u, v| u.total_cmp(v));
                let s: f64 = minima[..k].iter().sum();
                *o = T::from_f64(s / k as f64);
            }
        },
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_zero_compares_the_same_position_only() {
        // Two images of 1 x 2 patches, one channel: patch 0 differs by 3, patch 1 equal.
        let x = [0.0f64, 5.0, 3.0, 5.0];
        let out = aligned_mutual_scores(&x, 2, 1, 2, 1, 1.0, 0).unwrap_or_default();
        assert_eq!(out, vec![3.0, 0.0, 3.0, 0.0]);
        let wide = aligned_mutual_scores(&x, 2, 1, 2, 1, 1.0, 1).unwrap_or_default();
        assert_eq!(wide, vec![3.0, 0.0, 2.0, 0.0]);
    }
}
