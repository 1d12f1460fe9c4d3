//! Membership detection (Min-K% Prob, Min-K%++): one-pass token statistics over logits rows and
//! the k-smallest mean.
//!
//! For a row of logits `z[0..V]` and a target id, `token_stats` returns
//! `logp = z[target] - logsumexp(z)`, `mu = sum_v p_v log p_v` and
//! `sigma = sqrt(sum_v p_v (log p_v - mu)^2)` with `p = softmax(z)`, reading the row once.
//!
//! How (measured on a 2-core AVX-512 machine, see bench/RESULTS_mia.md):
//! - The row is walked in L1-sized chunks. Each chunk is widened into a float buffer (bfloat16
//!   and float16 bit patterns are converted here, so half-precision logits are read once) while
//!   its maximum is taken; then `e = exp(z - max)` is stored and summed with `e * (z - max)`;
//!   then the chunk's weighted squared deviations about its own mean are summed. The second and
//!   third sweeps hit L1 only, so DRAM sees each logit once, and no `E[z^2] - E[z]^2`
//!   cancellation occurs.
//! - Chunks are merged in float64 with the Chan/West update after rescaling both sides to the
//!   larger maximum (`e^(m_old - m_new)`).
//! - `exp` is a branch-free polynomial (Cody-Waite reduction, 2^n from the exponent bits) that
//!   the compiler vectorises; lanes are plain arrays of 16 (8 for float64) accumulators.
//!   `exp(x)` is 0 below `x = -87` (float32) / `-708` (float64): such terms are below 1e-37 of
//!   the chunk maximum's weight and would only add subnormals. -inf logits thus weigh nothing.
//! - The kernel is compiled three times (AVX-512, AVX2+FMA, baseline) and picks one at run time.

use rayon::prelude::*;

use crate::error::{invalid, CoreResult};
use crate::linalg::Real;

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Logits per chunk: two f32 buffers of this size (16 KiB) stay in L1.
const CHUNK: usize = 2048;

/// Logits as the caller holds them.
#[derive(Clone, Copy)]
pub enum Logits<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    /// bfloat16 bit patterns.
    Bf16(&'a [u16]),
    /// IEEE float16 bit patterns.
    F16(&'a [u16]),
}

impl Logits<'_> {
    pub fn len(&self) -> usize {
        match self {
            Logits::F32(s) => s.len(),
            Logits::F64(s) => s.len(),
            Logits::Bf16(s) | Logits::F16(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per-row results, each `[rows]`. Masked rows and rows without a usable logit hold NaN.
#[derive(Debug, Clone, Default)]
pub struct TokenStats {
    pub logp: Vec<f64>,
    pub mu: Vec<f64>,
    pub sigma: Vec<f64>,
    /// Log-probability of the most likely token (`max - logsumexp`).
    pub max_logp: Vec<f64>,
}

/// bfloat16 bits to float32 (exact).
#[inline(always)]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// IEEE float16 bits to float32 (exact, subnormals, infinities and NaN included), branch-free so
/// it vectorises: shift the exponent and mantissa into place and rescale by 2^112, which also
/// normalises subnormals; an all-ones exponent becomes float32's all-ones exponent.
#[inline(always)]
pub fn f16_to_f32(bits: u16) -> f32 {
    let h = bits as u32;
    let sign = (h & 0x8000) << 16;
    let magnitude = (h & 0x7fff) << 13;
    let scaled = f32::from_bits(magnitude) * f32::from_bits(0x7780_0000); // 2^112
    let is_special = (h & 0x7c00) == 0x7c00;
    let special = 0x7f80_0000 | magnitude;
    let body = if is_special {
        special
    } else {
        scaled.to_bits()
    };
    f32::from_bits(sign | body)
}

/// The float type a chunk is computed in (f32 for 32- and 16-bit logits, f64 for f64).
/// The float arithmetic of the row kernel: the crate's `Real` plus the exp and limits it needs.
trait Lane: Real {
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
struct Moments {
    max: f64,
    weight: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    const EMPTY: Moments = Moments {
        max: f64::NEG_INFINITY,
        weight: 0.0,
        mean: 0.0,
        m2: 0.0,
    };

    /// Chan/West merge after rescaling both sides to the larger maximum.
    #[inline]
    fn merge(self, other: Moments) -> Moments {
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
fn finish(total: Option<Moments>, target_logit: f64) -> (f64, f64, f64, f64) {
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
fn row_stats<S: Copy, A: Lane, const W: usize>(
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

/// Per-worker chunk buffers (only those of the logits' compute type are allocated).
struct Buffers {
    z32: Vec<f32>,
    e32: Vec<f32>,
    z64: Vec<f64>,
    e64: Vec<f64>,
}

impl Buffers {
    fn for_logits(logits: Logits<'_>) -> Buffers {
        let wide = matches!(logits, Logits::F64(_));
        let size = |is_used: bool| if is_used { CHUNK } else { 0 };
        Buffers {
            z32: vec![0.0; size(!wide)],
            e32: vec![0.0; size(!wide)],
            z64: vec![0.0; size(wide)],
            e64: vec![0.0; size(wide)],
        }
    }
}

/// One instance of a row's computation per instruction set. Target features do not reach into
/// closures handed to rayon, so the dispatch happens per row, inside the parallel loop.
macro_rules! instruction_set_variant {
    ($name:ident $(, $feature:literal)?) => {
        $(#[target_feature(enable = $feature)])?
        fn $name(logits: Logits<'_>, vocab: usize, row: usize, target: usize, buffers: &mut Buffers) -> (f64, f64, f64, f64) {
            let span = row * vocab..(row + 1) * vocab;
            let Buffers { z32, e32, z64, e64 } = buffers;
            match logits {
                Logits::F32(s) => row_stats::<f32, f32, 16>(&s[span], target, |x| x, z32, e32),
                Logits::F64(s) => row_stats::<f64, f64, 8>(&s[span], target, |x| x, z64, e64),
                Logits::Bf16(s) => row_stats::<u16, f32, 16>(&s[span], target, bf16_to_f32, z32, e32),
                Logits::F16(s) => row_stats::<u16, f32, 16>(&s[span], target, f16_to_f32, z32, e32),
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
instruction_set_variant!(
    row_avx512,
    "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi2"
);
#[cfg(target_arch = "x86_64")]
instruction_set_variant!(row_avx2, "avx2,fma");
instruction_set_variant!(row_baseline);

#[derive(Clone, Copy, PartialEq, Debug)]
enum InstructionSet {
    Avx512,
    Avx2,
    Baseline,
}

fn instruction_set() -> InstructionSet {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("bmi2")
            && std::is_x86_feature_detected!("fma")
        {
            return InstructionSet::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return InstructionSet::Avx2;
        }
    }
    InstructionSet::Baseline
}

fn dispatch(
    logits: Logits<'_>,
    shape: Shape,
    targets: &[i64],
    mask: Option<&[u8]>,
    isa: InstructionSet,
    out: &mut [[f64; 4]],
) {
    let vocab = shape.vocab;
    out.par_iter_mut()
        .enumerate()
        .with_min_len(4)
        .for_each_init(
            || Buffers::for_logits(logits),
            |buffers, (r, slot)| {
                if mask.is_some_and(|m| m[r] == 0) {
                    *slot = [f64::NAN; 4];
                    return;
                }
                let target = targets[r] as usize;
                let src = (r / shape.time) * shape.logits_time + r % shape.time;
                let span = src * vocab..(src + 1) * vocab;
                let (logp, mu, sigma, max_logp) = match (isa, logits) {
                    #[cfg(target_arch = "x86_64")]
                    (InstructionSet::Avx512, Logits::F32(s)) => {
                        // SAFETY: AVX-512 F/BW/VL were detected on this CPU.
                        let total = unsafe {
                            avx512::row_moments_f32(&s[span], &mut buffers.z32, &mut buffers.e32)
                        };
                        finish(total, s[src * vocab + target] as f64)
                    }
                    #[cfg(target_arch = "x86_64")]
                    (InstructionSet::Avx512, Logits::Bf16(s)) => {
                        // SAFETY: AVX-512 F/BW/VL were detected on this CPU.
                        let total = unsafe {
                            avx512::row_moments_half(
                                &s[span],
                                avx512::Half::Bf16,
                                &mut buffers.z32,
                                &mut buffers.e32,
                            )
                        };
                        finish(total, bf16_to_f32(s[src * vocab + target]) as f64)
                    }
                    #[cfg(target_arch = "x86_64")]
                    (InstructionSet::Avx512, Logits::F16(s)) => {
                        // SAFETY: AVX-512 F/BW/VL were detected on this CPU.
                        let total = unsafe {
                            avx512::row_moments_half(
                                &s[span],
                                avx512::Half::F16,
                                &mut buffers.z32,
                                &mut buffers.e32,
                            )
                        };
                        finish(total, f16_to_f32(s[src * vocab + target]) as f64)
                    }
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: every feature this variant was compiled for was detected on this CPU.
                    (InstructionSet::Avx512, _) => unsafe {
                        row_avx512(logits, vocab, src, target, buffers)
                    },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: AVX2 and FMA were detected on this CPU.
                    (InstructionSet::Avx2, _) => unsafe {
                        row_avx2(logits, vocab, src, target, buffers)
                    },
                    _ => row_baseline(logits, vocab, src, target, buffers),
                };
                *slot = [logp, mu, sigma, max_logp];
            },
        );
}

/// Where the rows live: targets are `[batch, time]`; logits are `[batch, logits_time, vocab]`
/// with `logits_time >= time` (so `logits[:, :-1]` needs no copy: pass the whole array and
/// `time = logits_time - 1`).
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub batch: usize,
    pub time: usize,
    pub logits_time: usize,
    pub vocab: usize,
}

/// Token statistics for every (sequence, position) of `targets` (`[batch, time]`, flattened).
///
/// `targets[r]` is the id scored by logits row r; `mask[r] == 0` skips the row (NaN out). Rows
/// that hold NaN or +inf, or only -inf, give NaN; the caller reports them.
pub fn token_stats(
    logits: Logits<'_>,
    shape: Shape,
    targets: &[i64],
    mask: Option<&[u8]>,
) -> CoreResult<TokenStats> {
    token_stats_on(logits, shape, targets, mask, instruction_set())
}

fn token_stats_on(
    logits: Logits<'_>,
    shape: Shape,
    targets: &[i64],
    mask: Option<&[u8]>,
    isa: InstructionSet,
) -> CoreResult<TokenStats> {
    let Shape {
        batch,
        time,
        logits_time,
        vocab,
    } = shape;
    let rows = batch * time;
    if vocab == 0 {
        return invalid("logits: the vocabulary axis is empty");
    }
    if time == 0 || time > logits_time {
        return invalid(format!(
            "targets: {time} positions per sequence do not fit logits with {logits_time}"
        ));
    }
    if logits.len() != batch * logits_time * vocab {
        return invalid(format!(
            "logits: expected {batch} x {logits_time} x {vocab} values, got {}",
            logits.len()
        ));
    }
    if targets.len() != rows {
        return invalid(format!(
            "targets: expected {rows} ids, got {}",
            targets.len()
        ));
    }
    if let Some(m) = mask {
        if m.len() != rows {
            return invalid(format!("mask: expected {rows} entries, got {}", m.len()));
        }
    }
    for (r, &t) in targets.iter().enumerate() {
        let scored = mask.is_none_or(|m| m[r] != 0);
        if scored && (t < 0 || t as u64 >= vocab as u64) {
            return invalid(format!(
                "targets: id {t} at row {r} is outside [0, {vocab})"
            ));
        }
    }
    let mut out = vec![[0.0f64; 4]; rows];
    dispatch(logits, shape, targets, mask, isa, &mut out);
    let mut stats = TokenStats {
        logp: Vec::with_capacity(rows),
        mu: Vec::with_capacity(rows),
        sigma: Vec::with_capacity(rows),
        max_logp: Vec::with_capacity(rows),
    };
    for [a, b, c, d] in out {
        stats.logp.push(a);
        stats.mu.push(b);
        stats.sigma.push(c);
        stats.max_logp.push(d);
    }
    Ok(stats)
}

/// `int(n * ratio)` as Python computes it (float64 product, truncated), at least 1.
pub fn k_of(n: usize, ratio: f64) -> usize {
    let k = (n as f64 * ratio) as usize;
    k.clamp(1, n.max(1))
}

/// Mean of the k smallest scored values of each row, for each ratio: `[rows, ratios.len()]`.
///
/// `values` is `[rows, cols]`; `mask[r * cols + c] == 0` leaves a value out. The smallest
/// `k_max` values are found by partial selection and only they are sorted, so every ratio's
/// mean is a prefix sum. Every row needs at least one scored value.
pub fn min_k_means(
    values: &[f64],
    rows: usize,
    cols: usize,
    mask: Option<&[u8]>,
    ratios: &[f64],
) -> CoreResult<Vec<f64>> {
    if values.len() != rows * cols {
        return invalid(format!(
            "values: expected {rows} x {cols} entries, got {}",
            values.len()
        ));
    }
    if let Some(m) = mask {
        if m.len() != values.len() {
            return invalid(format!(
                "mask: expected {rows} x {cols} entries, got {}",
                m.len()
            ));
        }
    }
    if ratios.is_empty() {
        return invalid("ratio: give at least one ratio");
    }
    for &r in ratios {
        if !(r > 0.0 && r <= 1.0) {
            return invalid(format!("ratio: must lie in (0, 1], got {r}"));
        }
    }
    for r in 0..rows {
        let has_any = match mask {
            Some(m) => m[r * cols..(r + 1) * cols].iter().any(|&v| v != 0),
            None => cols > 0,
        };
        if !has_any {
            return invalid(format!("mask: row {r} has no scored token"));
        }
        let row = &values[r * cols..(r + 1) * cols];
        let kept_nan = match mask {
            Some(m) => row
                .iter()
                .zip(&m[r * cols..(r + 1) * cols])
                .any(|(v, &keep)| keep != 0 && v.is_nan()),
            None => row.iter().any(|v| v.is_nan()),
        };
        if kept_nan {
            return invalid(format!("values: row {r} contains NaN at a scored position"));
        }
    }
    let n_ratios = ratios.len();
    let mut out = vec![0.0f64; rows * n_ratios];
    out.par_chunks_mut(n_ratios)
        .enumerate()
        .with_min_len(16)
        .for_each_init(Vec::new, |kept: &mut Vec<f64>, (r, slot)| {
            kept.clear();
            let row = &values[r * cols..(r + 1) * cols];
            match mask {
                Some(m) => kept.extend(
                    row.iter()
                        .zip(&m[r * cols..(r + 1) * cols])
                        .filter(|(_, &keep)| keep != 0)
                        .map(|(&v, _)| v),
                ),
                None => kept.extend_from_slice(row),
            }
            let n = kept.len();
            let k_max = ratios.iter().map(|&q| k_of(n, q)).max().unwrap_or(1);
            if k_max < n {
                kept.select_nth_unstable_by(k_max - 1, f64::total_cmp);
            }
            let smallest = &mut kept[..k_max];
            smallest.sort_unstable_by(f64::total_cmp);
            for (o, &q) in slot.iter_mut().zip(ratios) {
                let k = k_of(n, q);
                let sum: f64 = smallest[..k].iter().sum();
                *o = sum / k as f64;
            }
        });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rows` rows of one sequence.
    fn one(rows: usize, vocab: usize) -> Shape {
        Shape {
            batch: 1,
            time: rows,
            logits_time: rows,
            vocab,
        }
    }

    #[test]
    fn shifted_layout_skips_the_last_position() {
        // logits [2, 3, 5]; targets [2, 2] score positions 0 and 1 of each sequence.
        let logits: Vec<f32> = (0..30).map(|i| ((i * 7) % 11) as f32 * 0.3).collect();
        let shape = Shape {
            batch: 2,
            time: 2,
            logits_time: 3,
            vocab: 5,
        };
        let s = token_stats(Logits::F32(&logits), shape, &[1, 2, 3, 4], None).unwrap_or_default();
        for (r, src) in [0usize, 1, 3, 4].into_iter().enumerate() {
            let row: Vec<f64> = logits[src * 5..src * 5 + 5]
                .iter()
                .map(|&v| v as f64)
                .collect();
            let (lp, mu, sd) = reference(&row, r + 1);
            assert!(
                (s.logp[r] - lp).abs() < 1e-6
                    && (s.mu[r] - mu).abs() < 1e-6
                    && (s.sigma[r] - sd).abs() < 1e-6
            );
        }
        assert!(token_stats(
            Logits::F32(&logits),
            Shape { time: 4, ..shape },
            &[0; 8],
            None
        )
        .is_err());
    }

    fn reference(row: &[f64], target: usize) -> (f64, f64, f64) {
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|z| (z - m).exp()).sum::<f64>().ln();
        let lp: Vec<f64> = row.iter().map(|z| z - lse).collect();
        let mu: f64 = lp
            .iter()
            .filter(|v| v.is_finite())
            .map(|v| v.exp() * v)
            .sum();
        let var: f64 = lp
            .iter()
            .filter(|v| v.is_finite())
            .map(|v| v.exp() * (v - mu) * (v - mu))
            .sum();
        (row[target] - lse, mu, var.sqrt())
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 20.0 - 10.0
            })
            .collect()
    }

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

    #[test]
    fn half_conversions_are_exact() {
        for bits in 0..=u16::MAX {
            let f = f16_to_f32(bits);
            let sign = if bits & 0x8000 != 0 { -1.0f64 } else { 1.0 };
            let exp = ((bits >> 10) & 0x1f) as i32;
            let man = (bits & 0x3ff) as f64;
            let expect = match exp {
                0 => sign * man * 2f64.powi(-24),
                31 if man == 0.0 => sign * f64::INFINITY,
                31 => f64::NAN,
                _ => sign * (1.0 + man / 1024.0) * 2f64.powi(exp - 15),
            };
            if expect.is_nan() {
                assert!(f.is_nan());
            } else {
                assert_eq!(f as f64, expect, "bits {bits:#06x}");
            }
        }
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xff80), f32::NEG_INFINITY);
    }

    /// The instruction sets this CPU can run (the portable variants always).
    fn runnable() -> Vec<InstructionSet> {
        match instruction_set() {
            InstructionSet::Avx512 => vec![
                InstructionSet::Avx512,
                InstructionSet::Avx2,
                InstructionSet::Baseline,
            ],
            InstructionSet::Avx2 => vec![InstructionSet::Avx2, InstructionSet::Baseline],
            InstructionSet::Baseline => vec![InstructionSet::Baseline],
        }
    }

    #[test]
    fn matches_reference_across_chunk_boundaries() {
        for isa in runnable() {
            matches_reference_on(isa);
        }
    }

    #[test]
    fn half_inputs_agree_across_instruction_sets() {
        let vocab = 3001;
        let data = pseudo_random(2 * vocab, 7);
        let bf16: Vec<u16> = data
            .iter()
            .map(|&v| ((v as f32).to_bits() >> 16) as u16)
            .collect();
        // float16 bits of small integers and halves (exact in float16).
        let f16: Vec<u16> = data
            .iter()
            .map(|&v| f16_bits_of_halves((v * 2.0).round() / 2.0))
            .collect();
        for isa in runnable() {
            let b = token_stats_on(Logits::Bf16(&bf16), one(2, vocab), &[5, 9], None, isa)
                .unwrap_or_default();
            let h = token_stats_on(Logits::F16(&f16), one(2, vocab), &[5, 9], None, isa)
                .unwrap_or_default();
            for r in 0..2 {
                let widened: Vec<f64> = bf16[r * vocab..(r + 1) * vocab]
                    .iter()
                    .map(|&x| bf16_to_f32(x) as f64)
                    .collect();
                let (lp, mu, sd) = reference(&widened, [5, 9][r]);
                assert!(
                    (b.logp[r] - lp).abs() < 1e-5
                        && (b.mu[r] - mu).abs() < 1e-5
                        && (b.sigma[r] - sd).abs() < 1e-5,
                    "{isa:?}"
                );
                let widened: Vec<f64> = f16[r * vocab..(r + 1) * vocab]
                    .iter()
                    .map(|&x| f16_to_f32(x) as f64)
                    .collect();
                let (lp, mu, sd) = reference(&widened, [5, 9][r]);
                assert!(
                    (h.logp[r] - lp).abs() < 1e-5
                        && (h.mu[r] - mu).abs() < 1e-5
                        && (h.sigma[r] - sd).abs() < 1e-5,
                    "{isa:?}"
                );
            }
        }
    }

    /// float16 bits of a multiple of 0.5 in [-16, 16] (exact), built by hand for the test.
    fn f16_bits_of_halves(x: f64) -> u16 {
        if x == 0.0 {
            return 0;
        }
        let sign = if x < 0.0 { 0x8000u16 } else { 0 };
        let a = x.abs();
        let e = a.log2().floor() as i32;
        let mantissa = ((a / 2f64.powi(e) - 1.0) * 1024.0).round() as u16;
        sign | (((e + 15) as u16) << 10) | mantissa
    }

    fn matches_reference_on(isa: InstructionSet) {
        for &vocab in &[1usize, 7, 16, 17, 2047, 2048, 2049, 5000] {
            let rows = 3;
            let data = pseudo_random(rows * vocab, vocab as u64);
            let targets: Vec<i64> = (0..rows).map(|r| ((r * 31) % vocab) as i64).collect();
            let f64_stats =
                token_stats_on(Logits::F64(&data), one(rows, vocab), &targets, None, isa)
                    .unwrap_or_default();
            let data32: Vec<f32> = data.iter().map(|&v| v as f32).collect();
            let f32_stats =
                token_stats_on(Logits::F32(&data32), one(rows, vocab), &targets, None, isa)
                    .unwrap_or_default();
            for r in 0..rows {
                let widened: Vec<f64> = data32
                    .iter()
                    .skip(r * vocab)
                    .take(vocab)
                    .map(|&v| v as f64)
                    .collect();
                let (lp, mu, sd) = reference(&widened, targets[r] as usize);
                assert!(
                    (f32_stats.logp[r] - lp).abs() < 1e-5,
                    "vocab {vocab}: logp {} vs {lp}",
                    f32_stats.logp[r]
                );
                assert!((f32_stats.mu[r] - mu).abs() < 1e-5);
                assert!((f32_stats.sigma[r] - sd).abs() < 1e-5);
                let (lp, mu, sd) =
                    reference(&data[r * vocab..(r + 1) * vocab], targets[r] as usize);
                assert!((f64_stats.logp[r] - lp).abs() < 1e-12);
                assert!((f64_stats.mu[r] - mu).abs() < 1e-12);
                assert!((f64_stats.sigma[r] - sd).abs() < 1e-12);
                // The top-1 log-probability is the reference logp of the argmax token.
                let row = &data[r * vocab..(r + 1) * vocab];
                let top = (0..vocab).fold(0, |best, i| if row[i] > row[best] { i } else { best });
                let (top_lp, _, _) = reference(row, top);
                assert!((f64_stats.max_logp[r] - top_lp).abs() < 1e-12);
                let (top_lp32, _, _) = reference(&widened, top);
                assert!((f32_stats.max_logp[r] - top_lp32).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn negative_infinity_weighs_nothing_and_ties_give_zero_sigma() {
        let row = [f32::NEG_INFINITY, 2.0, 2.0, f32::NEG_INFINITY, 2.0, 2.0];
        for isa in runnable() {
            let s =
                token_stats_on(Logits::F32(&row), one(1, 6), &[1], None, isa).unwrap_or_default();
            assert!((s.logp[0] + 4f64.ln()).abs() < 1e-7);
            assert!((s.mu[0] + 4f64.ln()).abs() < 1e-7);
            assert_eq!(s.sigma[0], 0.0, "{isa:?}");
            let s =
                token_stats_on(Logits::F32(&row), one(1, 6), &[0], None, isa).unwrap_or_default();
            assert_eq!(s.logp[0], f64::NEG_INFINITY);
            let all_masked = [f32::NEG_INFINITY; 40];
            let s = token_stats_on(Logits::F32(&all_masked), one(1, 40), &[0], None, isa)
                .unwrap_or_default();
            assert!(s.logp[0].is_nan() && s.sigma[0].is_nan());
        }
    }

    #[test]
    fn bad_rows_and_masks() {
        let row = [0.0f32, f32::NAN, 1.0];
        for isa in runnable() {
            let s =
                token_stats_on(Logits::F32(&row), one(1, 3), &[0], None, isa).unwrap_or_default();
            assert!(s.logp[0].is_nan());
            let s = token_stats_on(
                Logits::F32(&[0.0, f32::INFINITY, 1.0]),
                one(1, 3),
                &[0],
                None,
                isa,
            )
            .unwrap_or_default();
            assert!(s.mu[0].is_nan());
        }
        let s = token_stats(Logits::F32(&row), one(1, 3), &[-100], Some(&[0])).unwrap_or_default();
        assert!(s.sigma[0].is_nan());
        assert!(token_stats(Logits::F32(&row), one(1, 3), &[3], None).is_err());
        assert!(token_stats(Logits::F32(&row), one(1, 2), &[0], None).is_err());
    }

    #[test]
    fn k_follows_python_int() {
        assert_eq!(k_of(90, 0.7), 62);
        assert_eq!(k_of(10, 0.05), 1);
        assert_eq!(k_of(10, 1.0), 10);
        assert_eq!(k_of(3, 0.3), 1); // 3 * 0.3 = 0.8999999999999999
    }

    #[test]
    fn min_k_means_with_mask() {
        let values = [5.0, 1.0, 3.0, 2.0, 9.0, -1.0, 0.5, 4.0];
        let mask = [1u8, 1, 1, 1, 1, 0, 0, 0];
        let out = min_k_means(&values, 2, 4, Some(&mask), &[0.5, 1.0]).unwrap_or_default();
        assert_eq!(out, vec![1.5, 2.75, 9.0, 9.0]);
        assert!(min_k_means(&values, 2, 4, Some(&[1, 1, 1, 1, 0, 0, 0, 0]), &[0.5]).is_err());
        assert!(min_k_means(&values, 2, 4, None, &[0.0]).is_err());
    }
}
