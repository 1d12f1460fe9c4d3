//! Whitening of a few rows (per-position scoring of a small batch) with AVX-512.
//!
//! With 8 rows a GEMM call spends more time packing the factor than multiplying it. Here each
//! 32-column strip of the factor is streamed once, only over its non-zero rows, into eight
//! accumulators that live in registers; the squared norms are folded in float64 at the end.

use super::Shape;

/// Rows handled per pass (one register accumulator each).
pub const ROWS: usize = 8;

/// Adds `||centred_i @ w||^2` to `out_sq[i]` for `rows <= ROWS` rows of `centred` (`rows x d`,
/// row-major, float32) and `w` (`d x k`, row-major). Returns false when the CPU lacks AVX-512
/// (the caller then takes the GEMM path).
pub fn squared_norms_f32(
    centred: &[f32],
    rows: usize,
    d: usize,
    w: &[f32],
    k: usize,
    shape: Shape,
    out_sq: &mut [f64],
) -> bool {
    debug_assert!(
        rows <= ROWS && centred.len() >= rows * d && w.len() >= d * k && out_sq.len() >= rows
    );
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // Pad the batch to ROWS rows of zeros so the kernel has a fixed shape.
            let mut padded = [0.0f32; 0].to_vec();
            let rows_data: &[f32] = if rows == ROWS {
                &centred[..ROWS * d]
            } else {
                padded.resize(ROWS * d, 0.0);
                padded[..rows * d].copy_from_slice(&centred[..rows * d]);
                &padded
            };
            let mut sums = [0.0f64; ROWS];
            // SAFETY: AVX-512F is available (checked above); the slices hold ROWS x d and d x k
            // elements (debug-asserted above, guaranteed by the callers' shapes).
            unsafe { avx512::kernel(rows_data, d, w, k, shape, &mut sums) };
            for i in 0..rows {
                out_sq[i] += sums[i];
            }
            return true;
        }
    }
    let _ = (centred, rows, d, w, k, shape, out_sq);
    false
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Shape, ROWS};

    /// Rows of `w` fetched ahead of use: the strips walk `w` with a stride of one row, which
    /// the hardware prefetcher does not follow far enough to hide memory latency.
    const PREFETCH_ROWS: usize = 12;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn kernel(
        x: &[f32],
        d: usize,
        w: &[f32],
        k: usize,
        shape: Shape,
        sums: &mut [f64; ROWS],
    ) {
        let xp = x.as_ptr();
        let wp = w.as_ptr();
        let mut total = [_mm512_setzero_pd(); ROWS];
        let lane_mask = |n: usize| -> __mmask16 {
            if n >= 16 {
                0xffff
            } else {
                ((1u32 << n) - 1) as u16
            }
        };
        let mut c0 = 0;
        // Strips of 32 columns: 8 rows x 2 registers of accumulators, 2 of w, 1 broadcast.
        while c0 < k {
            let width = (k - c0).min(32);
            let (mask_a, mask_b) = (lane_mask(width), lane_mask(width.saturating_sub(16)));
            // Rows of w that can be non-zero in columns c0..c0+width.
            let (r0, r1) = match shape {
                Shape::Lower => (c0.min(d), d),
                Shape::Upper => (0, (c0 + width).min(d)),
                Shape::Full => (0, d),
            };
            let mut acc_a = [_mm512_setzero_ps(); ROWS];
            let mut acc_b = [_mm512_setzero_ps(); ROWS];
            for r in r0..r1 {
                if r + PREFETCH_ROWS < r1 {
                    let ahead = wp.add((r + PREFETCH_ROWS) * k + c0) as *const i8;
                    _mm_prefetch::<_MM_HINT_T0>(ahead);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.add(64));
                }
                // SAFETY: r < d and the masks stop at column k, so the loads stay inside w.
                let wa = _mm512_maskz_loadu_ps(mask_a, wp.add(r * k + c0));
                let wb = if width > 16 {
                    _mm512_maskz_loadu_ps(mask_b, wp.add(r * k + c0 + 16))
                } else {
                    _mm512_setzero_ps()
                };
                for i in 0..ROWS {
                    // SAFETY: i < ROWS and r < d: inside x (ROWS x d).
                    let xv = _mm512_set1_ps(*xp.add(i * d + r));
                    acc_a[i] = _mm512_fmadd_ps(xv, wa, acc_a[i]);
                    acc_b[i] = _mm512_fmadd_ps(xv, wb, acc_b[i]);
                }
            }
            for i in 0..ROWS {
                for a in [acc_a[i], acc_b[i]] {
                    let low = _mm512_cvtps_pd(_mm512_castps512_ps256(a));
                    let high = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(
                        _mm512_castps_pd(a),
                        1,
                    )));
                    total[i] = _mm512_fmadd_pd(low, low, total[i]);
                    total[i] = _mm512_fmadd_pd(high, high, total[i]);
                }
            }
            c0 += width;
        }
        for (s, t) in sums.iter_mut().zip(total.iter()) {
            *s = _mm512_reduce_add_pd(*t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_products() {
        let (d, k) = (37, 37);
        let w: Vec<f32> = (0..d * k)
            .map(|i| ((i * 7919) % 23) as f32 / 7.0 - 1.5)
            .collect();
        for rows in [1usize, 3, 8] {
            let x: Vec<f32> = (0..rows * d)
                .map(|i| ((i * 104729) % 17) as f32 / 5.0 - 1.6)
                .collect();
            for shape in [Shape::Lower, Shape::Upper, Shape::Full] {
                let wm: Vec<f32> = (0..d * k)
                    .map(|at| {
                        let (r, c) = (at / k, at % k);
                        let keep = match shape {
                            Shape::Lower => r >= c,
                            Shape::Upper => r <= c,
                            Shape::Full => true,
                        };
                        if keep {
                            w[at]
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let mut got = vec![0.0f64; rows];
                if !squared_norms_f32(&x, rows, d, &wm, k, shape, &mut got) {
                    return; // no AVX-512 on this CPU
                }
                for i in 0..rows {
                    let expect: f64 = (0..k)
                        .map(|c| {
                            (0..d)
                                .map(|r| x[i * d + r] as f64 * wm[r * k + c] as f64)
                                .sum::<f64>()
                                .powi(2)
                        })
                        .sum();
                    assert!(
                        (got[i] - expect).abs() <= 1e-4 * expect.max(1.0),
                        "{shape:?} {i}: {} vs {expect}",
                        got[i]
                    );
                }
            }
        }
    }
}
