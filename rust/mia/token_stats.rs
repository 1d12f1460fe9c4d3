//! Token statistics of every scored logits row: the instruction set chosen at run time, rows in
//! parallel, each through the AVX-512 kernel or a compiled copy of the portable one.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::avx512;
use super::logits::{bf16_to_f32, f16_to_f32, Logits, TokenStats};
use super::moments::{finish, row_stats, CHUNK};
use crate::error::{invalid, CoreResult};

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
}
