//! Shared dense linear algebra: a float trait, a safe wrapper over the `gemm` crate, and the
//! float64 factorisations the Gaussian fit needs (Cholesky, triangular inverse).

use crate::error::{CoreError, CoreResult};

/// The two float types every kernel supports.
pub trait Real:
    Copy
    + Send
    + Sync
    + PartialOrd
    + 'static
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::AddAssign
{
    const ZERO: Self;
    const ONE: Self;
    fn to_f64(self) -> f64;
    fn from_f64(x: f64) -> Self;
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x
    }
}

/// A strided read-only matrix view: element (i, j) is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }
    pub fn transpose(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
    /// Rows [r0, r1) and columns [c0, c1).
    pub fn block(self, r0: usize, r1: usize, c0: usize, c1: usize) -> Self {
        debug_assert!(r0 <= r1 && r1 <= self.rows && c0 <= c1 && c1 <= self.cols);
        let offset = if r1 > r0 && c1 > c0 {
            r0 * self.row_stride + c0 * self.col_stride
        } else {
            0
        };
        MatRef {
            data: &self.data[offset.min(self.data.len())..],
            rows: r1 - r0,
            cols: c1 - c0,
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }
    fn last_index(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
        }
    }
}

/// `dst[m x n] (row-major, row stride dst_rs) = a @ b`, or `+= a @ b` when `accumulate`.
/// Single-threaded: callers parallelise over tiles.
pub fn matmul<T: Real>(
    dst: &mut [T],
    dst_rs: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    accumulate: bool,
) {
    matmul_with(dst, dst_rs, a, b, accumulate, gemm::Parallelism::None)
}

/// As [`matmul`], spread over the current rayon pool: for one large product (a covariance, a
/// factorisation's trailing update) rather than many tiles.
pub fn matmul_parallel<T: Real>(
    dst: &mut [T],
    dst_rs: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    accumulate: bool,
) {
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    matmul_with(dst, dst_rs, a, b, accumulate, parallelism)
}

fn matmul_with<T: Real>(
    dst: &mut [T],
    dst_rs: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "matmul: inner dimensions differ");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        m == 0 || n == 0 || (m - 1) * dst_rs + n <= dst.len(),
        "matmul: destination too small"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(T::ZERO);
            }
        }
        return;
    }
    assert!(
        a.last_index() < a.data.len() && b.last_index() < b.data.len(),
        "matmul: view out of bounds"
    );
    // SAFETY: every index the product touches was bounds-checked above through the views'
    // extents; the destination does not alias the inputs (it is a distinct &mut slice).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Accumulator lanes of [`sq_distance_lanes`]: one AVX-512 register of float32.
pub const LANES: usize = 16;

/// Squared distance accumulated in the element type over 16 independent lanes (no bounds
/// checks, so it vectorises when inlined into code compiled for AVX2 / AVX-512), the lanes and
/// the tail summed in float64.
#[inline(always)]
pub fn sq_distance_lanes<T: Real>(a: &[T], b: &[T]) -> f64 {
    let mut lanes = [T::ZERO; LANES];
    let mut a_chunks = a.chunks_exact(LANES);
    let mut b_chunks = b.chunks_exact(LANES);
    for (ac, bc) in (&mut a_chunks).zip(&mut b_chunks) {
        for ((acc, &x), &y) in lanes.iter_mut().zip(ac).zip(bc) {
            let d = x - y;
            *acc += d * d;
        }
    }
    let mut s: f64 = lanes.iter().map(|v| v.to_f64()).sum();
    for (&x, &y) in a_chunks.remainder().iter().zip(b_chunks.remainder()) {
        let d = (x - y).to_f64();
        s += d * d;
    }
    s
}

#[inline]
pub fn dot_f64(a: &[f64], b: &[f64]) -> f64 {
    // Four independent accumulators so the compiler can vectorise and pipeline the adds.
    let mut acc = [0.0f64; 4];
    let chunks = a.len() / 4;
    for c in 0..chunks {
        for l in 0..4 {
            acc[l] += a[4 * c + l] * b[4 * c + l];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for i in 4 * chunks..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// Block size of the factorisations: the diagonal block and panel stay in L1/L2 while the
/// trailing update, where the O(d^3) work is, runs through the GEMM kernel.
const FACTOR_BLOCK: usize = 64;

/// Lower Cholesky factor of a symmetric positive definite `d x d` row-major matrix, in place
/// (right-looking, blocked). Fails with `Singular` when a pivot is not clearly positive
/// relative to the largest diagonal entry.
pub fn cholesky_lower_in_place(a: &mut [f64], d: usize, what: &str) -> CoreResult<()> {
    let max_diag = (0..d).map(|i| a[i * d + i].abs()).fold(0.0f64, f64::max);
    let tol = max_diag * 1e-12;
    let mut panel: Vec<f64> = Vec::new();
    let mut k0 = 0;
    while k0 < d {
        let k1 = (k0 + FACTOR_BLOCK).min(d);
        // Diagonal block, then the panel below it, both against columns k0..k1 only (the
        // earlier columns were folded in by previous trailing updates).
        for i in k0..d {
            let j_end = if i < k1 { i + 1 } else { k1 };
            for j in k0..j_end {
                let (head, tail) = a.split_at_mut(i * d);
                let s = if j < i {
                    let row_j = &head[j * d + k0..j * d + j];
                    tail[j] - dot_f64(&tail[k0..j], row_j)
                } else {
                    tail[i] - dot_f64(&tail[k0..i], &tail[k0..i])
                };
                if j == i {
                    if s.is_nan() || s <= tol {
                        return Err(CoreError::Singular(format!(
                            "{what} is singular or nearly singular (pivot {s:.3e} at index {i}, largest \
                             diagonal {max_diag:.3e}); add regularisation (reg > 0) or use a shrinkage \
                             estimator (covariance='ledoit_wolf' or 'oas')"
                        )));
                    }
                    tail[i] = s.sqrt();
                } else {
                    tail[j] = s / head[j * d + j];
                }
            }
        }
        // Trailing update A22 -= L21 L21^T through the GEMM kernel.
        let rest = d - k1;
        if rest > 0 {
            let nb = k1 - k0;
            panel.clear();
            panel.extend((k1..d).flat_map(|i| a[i * d + k0..i * d + k1].iter().map(|v| -v)));
            let l21: Vec<f64> = (k1..d)
                .flat_map(|i| a[i * d + k0..i * d + k1].iter().copied())
                .collect();
            let neg = MatRef::row_major(&panel[..], rest, nb);
            let pos = MatRef::row_major(&l21[..], rest, nb).transpose();
            matmul_parallel(&mut a[k1 * d + k1..], d, neg, pos, true);
        }
        k0 = k1;
    }
    for i in 0..d {
        a[i * d + i + 1..(i + 1) * d].fill(0.0);
    }
    Ok(())
}

/// Inverse of a lower-triangular `d x d` matrix (blocked forward substitution; the products
/// with the already-inverted block rows run through the GEMM kernel).
pub fn lower_triangular_inverse(c: &[f64], d: usize) -> Vec<f64> {
    let mut x = vec![0.0f64; d * d];
    let mut rhs: Vec<f64> = Vec::new();
    let mut i0 = 0;
    while i0 < d {
        let i1 = (i0 + FACTOR_BLOCK).min(d);
        let nb = i1 - i0;
        // rhs = E_I - C[I, 0..i0] @ X[0..i0, 0..i0], over columns 0..i1.
        rhs.clear();
        rhs.resize(nb * i1, 0.0);
        if i0 > 0 {
            let neg_c: Vec<f64> = (i0..i1)
                .flat_map(|i| c[i * d..i * d + i0].iter().map(|v| -v))
                .collect();
            let xm = MatRef {
                data: &x[..],
                rows: i0,
                cols: i0,
                row_stride: d,
                col_stride: 1,
            };
            matmul_parallel(
                &mut rhs[..],
                i1,
                MatRef::row_major(&neg_c[..], nb, i0),
                xm,
                false,
            );
        }
        for r in 0..nb {
            rhs[r * i1 + i0 + r] += 1.0;
        }
        // Solve C_II Y = rhs row by row (forward substitution within the block).
        for r in 0..nb {
            let i = i0 + r;
            let (done, current) = rhs.split_at_mut(r * i1);
            let row = &mut current[..i1];
            for q in 0..r {
                let coef = c[i * d + i0 + q];
                if coef != 0.0 {
                    let prev = &done[q * i1..(q + 1) * i1];
                    for (v, &p) in row.iter_mut().zip(prev) {
                        *v -= coef * p;
                    }
                }
            }
            let inv = 1.0 / c[i * d + i];
            for v in row.iter_mut() {
                *v *= inv;
            }
            x[i * d..i * d + i1].copy_from_slice(row);
        }
        i0 = i1;
    }
    x
}

/// Lower-triangular `L` with `L @ L.T == inverse(cov)`, from a symmetric positive definite `cov`.
///
/// Factor the reversed matrix `J cov J = C C^T` (J reverses the index order); then
/// `L = J C^{-T} J` is lower triangular and `L L^T = cov^{-1}`. Working on the covariance (not
/// an explicit inverse) keeps the condition number at that of `cov`.
pub fn precision_cholesky_lower(cov: &[f64], d: usize, what: &str) -> CoreResult<Vec<f64>> {
    let mut c = vec![0.0f64; d * d];
    for i in 0..d {
        for j in 0..d {
            c[i * d + j] = cov[(d - 1 - i) * d + (d - 1 - j)];
        }
    }
    cholesky_lower_in_place(&mut c, d, what)?;
    let cinv = lower_triangular_inverse(&c, d);
    // L[i][j] = C^{-T}[d-1-i][d-1-j] = C^{-1}[d-1-j][d-1-i]
    let mut l = vec![0.0f64; d * d];
    for i in 0..d {
        for j in 0..=i {
            l[i * d + j] = cinv[(d - 1 - j) * d + (d - 1 - i)];
        }
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(d: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        let mut rnd = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        let a: Vec<f64> = (0..d * d).map(|_| rnd()).collect();
        let mut s = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                s[i * d + j] = (0..d).map(|k| a[i * d + k] * a[j * d + k]).sum::<f64>();
            }
            s[i * d + i] += 0.5;
        }
        s
    }

    #[test]
    fn precision_factor_inverts_covariance() {
        for d in [1usize, 2, 5, 17, 64, 65, 150] {
            let cov = spd(d, d as u64);
            let l = precision_cholesky_lower(&cov, d, "cov").unwrap();
            // precision = L L^T, then cov @ precision == I
            let mut precision = vec![0.0; d * d];
            for k in 0..d {
                for j in 0..d {
                    precision[k * d + j] = (0..d).map(|t| l[k * d + t] * l[j * d + t]).sum();
                }
            }
            for i in 0..d {
                for j in 0..d {
                    let v: f64 = (0..d).map(|k| cov[i * d + k] * precision[k * d + j]).sum();
                    let expect = if i == j { 1.0 } else { 0.0 };
                    assert!((v - expect).abs() < 1e-9, "d={d} ({i},{j}) {v}");
                }
                for j in i + 1..d {
                    assert_eq!(l[i * d + j], 0.0);
                }
            }
        }
    }

    #[test]
    fn singular_matrix_is_reported() {
        let cov = vec![1.0, 1.0, 1.0, 1.0];
        assert!(matches!(
            precision_cholesky_lower(&cov, 2, "cov"),
            Err(CoreError::Singular(_))
        ));
    }

    #[test]
    fn matmul_matches_naive() {
        let (m, k, n) = (7, 13, 5);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.5).collect();
        let mut c = vec![0.0f32; m * n];
        matmul(
            &mut c,
            n,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            false,
        );
        for i in 0..m {
            for j in 0..n {
                let e: f32 = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
                assert!((c[i * n + j] - e).abs() < 1e-4);
            }
        }
    }
}
