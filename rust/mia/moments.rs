//! The row kernel: one chunk of logits widened and swept three times in L1, and the running
//! moments of a row merged chunk by chunk (Chan/West).

use crate::linalg::Real;

/// Logits per chunk: two f32 buffers of this size (16 KiB) stay in L1.
pub(super) const CHUNK: usize = 2048;
/// The float type a chunk is computed in (f32 for 32- and 16-bit logits, f64 for f64).
/// The float arithmetic of the row kernel: the crate's `Real` plus the exp and limits it needs.
pub(super) trait Lane: Real {
    const NEG_INF: Self;
    const INF: Self;
    /// Below this, exp(x) is taken as exactly 0.
    const EXP_LOW: Self;
    fn exp_nonpositive(x: Self) -> Self;
}

impl Lane for f32 {
    const NEG_INF: Self = f32::NEG_INFINITY;
    const INF: Self = f32::INFINITY;
    const EXP_LOW: Self = -87.0;

    /// exp(x) for x <= 0 (x >= -87 clamped in by the caller), about 1 ulp.
    #[inline(always)]
    fn exp_nonpositive(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
        let t = x * LOG2E + ROUND;
        let n = t - ROUND;
        let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
        let r = x - n * LN2_HI - n * LN2_LO;
        // Minimax polynomial for e^r - 1 - r on |r| <= ln2/2 (Cephes expf coefficients).
        let mut p = 1.987_569_1e-4_f32;
        p = p * r + 1.398_199_9e-3;
        p = p * r + 8.333_452e-3;
        p = p * r + 4.166_579_6e-2;
        p = p * r + 1.666_666_5e-1;
        p = p * r + 0.5;
        let e = p * (r * r) + r + 1.0;
        let scale = f32::from_bits(((n_bits + 127) as u32) << 23);
        e * scale
    }
}

impl Lane for f64 {
    const NEG_INF: Self = f64::NEG_INFINITY;
    const INF: Self = f64::INFINITY;
    const EXP_LOW: Self = -708.0;

    /// exp(x) for x <= 0 (x >= -708), within a few ulp: Taylor series to degree 13 on
    /// |r| <= ln2/2 (truncation below 1e-17).
    #[inline(always)]
    fn exp_nonpositive(x: f64) -> f64 {
        const LOG2E: f64 = std::f64::consts::LOG2_E;
        const LN2_HI: f64 = 6.931_471_803_691_238e-1;
        const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
        const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
        let t = x * LOG2E + ROUND;
        let n = t - ROUND;
        let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits()) as i64;
        let r = x - n * LN2_HI - n * LN2_LO;
        let mut p = 1.0 / 6_227_020_800.0; // 1/13!
        p = p * r + 1.0 / 479_001_600.0;
        p = p * r + 1.0 / 39_916_800.0;
        p = p * r + 1.0 / 3_628_800.0;
        p = p * r + 1.0 / 362_880.0;
        p = p * r + 1.0 / 40_320.0;
        p = p * r + 1.0 / 5_040.0;
        p = p * r + 1.0 / 720.0;
        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        let e = p * (r * r) + r + 1.0;
        let scale = f64::from_bits(((n_bits + 1023) as u64) << 52);
        e * scale
    }
}

/// The running state of one row: maximum, weight sum relative to it, weighted mean of
/// `logit - max` and weighted squared deviations (relative to the same maximum). A mean of the
/// raw logits would lose ulp(max) to cancellation when mu subtracts the maximum (3.6e-12 at
/// logits around 3e4 in float64).
#[derive(Clone, Copy, Debug)]
pub(super) struct Moments {
    pub(super) max: f64,
    pub(super) weight: f64,
    pub(super) mean: f64,
    pub(super) m2: f64,
}

impl Moments {
    pub(super) const EMPTY: Moments = Moments {
        max: f64::NEG_INFINITY,
        weight: 0.0,
        mean: 0.0,
        m2: 0.0,
    };

    /// Chan/West merge after rescaling both sides to the larger maximum.
    #[inline]
    pub(super) fn merge(self, other: Moments) -> Moments {
        if other.weight == 0.0 {
            return self;
        }
        if self.weight == 0.0 {
            return other;
        }
        let max = self.max.max(other.max);
        let wa = self.weight * (self.max - max).exp();
        let wb = other.weight * (other.max - max).exp();
        let m2a = self.m2 * (self.max - max).exp();
        let m2b = other.m2 * (other.max - max).exp();
        let weight = wa + wb;
        // Both means relative to the new maximum; the shifts are exact when the weights matter.
        let mean_a = self.mean + (self.max - max);
        let mean_b = other.mean + (other.max - max);
        let delta = mean_b - mean_a;
        let mean = mean_a + delta * (wb / weight);
        let m2 = m2a + m2b + delta * delta * (wa * wb / weight);
        Moments {
            max,
            weight,
            mean,
            m2,
        }
    }
}

/// One chunk: widen into `z` (padded with -inf to a whole number of lanes), then the three
/// L1 sweeps. Returns the chunk's moments and whether it held NaN or +inf.
#[inline(always)]
#[allow(clippy::neg_cmp_op_on_partial_ord)] // `!(x < inf)` is what catches NaN as well as +inf
fn chunk_moments<S: Copy, A: Lane, const W: usize>(
    src: &[S],
    widen: impl Fn(S) -> A,
    z: &mut [A],
    e: &mut [A],
) -> (Moments, bool) {
    let n = src.len();
    let padded = n.div_ceil(W) * W;
    for (d, &s) in z[..n].iter_mut().zip(src) {
        *d = widen(s);
    }
    for d in &mut z[n..padded] {
        *d = A::NEG_INF;
    }
    let z = &z[..padded];
    let e = &mut e[..padded];

    // Sweep 1: maximum, and a flag for NaN / +inf (neither is `< +inf`).
    let mut lane_max = [A::NEG_INF; W];
    let mut lane_bad = [0u32; W];
    for group in z.chunks_exact(W) {
        for l in 0..W {
            let x = group[l];
            lane_max[l] = if x > lane_max[l] { x } else { lane_max[l] };
            lane_bad[l] |= u32::from(!(x < A::INF));
        }
    }
    let bad = lane_bad.iter().any(|&b| b != 0);
    let mut max = A::NEG_INF;
    for &m in &lane_max {
        max = if m > max { m } else { max };
    }
    if bad || !(max > A::NEG_INF) {
        return (Moments::EMPTY, bad);
    }

    // Sweep 2: e = exp(z - max) (0 far below the maximum), its sum and the sum of e * (z - max).
    let mut lane_w = [A::ZERO; W];
    let mut lane_s = [A::ZERO; W];
    for (zg, eg) in z.chunks_exact(W).zip(e.chunks_exact_mut(W)) {
        for l in 0..W {
            let d = zg[l] - max;
            let dc = if d < A::EXP_LOW { A::EXP_LOW } else { d };
            let ex = A::exp_nonpositive(dc);
            let ex = if d < A::EXP_LOW { A::ZERO } else { ex };
            eg[l] = ex;
            lane_w[l] += ex;
            lane_s[l] += ex * dc;
        }
    }
    let weight: f64 = lane_w.iter().map(|v| v.to_f64()).sum();
    let shifted_sum: f64 = lane_s.iter().map(|v| v.to_f64()).sum();
    let shifted_mean = shifted_sum / weight;
    let centre = A::from_f64(shifted_mean);

    // Sweep 3: weighted squared deviations about the chunk's own mean (no cancellation).
    let mut lane_m2 = [A::ZERO; W];
    for (zg, eg) in z.chunks_exact(W).zip(e.chunks_exact(W)) {
        for l in 0..W {
            let d = zg[l] - max;
            let dc = if d < A::EXP_LOW { A::EXP_LOW } else { d };
            let dev = dc - centre;
            lane_m2[l] += eg[l] * (dev * dev);
        }
    }
    let mut m2: f64 = lane_m2.iter().map(|v| v.to_f64()).sum();
    // `centre` is the mean rounded to the lane type: correct M2 for that offset exactly.
    let offset = centre.to_f64() - shifted_mean;
    m2 -= weight * offset * offset;
    let m2 = m2.max(0.0);
    let max = max.to_f64();
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

/// (logp, mu, sigma, max_logp) from a row's moments; NaN for all four when the row held NaN or
/// +inf (`None`) or has no finite logit. `max_logp`, the log-probability of the top-1 token, is
/// `max - logsumexp = -ln(weight)`: the online softmax already holds it.
#[inline(always)]
pub(super) fn finish(total: Option<Moments>, target_logit: f64) -> (f64, f64, f64, f64) {
    match total {
        Some(total) if total.weight > 0.0 => {
            // Relative to the maximum first: `max + ln(weight)` would lose ln(weight) when the
            // logits are huge (uniform logits of 3e38 gave logp = 0 instead of -ln V).
            let log_weight = total.weight.ln();
            let logp = (target_logit - total.max) - log_weight;
            let mu = total.mean - log_weight;
            (logp, mu, (total.m2 / total.weight).sqrt(), -log_weight)
        }
        _ => (f64::NAN, f64::NAN, f64::NAN, f64::NAN),
    }
}

/// (logp, mu, sigma, max_logp) of one row with the portable kernel.
#[inline(always)]
pub(super) fn row_stats<S: Copy, A: Lane, const W: usize>(
    row: &[S],
    target: usize,
    widen: impl Fn(S) -> A + Copy,
    z: &mut [A],
    e: &mut [A],
) -> (f64, f64, f64, f64) {
    let mut total = Moments::EMPTY;
    for chunk in row.chunks(CHUNK) {
        let (m, bad) = chunk_moments::<S, A, W>(chunk, widen, z, e);
        if bad {
            return finish(None, 0.0);
        }
        total = total.merge(m);
    }
    finish(Some(total), widen(row[target]).to_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_polynomials_are_accurate() {
        let mut worst32 = 0.0f64;
        let mut worst64 = 0.0f64;
        for i in 0..200_000 {
            let x = -87.0 * (i as f64) / 200_000.0;
            let e32 = <f32 as Lane>::exp_nonpositive(x as f32) as f64;
            let exact32 = (x as f32 as f64).exp();
            worst32 = worst32.max(((e32 - exact32) / exact32).abs());
            let xd = -708.0 * (i as f64) / 200_000.0;
            let e64 = <f64 as Lane>::exp_nonpositive(xd);
            worst64 = worst64.max(((e64 - xd.exp()) / xd.exp()).abs());
        }
        eprintln!("worst relative error: float32 {worst32:e}, float64 {worst64:e}");
        assert!(worst32 < 3e-7, "float32 exp relative error {worst32}");
        assert!(worst64 < 1e-15, "float64 exp relative error {worst64}");
    }
}
