//! Gaussian anomaly detection kernels: covariance estimation (empirical, Ledoit-Wolf, OAS),
//! the precision's triangular factor, and whitened Mahalanobis distances.
//!
//! Scoring whitens `(x - mean) @ W` tile by tile and folds the squared row norm into the same
//! pass. With a triangular `W` each column block only multiplies the rows of `W` that are not
//! zero, which halves the FLOPs of a dense whitening product.

use rayon::prelude::*;

mod small_batch;

use crate::error::{invalid, CoreResult};
use crate::linalg::{matmul, matmul_parallel, precision_cholesky_lower, MatRef, Real};

/// Which part of the whitening matrix can be non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Lower,
    Upper,
    Full,
}

/// Rows per tile and whitening columns per block: the tile of centred rows (ROW_TILE x d) and
/// the block of products (ROW_TILE x COL_BLOCK) stay in L2 while the norm is accumulated.
const ROW_TILE: usize = 256;
const COL_BLOCK: usize = 128;

/// Squared whitened norms for `rows` rows of `x` (row `i` starts at `i * x_row_stride`),
/// accumulated into `out_sq` (float64). `w` is `d x k` row-major.
#[allow(clippy::too_many_arguments)]
fn whitened_squares_serial<T: Real>(
    x: &[T],
    rows: usize,
    x_row_stride: usize,
    mean: &[T],
    w: &[T],
    d: usize,
    k: usize,
    shape: Shape,
    out_sq: &mut [f64],
    centred: &mut Vec<T>,
    product: &mut Vec<T>,
) {
    centred.resize(rows * d, T::ZERO);
    for i in 0..rows {
        let src = &x[i * x_row_stride..i * x_row_stride + d];
        let dst = &mut centred[i * d..(i + 1) * d];
        for ((o, &v), &m) in dst.iter_mut().zip(src).zip(mean) {
            *o = v - m;
        }
    }
    out_sq[..rows].fill(0.0);
    if rows <= small_batch::ROWS && std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: T is f32 (checked just above), so the slices can be viewed as f32.
        let (c32, w32) = unsafe {
            (
                std::slice::from_raw_parts(centred.as_ptr() as *const f32, centred.len()),
                std::slice::from_raw_parts(w.as_ptr() as *const f32, w.len()),
            )
        };
        if small_batch::squared_norms_f32(c32, rows, d, w32, k, shape, out_sq) {
            return;
        }
    }
    product.resize(rows * COL_BLOCK, T::ZERO);
    let wm = MatRef::row_major(w, d, k);
    let xm = MatRef::row_major(&centred[..], rows, d);
    let mut j0 = 0;
    while j0 < k {
        let j1 = (j0 + COL_BLOCK).min(k);
        let (r0, r1) = match shape {
            Shape::Lower => (j0, d),
            Shape::Upper => (0, j1.min(d)),
            Shape::Full => (0, d),
        };
        let nb = j1 - j0;
        matmul(
            &mut product[..],
            nb,
            xm.block(0, rows, r0, r1),
            wm.block(r0, r1, j0, j1),
            false,
        );
        for i in 0..rows {
            let row = &product[i * nb..(i + 1) * nb];
            let mut acc = [0.0f64; 4];
            let chunks = nb / 4;
            for c in 0..chunks {
                for l in 0..4 {
                    let v = row[4 * c + l].to_f64();
                    acc[l] += v * v;
                }
            }
            let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
            for &v in &row[4 * chunks..] {
                s += v.to_f64() * v.to_f64();
            }
            out_sq[i] += s;
        }
        j0 = j1;
    }
}

/// Mahalanobis distance (not squared) of each row of `x` (`m x d`) to one Gaussian:
/// `|| (x_i - mean) @ w ||` with `w` (`d x k`) of the given shape.
pub fn mahalanobis<T: Real>(
    x: &[T],
    m: usize,
    d: usize,
    mean: &[T],
    w: &[T],
    k: usize,
    shape: Shape,
) -> Vec<T> {
    debug_assert_eq!(x.len(), m * d);
    let mut out = vec![T::ZERO; m];
    out.par_chunks_mut(ROW_TILE).enumerate().for_each_init(
        || (Vec::new(), Vec::new(), vec![0.0f64; ROW_TILE]),
        |(centred, product, sq), (tile, out_tile)| {
            let r0 = tile * ROW_TILE;
            let rows = out_tile.len();
            whitened_squares_serial(
                &x[r0 * d..],
                rows,
                d,
                mean,
                w,
                d,
                k,
                shape,
                sq,
                centred,
                product,
            );
            for (o, &s) in out_tile.iter_mut().zip(sq.iter()) {
                *o = T::from_f64(s.sqrt());
            }
        },
    );
    out
}

/// Per-position distances (PaDiM): `x` is `m x positions x d`, `means` `positions x d`,
/// `factors` `positions x d x d` (all of one `shape`); returns `m x positions`.
pub fn mahalanobis_per_position<T: Real>(
    x: &[T],
    m: usize,
    positions: usize,
    d: usize,
    means: &[T],
    factors: &[T],
    shape: Shape,
) -> Vec<T> {
    debug_assert_eq!(x.len(), m * positions * d);
    // Position-major results first (each task owns a contiguous slice), transposed at the end.
    let mut by_position = vec![T::ZERO; positions * m];
    by_position
        .par_chunks_mut(m.max(1))
        .enumerate()
        .for_each_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |(centred, product, sq): &mut (Vec<T>, Vec<T>, Vec<f64>), (p, out_p)| {
                let mean = &means[p * d..(p + 1) * d];
                let w = &factors[p * d * d..(p + 1) * d * d];
                let mut r0 = 0;
                while r0 < m {
                    let rows = (m - r0).min(ROW_TILE);
                    sq.resize(rows, 0.0);
                    let start = (r0 * positions + p) * d;
                    whitened_squares_serial(
                        &x[start..],
                        rows,
                        positions * d,
                        mean,
                        w,
                        d,
                        d,
                        shape,
                        sq,
                        centred,
                        product,
                    );
                    for (o, &s) in out_p[r0..r0 + rows].iter_mut().zip(sq.iter()) {
                        *o = T::from_f64(s.sqrt());
                    }
                    r0 += rows;
                }
            },
        );
    let mut out = vec![T::ZERO; m * positions];
    for p in 0..positions {
        for i in 0..m {
            out[i * positions + p] = by_position[p * m + i];
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimator {
    Empirical,
    LedoitWolf,
    Oas,
}

impl Estimator {
    pub fn parse(name: &str) -> CoreResult<Self> {
        match name {
            "empirical" => Ok(Estimator::Empirical),
            "ledoit_wolf" => Ok(Estimator::LedoitWolf),
            "oas" => Ok(Estimator::Oas),
            other => invalid(format!(
                "covariance: unknown estimator {other:?}; expected 'ledoit_wolf', 'empirical' or 'oas'"
            )),
        }
    }
}

/// A fitted Gaussian in float64.
#[derive(Debug, Clone)]
pub struct GaussianFit {
    pub mean: Vec<f64>,
    pub covariance: Vec<f64>,
    pub shrinkage: f64,
    pub precision_cholesky: Vec<f64>,
}

/// Mean, centred float64 copy, and the maximum-likelihood covariance `Xc^T Xc / n`.
fn centred_covariance<T: Real>(
    x: &[T],
    n: usize,
    row_stride: usize,
    d: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut mean = vec![0.0f64; d];
    for i in 0..n {
        for (acc, &v) in mean.iter_mut().zip(&x[i * row_stride..i * row_stride + d]) {
            *acc += v.to_f64();
        }
    }
    for v in mean.iter_mut() {
        *v /= n as f64;
    }
    let mut xc = vec![0.0f64; n * d];
    for i in 0..n {
        for j in 0..d {
            xc[i * d + j] = x[i * row_stride + j].to_f64() - mean[j];
        }
    }
    let mut cov = vec![0.0f64; d * d];
    let xm = MatRef::row_major(&xc[..], n, d);
    matmul_parallel(&mut cov, d, xm.transpose(), xm, false);
    let inv_n = 1.0 / n as f64;
    for i in 0..d {
        for j in 0..i {
            // Symmetrise exactly so the factorisation sees a symmetric matrix.
            let v = 0.5 * (cov[i * d + j] + cov[j * d + i]) * inv_n;
            cov[i * d + j] = v;
            cov[j * d + i] = v;
        }
        cov[i * d + i] *= inv_n;
    }
    (mean, xc, cov)
}

/// Ledoit-Wolf shrinkage intensity, in the form scikit-learn computes it (centred data).
/// `sum((X^2)^T X^2) = sum_k ||x_k||^4` is evaluated row by row, without the d x d product.
fn ledoit_wolf_shrinkage(xc: &[f64], n: usize, d: usize, cov: &[f64]) -> f64 {
    if d == 1 {
        return 0.0;
    }
    let trace: f64 = (0..d).map(|j| cov[j * d + j]).sum();
    let mu = trace / d as f64;
    let beta_raw: f64 = (0..n)
        .map(|i| {
            let s: f64 = xc[i * d..(i + 1) * d].iter().map(|v| v * v).sum();
            s * s
        })
        .sum();
    let delta_raw: f64 = cov.iter().map(|v| v * v).sum();
    let mut beta = (beta_raw / n as f64 - delta_raw) / (d as f64 * n as f64);
    let delta = (delta_raw - 2.0 * mu * trace + d as f64 * mu * mu) / d as f64;
    beta = beta.min(delta);
    if beta == 0.0 {
        0.0
    } else {
        beta / delta
    }
}

/// Oracle Approximating Shrinkage, as scikit-learn (>= 1.3) computes it.
fn oas_shrinkage(n: usize, d: usize, cov: &[f64]) -> f64 {
    if d == 1 {
        return 0.0;
    }
    let alpha: f64 = cov.iter().map(|v| v * v).sum::<f64>() / (d * d) as f64;
    let mu = (0..d).map(|j| cov[j * d + j]).sum::<f64>() / d as f64;
    let num = alpha + mu * mu;
    let den = (n as f64 + 1.0) * (alpha - mu * mu / d as f64);
    if den == 0.0 {
        1.0
    } else {
        (num / den).min(1.0)
    }
}

/// Fit one Gaussian to `n` rows (row `i` at `i * row_stride`) of `d` features.
pub fn fit<T: Real>(
    x: &[T],
    n: usize,
    row_stride: usize,
    d: usize,
    estimator: Estimator,
    reg: f64,
    what: &str,
) -> CoreResult<GaussianFit> {
    if n == 0 {
        return invalid("X: no samples to fit");
    }
    if d == 0 {
        return invalid("X: no features to fit");
    }
    if x.len() < (n - 1) * row_stride + d {
        return invalid(format!(
            "X: {} values do not hold {n} rows of {d} features",
            x.len()
        ));
    }
    let (mean, xc, mut cov) = centred_covariance(x, n, row_stride, d);
    let shrinkage = match estimator {
        Estimator::Empirical => 0.0,
        Estimator::LedoitWolf => ledoit_wolf_shrinkage(&xc, n, d, &cov),
        Estimator::Oas => oas_shrinkage(n, d, &cov),
    };
    if shrinkage != 0.0 {
        let mu = (0..d).map(|j| cov[j * d + j]).sum::<f64>() / d as f64;
        for v in cov.iter_mut() {
            *v *= 1.0 - shrinkage;
        }
        for j in 0..d {
            cov[j * d + j] += shrinkage * mu;
        }
    }
    if reg != 0.0 {
        for j in 0..d {
            cov[j * d + j] += reg;
        }
    }
    let precision_cholesky = precision_cholesky_lower(&cov, d, what)?;
    Ok(GaussianFit {
        mean,
        covariance: cov,
        shrinkage,
        precision_cholesky,
    })
}

/// Per-position fits for `x` of shape `n x positions x d`; outputs are written position-major.
pub struct PositionFits<T> {
    pub means: Vec<T>,
    pub covariances: Vec<T>,
    pub factors: Vec<T>,
    pub shrinkages: Vec<f64>,
}

pub fn fit_per_position<T: Real>(
    x: &[T],
    n: usize,
    positions: usize,
    d: usize,
    estimator: Estimator,
    reg: f64,
) -> CoreResult<PositionFits<T>> {
    type Fitted<T> = CoreResult<(Vec<T>, Vec<T>, Vec<T>, f64)>;
    if n == 0 || positions == 0 || d == 0 {
        return invalid(format!(
            "X: nothing to fit in shape [{n}, {positions}, {d}] (samples, positions, features)"
        ));
    }
    if x.len() != n * positions * d {
        return invalid(format!(
            "X: expected {} values for shape [{n}, {positions}, {d}], got {}",
            n * positions * d,
            x.len()
        ));
    }
    let results: Vec<Fitted<T>> = (0..positions)
        .into_par_iter()
        .map(|p| {
            let fit = fit(
                &x[p * d..],
                n,
                positions * d,
                d,
                estimator,
                reg,
                &format!("the covariance at position {p}"),
            )?;
            let cast = |v: &[f64]| v.iter().map(|&a| T::from_f64(a)).collect::<Vec<T>>();
            Ok((
                cast(&fit.mean),
                cast(&fit.covariance),
                cast(&fit.precision_cholesky),
                fit.shrinkage,
            ))
        })
        .collect();
    let mut out = PositionFits {
        means: Vec::with_capacity(positions * d),
        covariances: Vec::with_capacity(positions * d * d),
        factors: Vec::with_capacity(positions * d * d),
        shrinkages: Vec::with_capacity(positions),
    };
    for r in results {
        let (mean, cov, factor, shrinkage) = r?;
        out.means.extend(mean);
        out.covariances.extend(cov);
        out.factors.extend(factor);
        out.shrinkages.push(shrinkage);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_whitening_is_euclidean() {
        let (m, d) = (300, 7);
        let x: Vec<f64> = (0..m * d).map(|i| ((i * 37) % 11) as f64 - 5.0).collect();
        let mean = vec![0.5; d];
        let mut eye = vec![0.0; d * d];
        for j in 0..d {
            eye[j * d + j] = 1.0;
        }
        for shape in [Shape::Lower, Shape::Upper, Shape::Full] {
            let got = mahalanobis(&x, m, d, &mean, &eye, d, shape);
            for i in 0..m {
                let e: f64 = (0..d)
                    .map(|j| (x[i * d + j] - 0.5).powi(2))
                    .sum::<f64>()
                    .sqrt();
                assert!((got[i] - e).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn fit_then_score_training_mean_is_zero() {
        let (n, d) = (50, 4);
        let x: Vec<f64> = (0..n * d)
            .map(|i| (((i * 7919) % 101) as f64).sin())
            .collect();
        let fit = fit(&x, n, d, d, Estimator::LedoitWolf, 0.0, "cov").unwrap();
        let s = mahalanobis(
            &fit.mean,
            1,
            d,
            &fit.mean,
            &fit.precision_cholesky,
            d,
            Shape::Lower,
        );
        assert_eq!(s[0], 0.0);
        assert!(fit.shrinkage > 0.0 && fit.shrinkage <= 1.0);
    }
}
