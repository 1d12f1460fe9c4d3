//! LNAMD: per-image standardisation, an r x r box mean and L2 normalisation of every patch.

use rayon::prelude::*;

use crate::error::{invalid, CoreResult};
use crate::linalg::Real;

/// LNAMD of `n` feature maps `[n, h, w, c]` (row-major) with an `r x r` box (r odd).
/// Returns `[n, h, w, c]`: standardised, box-averaged and L2-normalised per patch.
pub fn lnamd<T: Real>(
    features: &[T],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    r: usize,
) -> CoreResult<Vec<T>> {
    if r == 0 || r.is_multiple_of(2) {
        return invalid(format!(
            "r: the box size must be a positive odd number, got {r}"
        ));
    }
    if features.len() != n * h * w * c {
        return invalid(format!(
            "features: expected {} values for shape [{n}, {h}, {w}, {c}], got {}",
            n * h * w * c,
            features.len()
        ));
    }
    let per_image = h * w * c;
    let mut out = vec![T::ZERO; features.len()];
    if per_image == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(per_image)
        .zip(features.par_chunks(per_image))
        .for_each(|(dst, src)| {
            lnamd_one(src, dst, h, w, c, r);
        });
    Ok(out)
}

/// Mean and 1 / sqrt(variance + 1e-5) of one image's values. Values beyond ~1e154 overflow
/// the squares (or their sum): those images are measured divided by their largest magnitude,
/// the same statistics without the overflow (the CUDA path computes them the same way).
fn standardisation<T: Real>(src: &[T]) -> (f64, f64) {
    let count = src.len() as f64;
    let mean = src.iter().map(|v| v.to_f64()).sum::<f64>() / count;
    // Two passes for the (biased) variance: no cancellation from E[x^2] - E[x]^2.
    let var = src.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / count;
    if mean.is_finite() && var.is_finite() {
        return (mean, 1.0 / (var + LNAMD_EPS).sqrt());
    }
    let top = src.iter().fold(0.0f64, |m, v| m.max(v.to_f64().abs()));
    let mean = src.iter().map(|v| v.to_f64() / top).sum::<f64>() / count;
    let var = src
        .iter()
        .map(|v| (v.to_f64() / top - mean).powi(2))
        .sum::<f64>()
        / count;
    (
        mean * top,
        1.0 / ((var + LNAMD_EPS / top / top).sqrt() * top),
    )
}

/// Added to each image's variance (the MuSc authors' eps).
const LNAMD_EPS: f64 = 1e-5;

fn lnamd_one<T: Real>(src: &[T], dst: &mut [T], h: usize, w: usize, c: usize, r: usize) {
    let (mean, inv_std) = standardisation(src);
    let standard: Vec<f64> = src.iter().map(|v| (v.to_f64() - mean) * inv_std).collect();

    let half = (r - 1) / 2;
    let boxed: Vec<f64> = if r == 1 {
        standard
    } else {
        // Separable box sum with zero padding: along W, then along H; divided by r*r.
        let mut along_w = vec![0.0f64; h * w * c];
        for y in 0..h {
            for x in 0..w {
                let lo = x.saturating_sub(half);
                let hi = (x + half).min(w - 1);
                let out_row = &mut along_w[(y * w + x) * c..(y * w + x + 1) * c];
                for xx in lo..=hi {
                    let in_row = &standard[(y * w + xx) * c..(y * w + xx + 1) * c];
                    for (o, &v) in out_row.iter_mut().zip(in_row) {
                        *o += v;
                    }
                }
            }
        }
        let mut along_h = vec![0.0f64; h * w * c];
        let scale = 1.0 / (r * r) as f64;
        for y in 0..h {
            let lo = y.saturating_sub(half);
            let hi = (y + half).min(h - 1);
            for x in 0..w {
                let out_row = &mut along_h[(y * w + x) * c..(y * w + x + 1) * c];
                for yy in lo..=hi {
                    let in_row = &along_w[(yy * w + x) * c..(yy * w + x + 1) * c];
                    for (o, &v) in out_row.iter_mut().zip(in_row) {
                        *o += v;
                    }
                }
                for o in out_row.iter_mut() {
                    *o *= scale;
                }
            }
        }
        along_h
    };
    for (patch_out, patch) in dst.chunks_mut(c).zip(boxed.chunks(c)) {
        let norm = patch.iter().map(|v| v * v).sum::<f64>().sqrt();
        // As torch.nn.functional.normalize: a zero vector stays zero.
        let inv = 1.0 / norm.max(1e-12);
        for (o, &v) in patch_out.iter_mut().zip(patch) {
            *o = T::from_f64(v * inv);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::musc::mutual_scores;
    use crate::musc::random;

    #[test]
    fn lnamd_is_unit_norm_and_rejects_even_boxes() {
        let x = random(2 * 4 * 5 * 3, 4);
        let z = lnamd(&x, 2, 4, 5, 3, 3).unwrap();
        for patch in z.chunks(3) {
            let n: f64 = patch.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!((n - 1.0).abs() < 1e-12);
        }
        assert!(lnamd(&x, 2, 4, 5, 3, 2).is_err());
        assert!(mutual_scores(&x, 1, 60, 2, 0.3, None).is_err());
        assert!(mutual_scores(&x, 2, 20, 3, 0.0, None).is_err());
    }
}
