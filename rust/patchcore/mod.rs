//! Memory-bank detectors: exact k nearest neighbours against a bank, and greedy k-center coreset
//! selection (PatchCore).
//!
//! kNN: query tiles x bank tiles of dot products by GEMM give expanded keys
//! `|b|^2 - 2 q.b` (the query's own norm is common to the row and left out); a bank vector is
//! re-measured exactly (float64 sum of squared differences) only when its key lies within the
//! rounding bound of the row's current k-th best exact distance. The answer therefore equals a
//! float64 brute force, ties ordered by bank index, while memory stays at one tile per thread.
//!
//! Coreset: the greedy k-center rule (take the point farthest from the selected set, lowest
//! index on ties), evaluated lazily. Each point keeps its minimum squared distance to the centres
//! it has been measured against; since minima only fall, a stale minimum bounds the true one from
//! above. A max-queue on these bounds yields the leader: its top is brought up to date with the
//! centres chosen since it was last measured, and once the top is up to date nothing below can
//! beat it. Points well below the current leader are not touched for many steps and then meet
//! all their new centres in one pass over a contiguous copy of the centres, so a step costs a few
//! points against many centres from cache instead of a full pass over X from memory. When a
//! step would catch up too many points, one parallel pass brings everyone up to date instead.
//! Distances are estimated in float32 lanes and re-measured in float64 wherever the estimate
//! cannot rule a centre out, so the minima, and the selection, equal a float64 implementation
//! index for index.

use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::error::{invalid, CoreResult};
use crate::linalg::{matmul, sq_distance_lanes, MatRef, Real, LANES};

/// Most query rows per tile (each thread owns one tile of queries at a time): tall tiles against
/// short bank tiles keep the GEMM's packed bank panel hot across many query rows (measured
/// fastest among 64-4096 x 64-4096 on 2 cores; 1024 x 256 float32 keys are 1 MiB).
const QUERY_TILE: usize = 1024;
/// Fewest query rows per tile, however many threads there are.
const MIN_QUERY_TILE: usize = 64;
/// Bank rows per tile.
const BANK_TILE: usize = 256;

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
    // At least two tiles per thread while tiles stay tall enough for the GEMM to pay.
    let query_tile = m
        .div_ceil(2 * rayon::current_num_threads())
        .clamp(MIN_QUERY_TILE, QUERY_TILE);
    let mut distances = vec![0.0f64; m * k];
    let mut indices = vec![0i64; m * k];
    distances
        .par_chunks_mut(query_tile * k)
        .zip(indices.par_chunks_mut(query_tile * k))
        .enumerate()
        .for_each_init(
            || vec![T::ZERO; query_tile * BANK_TILE],
            |keys, (tile, (dist_out, idx_out))| {
                let q0 = tile * query_tile;
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

/// Points per task of the parallel full catch-up.
const CHUNK: usize = 4096;
/// Point-centre distances below which a batch of catch-ups runs on the calling thread.
const SERIAL_CATCH_UP: usize = 256;

/// A point's place in the lazy queue: its minimum squared distance to the centres applied to it
/// so far, an upper bound on the true minimum (minima only fall); largest first, lowest index
/// first among equals, the order of the greedy rule.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    bound: f64,
    index: u32,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bound
            .total_cmp(&other.bound)
            .then_with(|| other.index.cmp(&self.index))
    }
}

/// What a catch-up reads: the points, their length, the chosen centres' rows copied in
/// selection order (contiguous, so a point streams through them from cache) and the relative
/// slack of the fast estimate.
struct Centres<'a, T> {
    x: &'a [T],
    d: usize,
    rows: &'a [T],
    slack: f64,
}

impl<T> Centres<'_, T> {
    fn count(&self) -> usize {
        self.rows.len() / self.d
    }
}

/// Point `i`'s minimum `m` lowered with the centres it has not seen (`seen..`): the fast lane
/// estimate rules most of them out; the rest are measured exactly, so the minimum is exactly
/// that of a float64 implementation.
#[inline(always)]
fn catch_up_body<T: Real>(c: &Centres<'_, T>, i: usize, seen: usize, mut m: f64) -> f64 {
    let d = c.d;
    let row = &c.x[i * d..(i + 1) * d];
    for centre in c.rows[seen * d..].chunks_exact(d) {
        if sq_distance_lanes(row, centre) * (1.0 - c.slack) <= m {
            let dist = exact_sq(row, centre);
            if dist < m {
                m = dist;
            }
        }
    }
    m
}

/// One copy of [`catch_up_body`] compiled for a vector extension.
macro_rules! catch_up_for {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name<T: Real>(c: &Centres<'_, T>, i: usize, seen: usize, m: f64) -> f64 {
            catch_up_body(c, i, seen, m)
        }
    };
}

catch_up_for!(catch_up_avx512, "avx512f");
catch_up_for!(catch_up_avx2, "avx2,fma");

/// [`catch_up_body`] through the widest vector unit the CPU has (the crate is compiled for
/// baseline x86-64); every copy gives the same minima, since decisions are re-made exactly.
fn catch_up<T: Real>(c: &Centres<'_, T>, i: usize, seen: usize, m: f64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { catch_up_avx512(c, i, seen, m) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { catch_up_avx2(c, i, seen, m) };
        }
    }
    catch_up_body(c, i, seen, m)
}

/// Every point brought up to date (in parallel), and the queue rebuilt from the exact minima.
fn catch_up_all<T: Real>(
    c: &Centres<'_, T>,
    min_d2: &mut [f64],
    applied: &mut [u32],
    queue: &mut BinaryHeap<Candidate>,
) {
    let count = c.count() as u32;
    min_d2
        .par_chunks_mut(CHUNK)
        .zip(applied.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(ci, (ms, seen))| {
            for (o, (m, s)) in ms.iter_mut().zip(seen.iter_mut()).enumerate() {
                *m = catch_up(c, ci * CHUNK + o, *s as usize, *m);
                *s = count;
            }
        });
    let mut entries = std::mem::take(queue).into_vec();
    entries.clear();
    entries.extend(min_d2.iter().enumerate().map(|(i, &bound)| Candidate {
        bound,
        index: i as u32,
    }));
    *queue = BinaryHeap::from(entries);
}

/// Exact greedy k-center: `n_select` indices of `x [n, d]`, starting at `start`; each step
/// takes the point whose minimum squared distance to the selected set is largest (ties: the
/// lowest index). `progress` is called with the number selected so far and returns whether to
/// go on; `false` stops the selection with an error (the caller keeps the reason).
pub fn greedy_coreset<T: Real>(
    x: &[T],
    n: usize,
    d: usize,
    n_select: usize,
    start: usize,
    progress: &(dyn Fn(usize) -> bool + Sync),
) -> CoreResult<Vec<i64>> {
    // Past n / 8 catch-ups in one step the queue is mostly churn: one parallel pass over every
    // point ends the step sooner, though it measures points the queue would have left alone.
    greedy_coreset_with_limit(x, n, d, n_select, start, progress, n / 8)
}

/// [`greedy_coreset`] with the number of catch-ups per step after which a full pass is made.
fn greedy_coreset_with_limit<T: Real>(
    x: &[T],
    n: usize,
    d: usize,
    n_select: usize,
    start: usize,
    progress: &(dyn Fn(usize) -> bool + Sync),
    lazy_limit: usize,
) -> CoreResult<Vec<i64>> {
    if n == 0 || d == 0 {
        return invalid("X: no vectors to select from");
    }
    if x.len() != n * d {
        return invalid("X: length does not match its shape");
    }
    if n > u32::MAX as usize {
        return invalid(format!("X: at most {} rows, got {n}", u32::MAX));
    }
    if n_select == 0 || n_select > n {
        return invalid(format!("n_select: must lie in [1, {n}], got {n_select}"));
    }
    if start >= n {
        return invalid(format!("start: must lie in [0, {n}), got {start}"));
    }
    let mut rows: Vec<T> = Vec::new();
    if rows.try_reserve_exact(n_select * d).is_err() {
        return invalid(format!(
            "n_select: a copy of {n_select} centres of {d} values does not fit in memory"
        ));
    }
    // Minima kept exact in float64, with the number of centres each already reflects.
    let mut min_d2 = vec![f64::INFINITY; n];
    let mut applied = vec![0u32; n];
    let mut queue = BinaryHeap::new();
    let mut selected = Vec::with_capacity(n_select);
    let slack = fast_sq_slack::<T>(d);
    // Stale points caught up together (in parallel) before the queue is looked at again.
    let batch_size = 4 * rayon::current_num_threads();
    let lazy_limit = lazy_limit.max(1);
    let mut batch: Vec<Candidate> = Vec::with_capacity(batch_size);
    let mut leader = start;
    loop {
        selected.push(leader as i64);
        rows.extend_from_slice(&x[leader * d..(leader + 1) * d]);
        if selected.len() == n_select {
            break;
        }
        if selected.len() % 64 == 0 && !progress(selected.len()) {
            return invalid("greedy_coreset: stopped by its progress callback");
        }
        let view = Centres {
            x,
            d,
            rows: &rows,
            slack,
        };
        if selected.len() == 1 {
            catch_up_all(&view, &mut min_d2, &mut applied, &mut queue);
        }
        let count = selected.len() as u32;
        let mut updates = 0;
        // Minima only fall, so a stale minimum bounds the true one from above: once the queue's
        // top is up to date no other point can beat it, and only points that reach the top are
        // measured against the centres chosen since they were last looked at. Points far below
        // the leader are skipped for many steps, then meet all their new centres in one pass.
        leader = loop {
            batch.clear();
            while batch.len() < batch_size {
                match queue.peek() {
                    Some(top) if applied[top.index as usize] != count => {
                        batch.extend(queue.pop());
                    }
                    _ => break,
                }
            }
            if batch.is_empty() {
                match queue.peek() {
                    Some(top) => break top.index as usize,
                    None => return invalid("X: the selection queue emptied"),
                }
            }
            // Threads only pay when the batch has real work (points long out of date).
            let pending: usize = batch
                .iter()
                .map(|p| (count - applied[p.index as usize]) as usize)
                .sum();
            let catch_up_one = |p: &mut Candidate| {
                let i = p.index as usize;
                p.bound = catch_up(&view, i, applied[i] as usize, min_d2[i]);
            };
            if pending >= SERIAL_CATCH_UP {
                batch.par_iter_mut().for_each(catch_up_one);
            } else {
                batch.iter_mut().for_each(catch_up_one);
            }
            updates += batch.len();
            for p in batch.drain(..) {
                min_d2[p.index as usize] = p.bound;
                applied[p.index as usize] = count;
                queue.push(p);
            }
            if updates >= lazy_limit {
                catch_up_all(&view, &mut min_d2, &mut applied, &mut queue);
                updates = 0;
            }
        };
    }
    // The last report cannot stop anything: the selection is complete.
    progress(selected.len());
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CoreError;

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
        // Small and large selections, with a repeated block of points so that minima tie at
        // zero; the same again with full passes forced.
        for (n, d, n_select, start) in [(200, 4, 20, 5), (3000, 5, 600, 17), (64, 3, 64, 0)] {
            let mut x = random(n * d, n as u64);
            x.copy_within(0..10 * d, (n - 10) * d);
            let sel = greedy_coreset(&x, n, d, n_select, start, &|_| true).unwrap_or_default();
            assert_eq!(sel.len(), n_select);
            // A full pass after every catch-up (and after a few): the same selection.
            for limit in [1, 7] {
                let forced = greedy_coreset_with_limit(&x, n, d, n_select, start, &|_| true, limit);
                assert_eq!(forced.unwrap_or_default(), sel);
            }
            let mut min_d2 = vec![f64::INFINITY; n];
            let mut c = start;
            for &s in &sel {
                assert_eq!(s as usize, c);
                for i in 0..n {
                    let dist = exact_sq(&x[i * d..(i + 1) * d], &x[c * d..(c + 1) * d]);
                    min_d2[i] = min_d2[i].min(dist);
                }
                c = (0..n).fold(0, |b, i| if min_d2[i] > min_d2[b] { i } else { b });
            }
        }
    }

    #[test]
    fn coreset_stops_when_progress_says_so() {
        let (n, d) = (500, 3);
        let x = random(n * d, 9);
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let stop_at_128 = |done: usize| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            done < 128
        };
        let out = greedy_coreset(&x, n, d, 300, 0, &stop_at_128);
        assert!(matches!(out, Err(CoreError::InvalidArgument(m)) if m.contains("stopped")));
        // Reports at 64 and 128 selected: the second one stops it.
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
