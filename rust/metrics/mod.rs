//! Ranking metrics from one sort: ROC / PR curves, AUROC, average precision, F1-max,
//! TPR at a fixed FPR, and the MVTec AD per-region overlap (AUPRO).
//!
//! Scores become order-preserving `u64` keys (sign-flipped IEEE bits), so sorting is an integer
//! sort; positives and negatives are sorted apart and merged while walking the thresholds,
//! which groups ties exactly as scikit-learn does (one curve point per distinct score).

use rayon::prelude::*;

mod radix;
use radix::{radix_sort, radix_sort_parallel};

use crate::error::{invalid, CoreResult};
use crate::linalg::Real;

/// Order-preserving key: `a < b` as floats iff `key(a) < key(b)`. -0.0 and 0.0 share a key.
#[inline(always)]
pub fn sort_key(x: f64) -> u64 {
    let bits = (x + 0.0).to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1u64 << 63)
    }
}

#[inline(always)]
pub fn key_to_f64(k: u64) -> f64 {
    let bits = if k >> 63 == 1 { k & !(1u64 << 63) } else { !k };
    f64::from_bits(bits)
}

/// The ROC curve at every distinct score, in decreasing score order (without the (0, 0) start).
#[derive(Debug, Clone, Default)]
pub struct Curve {
    pub false_positives: Vec<u64>,
    pub true_positives: Vec<u64>,
    pub thresholds: Vec<f64>,
    pub positives: u64,
    pub negatives: u64,
}

/// Order-preserving 32-bit key of a float32 score (float32 scores sort in half the passes).
#[inline(always)]
fn sort_key32(x: f32) -> u32 {
    let bits = (x + 0.0).to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | (1u32 << 31)
    }
}

/// Walk positives and negatives (each sorted ascending by key) from the top, calling
/// `point(tp, fp, score)` once per distinct score.
fn merge_walk<K: Copy + Ord>(
    pos: &[K],
    neg: &[K],
    score_of: impl Fn(K) -> f64,
    mut point: impl FnMut(u64, u64, f64),
) {
    let (mut i, mut j) = (pos.len(), neg.len());
    let (mut tp, mut fp) = (0u64, 0u64);
    while i > 0 || j > 0 {
        let top = match (i > 0, j > 0) {
            (true, true) => pos[i - 1].max(neg[j - 1]),
            (true, false) => pos[i - 1],
            _ => neg[j - 1],
        };
        while i > 0 && pos[i - 1] == top {
            i -= 1;
            tp += 1;
        }
        while j > 0 && neg[j - 1] == top {
            j -= 1;
            fp += 1;
        }
        point(tp, fp, score_of(top));
    }
}

/// The keys of the positives and of the negatives, each sorted ascending.
fn sorted_by_class<S: Real, K: radix::Keyed + Ord>(
    scores: &[S],
    labels: &[u8],
    n_pos: usize,
    key: impl Fn(S) -> K,
) -> (Vec<K>, Vec<K>) {
    let mut pos = Vec::with_capacity(n_pos);
    let mut neg = Vec::with_capacity(scores.len() - n_pos);
    for (&s, &l) in scores.iter().zip(labels) {
        if l != 0 {
            pos.push(key(s))
        } else {
            neg.push(key(s))
        }
    }
    rayon::join(
        || radix_sort_parallel(&mut pos),
        || radix_sort_parallel(&mut neg),
    );
    (pos, neg)
}

/// Split by label into key vectors, sort both, and stream the curve points in decreasing score
/// order. Returns (positives, negatives). Inputs are validated by the caller.
pub fn walk_curve<S: Real>(
    scores: &[S],
    labels: &[u8],
    point: impl FnMut(u64, u64, f64),
) -> (u64, u64) {
    debug_assert_eq!(scores.len(), labels.len());
    let n_pos = labels
        .par_iter()
        .with_min_len(1 << 16)
        .filter(|&&l| l != 0)
        .count();
    let n_neg = scores.len() - n_pos;
    if std::mem::size_of::<S>() == 4 {
        let (pos, neg) = sorted_by_class(scores, labels, n_pos, |s| sort_key32(s.to_f64() as f32));
        let to_score =
            |k: u32| f32::from_bits(if k >> 31 == 1 { k & !(1u32 << 31) } else { !k }) as f64;
        merge_walk(&pos, &neg, to_score, point);
    } else {
        let (pos, neg) = sorted_by_class(scores, labels, n_pos, |s| sort_key(s.to_f64()));
        merge_walk(&pos, &neg, key_to_f64, point);
    }
    (n_pos as u64, n_neg as u64)
}

/// Build the whole curve (for plotting or export).
pub fn curve<S: Real>(scores: &[S], labels: &[u8]) -> Curve {
    let mut c = Curve::default();
    let (p, n) = walk_curve(scores, labels, |tp, fp, t| {
        c.true_positives.push(tp);
        c.false_positives.push(fp);
        c.thresholds.push(t);
    });
    c.positives = p;
    c.negatives = n;
    c
}

/// Everything the binary metrics need, computed from one curve.
#[derive(Debug, Clone)]
pub struct BinarySummary {
    pub auroc: f64,
    pub average_precision: f64,
    pub f1_max: f64,
    pub f1_threshold: f64,
    pub tpr_at_fpr: Vec<f64>,
    pub fpr_at_tpr: Vec<f64>,
}

/// All binary metrics from one sorted walk.
pub fn summarize<S: Real>(
    scores: &[S],
    labels: &[u8],
    max_fprs: &[f64],
    min_tprs: &[f64],
) -> BinarySummary {
    // Trapezoids on integer counts: one rounding at the end.
    let mut twice_area: u128 = 0;
    let mut ap_sum = 0.0f64; // sum of (tp - prev_tp) * precision, divided by P at the end
    let mut f1_best = (0u64, 1u64); // best tp / (tp + fp + P) as a fraction
    let mut f1_threshold = f64::INFINITY;
    let (mut prev_tp, mut prev_fp) = (0u64, 0u64);
    let mut points: Vec<(u64, u64)> = Vec::new(); // (tp, fp) for the rate queries, decimated
    let p_total = labels.iter().filter(|&&l| l != 0).count() as u64;
    let (p, n) = walk_curve(scores, labels, |tp, fp, threshold| {
        twice_area += (fp - prev_fp) as u128 * (tp + prev_tp) as u128;
        if tp > prev_tp {
            ap_sum += (tp - prev_tp) as f64 * (tp as f64 / (tp + fp) as f64);
        }
        // f1 = 2 tp / (tp + fp + P); compare fractions exactly in integers.
        if tp > 0
            && (tp as u128) * (f1_best.1 as u128)
                > (f1_best.0 as u128) * ((tp + fp + p_total) as u128)
        {
            f1_best = (tp, tp + fp + p_total);
            f1_threshold = threshold;
        }
        if !max_fprs.is_empty() || !min_tprs.is_empty() {
            points.push((tp, fp));
        }
        prev_tp = tp;
        prev_fp = fp;
    });
    let mut tpr_at = vec![0.0f64; max_fprs.len()];
    // The curve starts at (fpr, tpr) = (0, 0), above every score: a required TPR of 0 is met there.
    let mut fpr_at: Vec<f64> = min_tprs
        .iter()
        .map(|&need| if need <= 0.0 { 0.0 } else { 1.0 })
        .collect();
    for &(tp, fp) in &points {
        let (tpr, fpr) = (tp as f64 / p as f64, fp as f64 / n as f64);
        for (out, &limit) in tpr_at.iter_mut().zip(max_fprs) {
            if fpr <= limit && tpr > *out {
                *out = tpr;
            }
        }
        for (out, &need) in fpr_at.iter_mut().zip(min_tprs) {
            if tpr >= need && fpr < *out {
                *out = fpr;
            }
        }
    }
    BinarySummary {
        auroc: twice_area as f64 / (2.0 * p as f64 * n as f64),
        average_precision: ap_sum / p as f64,
        f1_max: if f1_best.0 == 0 {
            0.0
        } else {
            2.0 * f1_best.0 as f64 / f1_best.1 as f64
        },
        f1_threshold,
        tpr_at_fpr: tpr_at,
        fpr_at_tpr: fpr_at,
    }
}

/// 8-connected components of one binary mask (`h x w`); labels start at `first_label`,
/// background is `u32::MAX`. Returns the component sizes.
fn label_components(
    mask: &[u8],
    h: usize,
    w: usize,
    first_label: u32,
    labels: &mut [u32],
) -> Vec<u64> {
    let mut sizes = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    labels.fill(u32::MAX);
    for start in 0..h * w {
        if mask[start] == 0 || labels[start] != u32::MAX {
            continue;
        }
        let label = first_label + sizes.len() as u32;
        let mut size = 0u64;
        labels[start] = label;
        stack.push(start);
        while let Some(at) = stack.pop() {
            size += 1;
            let (r, c) = ((at / w) as isize, (at % w) as isize);
            for dr in -1isize..=1 {
                for dc in -1isize..=1 {
                    let (rr, cc) = (r + dr, c + dc);
                    if rr < 0 || cc < 0 || rr >= h as isize || cc >= w as isize {
                        continue;
                    }
                    let nb = rr as usize * w + cc as usize;
                    if mask[nb] != 0 && labels[nb] == u32::MAX {
                        labels[nb] = label;
                        stack.push(nb);
                    }
                }
            }
        }
        sizes.push(size);
    }
    sizes
}

/// A float32 key in the high half and a region id in the low half; sorts by the key alone.
#[derive(Clone, Copy, Default)]
struct PackedEntry(u64);

impl radix::Keyed for PackedEntry {
    #[inline(always)]
    fn key(&self) -> u64 {
        self.0 >> 32
    }
}

/// The pixels that can matter for the PRO curve up to `max_fpr`, as (key, image, pixel):
/// those scoring at least the normal pixel at which the FPR first exceeds `max_fpr` (with a
/// margin of one rank against float rounding at the boundary).
fn select_entries(
    total: usize,
    masks: &[u8],
    n_images: usize,
    hw: usize,
    n_ok: usize,
    max_fpr: f64,
    key: &(impl Fn(usize, usize) -> u64 + Sync),
) -> Vec<(u64, usize, usize)> {
    debug_assert_eq!(total, n_images * hw);
    let needed = ((max_fpr * n_ok as f64).floor() as usize).saturating_add(2);
    let cutoff = if needed >= n_ok {
        0u64
    } else {
        let mut normal_keys: Vec<u64> = (0..total)
            .into_par_iter()
            .filter(|&at| masks[at] == 0)
            .map(|at| key(at / hw, at % hw))
            .collect();
        let rank = n_ok - needed; // ascending index of the needed-th largest
        let (_, kth, _) = normal_keys.select_nth_unstable(rank);
        *kth
    };
    (0..n_images)
        .into_par_iter()
        .flat_map_iter(|i| {
            (0..hw).filter_map(move |p| {
                let k = key(i, p);
                (k >= cutoff).then_some((k, i, p))
            })
        })
        .collect()
}

/// The PRO curve points (fpr, pro) up to and including the first point past `max_fpr`,
/// starting at (0, 0), as the MVTec AD evaluation defines them.
pub fn pro_curve<S: Real>(
    maps: &[S],
    masks: &[u8],
    n_images: usize,
    h: usize,
    w: usize,
    max_fpr: f64,
) -> CoreResult<(Vec<f64>, Vec<f64>)> {
    let hw = h * w;
    debug_assert_eq!(maps.len(), n_images * hw);
    // Components per image (parallel), then global region ids.
    let per_image: Vec<(Vec<u32>, Vec<u64>)> = (0..n_images)
        .into_par_iter()
        .map(|i| {
            let mut labels = vec![u32::MAX; hw];
            let sizes = label_components(&masks[i * hw..(i + 1) * hw], h, w, 0, &mut labels);
            (labels, sizes)
        })
        .collect();
    let mut offsets = Vec::with_capacity(n_images);
    let mut region_weight: Vec<f64> = Vec::new();
    for (_, sizes) in &per_image {
        offsets.push(region_weight.len() as u32);
        region_weight.extend(sizes.iter().map(|&s| 1.0 / s as f64));
    }
    let n_regions = region_weight.len();
    let n_ok = masks.iter().filter(|&&m| m == 0).count();
    if n_regions == 0 {
        return invalid("masks: no anomalous pixel in any mask, the PRO curve is undefined");
    }
    if n_ok == 0 {
        return invalid("masks: every pixel is anomalous, the false positive rate is undefined");
    }
    let pixel_region = |i: usize, p: usize| {
        let label = per_image[i].0[p];
        if label == u32::MAX {
            u32::MAX
        } else {
            label + offsets[i]
        }
    };
    let entries: Vec<(u64, u32)> = if std::mem::size_of::<S>() == 4 {
        // float32: a 32-bit key and the region packed in one u64 (half the sort traffic).
        let keys = |i: usize, p: usize| sort_key32(maps[i * hw + p].to_f64() as f32) as u64;
        let mut packed: Vec<PackedEntry> =
            select_entries(maps.len(), masks, n_images, hw, n_ok, max_fpr, &keys)
                .into_iter()
                .map(|(key, i, p)| PackedEntry(key << 32 | pixel_region(i, p) as u64))
                .collect();
        radix_sort(&mut packed);
        packed
            .iter()
            .rev()
            .map(|e| (e.0 >> 32, e.0 as u32))
            .collect()
    } else {
        let keys = |i: usize, p: usize| sort_key(maps[i * hw + p].to_f64());
        let mut pairs: Vec<(u64, u32)> =
            select_entries(maps.len(), masks, n_images, hw, n_ok, max_fpr, &keys)
                .into_iter()
                .map(|(key, i, p)| (key, pixel_region(i, p)))
                .collect();
        radix_sort(&mut pairs);
        pairs.reverse();
        pairs
    };
    let mut fprs = vec![0.0f64];
    let mut pros = vec![0.0f64];
    let (mut fp, mut pro_sum) = (0u64, 0.0f64);
    let mut at = 0;
    while at < entries.len() {
        let key = entries[at].0;
        while at < entries.len() && entries[at].0 == key {
            let region = entries[at].1;
            if region == u32::MAX {
                fp += 1;
            } else {
                pro_sum += region_weight[region as usize];
            }
            at += 1;
        }
        let fpr = (fp as f64 / n_ok as f64).min(1.0);
        fprs.push(fpr);
        pros.push((pro_sum / n_regions as f64).min(1.0));
        if fpr > max_fpr {
            break;
        }
    }
    if *fprs.last().unwrap_or(&0.0) <= max_fpr {
        // Every pixel was walked: the curve ends at (1, 1) as in the reference evaluation.
        fprs.push(1.0);
        pros.push(1.0);
    }
    Ok((fprs, pros))
}

/// Area under (x, y) up to `x_max`, interpolating linearly at `x_max` (MVTec AD convention).
pub fn partial_area(x: &[f64], y: &[f64], x_max: f64) -> f64 {
    let mut area = 0.0;
    for i in 1..x.len() {
        if x[i] <= x_max {
            area += 0.5 * (y[i] + y[i - 1]) * (x[i] - x[i - 1]);
        } else {
            if x[i - 1] < x_max {
                let y_interp =
                    y[i - 1] + (y[i] - y[i - 1]) * (x_max - x[i - 1]) / (x[i] - x[i - 1]);
                area += 0.5 * (y_interp + y[i - 1]) * (x_max - x[i - 1]);
            }
            break;
        }
    }
    area
}

pub fn aupro<S: Real>(
    maps: &[S],
    masks: &[u8],
    n_images: usize,
    h: usize,
    w: usize,
    max_fpr: f64,
) -> CoreResult<f64> {
    let (fprs, pros) = pro_curve(maps, masks, n_images, h, w, max_fpr)?;
    Ok(partial_area(&fprs, &pros, max_fpr) / max_fpr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_preserve_order() {
        let xs = [
            -f64::INFINITY,
            -3.5,
            -1e-300,
            -0.0,
            0.0,
            1e-300,
            2.0,
            f64::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(sort_key(w[0]) <= sort_key(w[1]));
            assert_eq!(key_to_f64(sort_key(w[1])), w[1] + 0.0);
        }
        assert_eq!(sort_key(-0.0), sort_key(0.0));
    }

    #[test]
    fn perfect_and_inverted_rankings() {
        let scores = [0.1f64, 0.2, 0.8, 0.9];
        let s = summarize(&scores, &[0, 0, 1, 1], &[0.0], &[1.0]);
        assert_eq!(s.auroc, 1.0);
        assert_eq!(s.average_precision, 1.0);
        assert_eq!(s.f1_max, 1.0);
        assert_eq!(s.tpr_at_fpr, vec![1.0]);
        assert_eq!(s.fpr_at_tpr, vec![0.0]);
        let s = summarize(&scores, &[1, 1, 0, 0], &[], &[]);
        assert_eq!(s.auroc, 0.0);
    }

    #[test]
    fn all_tied_scores_give_half() {
        let s = summarize(&[0.5f32; 6], &[1, 0, 1, 0, 0, 0], &[], &[]);
        assert_eq!(s.auroc, 0.5);
        assert!((s.average_precision - 2.0 / 6.0).abs() < 1e-15);
    }

    #[test]
    fn components_are_eight_connected() {
        #[rustfmt::skip]
        let mask = [1u8, 0, 0,
                    0, 1, 0,
                    0, 0, 0];
        let mut labels = [0u32; 9];
        assert_eq!(label_components(&mask, 3, 3, 0, &mut labels), vec![2]);
        #[rustfmt::skip]
        let mask = [1u8, 0, 1,
                    0, 0, 0,
                    1, 1, 0];
        assert_eq!(label_components(&mask, 3, 3, 0, &mut labels), vec![1, 1, 2]);
    }

    #[test]
    fn aupro_of_perfect_map_is_one() {
        let masks = [0u8, 0, 1, 1, 0, 0, 0, 1, 0];
        let maps: Vec<f64> = masks.iter().map(|&m| m as f64).collect();
        let a = aupro(&maps, &masks, 1, 3, 3, 0.3).unwrap();
        assert!((a - 1.0).abs() < 1e-12, "{a}");
    }
}
