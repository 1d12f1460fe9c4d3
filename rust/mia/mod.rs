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

#[cfg(target_arch = "x86_64")]
mod avx512;
mod logits;
mod min_k;
mod moments;
mod token_stats;

pub use logits::{bf16_to_f32, f16_to_f32, Logits, TokenStats};
pub use min_k::{k_of, min_k_means};
pub use token_stats::{token_stats, Shape};
