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

use rayon::prelude::*;

use crate::error::{invalid, CoreResult};
use crate::linalg::{matmul, MatRef, Real};

/// Rows (patches of the query image) and columns (patches of the reference image) per product
/// tile, split evenly. Whole-image tiles up to 1024 patches measured fastest: fewer, larger
/// GEMM calls pack each operand once (196 x 392 tiles of a 784-patch pair were about 25%
/// slower), and the two epilogue passes over a 2-4 MiB tile cost under 10% of the product.
const ROW_TILE: usize = 1024;
const COL_TILE: usize = 1024;

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

fn lnamd_one<T: Real>(src: &[T], dst: &mut [T], h: usize, w: usize, c: usize, r: usize) {
    let count = src.len() as f64;
    let mean = src.iter().map(|v| v.to_f64()).sum::<f64>() / count;
    // Two passes for the (biased) variance: no cancellation from E[x^2] - E[x]^2.
    let var = src.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / count;
    let inv_std = 1.0 / (var + 1e-5).sqrt();
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

/// Squared Euclidean distance of two vectors, recomputed from the inputs: differences and
/// squares in `T` over 16 independent lanes, the lanes summed in float64. The crate is built
/// for baseline x86-64 (SSE2), so the lanes run through an AVX-512 or AVX2 copy of the same
/// code when the CPU has it (measured on uniform-background inputs, where most time goes
/// here). Every copy performs the same operations in the same order: identical results.
#[inline]
fn exact_sq_distance<T: Real>(a: &[T], b: &[T]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { exact_sq_distance_avx512(a, b) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { exact_sq_distance_avx2(a, b) };
        }
    }
    exact_sq_distance_lanes(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exact_sq_distance_avx512<T: Real>(a: &[T], b: &[T]) -> f64 {
    exact_sq_distance_lanes(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exact_sq_distance_avx2<T: Real>(a: &[T], b: &[T]) -> f64 {
    exact_sq_distance_lanes(a, b)
}

#[inline(always)]
fn exact_sq_distance_lanes<T: Real>(a: &[T], b: &[T]) -> f64 {
    crate::linalg::sq_distance_lanes(a, b)
}

/// Independent accumulators / comparison lanes: one AVX-512 register of float32.
const LANES: usize = 16;

/// One thread's transposed copy (`c x p`) of the reference image it last used. Jobs are
/// ordered by reference image, so consecutive jobs of a thread mostly reuse the copy: memory
/// stays at one image per thread instead of a transposed copy of the whole input.
struct TransposeCache<T> {
    data: Vec<T>,
    image: Option<usize>,
}

impl<T: Real> TransposeCache<T> {
    fn new() -> Self {
        TransposeCache {
            data: Vec::new(),
            image: None,
        }
    }

    fn get(&mut self, image: usize, src: &[T], p: usize, c: usize) -> &[T] {
        if self.image != Some(image) {
            self.data.resize(p * c, T::ZERO);
            for (q, row) in src.chunks_exact(c).enumerate() {
                for (k, &v) in row.iter().enumerate() {
                    self.data[k * p + q] = v;
                }
            }
            self.image = Some(image);
        }
        &self.data[..p * c]
    }
}

fn squared_norms<T: Real>(x: &[T], c: usize) -> Vec<f64> {
    x.chunks(c.max(1))
        .map(|row| row.iter().map(|v| v.to_f64() * v.to_f64()).sum())
        .collect()
}

/// Per-thread buffers of `pair_minima`.
struct Scratch<T> {
    product: Vec<T>,
    col_limit: Vec<T>,
    row_sq: Vec<f64>,
    col_sq: Vec<f64>,
    hits: Vec<Hit>,
}

/// A recheck candidate: its row and column in the tile and whose minimum it may improve.
struct Hit {
    column: usize,
    row: usize,
    for_row: bool,
    for_col: bool,
}

/// Rows whose candidates are re-measured together (their vectors stay in L2).
const RECHECK_ROWS: usize = 16;

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Scratch {
            product: Vec::new(),
            col_limit: Vec::new(),
            row_sq: Vec::new(),
            col_sq: Vec::new(),
            hits: Vec::new(),
        }
    }
}

/// Split `len` into near-equal tiles of at most `max_tile` (a 784-patch image gives 4 x 196
/// rows, not 3 x 256 + 16: ragged tiles waste the GEMM's register blocks).
fn balanced_tile(len: usize, max_tile: usize) -> usize {
    let tiles = len.div_ceil(max_tile).max(1);
    len.div_ceil(tiles).max(1)
}

/// Elements per chunk of the candidate scan: the comparisons of a chunk are OR-ed without
/// branches (vectorised); only a chunk with a hit is walked element by element.
const SCAN_CHUNK: usize = LANES;

/// One image pair: `row_min[p] = min_q ||a_p - b_q||` and, when asked,
/// `col_min[q] = min_p ||a_p - b_q||`. `a` is `pa x c`, `b` is `pb x c`, both row-major;
/// `b_t` is `b` transposed (`c x pb`); `na`, `nb` their squared row norms; `tol` the rounding bound of the expanded key.
///
/// Per product tile, pass 1 turns each dot product into `e = ||a||^2 + ||b||^2 - 2 a.b` (in
/// place) and takes the row minima and the running column minima; pass 2 finds the entries
/// within `tol` of their row's or column's best and re-measures exactly those (once for both).
#[allow(clippy::too_many_arguments)]
fn pair_minima<T: Real>(
    a: &[T],
    pa: usize,
    na: &[f64],
    b: &[T],
    b_t: &[T],
    pb: usize,
    nb: &[f64],
    c: usize,
    tol: f64,
    row_min: &mut [T],
    col_min: Option<&mut [T]>,
    scratch: &mut Scratch<T>,
) {
    let want_cols = col_min.is_some();
    let Scratch {
        product,
        col_limit,
        row_sq,
        col_sq,
        hits,
    } = scratch;
    row_sq.clear();
    row_sq.resize(pa, f64::INFINITY);
    col_sq.clear();
    col_sq.resize(if want_cols { pb } else { 0 }, f64::INFINITY);
    let am = MatRef::row_major(a, pa, c);
    // `b_t` is `b` transposed (`c x pb`): the GEMM packs a unit-stride right operand faster
    // (measured 10-20% on the whole product).
    let bt = MatRef::row_major(b_t, c, pb);
    let tol_t = T::from_f64(tol);
    let two = T::from_f64(2.0);
    let infinity = T::from_f64(f64::INFINITY);
    let row_tile = balanced_tile(pa, ROW_TILE);
    let col_tile = balanced_tile(pb, COL_TILE);
    let nb_t: Vec<T> = nb.iter().map(|&v| T::from_f64(v)).collect();
    let mut r0 = 0;
    while r0 < pa {
        let r1 = (r0 + row_tile).min(pa);
        let rows = r1 - r0;
        let mut c0 = 0;
        while c0 < pb {
            let c1 = (c0 + col_tile).min(pb);
            let cols = c1 - c0;
            product.resize(rows * cols, T::ZERO);
            let g = &mut product[..rows * cols];
            matmul(
                g,
                cols,
                am.block(r0, r1, 0, c),
                bt.block(0, c, c0, c1),
                false,
            );
            let nb_tile = &nb_t[c0..c1];

            // Pass 1: keys in place, row limits, column limits.
            col_limit.clear();
            col_limit.resize(cols, infinity);
            let mut row_limit = vec![infinity; rows];
            for (i, gi) in g.chunks_exact_mut(cols).enumerate() {
                let nai = T::from_f64(na[r0 + i]);
                // Per-lane minima (vectorised), folded at the end of the row.
                let mut best = [infinity; LANES];
                let mut e_chunks = gi.chunks_exact_mut(LANES);
                let mut n_chunks = nb_tile.chunks_exact(LANES);
                let mut l_chunks = col_limit.chunks_exact_mut(LANES);
                for ((ec, nc), lc) in (&mut e_chunks).zip(&mut n_chunks).zip(&mut l_chunks) {
                    for l in 0..LANES {
                        let key = nai + nc[l] - two * ec[l];
                        ec[l] = key;
                        best[l] = if key < best[l] { key } else { best[l] };
                        lc[l] = if key < lc[l] { key } else { lc[l] };
                    }
                }
                let mut row_best = best
                    .iter()
                    .fold(infinity, |m, &v| if v < m { v } else { m });
                for ((e, &nbq), cl) in e_chunks
                    .into_remainder()
                    .iter_mut()
                    .zip(n_chunks.remainder())
                    .zip(l_chunks.into_remainder())
                {
                    let key = nai + nbq - two * *e;
                    *e = key;
                    row_best = if key < row_best { key } else { row_best };
                    *cl = if key < *cl { key } else { *cl };
                }
                row_limit[i] = row_best + tol_t;
            }
            if want_cols {
                for cl in col_limit.iter_mut() {
                    *cl += tol_t;
                }
            } else {
                col_limit.fill(T::from_f64(f64::NEG_INFINITY));
            }

            // Pass 2: exact re-measurement of the candidates, rows in groups, candidates in
            // column order: a column's vector is read once per group (then from L1) instead of
            // once per row (from L3 when many patches are candidates, as on uniform backgrounds).
            for group0 in (0..rows).step_by(RECHECK_ROWS) {
                let group1 = (group0 + RECHECK_ROWS).min(rows);
                hits.clear();
                for i in group0..group1 {
                    let ei = &g[i * cols..(i + 1) * cols];
                    let rl = row_limit[i];
                    for (chunk_index, (e_chunk, l_chunk)) in ei
                        .chunks(SCAN_CHUNK)
                        .zip(col_limit.chunks(SCAN_CHUNK))
                        .enumerate()
                    {
                        let mut hit = false;
                        for (&e, &cl) in e_chunk.iter().zip(l_chunk) {
                            hit |= (e <= rl) | (e <= cl);
                        }
                        if !hit {
                            continue;
                        }
                        for (lane, (&e, &cl)) in e_chunk.iter().zip(l_chunk).enumerate() {
                            let (for_row, for_col) = (e <= rl, e <= cl);
                            if for_row || for_col {
                                hits.push(Hit {
                                    column: chunk_index * SCAN_CHUNK + lane,
                                    row: i,
                                    for_row,
                                    for_col,
                                });
                            }
                        }
                    }
                }
                if hits.len() > group1 - group0 {
                    hits.sort_unstable_by_key(|h| (h.column, h.row));
                }
                for hit in hits.iter() {
                    let (q, i) = (c0 + hit.column, r0 + hit.row);
                    let d = exact_sq_distance(&a[i * c..(i + 1) * c], &b[q * c..(q + 1) * c]);
                    if hit.for_row && d < row_sq[i] {
                        row_sq[i] = d;
                    }
                    if hit.for_col && d < col_sq[q] {
                        col_sq[q] = d;
                    }
                }
            }
            c0 = c1;
        }
        r0 = r1;
    }
    for (o, &s) in row_min.iter_mut().zip(row_sq.iter()) {
        *o = T::from_f64(s.sqrt());
    }
    if let Some(out) = col_min {
        for (o, &s) in out.iter_mut().zip(col_sq.iter()) {
            *o = T::from_f64(s.sqrt());
        }
    }
}

/// The rounding bound of the expanded key `||x||^2 - 2 a.b` for vectors of length `c`
/// with norms up to `max_a`, `max_b`: twice the worst-case dot-product error plus the
/// rounding of the squared norms.
fn key_tolerance<T>(c: usize, max_a: f64, max_b: f64) -> f64 {
    key_tolerance_for(std::mem::size_of::<T>(), c, max_a, max_b)
}

/// [`key_tolerance`] for values of `itemsize` bytes (4: float32, else float64); the CUDA
/// launch plans use this same definition.
pub fn key_tolerance_for(itemsize: usize, c: usize, max_a: f64, max_b: f64) -> f64 {
    let u = if itemsize == 4 { f32::EPSILON as f64 * 0.5 } else { f64::EPSILON * 0.5 };
    4.0 * (c as f64 + 4.0) * u * max_a * max_b
        + 4.0 * u * (max_a * max_a + max_b * max_b)
        + f64::MIN_POSITIVE
}

/// A raw pointer that rayon tasks may share; every task writes a disjoint range.
#[derive(Clone, Copy)]
struct SharedOut<T>(*mut T);
// SAFETY: the pointer is only used to write ranges that no other task touches (see callers).
unsafe impl<T: Send> Send for SharedOut<T> {}
// SAFETY: as above; no two tasks write the same element and nothing reads during the writes.
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// # Safety
    /// `offset + len` lies inside the allocation and no other live reference covers the range.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, offset: usize, len: usize) -> &mut [T] {
        // SAFETY: guaranteed by the caller (disjoint in-bounds range).
        unsafe { std::slice::from_raw_parts_mut(self.0.add(offset), len) }
    }
}

/// The number of smallest values averaged per patch: max(1, floor(references * top_ratio)).
pub fn top_k(references: usize, top_ratio: f64) -> usize {
    (((references as f64) * top_ratio).floor() as usize).clamp(1, references.max(1))
}

fn check_ratio(top_ratio: f64) -> CoreResult<()> {
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

fn chunk_of_queries<T>(
    queries: usize,
    references: usize,
    p: usize,
    max_memory: Option<usize>,
) -> usize {
    chunk_of_queries_for(std::mem::size_of::<T>(), queries, references, p, max_memory)
}

/// Query images whose per-pair minima (`value_bytes` each) fit `max_memory` bytes, at least 1;
/// the CUDA launch plans use this same definition with 8-byte keys.
pub fn chunk_of_queries_for(
    value_bytes: usize,
    queries: usize,
    references: usize,
    p: usize,
    max_memory: Option<usize>,
) -> usize {
    let per_query = references.max(1).saturating_mul(p.max(1)).saturating_mul(value_bytes.max(1));
    match max_memory {
        None => queries.max(1),
        Some(bytes) => (bytes / per_query).clamp(1, queries.max(1)),
    }
}

/// Mutual scores of `n` images of `p` patches with `c` channels (`[n, p, c]` row-major):
/// returns `[n, p]`. `progress` is called with the number of finished query images.
#[allow(clippy::too_many_arguments)]
pub fn mutual_scores<T: Real>(
    patches: &[T],
    n: usize,
    p: usize,
    c: usize,
    top_ratio: f64,
    max_memory: Option<usize>,
) -> CoreResult<Vec<T>> {
    if n < 2 {
        return invalid(format!(
            "patches: mutual scoring needs at least 2 images, got {n}"
        ));
    }
    check_ratio(top_ratio)?;
    if patches.len() != n * p * c {
        return invalid(format!(
            "patches: expected {} values for shape [{n}, {p}, {c}], got {}",
            n * p * c,
            patches.len()
        ));
    }
    let mut out = vec![T::ZERO; n * p];
    if p == 0 {
        return Ok(out);
    }
    let refs = n - 1;
    let k = top_k(refs, top_ratio);
    let norms = squared_norms(patches, c);
    let max_norm = norms.iter().cloned().fold(0.0f64, f64::max).sqrt();
    let tol = key_tolerance::<T>(c, max_norm, max_norm);
    let image = |i: usize| &patches[i * p * c..(i + 1) * p * c];
    let norm_of = |i: usize| &norms[i * p..(i + 1) * p];
    // Slot of reference image j in query image i's list of N-1 references.
    let slot = |i: usize, j: usize| if j < i { j } else { j - 1 };

    let chunk = chunk_of_queries::<T>(n, refs, p, max_memory);
    let mut minima = vec![T::ZERO; chunk * refs * p];
    let mut q0 = 0;
    while q0 < n {
        let q1 = (q0 + chunk).min(n);
        // (i, j, symmetric): pairs inside the chunk once (both directions), others one-sided.
        let mut jobs: Vec<(usize, usize, bool)> = Vec::new();
        for i in q0..q1 {
            for j in 0..n {
                if j == i || (j >= q0 && j < q1 && j < i) {
                    continue;
                }
                jobs.push((i, j, j >= q0 && j < q1));
            }
        }
        // Grouped by reference image: a thread's consecutive jobs reuse its transposed copy.
        jobs.sort_by_key(|&(i, j, _)| (j, i));
        let shared = SharedOut(minima.as_mut_ptr());
        let store_len = minima.len();
        jobs.par_iter().for_each_init(
            || (Scratch::<T>::default(), TransposeCache::new()),
            |(scratch, cache), &(i, j, symmetric)| {
                let row_at = ((i - q0) * refs + slot(i, j)) * p;
                debug_assert!(row_at + p <= store_len);
                // SAFETY: the range of (query i, reference j) is written only by the job of the
                // unordered pair {i, j} (each pair appears once in `jobs`), inside `minima`.
                let row_out = unsafe { shared.slice(row_at, p) };
                let col_out = if symmetric {
                    let col_at = ((j - q0) * refs + slot(j, i)) * p;
                    debug_assert!(col_at + p <= store_len);
                    // SAFETY: as above, for (query j, reference i); distinct from row_out as i != j.
                    Some(unsafe { shared.slice(col_at, p) })
                } else {
                    None
                };
                let image_j_t = cache.get(j, image(j), p, c);
                pair_minima(
                    image(i),
                    p,
                    norm_of(i),
                    image(j),
                    image_j_t,
                    p,
                    norm_of(j),
                    c,
                    tol,
                    row_out,
                    col_out,
                    scratch,
                );
            },
        );
        reduce_top_k(&mut minima, &mut out[q0 * p..q1 * p], refs, p, k);
        q0 = q1;
    }
    Ok(out)
}

/// `out[i, p]` = mean of the `k` smallest of `minima[i, :, p]` for the chunk's queries.
fn reduce_top_k<T: Real>(minima: &mut [T], out: &mut [T], refs: usize, p: usize, k: usize) {
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

/// Scores of `m` query images (`[m, p, c]`) against a bank of `nb` images (`[nb, pb, c]`):
/// mean of the k = max(1, floor(nb * top_ratio)) smallest nearest-patch distances. `[m, p]`.
#[allow(clippy::too_many_arguments)]
pub fn scores_against_bank<T: Real>(
    queries: &[T],
    m: usize,
    p: usize,
    bank: &[T],
    nb: usize,
    pb: usize,
    c: usize,
    top_ratio: f64,
    max_memory: Option<usize>,
) -> CoreResult<Vec<T>> {
    if nb < 1 {
        return invalid("bank: needs at least 1 image");
    }
    check_ratio(top_ratio)?;
    if queries.len() != m * p * c || bank.len() != nb * pb * c {
        return invalid("queries / bank: lengths do not match their shapes");
    }
    let mut out = vec![T::ZERO; m * p];
    if p == 0 || m == 0 {
        return Ok(out);
    }
    let k = top_k(nb, top_ratio);
    let qn = squared_norms(queries, c);
    let bn = squared_norms(bank, c);
    let max_q = qn.iter().cloned().fold(0.0f64, f64::max).sqrt();
    let max_b = bn.iter().cloned().fold(0.0f64, f64::max).sqrt();
    let tol = key_tolerance::<T>(c, max_q, max_b);
    let chunk = chunk_of_queries::<T>(m, nb, p, max_memory);
    let mut minima = vec![T::ZERO; chunk * nb * p];
    let mut q0 = 0;
    while q0 < m {
        let q1 = (q0 + chunk).min(m);
        let used = (q1 - q0) * nb * p;
        // Grouped by bank image: a thread's consecutive jobs reuse its transposed copy.
        let jobs: Vec<(usize, usize)> = (0..nb)
            .flat_map(|j| (q0..q1).map(move |i| (i, j)))
            .collect();
        let shared = SharedOut(minima.as_mut_ptr());
        jobs.par_iter().for_each_init(
            || (Scratch::<T>::default(), TransposeCache::new()),
            |(scratch, cache), &(i, j)| {
                let at = ((i - q0) * nb + j) * p;
                debug_assert!(at + p <= used);
                // SAFETY: each (query i, bank image j) job writes its own range of `minima`.
                let row_out = unsafe { shared.slice(at, p) };
                let bank_j = &bank[j * pb * c..(j + 1) * pb * c];
                let bank_j_t = cache.get(j, bank_j, pb, c);
                pair_minima(
                    &queries[i * p * c..(i + 1) * p * c],
                    p,
                    &qn[i * p..(i + 1) * p],
                    bank_j,
                    bank_j_t,
                    pb,
                    &bn[j * pb..(j + 1) * pb],
                    c,
                    tol,
                    row_out,
                    None,
                    scratch,
                );
            },
        );
        reduce_top_k(&mut minima[..used], &mut out[q0 * p..q1 * p], nb, p, k);
        q0 = q1;
    }
    Ok(out)
}

/// RsCIN: min-max normalised image scores smoothed over each image's k most similar images
/// (cosine similarity of the embeddings, self included), averaged over the windows `k_list`.
pub fn rscin(
    image_scores: &[f64],
    embeddings: &[f64],
    n: usize,
    d: usize,
    k_list: &[usize],
) -> CoreResult<Vec<f64>> {
    if image_scores.len() != n || embeddings.len() != n * d {
        return invalid("image_scores / embeddings: lengths do not match");
    }
    if k_list.is_empty() || k_list.contains(&0) {
        return invalid("k_list: needs at least one window, each >= 1");
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let lo = image_scores.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = image_scores
        .iter()
        .cloned()
        .fold(f64::NEG_INFINITY, f64::max);
    // Halved before subtracting: the span of scores near +-f64::MAX would overflow to inf.
    let span = hi / 2.0 - lo / 2.0;
    let s: Vec<f64> = image_scores
        .iter()
        .map(|&v| {
            if span > 0.0 {
                (v / 2.0 - lo / 2.0) / span
            } else {
                0.0
            }
        })
        .collect();
    let mut unit = embeddings.to_vec();
    for row in unit.chunks_mut(d.max(1)) {
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    let mut sim = vec![0.0f64; n * n];
    let um = MatRef::row_major(&unit, n, d);
    matmul(&mut sim, n, um, um.transpose(), false);
    let mut out = vec![0.0f64; n];
    out.par_iter_mut().enumerate().for_each(|(i, o)| {
        let row = &sim[i * n..(i + 1) * n];
        let mut order: Vec<usize> = (0..n).collect();
        // Largest similarity first; ties by index so the choice is reproducible.
        order.sort_by(|&x, &y| {
            row[y]
                .partial_cmp(&row[x])
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(x.cmp(&y))
        });
        let mut total = 0.0;
        for &k in k_list {
            let k = k.min(n);
            let weight: f64 = order[..k].iter().map(|&j| row[j]).sum();
            let smoothed: f64 = order[..k].iter().map(|&j| row[j] * s[j]).sum();
            total += if weight != 0.0 {
                smoothed / weight
            } else {
                0.0
            };
        }
        *o = total / k_list.len() as f64;
    });
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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

    fn naive_scores(x: &[f64], n: usize, p: usize, c: usize, k: usize) -> Vec<f64> {
        let mut out = vec![0.0; n * p];
        for i in 0..n {
            for a in 0..p {
                let mut mins = Vec::new();
                for j in 0..n {
                    if j == i {
                        continue;
                    }
                    let mut best = f64::INFINITY;
                    for b in 0..p {
                        let d: f64 = (0..c)
                            .map(|t| (x[(i * p + a) * c + t] - x[(j * p + b) * c + t]).powi(2))
                            .sum();
                        best = best.min(d.sqrt());
                    }
                    mins.push(best);
                }
                mins.sort_by(|u, v| u.partial_cmp(v).unwrap());
                out[i * p + a] = mins[..k].iter().sum::<f64>() / k as f64;
            }
        }
        out
    }

    #[test]
    fn mutual_scores_match_naive_in_every_chunking() {
        for &(n, p, c) in &[
            (2usize, 3usize, 4usize),
            (3, 7, 5),
            (5, 300, 9),
            (4, 600, 3),
        ] {
            let x = random(n * p * c, (n * p * c) as u64);
            let k = top_k(n - 1, 0.3);
            let want = naive_scores(&x, n, p, c, k);
            for max_memory in [None, Some(1usize)] {
                let got = mutual_scores(&x, n, p, c, 0.3, max_memory).unwrap();
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-12 * w.max(1.0),
                        "n={n} p={p} {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn duplicated_images_give_exact_zero() {
        let (p, c) = (5, 64);
        let base = random(p * c, 7);
        let other = random(p * c, 8);
        let x32: Vec<f32> = base
            .iter()
            .chain(base.iter())
            .chain(other.iter())
            .map(|&v| v as f32)
            .collect();
        let unit = lnamd(&x32, 3, 1, p, c, 1).unwrap();
        let s = mutual_scores(&unit, 3, p, c, 0.3, None).unwrap();
        assert!(s[..2 * p].iter().all(|&v| v == 0.0), "{s:?}");
        assert!(s[2 * p..].iter().all(|&v| v > 0.1));
    }

    #[test]
    fn near_duplicates_keep_tiny_distances() {
        let (p, c) = (4, 256);
        let mut a: Vec<f32> = random(p * c, 3).iter().map(|&v| v as f32).collect();
        let norm: f32 = a[..c].iter().map(|v| v * v).sum::<f32>().sqrt();
        a.iter_mut().for_each(|v| *v /= norm);
        let mut b = a.clone();
        b[0] += 3e-4;
        let x: Vec<f32> = a.iter().chain(b.iter()).cloned().collect();
        let s = mutual_scores(&x, 2, p, c, 0.3, None).unwrap();
        assert!((s[0] - 3e-4).abs() < 1e-8, "{}", s[0]);
    }

    #[test]
    fn bank_scores_match_naive() {
        let (m, nb, p, c) = (2usize, 3usize, 9usize, 6usize);
        let q = random(m * p * c, 1);
        let b = random(nb * p * c, 2);
        let got = scores_against_bank(&q, m, p, &b, nb, p, c, 0.5, Some(1)).unwrap();
        let mut all = q.clone();
        all.extend(&b);
        for i in 0..m {
            for a in 0..p {
                let mut mins: Vec<f64> = (0..nb)
                    .map(|j| {
                        (0..p)
                            .map(|t| {
                                (0..c)
                                    .map(|u| {
                                        (q[(i * p + a) * c + u] - b[(j * p + t) * c + u]).powi(2)
                                    })
                                    .sum::<f64>()
                                    .sqrt()
                            })
                            .fold(f64::INFINITY, f64::min)
                    })
                    .collect();
                mins.sort_by(|u, v| u.partial_cmp(v).unwrap());
                let want = mins[0];
                assert!((got[i * p + a] - want).abs() < 1e-12);
            }
        }
    }

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

    #[test]
    fn top_k_rounds_down_with_at_least_one() {
        assert_eq!(top_k(1, 0.3), 1);
        assert_eq!(top_k(3, 0.3), 1);
        assert_eq!(top_k(10, 0.3), 3);
        assert_eq!(top_k(31, 0.3), 9);
        assert_eq!(top_k(4, 1.0), 4);
    }

    #[test]
    fn rscin_with_k_one_is_min_max_normalisation() {
        let scores = [1.0, 3.0, 2.0];
        let emb = random(3 * 4, 9);
        let r = rscin(&scores, &emb, 3, 4, &[1]).unwrap();
        assert_eq!(r, vec![0.0, 1.0, 0.5]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod timing {
    use super::*;
    use std::time::Instant;

    fn tests_random(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_add(0x9e3779b97f4a7c15);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32
            })
            .collect()
    }

    #[test]
    #[ignore]
    fn time_one_pair() {
        let (p, c) = (784usize, 1024usize);
        let a: Vec<f32> = lnamd(&tests_random(p * c, 1), 1, 28, 28, c, 3).unwrap();
        let b: Vec<f32> = lnamd(&tests_random(p * c, 2), 1, 28, 28, c, 3).unwrap();
        let na = squared_norms(&a, c);
        let nb = squared_norms(&b, c);
        let mut g = vec![0.0f32; p * p];
        let t = Instant::now();
        for _ in 0..10 {
            matmul(
                &mut g,
                p,
                MatRef::row_major(&a, p, c),
                MatRef::row_major(&b, p, c).transpose(),
                false,
            );
        }
        let dt = t.elapsed().as_secs_f64() / 10.0;
        println!(
            "full gemm {:.2} ms  {:.1} GFLOP/s",
            dt * 1e3,
            2.0 * (p * p * c) as f64 / dt / 1e9
        );
        let mut bt = vec![0.0f32; p * c];
        let mut at = vec![0.0f32; p * c];
        for q in 0..p {
            for k in 0..c {
                bt[k * p + q] = b[q * c + k];
                at[k * p + q] = a[q * c + k];
            }
        }
        for round in 0..2 {
            for variant in 0..4 {
                let t = Instant::now();
                for _ in 0..5 {
                    let am = if variant & 1 == 0 {
                        MatRef::row_major(&a, p, c)
                    } else {
                        MatRef::row_major(&at, c, p).transpose()
                    };
                    let bm = if variant & 2 == 0 {
                        MatRef::row_major(&b, p, c).transpose()
                    } else {
                        MatRef::row_major(&bt, c, p)
                    };
                    matmul(&mut g, p, am, bm, false);
                }
                let dt = t.elapsed().as_secs_f64() / 5.0;
                println!("round {round} layout variant {variant}: {:.2} ms", dt * 1e3);
            }
        }
        for (rt, ct) in [(196usize, 392usize), (784, 784)] {
            let t = Instant::now();
            for _ in 0..10 {
                let mut r0 = 0;
                while r0 < p {
                    let mut c0 = 0;
                    while c0 < p {
                        matmul(
                            &mut g[..rt * ct],
                            ct,
                            MatRef::row_major(&a, p, c).block(r0, r0 + rt, 0, c),
                            MatRef::row_major(&b, p, c)
                                .transpose()
                                .block(0, c, c0, c0 + ct),
                            false,
                        );
                        c0 += ct;
                    }
                    r0 += rt;
                }
            }
            let dt = t.elapsed().as_secs_f64() / 10.0;
            println!(
                "tiled gemm {rt}x{ct} {:.2} ms  {:.1} GFLOP/s",
                dt * 1e3,
                2.0 * (p * p * c) as f64 / dt / 1e9
            );
        }
        let mut row = vec![0.0f32; p];
        let mut col = vec![0.0f32; p];
        let mut s = Scratch::default();
        for round in 0..3 {
            for tol in [0.0, key_tolerance::<f32>(c, 1.0, 1.0)] {
                let t = Instant::now();
                for _ in 0..5 {
                    pair_minima(
                        &a,
                        p,
                        &na,
                        &b,
                        &bt,
                        p,
                        &nb,
                        c,
                        tol,
                        &mut row,
                        Some(&mut col),
                        &mut s,
                    );
                }
                let dt = t.elapsed().as_secs_f64() / 5.0;
                let t = Instant::now();
                for _ in 0..5 {
                    matmul(
                        &mut g,
                        p,
                        MatRef::row_major(&a, p, c),
                        MatRef::row_major(&b, p, c).transpose(),
                        false,
                    );
                }
                let dg = t.elapsed().as_secs_f64() / 5.0;
                println!(
                    "round {round} tol {tol:.1e}: pair_minima {:.2} ms, gemm {:.2} ms",
                    dt * 1e3,
                    dg * 1e3
                );
            }
        }
    }
}
