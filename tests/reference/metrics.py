"""Plain numpy / scipy oracles for the ranking metrics (brute force over thresholds)."""

import numpy as np
from scipy import ndimage


def rates_at_each_threshold(scores, labels):
    """(fpr, tpr) for the rule `score >= t` at every distinct score t, plus (0, 0)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    p, n = labels.sum(), (~labels).sum()
    fpr, tpr = [0.0], [0.0]
    for t in np.unique(scores)[::-1]:
        above = scores >= t
        tpr.append((above & labels).sum() / p)
        fpr.append((above & ~labels).sum() / n)
    return np.array(fpr), np.array(tpr)


def f1_max(scores, labels):
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    best = 0.0
    for t in np.unique(scores):
        pred = scores >= t
        tp = (pred & labels).sum()
        fp = (pred & ~labels).sum()
        fn = (~pred & labels).sum()
        if tp:
            best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


def tpr_at_fpr(scores, labels, max_fpr):
    fpr, tpr = rates_at_each_threshold(scores, labels)
    return tpr[fpr <= max_fpr].max()


def fpr_at_tpr(scores, labels, min_tpr):
    fpr, tpr = rates_at_each_threshold(scores, labels)
    ok = tpr >= min_tpr
    return fpr[ok].min() if ok.any() else 1.0


def aupro_mvtec(anomaly_maps, masks, max_fpr=0.3):
    """The MVTec AD evaluation: 8-connected regions, cumulative sums over one global sort,
    the last index of each distinct score, area up to max_fpr with interpolation."""
    anomaly_maps = np.asarray(anomaly_maps, dtype=np.float64)
    masks = np.asarray(masks).astype(bool)
    structure = np.ones((3, 3), dtype=int)
    fp_change = np.zeros(anomaly_maps.shape, dtype=np.float64)
    pro_change = np.zeros(anomaly_maps.shape, dtype=np.float64)
    n_ok = (~masks).sum()
    regions = []
    for i, mask in enumerate(masks):
        labeled, n = ndimage.label(mask, structure=structure)
        for r in range(1, n + 1):
            regions.append((i, labeled == r))
    fp_change[~masks] = 1.0 / n_ok
    for i, region in regions:
        pro_change[i][region] = 1.0 / (len(regions) * region.sum())
    flat = anomaly_maps.ravel()
    order = np.argsort(flat, kind="stable")[::-1]
    sorted_scores = flat[order]
    fprs = np.cumsum(fp_change.ravel()[order])
    pros = np.cumsum(pro_change.ravel()[order])
    keep = np.append(np.diff(sorted_scores) != 0, True)
    fprs = np.clip(fprs[keep], None, 1.0)
    pros = np.clip(pros[keep], None, 1.0)
    fprs = np.concatenate([[0.0], fprs, [1.0]])
    pros = np.concatenate([[0.0], pros, [1.0]])
    # Area up to max_fpr, interpolating at max_fpr when it is not a curve point.
    correction = 0.0
    if max_fpr not in fprs:
        ins = int(np.searchsorted(fprs, max_fpr, side="right"))
        y = pros[ins - 1] + (pros[ins] - pros[ins - 1]) * (max_fpr - fprs[ins - 1]) / (fprs[ins] - fprs[ins - 1])
        correction = 0.5 * (y + pros[ins - 1]) * (max_fpr - fprs[ins - 1])
    keep = fprs <= max_fpr
    x, y = fprs[keep], pros[keep]
    return (np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction) / max_fpr
