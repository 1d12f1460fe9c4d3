//! Mutual scoring: every image against all the others, or queries against a stored bank, in
//! chunks of query images whose per-pair minima fit the memory budget.

use rayon::prelude::*;

use super::pair_minima::{key_tolerance, pair_minima, squared_norms, Scratch, TransposeCache};
use super::top_k::{check_ratio, reduce_top_k, top_k};
use crate::error::{invalid, CoreResult};
use crate::linalg::Real;

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
    let per_query = references
        .max(1)
        .saturating_mul(p.max(1))
        .saturating_mul(value_bytes.max(1));
    match max_memory {
        None => queries.max(1),
        Some(bytes) => (bytes / per_query).clamp(1, queries.max(1)),
    }
}

/// Mutual scores of `n` images of `p` patches with `c` channels (`[n, p, c]` row-major):
/// returns `[n, p]`.
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
    // Patches without channels are all at distance 0 from each other.
    if p == 0 || c == 0 {
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
    if p == 0 || m == 0 || c == 0 {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::musc::lnamd;
    use crate::musc::random;

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
    fn patches_without_channels_are_at_distance_zero() {
        let empty: [f32; 0] = [];
        let bank = scores_against_bank(&empty, 1, 1, &empty, 1, 1, 0, 1.0, None).unwrap();
        assert_eq!(bank, vec![0.0]);
        assert_eq!(
            mutual_scores(&empty, 2, 3, 0, 1.0, None).unwrap(),
            vec![0.0; 6]
        );
    }
}
