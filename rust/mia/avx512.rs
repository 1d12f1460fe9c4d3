//! The AVX-512 row kernel for float32, bfloat16 and float16 logits (the hot path).
//!
//! Same three L1 sweeps per chunk as the portable kernel, written with intrinsics because the
//! compiler neither keeps array accumulators in registers nor fuses multiply-adds by itself
//! (measured: 0.33 s against this kernel's figure in bench/RESULTS_mia.md, one core).
//! float32 chunks are read in place; 16-bit chunks are widened into the chunk buffer first.

use std::arch::x86_64::*;

use super::moments::{Moments, CHUNK};

const LANES: usize = 16;
const EXP_LOW: f32 = -87.0;

/// e^x for -87 <= x <= 0: Cody-Waite reduction, the Cephes expf polynomial, `vscalefps`.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp_nonpositive(x: __m512) -> __m512 {
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.398_199_9e-3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.333_452e-3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.166_579_6e-2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.666_666_5e-1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5));
    let y = _mm512_add_ps(
        _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r),
        _mm512_set1_ps(1.0),
    );
    _mm512_scalef_ps(y, n)
}

/// Horizontal sum in float64 (the lanes are partial sums of up to CHUNK / 16 terms).
#[inline]
#[target_feature(enable = "avx512f")]
fn sum_f64(v: __m512) -> f64 {
    let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
        _mm512_castps_pd(v),
    )));
    _mm512_reduce_add_pd(_mm512_add_pd(lo, hi))
}

/// Moments of `z` (length a multiple of 16, -inf padding allowed); `e` receives the weights.
/// Returns (moments, held NaN or +inf). While computing, the `ahead_lines` cache lines at
/// `ahead` (the next chunk of the row) are prefetched, so the next sweep 1 finds them in cache
/// and DRAM traffic overlaps the arithmetic.
#[target_feature(enable = "avx512f")]
fn chunk_moments(
    z: &[f32],
    e: &mut [f32],
    ahead: *const u8,
    ahead_lines: usize,
) -> (Moments, bool) {
    debug_assert!(z.len().is_multiple_of(LANES) && e.len() >= z.len());
    let groups = z.len() / LANES;
    let zp = z.as_ptr();
    let ep = e.as_mut_ptr();
    let inf = _mm512_set1_ps(f32::INFINITY);

    // Sweep 1: maximum; any lane not `< +inf` is NaN or +inf.
    let mut max0 = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut max1 = max0;
    let mut finite: u32 = 0xffff;
    let mut g = 0;
    while g + 1 < groups {
        // SAFETY: groups g and g + 1 lie inside z (g + 1 < groups).
        let (a, b) = unsafe {
            (
                _mm512_loadu_ps(zp.add(g * LANES)),
                _mm512_loadu_ps(zp.add((g + 1) * LANES)),
            )
        };
        max0 = _mm512_max_ps(max0, a);
        max1 = _mm512_max_ps(max1, b);
        let ok =
            _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, inf) & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(b, inf);
        finite &= ok as u32;
        g += 2;
    }
    if g < groups {
        // SAFETY: g < groups, so the group lies inside z.
        let a = unsafe { _mm512_loadu_ps(zp.add(g * LANES)) };
        max0 = _mm512_max_ps(max0, a);
        finite &= _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, inf) as u32;
    }
    if finite != 0xffff {
        return (Moments::EMPTY, true);
    }
    let max = _mm512_reduce_max_ps(_mm512_max_ps(max0, max1));
    if max == f32::NEG_INFINITY {
        return (Moments::EMPTY, false);
    }

    // Sweep 2: weights e = exp(z - max) (0 below EXP_LOW), their sum and sum of e * (z - max).
    let vmax = _mm512_set1_ps(max);
    let low = _mm512_set1_ps(EXP_LOW);
    let weigh = |g: usize, w: &mut __m512, s: &mut __m512| {
        if g < ahead_lines {
            // A prefetch never faults, so the address needs no bounds (wrapping arithmetic).
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(g * 64) as *const i8);
        }
        // SAFETY: callers pass g < groups: the group lies inside z and inside e (e.len() >= z.len()).
        unsafe {
            let d = _mm512_sub_ps(_mm512_loadu_ps(zp.add(g * LANES)), vmax);
            let kept = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(d, low);
            let dc = _mm512_max_ps(d, low);
            let ex = _mm512_maskz_mov_ps(kept, exp_nonpositive(dc));
            _mm512_storeu_ps(ep.add(g * LANES), ex);
            *w = _mm512_add_ps(*w, ex);
            *s = _mm512_fmadd_ps(ex, dc, *s);
        }
    };
    let (mut w0, mut w1, mut s0, mut s1) = (
        _mm512_setzero_ps(),
        _mm512_setzero_ps(),
        _mm512_setzero_ps(),
        _mm512_setzero_ps(),
    );
    let mut g = 0;
    while g + 1 < groups {
        weigh(g, &mut w0, &mut s0);
        weigh(g + 1, &mut w1, &mut s1);
        g += 2;
    }
    if g < groups {
        weigh(g, &mut w0, &mut s0);
    }
    let w = [w0, w1];
    let s = [s0, s1];
    let weight = sum_f64(w[0]) + sum_f64(w[1]);
    let shifted_mean = (sum_f64(s[0]) + sum_f64(s[1])) / weight;
    let centre = shifted_mean as f32;

    // Sweep 3: weighted squared deviations about the chunk's mean.
    let vcentre = _mm512_set1_ps(centre);
    let deviate = |g: usize, m2: &mut __m512| {
        // SAFETY: callers pass g < groups, as above.
        unsafe {
            let d = _mm512_max_ps(_mm512_sub_ps(_mm512_loadu_ps(zp.add(g * LANES)), vmax), low);
            let dev = _mm512_sub_ps(d, vcentre);
            *m2 = _mm512_fmadd_ps(
                _mm512_loadu_ps(ep.add(g * LANES)),
                _mm512_mul_ps(dev, dev),
                *m2,
            );
        }
    };
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut g = 0;
    while g + 1 < groups {
        deviate(g, &mut a0);
        deviate(g + 1, &mut a1);
        g += 2;
    }
    if g < groups {
        deviate(g, &mut a0);
    }
    let m2 = [a0, a1];
    let offset = centre as f64 - shifted_mean;
    let m2 = (sum_f64(m2[0]) + sum_f64(m2[1]) - weight * offset * offset).max(0.0);
    let max = max as f64;
    (
        Moments {
            max,
            weight,
            mean: shifted_mean,
            m2,
        },
        false,
    )
}

/// Which 16-bit format to widen.
#[derive(Clone, Copy)]
pub enum Half {
    Bf16,
    F16,
}

/// Widen `src` (at most CHUNK values) into `z`, padded with -inf to whole lanes; returns the
/// padded length.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn widen_half(src: &[u16], half: Half, z: &mut [f32]) -> usize {
    debug_assert!(src.len() <= z.len());
    let n = src.len();
    let padded = n.div_ceil(LANES) * LANES;
    let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut g = 0;
    while g * LANES < n {
        let left = n - g * LANES;
        let mask: __mmask16 = if left >= LANES {
            0xffff
        } else {
            ((1u32 << left) - 1) as __mmask16
        };
        // SAFETY: the masked load touches only the `left` values that lie inside src; the store
        // writes one whole group below `padded` <= z.len() (z holds CHUNK values, CHUNK % 16 == 0).
        unsafe {
            let bits = _mm256_maskz_loadu_epi16(mask, src.as_ptr().add(g * LANES) as *const i16);
            let wide = match half {
                Half::Bf16 => {
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(bits)))
                }
                Half::F16 => _mm512_cvtph_ps(bits),
            };
            _mm512_storeu_ps(
                z.as_mut_ptr().add(g * LANES),
                _mm512_mask_mov_ps(neg_inf, mask, wide),
            );
        }
        g += 1;
    }
    padded
}

/// Row moments for float32 logits; a ragged last chunk is copied and padded with -inf.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn row_moments_f32(row: &[f32], z: &mut [f32], e: &mut [f32]) -> Option<Moments> {
    let mut total = Moments::EMPTY;
    // The chunk after the last one is the next row's start: prefetch it too.
    for chunk in row.chunks(CHUNK) {
        let ahead = chunk.as_ptr().wrapping_add(chunk.len()) as *const u8;
        let ahead_lines = CHUNK * 4 / 64;
        let (m, bad) = if chunk.len().is_multiple_of(LANES) {
            chunk_moments(chunk, e, ahead, ahead_lines)
        } else {
            let padded = chunk.len().div_ceil(LANES) * LANES;
            z[..chunk.len()].copy_from_slice(chunk);
            z[chunk.len()..padded].fill(f32::NEG_INFINITY);
            chunk_moments(&z[..padded], e, ahead, ahead_lines)
        };
        if bad {
            return None;
        }
        total = total.merge(m);
    }
    Some(total)
}

/// Row moments for bfloat16 / float16 bit patterns.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn row_moments_half(row: &[u16], half: Half, z: &mut [f32], e: &mut [f32]) -> Option<Moments> {
    let mut total = Moments::EMPTY;
    for chunk in row.chunks(CHUNK) {
        let padded = widen_half(chunk, half, z);
        let ahead = chunk.as_ptr().wrapping_add(chunk.len()) as *const u8;
        let (m, bad) = chunk_moments(&z[..padded], e, ahead, CHUNK * 2 / 64);
        if bad {
            return None;
        }
        total = total.merge(m);
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_to_a_few_ulp() {
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut worst = 0.0f64;
        let mut x = [0.0f32; LANES];
        let mut y = [0.0f32; LANES];
        for i in 0..(1 << 16) {
            for (l, v) in x.iter_mut().enumerate() {
                *v = EXP_LOW * ((i * LANES + l) as f32 / (LANES << 16) as f32);
            }
            // SAFETY: AVX-512F was detected above; x and y hold 16 floats each.
            unsafe {
                _mm512_storeu_ps(y.as_mut_ptr(), exp_nonpositive(_mm512_loadu_ps(x.as_ptr())))
            };
            for (&xv, &yv) in x.iter().zip(&y) {
                let exact = (xv as f64).exp();
                worst = worst.max(((yv as f64) - exact).abs() / exact);
            }
        }
        eprintln!("worst relative error of the AVX-512 exp: {worst:e}");
        assert!(worst < 3e-7, "relative error {worst}");
    }
}
