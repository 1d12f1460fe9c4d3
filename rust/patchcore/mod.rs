//! Memory-bank detectors: exact k nearest neighbours against a bank, and greedy k-center coreset
//! selection (PatchCore).
//!
//! kNN: query tiles x bank tiles of dot products by GEMM give expanded keys
//! `|b|^2 - 2 q.b` (the query's own norm is common to the row and left out); a bank vector is
//! re-measured exactly (float64 sum of squared differences) only when its key lies within the
//! rounding bound of the row's current k-th best exact distance. The answer therefore equals a
//! float64 brute force, ties ordered by bank index, while memory stays at one tile per thread.
//!
//! Coreset: the classic incremental greedy k-center: keep each point's minimum squared distance
//! to the selected set, take the largest, update the minima with the new centre. The argmax is
//! taken on float32 minima and re-decided in float64 among the points within the rounding bound
//! of the leader, so the selection equals a float64 implementation index for index. Each point
//! also remembers which centre is its nearest: by the triangle inequality the new centre `c`
//! cannot come closer to a point `x` owned by centre `a` when `|c - a| >= 2 |x - a|`, so such
//! points are not measured at all (with a relative margin far above the float64 error, so the
//! minima stay exactly those of the unpruned pass). As the selected set grows most points are
//! settled this way and a step reads their minima only, not their vectors.

use rayon::prelude::*;

use crate::error::{invalid, CoreResult};
use crate::linalg::{matmul, sq_distance_lanes, MatRef, Real, LANES};

/// Query rows per tile (each thread owns one tile of queries at a time).
const QUERY_TILE: usize = 256;
/// Bank rows per tile: 256 x 2048 float32 keys are 2 MiB, inside L2 on the machines measured.
const BANK_TILE: usize = 2048;

/// Distance used for the neighbours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Euclidean distance `||q - b||`.
    Euclidean,
    /// Cosine distance `1 - q.b / (|q| |b|)`.
    Cosine,
}

/// Unit roundoff of the element type (float32 or float64).
fn unit_roundoff<T>() -> f64 {
    if std::mem::size_of::<T>() == 4 {
        f32::EPSILON as f64 * 0.5
    } else {
        f64::EPSILON * 0.5
    }
}

fn exact_sq<T: Real>(a: &[T], b: &[T]) -> f64 {
    let mut s = [0.0f64; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..4 {
            let d = x[l].to_f64() - y[l].to_f64();
            s[l] += d * d;
        }
    }
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        let d = x.to_f64() - y.to_f64();
        s[0] += d * d;
    }
    (s[0] + s[1]) + (s[2] + s[3])
}

/// A relative bound on the error of [`sq_distance_lanes`] for vectors of length `d` (differences and
/// squares rounded once each, sums of at most d / 16 + 16 terms).
fn fast_sq_slack<T>(d: usize) -> f64 {
    4.0 * (d as f64 / LANES as f64 + LANES as f64 + 4.0) * unit_roundoff::<T>()
}

fn exact_dot<T: Real>(a: &[T], b: &[T]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x.to_f64() * y.to_f64()).sum()
}

/// The k best (distance, index) pairs of one query, kept sorted (k is small).
struct Best {
    items: Vec<(f64, usize)>,
    k: usize,
}

impl Best {
    fn new(k: usize) -> Self {
        Best {
            items: Vec::with_capacity(k + 1),
            k,
        }
    }
    /// The distance a candidate must not exceed to matter (infinite until k are held).
    fn bound(&self) -> f64 {
        if self.items.len() < self.k {
            f64::INFINITY
        } else {
            self.items[self.k - 1].0
        }
    }
    fn offer(&mut self, dist: f64, index: usize) {
        let better = |a: &(f64, usize)| (a.0, a.1) < (dist, index);
        if self.items.len() == self.k {
            let last = self.items[self.k - 1];
            // NaN never enters (inputs are finite); otherwise keep only strictly better pairs.
            if (dist, index) >= (last.0, last.1) || dist.is_nan() {
                return;
            }
            self.items.pop();
        }
        let at = self.items.partition_point(better);
        self.items.insert(at, (dist, index));
    }
}

/// Exact k nearest neighbours of `queries [m, d]` in `bank [n, d]`: (distances, indices), each
/// `[m, k]` row-major, ascending, ties by the lower bank index.
pub fn knn<T: Real>(
    queries: &[T],
    m: usize,
    bank: &[T],
    n: usize,
    d: usize,
    k: usize,
    metric: Metric,
) -> CoreResult<(Vec<f64>, Vec<i64>)> {
    if d == 0 {
        return invalid("queries: vectors of length 0");
    }
    if n == 0 {
        return invalid("bank: no vectors");
    }
    if k == 0 || k > n {
        return invalid(format!("k: must lie in [1, {n}] (the bank size), got {k}"));
    }
    if queries.len() != m * d || bank.len() != n * d {
        return invalid("queries, bank: lengths do not match their shapes");
    }
    let u = unit_roundoff::<T>();
    // Cosine: unit vectors in the element type; the exact recheck uses the raw vectors in f64.
    let (q_unit, b_unit);
    let (qv, bv): (&[T], &[T]) = match metric {
        Metric::Euclidean => (queries, bank),
        Metric::Cosine => {
            q_unit = unit_rows(queries, d, "queries")?;
            b_unit = unit_rows(bank, d, "bank")?;
            (&q_unit, &b_unit)
        }
    };
    let b_norm2: Vec<f64> = bv.chunks_exact(d).map(|r| exact_dot(r, r)).collect();
    let b_norm2_t: Vec<T> = b_norm2.iter().map(|&v| T::from_f64(v)).collect();
    let max_b = b_norm2.iter().cloned().fold(0.0f64, f64::max).sqrt();
    let b_exact_norm: Vec<f64> = match metric {
        Metric::Cosine => bank
            .chunks_exact(d)
            .map(|r| exact_dot(r, r).sqrt())
            .collect(),
        Metric::Euclidean => Vec::new(),
    };
    let mut distances = vec![0.0f64; m * k];
    let mut indices = vec![0i64; m * k];
    distances
        .par_chunks_mut(QUERY_TILE * k)
        .zip(indices.par_chunks_mut(QUERY_TILE * k))
        .enumerate()
        .for_each_init(
            || vec![T::ZERO; QUERY_TILE * BANK_TILE],
            |keys, (tile, (dist_out, idx_out))| {
                let q0 = tile * QUERY_TILE;
                let rows = dist_out.len() / k;
                let q_rows = MatRef::row_major(&qv[q0 * d..(q0 + rows) * d], rows, d);
                let q_norm: Vec<f64> = qv[q0 * d..(q0 + rows) * d]
                    .chunks_exact(d)
                    .map(|r| exact_dot(r, r).sqrt())
                    .collect();
                let q_exact_norm: Vec<f64> = match metric {
                    Metric::Cosine => queries[q0 * d..(q0 + rows) * d]
                        .chunks_exact(d)
                        .map(|r| exact_dot(r, r).sqrt())
                        .collect(),
                    Metric::Euclidean => Vec::new(),
                };
                let mut best: Vec<Best> = (0..rows).map(|_| Best::new(k)).collect();
                let mut b0 = 0;
                while b0 < n {
                    let cols = (n - b0).min(BANK_TILE);
                    let b_rows = MatRef::row_major(&bv[b0 * d..(b0 + cols) * d], cols, d);
                    matmul(keys, cols, q_rows, b_rows.transpose(), false);
                    for (i, best_i) in best.iter_mut().enumerate() {
                        let qn = q_norm[i];
                        // Rounding bound of |b|^2 - 2 q.b (dot of length d, squared norms).
                        let tol = 4.0 * (d as f64 + 4.0) * u * qn * max_b
                            + 4.0 * u * (qn * qn + max_b * max_b)
                            + f64::MIN_POSITIVE;
                        // The largest key that can still beat the k-th best: in the key's units
                        // (squared distance minus |q|^2), widened by its rounding bound.
                        let limit_of = |bound: f64| match metric {
                            Metric::Euclidean => bound * bound - qn * qn + tol,
                            // cosine distance c = |a - b|^2 / 2 for unit vectors
                            Metric::Cosine => 2.0 * bound - qn * qn + tol + 8.0 * d as f64 * u,
                        };
                        // As the element type, rounded outwards, for the vectorised scan.
                        let to_t = |limit: f64| {
                            if limit.is_finite() {
                                T::from_f64(limit + limit.abs() * 4.0 * u + f64::MIN_POSITIVE)
                            } else {
                                T::from_f64(f64::MAX)
                            }
                        };
                        let mut limit = limit_of(best_i.bound());
                        let mut limit_t = to_t(limit);
                        let qi = &qv[(q0 + i) * d..(q0 + i + 1) * d];
                        let row = &keys[i * cols..(i + 1) * cols];
                        let norms = &b_norm2_t[b0..b0 + cols];
                        for (ci, (kc, nc)) in row.chunks(LANES).zip(norms.chunks(LANES)).enumerate()
                        {
                            // Branch-free test of a whole chunk first: most chunks hold nothing.
                            let mut any = false;
                            for (&dot, &bn) in kc.iter().zip(nc) {
                                any |= bn - (dot + dot) <= limit_t;
                            }
                            if !any && best_i.items.len() == k {
                                continue;
                            }
                            for (o, (&dot, &bn)) in kc.iter().zip(nc).enumerate() {
                                let key = bn.to_f64() - 2.0 * dot.to_f64();
                                if best_i.items.len() == k && key > limit {
                                    continue;
                                }
                                let jj = b0 + ci * LANES + o;
                                let dist = match metric {
                                    Metric::Euclidean => {
                                        exact_sq(qi, &bv[jj * d..(jj + 1) * d]).sqrt()
                                    }
                                    Metric::Cosine => {
                                        let raw_q = &queries[(q0 + i) * d..(q0 + i + 1) * d];
                                        let raw_b = &bank[jj * d..(jj + 1) * d];
                                        1.0 - exact_dot(raw_q, raw_b)
                                            / (q_exact_norm[i] * b_exact_norm[jj])
                                    }
                                };
                                best_i.offer(dist, jj);
                                if best_i.items.len() == k {
                                    limit = limit_of(best_i.bound());
                                    limit_t = to_t(limit);
                                }
                            }
                        }
                    }
                    b0 += cols;
                }
                for (i, best_i) in best.iter().enumerate() {
                    for (slot, &(dist, index)) in best_i.items.iter().enumerate() {
                        dist_out[i * k + slot] = dist;
                        idx_out[i * k + slot] = index as i64;
                    }
                }
            },
        );
    Ok((distances, indices))
}

/// Rows scaled to unit length (computed in float64, rounded once); a zero row is an error.
fn unit_rows<T: Real>(x: &[T], d: usize, name: &str) -> CoreResult<Vec<T>> {
    let mut out = Vec::with_capacity(x.len());
    for (r, row) in x.chunks_exact(d).enumerate() {
        let norm = exact_dot(row, row).sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return invalid(format!(
                "{name}: row {r} has norm {norm}; the cosine distance needs nonzero finite vectors"
            ));
        }
        out.extend(row.iter().map(|&v| T::from_f64(v.to_f64() / norm)));
    }
    Ok(out)
}

const CHUNK: usize = 4096;

/// What a greedy step needs besides the minima: the points, their length, the new centre and the
/// relative slack of the fast estimate.
struct Step<'a, T> {
    x: &'a [T],
    d: usize,
    centre: &'a [T],
    slack: f64,
    /// Distance from the new centre to every earlier centre, by selection order.
    gaps: &'a [f64],
    /// The new centre's place in the selection order.
    ordinal: u32,
}

/// No owner yet: the point's minimum is still infinite.
const NO_OWNER: u32 = u32::MAX;
/// Relative margin of the pruning test, far above the float64 error of the distances compared.
const PRUNE_MARGIN: f64 = 1e-7;

/// One chunk of a greedy step (points from `base`): lower each point's minimum squared distance
/// with the new centre and return the chunk's farthest point (value, index; lowest index on
/// ties). The fast lane estimate settles most points; only those it cannot rule out are
/// measured exactly, so the minima are exactly those of a float64 implementation.
#[inline(always)]
fn update_chunk_body<T: Real>(
    step: &Step<'_, T>,
    base: usize,
    chunk: &mut [f64],
    owners: &mut [u32],
) -> (f64, usize) {
    let (d, c) = (step.d, step.centre);
    let mut best = (f64::NEG_INFINITY, usize::MAX);
    for (o, (m, owner)) in chunk.iter_mut().zip(owners.iter_mut()).enumerate() {
        let i = base + o;
        // |c - x| >= |c - a| - |x - a| >= |x - a| when |c - a| >= 2 |x - a|: no improvement.
        let settled = *owner != NO_OWNER
            && step.gaps[*owner as usize] >= 2.0 * m.sqrt() * (1.0 + PRUNE_MARGIN);
        let row = &step.x[i * d..(i + 1) * d];
        if !settled && sq_distance_lanes(row, c) * (1.0 - step.slack) <= *m {
            let dist = exact_sq(row, c);
            if dist < *m {
                *m = dist;
                *owner = step.ordinal;
            }
        }
        if *m > best.0 {
            best = (*m, i);
        }
    }
    best
}

/// One copy of [`update_chunk_body`] compiled for a vector extension.
macro_rules! update_chunk_for {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name<T: Real>(
            step: &Step<'_, T>,
            base: usize,
            chunk: &mut [f64],
            owners: &mut [u32],
        ) -> (f64, usize) {
            update_chunk_body(step, base, chunk, owners)
        }
    };
}

update_chunk_for!(update_chunk_avx512, "avx512f");
update_chunk_for!(update_chunk_avx2, "avx2,fma");

/// [`update_chunk_body`] through the widest vector unit the CPU has (the crate is compiled for
/// baseline x86-64); every copy gives the same minima, since decisions are re-made exactly.
fn update_chunk<T: Real>(
    step: &Step<'_, T>,
    base: usize,
    chunk: &mut [f64],
    owners: &mut [u32],
) -> (f64, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { update_chunk_avx512(step, base, chunk, owners) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { update_chunk_avx2(step, base, chunk, owners) };
        }
    }
    update_chunk_body(step, base, chunk, owners)
}

/// Exact greedy k-center: `n_select` indices of `x [n, d]`, starting at `start`; each step
/// takes the point whose minimum squared distance to the selected set is largest (ties: the
/// lowest index). `progress` is called with the number selected so far.
pub fn greedy_coreset<T: Real>(
    x: &[T],
    n: usize,
    d: usize,
    n_select: usize,
    start: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> CoreResult<Vec<i64>> {
    if n == 0 || d == 0 {
        return invalid("X: no vectors to select from");
    }
    if x.len() != n * d {
        return invalid("X: length does not match its shape");
    }
    if n_select == 0 || n_select > n {
        return invalid(format!("n_select: must lie in [1, {n}], got {n_select}"));
    }
    if start >= n {
        return invalid(format!("start: must lie in [0, {n}), got {start}"));
    }
    // Minimum squared distances kept in float64: the update is a pass over X anyway (memory
    // bound), and float64 minima make the argmax exact without a second pass.
    if n_select > NO_OWNER as usize {
        return invalid(format!(
            "n_select: at most {} centres, got {n_select}",
            NO_OWNER
        ));
    }
    let mut min_d2 = vec![f64::INFINITY; n];
    let mut owners = vec![NO_OWNER; n];
    let mut selected = Vec::with_capacity(n_select);
    let mut gaps: Vec<f64> = Vec::with_capacity(n_select);
    let mut centre = start;
    let slack = fast_sq_slack::<T>(d);
    for step in 0..n_select {
        selected.push(centre as i64);
        if step + 1 == n_select {
            break;
        }
        let c = &x[centre * d..(centre + 1) * d];
        // Distances from the new centre to the earlier ones (the last is the centre itself).
        selected
            .par_iter()
            .map(|&s| exact_sq(&x[s as usize * d..(s as usize + 1) * d], c).sqrt())
            .collect_into_vec(&mut gaps);
        let work = Step {
            x,
            d,
            centre: c,
            slack,
            gaps: &gaps,
            ordinal: step as u32,
        };
        // Update the minima and find the new leader per chunk, then across chunks.
        let leader = min_d2
            .par_chunks_mut(CHUNK)
            .zip(owners.par_chunks_mut(CHUNK))
            .enumerate()
            .map(|(ci, (chunk, own))| update_chunk(&work, ci * CHUNK, chunk, own))
            .reduce(
                || (f64::NEG_INFINITY, usize::MAX),
                |a, b| {
                    if a.0 > b.0 || (a.0 == b.0 && a.1 < b.1) {
                        a
                    } else {
                        b
                    }
                },
            );
        centre = leader.1;
        if step % 64 == 0 {
            progress(step + 1);
        }
    }
    progress(selected.len());
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, seed: u64) -> Vec<f64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect()
    }

    #[test]
    fn knn_equals_brute_force_with_ties() {
        let (m, n, d, k) = (37, 300, 9, 5);
        let q = random(m * d, 1);
        let mut b = random(n * d, 2);
        b.copy_within(0..d, 7 * d); // bank rows 0 and 7 equal: a tie broken by index
        let (dist, idx) = knn(&q, m, &b, n, d, k, Metric::Euclidean).unwrap_or_default();
        for i in 0..m {
            let mut all: Vec<(f64, usize)> = (0..n)
                .map(|j| {
                    (
                        exact_sq(&q[i * d..(i + 1) * d], &b[j * d..(j + 1) * d]).sqrt(),
                        j,
                    )
                })
                .collect();
            all.sort_by(|a, c| a.partial_cmp(c).unwrap_or(std::cmp::Ordering::Equal));
            for s in 0..k {
                assert_eq!(idx[i * k + s] as usize, all[s].1);
                assert_eq!(dist[i * k + s], all[s].0);
            }
        }
    }

    #[test]
    fn coreset_takes_the_farthest_point_each_step() {
        let (n, d) = (200, 4);
        let x = random(n * d, 3);
        let sel = greedy_coreset(&x, n, d, 20, 5, &|_| {}).unwrap_or_default();
        let mut min_d2 = vec![f64::INFINITY; n];
        let mut c = 5;
        for &s in &sel {
            assert_eq!(s as usize, c);
            for i in 0..n {
                min_d2[i] = min_d2[i].min(exact_sq(&x[i * d..(i + 1) * d], &x[c * d..(c + 1) * d]));
            }
            c = (0..n).fold(0, |b, i| if min_d2[i] > min_d2[b] { i } else { b });
        }
    }
}
