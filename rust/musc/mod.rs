//! MuSc (Li et al., ICLR 2024): zero-shot anomaly scoring of unlabeled images by mutual scoring.
//!
//! - `lnamd`: per-image standardisation (one mean and variance over H*W*C, eps 1e-5), an r x r
//!   box mean with zero padding (always divided by r*r), then L2 normalisation of every patch.
//! - `mutual_scores`: for every ordered image pair (i, j != i) and patch p of i, the distance
//!   to the nearest patch of j; the score of (i, p) is the mean of the k smallest of those N-1
//!   values, k = max(1, floor((N-1) * top_ratio)).
//! - `scores_against_bank`: the same with the references taken from a stored bank of images.
//! - `rscin`: re-scoring of the image scores with a constrained image-level neighbourhood.
//!
//! How the nearest patch is found (measured, see bench/RESULTS_musc.md):
//! - The P x (N-1)P distance matrix is never stored: a GEMM tile of dot products (gemm crate,
//!   single-threaded per rayon task) is reduced at once to running per-row and per-column
//!   minima. One product block of the unordered pair {i, j} gives both the row minima (i
//!   against j) and the column minima (j against i): half the FLOPs of the one-sided scheme.
//! - The winner is chosen by the expanded key `e = ||a||^2 + ||b||^2 - 2 a.b`: for unit vectors
//!   (the LNAMD output) the largest dot product, for arbitrary inputs still the smallest
//!   squared distance up to rounding, so no unit-norm check or fallback is needed. Every entry
//!   whose key lies within the worst-case rounding bound of its row's (or column's) best key in
//!   the tile is then re-measured exactly as `||a - b||^2` from the inputs (differences and
//!   squares in the input precision over 16 lanes, lanes summed in float64), and the smallest
//!   exact value wins. The true nearest patch is always among the candidates, so near-duplicate
//!   patches keep exact tiny distances instead of the cancellation noise of `sqrt(2 - 2 a.b)`
//!   (which loses 2% at distance 1e-3). Every candidate is re-measured (no cap): a cap would
//!   give up exactness exactly where it matters, on near-identical patches (uniform
//!   backgrounds), whose squared distances differ by less than the rounding bound. Typical
//!   features have one or two candidates per row; the worst case (all patches identical)
//!   costs a few times the product.
//! - Memory: the N x (N-1) x P per-pair minima are kept for a chunk of query images at a time,
//!   sized by `max_memory`; pairs inside a chunk are computed once, pairs that cross chunks
//!   from each side. Besides, each thread holds one product tile and one transposed reference
//!   image (jobs are ordered by reference image so the copy is reused).

mod aligned;
pub use aligned::aligned_mutual_scores;

mod lnamd;
mod mutual;
mod pair_minima;
mod rscin;
mod top_k;

pub use lnamd::lnamd;
pub use mutual::{chunk_of_queries_for, mutual_scores, scores_against_bank};
pub use pair_minima::key_tolerance_for;
pub use rscin::rscin;
pub use top_k::top_k;

/// Deterministic test values in [-0.5, 0.5).
#[cfg(test)]
fn random(len: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_add(0x9e3779b97f4a7c15);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        })
        .collect()
}
