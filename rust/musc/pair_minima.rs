//! The nearest patch of one image pair: a GEMM tile of dot products reduced at once to row and
//! column minima of the expanded key, the candidates re-measured exactly.

use crate::linalg::{matmul, MatRef, Real};

/// Rows (patches of the query image) and columns (patches of the reference image) per product
/// tile, split evenly. Whole-image tiles up to 1024 patches measured fastest: fewer, larger
/// GEMM calls pack each operand once (196 x 392 tiles of a 784-patch pair were about 25%
/// slower), and the two epilogue passes over a 2-4 MiB tile cost under 10% of the product.
const ROW_TILE: usize = 1024;
const COL_TILE: usize = 1024;
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
pub(super) struct TransposeCache<T> {
    data: Vec<T>,
    image: Option<usize>,
}

impl<T: Real> TransposeCache<T> {
    pub(super) fn new() -> Self {
        TransposeCache {
            data: Vec::new(),
            image: None,
        }
    }

    pub(super) fn get(&mut self, image: usize, src: &[T], p: usize, c: usize) -> &[T] {
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

pub(super) fn squared_norms<T: Real>(x: &[T], c: usize) -> Vec<f64> {
    x.chunks(c.max(1))
        .map(|row| row.iter().map(|v| v.to_f64() * v.to_f64()).sum())
        .collect()
}

/// Per-thread buffers of `pair_minima`.
pub(super) struct Scratch<T> {
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
pub(super) fn pair_minima<T: Real>(
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
pub(super) fn key_tolerance<T>(c: usize, max_a: f64, max_b: f64) -> f64 {
    key_tolerance_for(std::mem::size_of::<T>(), c, max_a, max_b)
}

/// [`key_tolerance`] for values of `itemsize` bytes (4: float32, else float64); the CUDA
/// launch plans use this same definition.
pub fn key_tolerance_for(itemsize: usize, c: usize, max_a: f64, max_b: f64) -> f64 {
    let u = if itemsize == 4 {
        f32::EPSILON as f64 * 0.5
    } else {
        f64::EPSILON * 0.5
    };
    4.0 * (c as f64 + 4.0) * u * max_a * max_b
        + 4.0 * u * (max_a * max_a + max_b * max_b)
        + f64::MIN_POSITIVE
}
