//! RsCIN: re-scoring of the image scores over a constrained image-level neighbourhood.

use rayon::prelude::*;

use crate::error::{invalid, CoreResult};
use crate::linalg::{matmul, MatRef};

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
    for (i, row) in unit.chunks_mut(d.max(1)).enumerate() {
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        if !norm.is_finite() || norm < 1e-150 {
            // Squares past f64::MAX or below the smallest normal number: the row over its largest
            // magnitude, then over that row's norm, so every row becomes a unit vector.
            let top = row.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            if top == 0.0 {
                return invalid(format!(
                    "embeddings: image {i} has an all-zero embedding (no direction to compare)"
                ));
            }
            let scaled = row
                .iter()
                .map(|v| (v / top) * (v / top))
                .sum::<f64>()
                .sqrt();
            row.iter_mut().for_each(|v| *v = *v / top / scaled);
            continue;
        }
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
            // An image pointing away from image i (negative cosine) is no neighbour: weight 0,
            // so the result stays a weighted mean of scores in [0, 1].
            let weight: f64 = order[..k].iter().map(|&j| row[j].max(0.0)).sum();
            let smoothed: f64 = order[..k].iter().map(|&j| row[j].max(0.0) * s[j]).sum();
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
    use crate::musc::random;

    #[test]
    fn rscin_with_k_one_is_min_max_normalisation() {
        let scores = [1.0, 3.0, 2.0];
        let emb = random(3 * 4, 9);
        let r = rscin(&scores, &emb, 3, 4, &[1]).unwrap();
        assert_eq!(r, vec![0.0, 1.0, 0.5]);
    }
}
