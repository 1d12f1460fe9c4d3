//! Min-K%: the mean of the k smallest scored values of each row.

use rayon::prelude::*;

use crate::error::{invalid, CoreResult};

/// `int(n * ratio)` as Python computes it (float64 product, truncated), at least 1.
pub fn k_of(n: usize, ratio: f64) -> usize {
    let k = (n as f64 * ratio) as usize;
    k.clamp(1, n.max(1))
}

/// Mean of the k smallest scored values of each row, for each ratio: `[rows, ratios.len()]`.
///
/// `values` is `[rows, cols]`; `mask[r * cols + c] == 0` leaves a value out. The smallest
/// `k_max` values are found by partial selection and only they are sorted, so every ratio's
/// mean is a prefix sum. Every row needs at least one scored value.
pub fn min_k_means(
    values: &[f64],
    rows: usize,
    cols: usize,
    mask: Option<&[u8]>,
    ratios: &[f64],
) -> CoreResult<Vec<f64>> {
    if values.len() != rows * cols {
        return invalid(format!(
            "values: expected {rows} x {cols} entries, got {}",
            values.len()
        ));
    }
    if let Some(m) = mask {
        if m.len() != values.len() {
            return invalid(format!(
                "mask: expected {rows} x {cols} entries, got {}",
                m.len()
            ));
        }
    }
    if ratios.is_empty() {
        return invalid("ratio: give at least one ratio");
    }
    for &r in ratios {
        if !(r > 0.0 && r <= 1.0) {
            return invalid(format!("ratio: must lie in (0, 1], got {r}"));
        }
    }
    for r in 0..rows {
        let has_any = match mask {
            Some(m) => m[r * cols..(r + 1) * cols].iter().any(|&v| v != 0),
            None => cols > 0,
        };
        if !has_any {
            return invalid(format!("mask: row {r} has no scored token"));
        }
        let row = &values[r * cols..(r + 1) * cols];
        let kept_nan = match mask {
            Some(m) => row
                .iter()
                .zip(&m[r * cols..(r + 1) * cols])
                .any(|(v, &keep)| keep != 0 && v.is_nan()),
            None => row.iter().any(|v| v.is_nan()),
        };
        if kept_nan {
            return invalid(format!("values: row {r} contains NaN at a scored position"));
        }
    }
    let n_ratios = ratios.len();
    let mut out = vec![0.0f64; rows * n_ratios];
    out.par_chunks_mut(n_ratios)
        .enumerate()
        .with_min_len(16)
        .for_each_init(Vec::new, |kept: &mut Vec<f64>, (r, slot)| {
            kept.clear();
            let row = &values[r * cols..(r + 1) * cols];
            match mask {
                Some(m) => kept.extend(
                    row.iter()
                        .zip(&m[r * cols..(r + 1) * cols])
                        .filter(|(_, &keep)| keep != 0)
                        .map(|(&v, _)| v),
                ),
                None => kept.extend_from_slice(row),
            }
            let n = kept.len();
            let k_max = ratios.iter().map(|&q| k_of(n, q)).max().unwrap_or(1);
            if k_max < n {
                kept.select_nth_unstable_by(k_max - 1, f64::total_cmp);
            }
            let smallest = &mut kept[..k_max];
            smallest.sort_unstable_by(f64::total_cmp);
            for (o, &q) in slot.iter_mut().zip(ratios) {
                let k = k_of(n, q);
                *o = mean(&smallest[..k]);
            }
        });
    Ok(out)
}

/// The mean of finite values is finite: a sum past the float range is redone at the scale
/// `2^-e` with `2^e >= n` (powers of two scale exactly), where it cannot overflow.
pub fn mean(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let sum: f64 = values.iter().sum();
    if sum.is_finite() || !values.iter().all(|v| v.is_finite()) {
        return sum / n;
    }
    let scale = (values.len() as f64).log2().ceil().exp2();
    values.iter().map(|v| v / scale).sum::<f64>() / n * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_follows_python_int() {
        assert_eq!(k_of(90, 0.7), 62);
        assert_eq!(k_of(10, 0.05), 1);
        assert_eq!(k_of(10, 1.0), 10);
        assert_eq!(k_of(3, 0.3), 1); // 3 * 0.3 = 0.8999999999999999
    }

    #[test]
    fn min_k_means_with_mask() {
        let values = [5.0, 1.0, 3.0, 2.0, 9.0, -1.0, 0.5, 4.0];
        let mask = [1u8, 1, 1, 1, 1, 0, 0, 0];
        let out = min_k_means(&values, 2, 4, Some(&mask), &[0.5, 1.0]).unwrap_or_default();
        assert_eq!(out, vec![1.5, 2.75, 9.0, 9.0]);
        assert!(min_k_means(&values, 2, 4, Some(&[1, 1, 1, 1, 0, 0, 0, 0]), &[0.5]).is_err());
        assert!(min_k_means(&values, 2, 4, None, &[0.0]).is_err());
    }

    #[test]
    fn means_near_the_float_limit_stay_finite() {
        assert_eq!(mean(&[-1e308, -1e308, -1e308]), -1e308);
        assert_eq!(mean(&[f64::MAX, f64::MAX]), f64::MAX);
        assert_eq!(mean(&[-1e308, 1e308, -1e308]), -1e308 / 3.0);
        assert_eq!(mean(&[f64::NEG_INFINITY, 1.0]), f64::NEG_INFINITY);
        assert!(mean(&[f64::NEG_INFINITY, f64::INFINITY]).is_nan());
        assert_eq!(mean(&[-3.0, -1.0]), -2.0);
    }
}
