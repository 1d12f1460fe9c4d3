import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from fastcore_ad import _core, metrics
from tests.reference import metrics as ref


def draw(rng, n, dtype, ties):
    scores = rng.integers(0, max(2, n // 4), n).astype(dtype) if ties else rng.normal(size=n).astype(dtype)
    labels = rng.integers(0, 2, n)
    labels[0], labels[-1] = 0, 1
    return scores, labels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n", [2, 3, 17, 1000, 65_537])
def test_auroc_and_ap_equal_sklearn(rng, n, dtype, ties):
    scores, labels = draw(rng, n, dtype, ties)
    assert metrics.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9, rel=0)
    assert metrics.average_precision(scores, labels) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-9, rel=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=2, max_size=40), st.randoms(use_true_random=False))
def test_threshold_metrics_equal_brute_force(values, random):
    scores = np.array(values, dtype=np.float64) / 3.0
    labels = np.array([random.randint(0, 1) for _ in values])
    labels[0], labels[-1] = 0, 1
    assert metrics.f1_max(scores, labels) == pytest.approx(ref.f1_max(scores, labels), abs=1e-12)
    for limit in (0.0, 0.05, 0.3, 1.0):
        assert metrics.tpr_at_fpr(scores, labels, limit) == pytest.approx(ref.tpr_at_fpr(scores, labels, limit))
    for need in (0.5, 0.95, 1.0):
        assert metrics.fpr_at_tpr(scores, labels, need) == pytest.approx(ref.fpr_at_tpr(scores, labels, need))
    assert metrics.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_evaluate_matches_single_metrics(rng):
    scores, labels = draw(rng, 5000, np.float64, True)
    r = metrics.evaluate(scores, labels, max_fprs=(0.05, 0.01), min_tprs=(0.95,))
    assert r["auroc"] == metrics.auroc(scores, labels)
    assert r["average_precision"] == metrics.average_precision(scores, labels)
    assert r["f1_max"] == metrics.f1_max(scores, labels)
    assert r["tpr@fpr=0.05"] == metrics.tpr_at_fpr(scores, labels, 0.05)
    assert r["tpr@fpr=0.01"] == metrics.tpr_at_fpr(scores, labels, 0.01)
    assert r["fpr@tpr=0.95"] == metrics.fpr_at_tpr(scores, labels, 0.95)


def test_all_equal_scores_and_bool_labels():
    labels = np.array([True, False, True, False, False])
    assert metrics.auroc(np.full(5, 3.0), labels) == 0.5
    assert metrics.average_precision(np.full(5, 3.0), labels) == pytest.approx(0.4)
    value, threshold = metrics.f1_max(np.full(5, 3.0), labels, return_threshold=True)
    assert threshold == 3.0 and value == pytest.approx(2 * 2 / (2 * 2 + 3))


def test_dict_of_scores_gives_dict(rng):
    scores, labels = draw(rng, 200, np.float64, False)
    out = metrics.auroc({"a": scores, "b": -scores}, labels)
    assert out["a"] == pytest.approx(1 - out["b"])


def test_roc_curve_matches_sklearn(rng):
    from sklearn.metrics import roc_curve

    scores, labels = draw(rng, 500, np.float64, True)
    fpr, tpr, thr = metrics.roc_curve(scores, labels)
    f2, t2, th2 = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2)
    np.testing.assert_allclose(tpr, t2)
    np.testing.assert_array_equal(thr[1:], th2[1:])


@pytest.mark.parametrize("bad, message", [
    (dict(scores=[0.1, 0.2], labels=[0, 1, 1]), "differ in length"),
    (dict(scores=[0.1, 0.2], labels=[1, 1]), "only positive"),
    (dict(scores=[0.1, 0.2], labels=[0, 0]), "only negative"),
    (dict(scores=[0.1, np.nan], labels=[0, 1]), "NaN"),
    (dict(scores=[], labels=[]), "empty"),
    (dict(scores=[0.1, 0.2], labels=[0, 2]), "0/1"),
])
def test_bad_input_raises(bad, message):
    with pytest.raises(ValueError, match=message):
        metrics.auroc(bad["scores"], bad["labels"])


def test_rate_limits_are_checked():
    with pytest.raises(ValueError, match="max_fpr"):
        metrics.tpr_at_fpr([0.1, 0.2], [0, 1], max_fpr=1.5)


def random_masks(rng, n, h, w):
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        for _ in range(rng.integers(0, 4)):
            r, c = rng.integers(0, h), rng.integers(0, w)
            masks[i, r:r + rng.integers(1, 6), c:c + rng.integers(1, 6)] = True
        if rng.random() < 0.3:  # scattered single pixels: diagonal (8-connected) neighbours
            masks[i] |= rng.random((h, w)) < 0.02
    masks[0, 0, 0] = True
    return masks


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_fpr", [0.3, 0.05, 1.0])
@pytest.mark.parametrize("quantised", [False, True])
def test_aupro_equals_mvtec_evaluation(rng, dtype, max_fpr, quantised):
    masks = random_masks(rng, 5, 23, 31)
    maps = rng.random(masks.shape) + 0.7 * masks * rng.random(masks.shape)
    if quantised:  # many ties
        maps = np.round(maps * 8) / 8
    maps = maps.astype(dtype)
    expect = ref.aupro_mvtec(maps, masks, max_fpr)
    assert metrics.aupro(maps, masks, max_fpr) == pytest.approx(expect, abs=1e-6)


def test_aupro_diagonal_pixels_form_one_region():
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True
    maps = np.zeros((1, 4, 4))
    maps[0, 0, 0] = 1.0  # half of the single 8-connected region
    # One region: PRO reaches 0.5 at FPR 0; then (1, 1).
    assert metrics.aupro(maps, masks, 0.3) == pytest.approx(ref.aupro_mvtec(maps, masks, 0.3), abs=1e-12)
    fpr, pro = metrics.pro_curve(maps, masks, 1.0)
    assert pro[1] == pytest.approx(0.5)


def test_aupro_errors():
    with pytest.raises(ValueError, match="no anomalous"):
        metrics.aupro(np.zeros((1, 3, 3)), np.zeros((1, 3, 3), bool))
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.aupro(np.zeros((1, 3, 3)), np.zeros((1, 3, 4), bool))
    with pytest.raises(ValueError, match="NaN"):
        metrics.aupro(np.full((1, 3, 3), np.nan), np.ones((1, 3, 3), bool))


def test_aupro_of_integer_maps_beyond_float64_keeps_their_order(rng):
    masks = np.zeros((2, 6, 6), bool)
    masks[0, 1:3, 1:3] = masks[1, 3:5, 0:4] = True
    order = rng.permutation(72).reshape(2, 6, 6)
    for max_fpr in (0.3, 1.0):
        want = metrics.aupro(order.astype(np.float64), masks, max_fpr)
        # float64 would round every value to 2**62: all ties.
        assert metrics.aupro(order + 2**62, masks, max_fpr) == want
        np.testing.assert_array_equal(metrics.pro_curve(order + 2**62, masks, max_fpr)[1],
                                      metrics.pro_curve(order.astype(np.float64), masks, max_fpr)[1])


def test_scores_and_labels_pair_by_shape_and_huge_integer_views_fail_fast():
    with pytest.raises(ValueError, match=r"differ in shape: \(2, 3\) != \(3, 2\)"):
        metrics.auroc(np.arange(6.0).reshape(2, 3), np.array([[0, 1], [0, 1], [0, 1]]))
    # A column of labels pairs with a row of scores.
    assert metrics.auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([[0], [0], [1], [1]])) == 0.75
    # 2**40 integer scores from a broadcast view: a MemoryError before scanning them.
    n = 2**40
    with pytest.raises(MemoryError, match="scores"):
        metrics.auroc(np.broadcast_to(np.int64(7), (n,)), np.broadcast_to(np.uint8(1), (n,)))


def test_ragged_scores_and_rates_given_as_text_are_named():
    with pytest.raises(ValueError, match="scores: not a rectangular array"):
        metrics.auroc([[0.1, 0.2], [0.3]], [0, 1, 1])
    with pytest.raises(TypeError, match="max_fpr"):
        metrics.tpr_at_fpr([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0], "0.5")


def test_n_jobs_is_checked_on_every_path():
    da = pytest.importorskip("dask.array")
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    maps = np.arange(9.0).reshape(1, 3, 3)
    masks = maps > 5
    for s, y, m, k in ((scores, labels, maps, masks), (da.from_array(scores), labels, da.from_array(maps), masks)):
        with pytest.raises(ValueError, match="n_jobs"):
            metrics.auroc(s, y, n_jobs=0)
        with pytest.raises(TypeError, match="n_jobs"):
            metrics.evaluate(s, y, n_jobs="x")
        with pytest.raises(ValueError, match="n_jobs"):
            metrics.aupro(m, k, n_jobs=0)
        with pytest.raises(ValueError, match="n_jobs"):
            metrics.pro_curve(m, k, n_jobs=0)


def test_huge_thread_count_is_capped_not_spawned():
    # n_jobs=10**6 used to try to start a million OS threads (the call never returned).
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    assert metrics.auroc(scores, labels, n_jobs=10**6) == 0.75
    assert _core.resolve_threads(10**6) <= 4 * (os.cpu_count() or 1)


def test_rates_given_as_one_number_or_not_a_number():
    scores, labels = [0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]
    r = metrics.evaluate(scores, labels, max_fprs=0.5, min_tprs=1.0)
    assert r["tpr@fpr=0.5"] == 1.0 and r["fpr@tpr=1"] == 0.5
    with pytest.raises(TypeError, match="max_fpr"):
        metrics.tpr_at_fpr(scores, labels, max_fpr="a")
    with pytest.raises(TypeError, match="min_tpr"):
        metrics.fpr_at_tpr(scores, labels, min_tpr=None)


def test_thread_counts_past_64_bits_are_saturated():
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    assert metrics.auroc(scores, labels, n_jobs=2**70) == 0.75
    assert metrics.auroc(scores, labels, n_jobs=-(2**70)) == 0.75
    assert _core.resolve_threads(-(2**70)) == 1
    with pytest.raises(TypeError, match="n_jobs"):
        metrics.auroc(scores, labels, n_jobs=1.5)


def test_fpr_at_tpr_zero_is_the_curve_origin(rng):
    """roc_curve starts at (0, 0): a required TPR of 0 costs no false positives."""
    scores = rng.normal(size=50)
    labels = rng.integers(0, 2, size=50)
    labels[:2] = (0, 1)
    fpr, tpr, _ = metrics.roc_curve(scores, labels)
    assert metrics.fpr_at_tpr(scores, labels, min_tpr=0) == 0.0 == fpr[tpr >= 0].min()
    assert metrics.evaluate(scores, labels, min_tprs=0.0)["fpr@tpr=0"] == 0.0


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_integer_scores_beyond_float64_precision_keep_their_order(dtype, rng):
    """Scores that differ only past 2**53 (float64 would merge them) are ranked as integers,
    as scikit-learn ranks them; the F1 threshold is the exact score."""
    n = int(rng.integers(4, 300))
    base = np.int64(2**62) if dtype is np.int64 else np.uint64(2**63 + 2**62)
    offsets = rng.integers(0, 8, n)
    offsets[:2] = [0, 7]  # at least two integers, however small n
    scores = (base + offsets.astype(dtype)).astype(dtype)  # 8 values, one float64 value
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    assert len(np.unique(scores.astype(np.float64))) == 1 < len(np.unique(scores))
    assert metrics.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert metrics.average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    best, threshold = metrics.f1_max(scores, labels, return_threshold=True)
    assert threshold in set(scores.tolist())
    predicted = scores >= threshold
    tp = np.count_nonzero(predicted & (labels == 1))
    assert best == pytest.approx(2 * tp / (np.count_nonzero(predicted) + np.count_nonzero(labels)), abs=1e-12)
    _, _, thresholds = metrics.roc_curve(scores, labels)
    assert len(thresholds) == len(np.unique(scores)) + 1


def test_evaluate_refuses_rates_that_name_the_same_key():
    s, y = np.array([.9, .8, .7, .1, .5, .3]), np.array([1, 0, 1, 0, 0, 1])
    with pytest.raises(ValueError, match="max_fprs: .* repeated keys"):
        metrics.evaluate(s, y, max_fprs=(0.3333332, 0.3333334))
    r = metrics.evaluate(s, y, max_fprs=(0.333, 0.334))
    assert r["tpr@fpr=0.333"] == metrics.tpr_at_fpr(s, y, 0.333) and r["tpr@fpr=0.334"] == metrics.tpr_at_fpr(s, y, 0.334)


def test_length_mismatch_is_reported_before_converting_a_huge_input():
    # 2**38 labels as a broadcast view: converting them first would ask for 256 GiB.
    huge = np.broadcast_to(np.int64(1), (2**38,))
    with pytest.raises(ValueError, match="differ in length: 4 != 274877906944"):
        metrics.auroc(np.arange(4.0), huge)
