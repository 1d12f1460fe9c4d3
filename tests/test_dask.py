"""Dask arrays on a real two-process cluster: distributed Gaussian fits equal the in-memory fit
(and scikit-learn's estimators), streaming partial_fit equals fit over any chunking, lazy scoring
equals the Rust kernels, ranking metrics and AUPRO equal the in-memory ones (and scikit-learn)
with ties, membership statistics and Tsetlin predictions on chunks equal the in-memory ones, a
worker killed mid-job changes nothing, and bad dask input fails clearly."""

import os
import signal
import sys
import time

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

from sklearn.covariance import OAS, EmpiricalCovariance, LedoitWolf  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402

from fastcore_ad import GaussianAD, TsetlinEnsemble, TsetlinMachine, TsetlinOneVsRest, _distributed, metrics, mia, musc  # noqa: E402
from fastcore_ad.gaussian import mahalanobis, mahalanobis_per_position  # noqa: E402

# The workers are other processes: they receive this module's helpers by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

COVARIANCES = ("empirical", "ledoit_wolf", "oas")
SKLEARN = {"empirical": EmpiricalCovariance, "ledoit_wolf": LedoitWolf, "oas": OAS}


@pytest.fixture(scope="session")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def _relative(actual, expected):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-300))


def _assert_same_fit(model, reference, rtol=1e-9):
    for name in ("mean_", "covariance_", "precision_cholesky_"):
        assert _relative(getattr(model, name), getattr(reference, name)) < rtol, name
    np.testing.assert_allclose(model.shrinkage_, reference.shrinkage_, rtol=rtol, atol=1e-15)


def _correlated(rng, n, d, offset=40.0):
    mix = np.eye(d) + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d)  # correlated, well conditioned for any seed
    return rng.normal(size=(n, d)) @ mix * rng.uniform(0.5, 4.0, size=d) + offset


def _random_cuts(rng, n, parts):
    return [0, *sorted(rng.choice(np.arange(1, n), size=parts - 1, replace=False).tolist()), n]


# ------------------------------------------------------------------------------------------------
# Gaussian fits


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_partial_fit_over_any_chunking_equals_fit_and_scikit_learn(rng, covariance):
    X = _correlated(rng, 400, 12)
    reference = GaussianAD(covariance=covariance, progress=False).fit(X)
    cuts = [0, 1, *(cut + 1 for cut in _random_cuts(rng, 399, 5)[1:-1]), 400]  # a one-row chunk first
    model = GaussianAD(covariance=covariance, progress=False)
    for start, stop in zip(cuts[:-1], cuts[1:]):
        model.partial_fit(X[start:stop])
    _assert_same_fit(model, reference)
    oracle = SKLEARN[covariance]().fit(X)
    assert _relative(model.covariance_, oracle.covariance_) < 1e-9
    if covariance != "empirical":
        assert model.shrinkage_ == pytest.approx(oracle.shrinkage_, rel=1e-9)
    assert model.n_features_in_ == 12


def test_partial_fit_of_feature_maps_equals_fit(rng):
    X = rng.normal(size=(90, 3, 4, 5)).astype(np.float32) * 3.0 + 1.0
    reference = GaussianAD(progress=False).fit(X)
    model = GaussianAD(progress=False)
    for start, stop in [(0, 7), (7, 60), (60, 90)]:
        model.partial_fit(X[start:stop])
    _assert_same_fit(model, reference, rtol=1e-6)  # float32 outputs, from the same float64 statistics
    assert model.mean_.dtype == reference.mean_.dtype == np.float32


def test_partial_fit_of_levels_survives_pickling(rng):
    import pickle

    levels = [_correlated(rng, 200, 6), _correlated(rng, 200, 3, offset=-5.0)]
    reference = GaussianAD(progress=False).fit(levels)
    model = GaussianAD(progress=False).partial_fit([level[:80] for level in levels])
    model = pickle.loads(pickle.dumps(model)).partial_fit([level[80:] for level in levels])
    for level, expected in zip(model.levels_, reference.levels_):
        assert _relative(level.factor, expected.factor) < 1e-9 and _relative(level.mean, expected.mean) < 1e-9
    with pytest.raises(ValueError, match="2 feature level"):
        model.partial_fit(levels[0])
    with pytest.raises(ValueError, match="mix of"):
        GaussianAD(progress=False).partial_fit([levels[0], rng.normal(size=(20, 2, 2, 3))])


def test_partial_fit_keeps_the_power_of_two_scale(rng):
    X = _correlated(rng, 300, 6, offset=0.0) * 1e80  # fourth powers would overflow unscaled
    reference = GaussianAD(progress=False).fit(X)
    model = GaussianAD(progress=False).partial_fit(X[:100]).partial_fit(X[100:])
    _assert_same_fit(model, reference)
    with pytest.raises(ValueError, match="overflow"):  # far beyond the first chunk's scale
        model.partial_fit(X[:10] * 1e200)
    model.partial_fit(X[:50])  # the refused chunk left the stream as it was
    _assert_same_fit(model, GaussianAD(progress=False).fit(np.vstack([X, X[:50]])))


def test_partial_fit_waits_for_enough_rows_and_leaves_the_threshold_to_fit(rng):
    X = _correlated(rng, 50, 4)
    model = GaussianAD(covariance="empirical", progress=False).partial_fit(X[:1])
    assert not hasattr(model, "levels_")  # one row: nothing to fit yet, no error
    model.partial_fit(X[1:])
    assert model.decision_function(X).shape == (50,)
    with pytest.raises(Exception, match="threshold_"):
        model.predict(X)
    with pytest.raises(ValueError, match="X has 5 features, but GaussianAD is expecting 4"):
        model.partial_fit(rng.normal(size=(10, 5)))


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_dask_fit_equals_the_in_memory_fit(client, rng, covariance):
    X = _correlated(rng, 700, 10)
    reference = GaussianAD(covariance=covariance, progress=False).fit(X)
    model = GaussianAD(covariance=covariance, progress=False).fit(da.from_array(X, chunks=(97, 4)))
    _assert_same_fit(model, reference)
    assert model.threshold_ == pytest.approx(reference.threshold_, rel=1e-9)
    np.testing.assert_allclose(model.decision_scores_, reference.decision_scores_, rtol=1e-9)



def test_dask_fit_of_a_first_chunk_far_smaller_than_the_rest(client, rng):
    # The scale comes from every chunk, as in memory: squares of the later chunks would overflow
    # under the scale of a first chunk of zeros.
    X = _correlated(rng, 120, 5) * 1e150
    X[:10] = 0.0
    reference = GaussianAD(progress=False).fit(X)
    model = GaussianAD(progress=False).fit(da.from_array(X, chunks=(10, 5)))
    _assert_same_fit(model, reference)


def test_dask_fit_of_per_position_maps_too_large_is_refused_before_any_task():
    # 10,000 positions of 2,048 features: terabytes of moments, checked before the workers start.
    X = da.zeros((4, 100, 100, 2048), chunks=(1, 100, 100, 2048), dtype=np.float32)
    with pytest.raises(MemoryError, match="^X: Gaussians over 2048 features at 10000 positions"):
        GaussianAD(progress=False).fit(X)

def test_dask_fit_of_feature_maps_and_levels(client, rng):
    maps = rng.normal(size=(120, 4, 3, 6)) + 2.0
    coarse = rng.normal(size=(120, 4, 3, 2)) * 5.0  # a second level: same positions, other features
    reference = GaussianAD(progress=False).fit([maps, coarse])
    lazy = [da.from_array(maps, chunks=(25, 2, 3, 6)), da.from_array(coarse, chunks=40)]
    model = GaussianAD(progress=False).fit(lazy)
    for level, expected in zip(model.levels_, reference.levels_):
        assert _relative(level.factor, expected.factor) < 1e-9 and _relative(level.mean, expected.mean) < 1e-9
    # partial_fit accepts dask chunks too, and goes on from numpy ones
    streamed = GaussianAD(progress=False).partial_fit(maps[:30]).partial_fit(da.from_array(maps[30:], chunks=31))
    assert _relative(streamed.precision_cholesky_, GaussianAD(progress=False).fit(maps).precision_cholesky_) < 1e-9


# ------------------------------------------------------------------------------------------------
# Scoring


def test_scoring_is_lazy_and_equals_the_kernels(client, rng):
    X = _correlated(rng, 500, 8)
    model = GaussianAD(progress=False).fit(X)
    lazy = model.decision_function(da.from_array(X.astype(np.float32), chunks=(64, 3)))
    assert isinstance(lazy, da.Array) and lazy.dtype == np.float32
    np.testing.assert_allclose(lazy.compute(), model.decision_function(X.astype(np.float32)), rtol=1e-6)
    labels = model.predict(da.from_array(X, chunks=100))
    np.testing.assert_array_equal(labels.compute(), model.predict(X))

    mean, factor = model.mean_, model.precision_cholesky_
    x = da.from_array(X, chunks=50)
    distances = mahalanobis(x, mean, factor)
    np.testing.assert_allclose(distances.compute(), mahalanobis(X, mean, factor), rtol=1e-12)
    # The mean and factor are one graph key each, whatever the number of chunks.
    shared = [key for key in dict(distances.__dask_graph__()) if str(key).startswith("ndarray-")]
    assert len(shared) == 2 and x.numblocks[0] == 10


def test_per_position_scoring(client, rng):
    maps = rng.normal(size=(60, 3, 4, 5))
    model = GaussianAD(progress=False).fit(maps)
    lazy = model.decision_function(da.from_array(maps, chunks=(13, 2, 4, 5)))
    assert lazy.shape == (60, 3, 4)
    np.testing.assert_allclose(lazy.compute(), model.decision_function(maps), rtol=1e-12)
    means, factors = model.mean_.reshape(12, 5), model.precision_cholesky_
    flat = maps.reshape(60, 12, 5)
    out = mahalanobis_per_position(da.from_array(flat, chunks=7), means, factors).compute()
    np.testing.assert_allclose(out, mahalanobis_per_position(flat, means, factors), rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# Metrics


def _tied_scores(rng, n, dtype=np.float64):
    labels = rng.random(n) < 0.3
    scores = np.round(rng.normal(size=n) + 0.8 * labels, 1).astype(dtype)  # many ties
    scores[rng.random(n) < 0.05] = -0.0  # -0.0 and 0.0 tie, as in the Rust kernel
    return scores, labels


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_metrics_equal_in_memory_and_scikit_learn(client, rng, dtype, monkeypatch):
    scores, labels = _tied_scores(rng, 5003, dtype)
    lazy_scores, lazy_labels = da.from_array(scores, chunks=611), da.from_array(labels, chunks=1000)  # realigned
    options = dict(max_fprs=(0.0, 0.05, 0.3), min_tprs=(0.0, 0.5, 0.95))
    expected = metrics.evaluate(scores, labels, **options)
    actual = metrics.evaluate(lazy_scores, lazy_labels, **options)
    # The plan for large inputs (value ranges merged apart, walked with offsets), on small ones.
    monkeypatch.setattr(_distributed, "_SCORES_PER_RANGE", 700)
    in_ranges = metrics.evaluate(lazy_scores, lazy_labels, **options)
    assert actual.keys() == expected.keys() == in_ranges.keys()
    for key in expected:
        assert actual[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key
        assert in_ranges[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key
    assert actual["auroc"] == pytest.approx(roc_auc_score(labels, scores), rel=1e-9)
    assert actual["average_precision"] == pytest.approx(average_precision_score(labels, scores), rel=1e-9)
    assert metrics.f1_max(lazy_scores, lazy_labels, return_threshold=True) == pytest.approx(
        metrics.f1_max(scores, labels, return_threshold=True), rel=1e-9)
    assert metrics.tpr_at_fpr(lazy_scores, labels, 0.1) == pytest.approx(metrics.tpr_at_fpr(scores, labels, 0.1))
    assert metrics.fpr_at_tpr(lazy_scores, lazy_labels, 0.9) == pytest.approx(metrics.fpr_at_tpr(scores, labels, 0.9))


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_integer_scores_beyond_float64_precision_rank_exactly(client, rng, dtype, monkeypatch):
    """Scores that differ only past 2**53 (float64 would merge them), and the extremes of the
    type, are ranked as integers as in memory; the F1 threshold is the exact score."""
    info = np.iinfo(dtype)
    base = info.max - 40
    scores = (base + rng.integers(0, 9, 3001).astype(dtype)).astype(dtype)
    scores[rng.random(scores.size) < 0.02] = info.min
    scores[rng.random(scores.size) < 0.02] = info.max
    labels = rng.random(scores.size) < 0.4
    assert len(np.unique(scores.astype(np.float64))) < len(np.unique(scores))
    lazy = da.from_array(scores, chunks=457)
    options = dict(max_fprs=(0.0, 0.1), min_tprs=(0.5,))
    expected = metrics.evaluate(scores, labels, **options)
    assert expected["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    for per_range in (None, 500):  # one merged table; value ranges merged apart
        if per_range:
            monkeypatch.setattr(_distributed, "_SCORES_PER_RANGE", per_range)
        actual = metrics.evaluate(lazy, labels, **options)
        for key in expected:
            assert actual[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-15), (per_range, key)
        best, threshold = metrics.f1_max(lazy, labels, return_threshold=True)
        assert threshold == metrics.f1_max(scores, labels, return_threshold=True)[1]
        assert int(threshold) in set(scores.tolist())


@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_empty_chunks_add_nothing_and_thresholds_match_memory(client, dtype):
    scores = np.array([3, 1, 2, 5, 4, 0], dtype=dtype)
    labels = np.array([1, 0, 0, 1, 1, 0])
    lazy = da.from_array(scores, chunks=((3, 0, 3),))
    assert metrics.auroc(lazy, labels) == pytest.approx(metrics.auroc(scores, labels), abs=1e-15)
    best, threshold = metrics.f1_max(lazy, labels, return_threshold=True)
    want_best, want_threshold = metrics.f1_max(scores, labels, return_threshold=True)
    assert (best, threshold) == (want_best, want_threshold)
    assert type(threshold) is type(float(want_threshold))  # a float, as in memory, below 2**53


def test_metrics_of_pixel_maps_and_score_dicts(client, rng):
    scores, labels = _tied_scores(rng, 6 * 20 * 20)
    maps, masks = scores.reshape(6, 20, 20), labels.reshape(6, 20, 20)
    lazy = da.from_array(maps, chunks=(2, 20, 7))
    assert metrics.auroc(lazy, da.from_array(masks, chunks=(3, 10, 20))) == pytest.approx(
        metrics.auroc(maps, masks), rel=1e-12)
    both = metrics.average_precision({"a": lazy, "b": -lazy}, masks)
    assert both["b"] == pytest.approx(metrics.average_precision(-maps, masks), rel=1e-12)


def _masks_with_regions(rng, n, h, w):
    masks = np.zeros((n, h, w), dtype=bool)
    for image in range(n):
        for _ in range(rng.integers(0, 4)):
            r, c = rng.integers(0, h - 4), rng.integers(0, w - 4)
            masks[image, r:r + rng.integers(1, 9), c:c + rng.integers(1, 9)] = True
    masks[0, 1:4, 1:4] = True  # at least one region
    return masks


@pytest.mark.parametrize("max_fpr", [0.3, 0.02, 1.0])
def test_aupro_with_chunks_along_images(client, rng, max_fpr):
    masks = _masks_with_regions(rng, 11, 24, 20)
    maps = np.round(rng.normal(size=masks.shape) + 1.2 * masks, 1).astype(np.float32)  # ties across regions
    lazy_maps, lazy_masks = da.from_array(maps, chunks=(4, 12, 20)), da.from_array(masks, chunks=(3, 24, 20))
    assert metrics.aupro(lazy_maps, lazy_masks, max_fpr) == pytest.approx(metrics.aupro(maps, masks, max_fpr),
                                                                          rel=1e-9, abs=1e-12)
    fpr, pro = metrics.pro_curve(lazy_maps, masks, max_fpr)
    expected_fpr, expected_pro = metrics.pro_curve(maps, masks, max_fpr)
    np.testing.assert_allclose(fpr, expected_fpr, rtol=1e-12)
    np.testing.assert_allclose(pro, expected_pro, rtol=1e-9, atol=1e-12)


def test_pro_curve_tail_where_the_budget_rounds_below_an_integer(client, rng):
    # 13/45 * 45 rounds just below 13: a budget computed as a product dropped the last point.
    masks = np.zeros((1, 5, 10), bool)
    masks[0, 0, :5] = True
    maps = rng.permutation(50).astype(float).reshape(1, 5, 10)
    for max_fpr in (13 / 45, 0.3, 0.1):
        fpr, pro = metrics.pro_curve(da.from_array(maps, chunks=(1, 5, 10)), masks, max_fpr)
        want_fpr, want_pro = metrics.pro_curve(maps, masks, max_fpr)
        np.testing.assert_array_equal(fpr, want_fpr)
        np.testing.assert_array_equal(pro, want_pro)
    order = rng.permutation(100).reshape(2, 5, 10)
    two = np.concatenate([masks, masks])
    assert metrics.aupro(da.from_array(order + 2**62, chunks=(1, 5, 10)), two) == pytest.approx(
        metrics.aupro(order.astype(np.float64), two), rel=1e-12)


# ------------------------------------------------------------------------------------------------
# Membership scores and the Tsetlin Machine


def test_token_stats_and_score_logits_on_batch_chunks(client, rng):
    batch, length, vocab = 11, 9, 13
    logits = rng.normal(size=(batch, length, vocab)).astype(np.float32)
    targets = rng.integers(0, vocab, size=(batch, length - 1))
    lengths = rng.integers(1, length, size=batch)
    lazy = da.from_array(logits, chunks=(4, 5, vocab))
    for with_max in (False, True):
        expected = mia.token_stats(logits, targets, lengths, with_max=with_max)
        actual = mia.token_stats(lazy, da.from_array(targets, chunks=3), lengths, with_max=with_max)
        assert isinstance(actual.logp, da.Array) and len(actual) == len(expected)
        for got, want in zip(actual, expected):
            np.testing.assert_array_equal(got.compute(), want)  # the same kernel on the same rows
    texts = [f"sequence {i} " * (i + 1) for i in range(batch)]
    counts = rng.integers(0, 50, size=vocab)
    expected = mia.score_logits(logits, targets, lengths, texts=texts, counts=counts, ratios=(0.2, 0.5))
    actual = mia.score_logits(lazy, targets, da.from_array(lengths, chunks=5), texts=texts, counts=counts,
                              ratios=(0.2, 0.5))
    assert list(actual) == list(expected)
    for key in expected:
        np.testing.assert_array_equal(actual[key].compute(), expected[key])
    with pytest.raises(ValueError, match="expected 11 sequences"):
        mia.token_stats(lazy, targets[:5], None)
    for bad in (None, targets[0], 3):
        with pytest.raises(ValueError, match=r"^targets: expected integer token ids \[B, T\]"):
            mia.token_stats(lazy, bad)
    # Declared dtype and lengths are checked when the call is made, not when a task runs.
    for function in (mia.token_stats, mia.score_logits):
        for dtype in (np.int32, bool):
            with pytest.raises(TypeError, match=f"^logits: expected float32, float64, float16 or bfloat16, got "
                                                f"dtype {np.dtype(dtype)}"):
                function(lazy.astype(dtype), targets)
        with pytest.raises(ValueError, match=r"^targets: expected shape \[11, 9 or 8\] \(logits have 9 positions\)"):
            function(lazy, da.from_array(targets[:, :3], chunks=3))


def test_tsetlin_prediction_on_row_chunks(client, rng):
    X = rng.integers(0, 2, size=(240, 24), dtype=np.uint8)
    y = np.array(["even", "odd"])[X[:, 0] ^ X[:, 1]]
    model = TsetlinMachine(n_clauses=20, threshold=10, seed=0).fit(X, y)
    lazy = da.from_array(X, chunks=(50, 10))
    for method in ("class_sums", "decision_function", "predict"):
        result = getattr(model, method)(lazy)
        assert isinstance(result, da.Array)
        np.testing.assert_array_equal(result.compute(), getattr(model, method)(X))
    with pytest.raises(ValueError, match="X has 5 features"):
        model.predict(da.ones((4, 5)))


def test_tsetlin_ensemble_prediction_on_row_chunks(client, rng):
    X = rng.integers(0, 2, size=(240, 24), dtype=np.uint8)
    y = np.array(["a", "b", "c"])[(X[:, 0] ^ X[:, 1]) + (X[:, 2] & X[:, 3])]
    lazy = da.from_array(X, chunks=(50, 24))
    for per_machine in (None, 0.5):  # every machine on all columns, or each on its own half
        vote = TsetlinEnsemble(TsetlinMachine(n_clauses=20, threshold=10, seed=0), n_estimators=3,
                               features_per_machine=per_machine).fit(X, y)
        for method in ("votes", "decision_function", "predict"):
            result = getattr(vote, method)(lazy)
            assert isinstance(result, da.Array)
            np.testing.assert_array_equal(result.compute(), getattr(vote, method)(X))


def test_tsetlin_one_vs_rest_on_row_chunks(client, rng):
    X = rng.integers(0, 2, size=(240, 24), dtype=np.uint8)
    y = np.array(["a", "b", "c"])[(X[:, 0] ^ X[:, 1]) + (X[:, 2] & X[:, 3])]
    lazy = da.from_array(X, chunks=(50, 24))
    ovr = TsetlinOneVsRest(TsetlinMachine(n_clauses=20, threshold=10, seed=0), features_per_class=6).fit(X, y)
    for method in ("votes", "decision_function", "predict"):
        result = getattr(ovr, method)(lazy)
        assert isinstance(result, da.Array)
        np.testing.assert_array_equal(result.compute(), getattr(ovr, method)(X))
    # Fitted on the chunks, the columns are counted on the cluster: the same model.
    for k in (6, "auto"):
        here = TsetlinOneVsRest(TsetlinMachine(n_clauses=20, threshold=10, seed=0), features_per_class=k).fit(X, y)
        lazy_fit = TsetlinOneVsRest(TsetlinMachine(n_clauses=20, threshold=10, seed=0), features_per_class=k).fit(lazy, y)
        assert all(np.array_equal(a, b) for a, b in zip(lazy_fit.feature_columns_, here.feature_columns_))
        np.testing.assert_array_equal(lazy_fit.votes(X), here.votes(X))


@pytest.mark.parametrize("sparse_type", ["csr_matrix", "csr_array"])
def test_tsetlin_prediction_on_sparse_row_chunks(client, rng, sparse_type):
    sparse = pytest.importorskip("scipy.sparse")
    kind = getattr(sparse, sparse_type)
    X = (rng.random(size=(240, 24)) < 0.2).astype(np.uint8)  # mostly zeros, as sparse inputs are
    y = np.array(["even", "odd", "both"])[(X[:, 0] ^ X[:, 1]) + (X[:, 2] & X[:, 3])]
    model = TsetlinMachine(n_clauses=30, threshold=10, seed=1).fit(kind(X), y)
    for chunks in ((50, 24), (70, 10)):  # whole rows, and rows split across columns (merged per row block)
        lazy = da.from_array(X, chunks=chunks).map_blocks(kind, dtype=X.dtype, meta=kind((0, 0), dtype=X.dtype))
        for method in ("class_sums", "decision_function", "predict"):
            result = getattr(model, method)(lazy)
            assert isinstance(result, da.Array)
            np.testing.assert_array_equal(result.compute(), getattr(model, method)(kind(X)))
            np.testing.assert_array_equal(result.compute(), getattr(model, method)(X))


@pytest.mark.parametrize(("dtype", "tolerance"), [(np.float32, 1e-6), (np.float64, 1e-12)])
def test_musc_mutual_scores_over_image_blocks(client, rng, dtype, tolerance):
    patches = rng.normal(size=(6, 20, 8)).astype(dtype)
    patches[3, 7] += 4.0  # one odd patch
    for top_ratio in (0.3, 0.5, 1.0):
        expected = musc.mutual_scores(patches, top_ratio)
        lazy = musc.mutual_scores(da.from_array(patches, chunks=(2, 20, 8)), top_ratio)
        assert isinstance(lazy, da.Array)
        result = lazy.compute()
        assert result.dtype == expected.dtype and result.shape == (6, 20)
        np.testing.assert_allclose(result, expected, rtol=tolerance, atol=tolerance)
    grid = patches.reshape(6, 4, 5, 8)
    lazy = musc.mutual_scores(da.from_array(grid, chunks=(4, 2, 5, 8)), 0.3)  # uneven, split along H too
    np.testing.assert_allclose(lazy.compute(), musc.mutual_scores(grid, 0.3), rtol=tolerance, atol=tolerance)
    with pytest.raises(ValueError, match="in-memory"):
        musc.mutual_scores(da.from_array(grid, chunks=2), aligned=True)
    with pytest.raises(ValueError, match="at least 2 images"):
        musc.mutual_scores(da.from_array(patches[:1], chunks=1))
    holed = patches.copy()
    holed[5, 2, 1] = np.nan
    with pytest.raises(ValueError, match="^patches: contains NaN"):
        musc.mutual_scores(da.from_array(holed, chunks=(2, 20, 8))).compute()
    bank = musc.MuSc(degrees=(1,), progress=False).fit(grid)
    with pytest.raises(ValueError, match="^features: expected 8 channels like the bank, got 6"):
        bank.predict(da.from_array(grid[..., :6], chunks=(2, 4, 5, 6)))


@pytest.mark.parametrize(("dtype", "tolerance"), [(np.float32, 1e-6), (np.float64, 1e-12)])
def test_musc_scores_against_a_bank_over_image_blocks(client, rng, dtype, tolerance):
    bank = rng.normal(size=(7, 12, 5)).astype(dtype)
    queries = rng.normal(size=(3, 10, 5)).astype(dtype)
    queries[1, 4] += 4.0
    for top_ratio in (0.3, 0.5, 1.0):
        expected = musc.scores_against_bank(queries, bank, top_ratio)
        for lazy_queries in (queries, da.from_array(queries, chunks=(2, 10, 5))):
            lazy = musc.scores_against_bank(lazy_queries, da.from_array(bank, chunks=(3, 6, 5)), top_ratio)
            assert isinstance(lazy, da.Array)
            result = lazy.compute()
            assert result.dtype == expected.dtype and result.shape == (3, 10)
            np.testing.assert_allclose(result, expected, rtol=tolerance, atol=tolerance)
    with pytest.raises(ValueError, match="channels"):
        musc.scores_against_bank(queries, da.from_array(bank[..., :4], chunks=3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_musc_predict_on_image_chunks_equals_in_memory(client, rng, dtype):
    layers = [rng.normal(size=(7, 5, 6, 8)).astype(dtype), rng.normal(size=(7, 5, 6, 4)).astype(dtype)]
    layers[0][2, 3, 3] += 3.0
    embeddings = rng.normal(size=(7, 3))
    model = musc.MuSc(degrees=(1, 3), progress=False)
    expected = model.predict(layers, embeddings=embeddings)
    lazy = [da.from_array(layers[0], chunks=(3, 2, 6, 8)), da.from_array(layers[1], chunks=(2, 5, 6, 4))]
    result = model.predict(lazy, embeddings=embeddings)
    assert isinstance(result.patch_scores, np.ndarray) and result.patch_scores.dtype == expected.patch_scores.dtype
    for name in ("patch_scores", "image_scores_raw", "image_scores"):
        np.testing.assert_allclose(getattr(result, name), getattr(expected, name), rtol=1e-6, atol=1e-6)
    one_layer = musc.MuSc(degrees=(3,), progress=False)
    np.testing.assert_allclose(one_layer.predict(lazy[0]).patch_scores, one_layer.predict(layers[0]).patch_scores,
                               rtol=1e-6, atol=1e-6)
    model.fit([layer[:4] for layer in layers])
    against_bank = model.predict([layer[4:] for layer in lazy])
    np.testing.assert_allclose(against_bank.patch_scores, model.predict([layer[4:] for layer in layers]).patch_scores,
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="in-memory"):
        musc.MuSc(aligned=True, progress=False).predict(lazy[0])


def _load_stand_in_model():
    """The README's ``load_model`` with the offline stand-ins of test_mia (and a no-op torch
    where torch is not installed), counting the loads on the worker."""
    import contextlib  # noqa: PLC0415
    import types  # noqa: PLC0415

    try:
        import torch  # noqa: F401, PLC0415
    except ImportError:
        fake_torch = types.ModuleType("torch")
        fake_torch.no_grad = contextlib.nullcontext
        sys.modules["torch"] = fake_torch
    from tests.test_mia import _StandInModel, _StandInTokenizer  # noqa: PLC0415

    worker = distributed.get_worker()
    worker.fastcore_ad_model_loads = getattr(worker, "fastcore_ad_model_loads", 0) + 1
    return _StandInModel(), _StandInTokenizer()


def _score_partition(texts, load=_load_stand_in_model):
    """The README's pattern: the model is loaded once per worker and kept on it."""
    worker = distributed.get_worker()
    if not hasattr(worker, "fastcore_ad_model"):
        worker.fastcore_ad_model = load()
    model, tokenizer = worker.fastcore_ad_model
    scores = mia.score_texts(model, tokenizer, list(texts), batch_size=2, ratios=(0.2, 0.5))
    return [dict(zip(scores, row)) for row in zip(*scores.values())]


def test_score_texts_over_a_bag_with_the_model_loaded_once_per_worker(client, monkeypatch):
    import contextlib
    import types

    import tests.test_mia

    db = pytest.importorskip("dask.bag")
    cloudpickle.register_pickle_by_value(tests.test_mia)
    texts = [f"text number {i} with {'x' * (i % 7)} letters" for i in range(23)]
    rows = db.from_sequence(texts, npartitions=6).map_partitions(_score_partition).compute()
    loads = client.run(lambda dask_worker: getattr(dask_worker, "fastcore_ad_model_loads", 0))
    assert 1 <= sum(loads.values()) <= len(loads)  # once per worker that ran a partition, not once per partition
    if "torch" not in sys.modules:
        fake_torch = types.ModuleType("torch")
        fake_torch.no_grad = contextlib.nullcontext
        monkeypatch.setitem(sys.modules, "torch", fake_torch)
    expected = mia.score_texts(tests.test_mia._StandInModel(), tests.test_mia._StandInTokenizer(), texts,
                               batch_size=5, ratios=(0.2, 0.5))
    assert len(rows) == len(texts)
    for key, values in expected.items():
        np.testing.assert_allclose([row[key] for row in rows], values, rtol=1e-12, err_msg=key)


# ------------------------------------------------------------------------------------------------
# A lost worker and bad input


def test_bad_dask_input(client, rng):
    X = da.from_array(rng.normal(size=(100, 3)), chunks=30)
    unknown = X[X[:, 0] > 0]  # boolean indexing leaves NaN chunk sizes
    with pytest.raises(ValueError, match="unknown size"):
        GaussianAD(progress=False).fit(unknown)
    with pytest.raises(ValueError, match="unknown size"):
        metrics.auroc(unknown[:, 0], unknown[:, 1] > 0)
    model = GaussianAD(progress=False).fit(unknown.compute_chunk_sizes())  # the fix the message names
    assert model.decision_function(X).shape == (100,)
    objects = da.from_array(np.array([[1.0, 2.0]] * 4, dtype=object), chunks=2)
    with pytest.raises(TypeError, match="dtype object"):
        GaussianAD(progress=False).fit(objects)
    with pytest.raises(TypeError, match="dtype object"):
        metrics.auroc(objects[:, 0], np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="NaN or infinity"):
        GaussianAD(progress=False).fit(da.from_array(np.full((10, 2), np.nan), chunks=5))
    with pytest.raises(ValueError, match="labels must be 0/1"):
        metrics.auroc(da.from_array(np.arange(4.0), chunks=2), np.array([0, 1, 2, 1]))
    with pytest.raises(ValueError, match="only negative"):
        metrics.auroc(da.from_array(np.arange(4.0), chunks=2), np.zeros(4))
    with pytest.raises(ValueError, match="no anomalous pixel"):
        metrics.aupro(da.from_array(np.ones((2, 5, 5)), chunks=1), np.zeros((2, 5, 5), bool))
    with pytest.raises(ValueError, match="X has 4 features"):
        model.decision_function(da.ones((5, 4)))


# Last: the cluster runs on one worker until the nanny has replaced the killed one.
def _slow_copy(block):
    time.sleep(0.12)
    return block.copy()


def test_a_worker_killed_mid_job_changes_nothing(client, rng):
    X = _correlated(rng, 2000, 6)
    model = GaussianAD(progress=False).fit(X)
    expected = model.decision_function(X)
    slow = da.from_array(X, chunks=100).map_blocks(_slow_copy, dtype=X.dtype)  # 20 chunks, about 1.5 s
    before = client.run(os.getpid)
    future = client.compute(model.decision_function(slow))
    deadline, busy = time.monotonic() + 30, []
    while not busy and time.monotonic() < deadline:
        busy = [address for address, tasks in client.processing().items() if tasks]
        time.sleep(0.05)
    victim = busy[0] if busy else next(iter(before))
    time.sleep(0.3)  # some chunks done, others running on the victim
    os.kill(before[victim], signal.SIGKILL)
    np.testing.assert_allclose(future.result(timeout=120), expected, rtol=1e-12)
    assert _gone(before[victim], timeout=30)  # the worker really died (its nanny starts another)


def _gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


# ------------------------------------------------------------------------------------------------
# Chunkings and arguments the numpy paths would refuse or read differently


def _with_empty_chunks(x, keep_from, chunk):
    """``x`` as a dask array masked so that its first row chunks are empty (as a boolean mask
    after compute_chunk_sizes() leaves them)."""
    keep = np.arange(x.shape[0]) >= keep_from
    lazy = da.from_array(x, chunks=(chunk, *x.shape[1:]))[da.from_array(keep, chunks=chunk)]
    lazy.compute_chunk_sizes()
    assert 0 in lazy.chunks[0]
    return lazy


def test_empty_row_chunks_are_skipped(client, rng):
    X = rng.normal(size=(60, 5))
    model = GaussianAD(progress=False).fit(X)
    lazy = _with_empty_chunks(X, 20, 10)
    np.testing.assert_allclose(model.decision_function(lazy).compute(), model.decision_function(X[20:]), rtol=1e-12)
    np.testing.assert_allclose(GaussianAD(progress=False).fit(lazy).threshold_,
                               GaussianAD(progress=False).fit(X[20:]).threshold_, rtol=1e-9)
    bits, labels = (rng.random((60, 8)) < 0.4).astype(np.uint8), rng.integers(0, 2, 60)
    machine = TsetlinMachine(20, 10, 3.0, seed=0).fit(bits, labels, epochs=2, progress_bar=False)
    np.testing.assert_array_equal(machine.class_sums(_with_empty_chunks(bits, 20, 10)).compute(),
                                  machine.class_sums(bits[20:]))
    masks = np.zeros((6, 6, 6), bool)
    masks[:, 2:4, 1:5] = True
    maps = rng.normal(size=masks.shape) + masks
    assert metrics.aupro(_with_empty_chunks(maps, 2, 1), masks[2:]) == pytest.approx(metrics.aupro(maps[2:], masks[2:]),
                                                                                      rel=1e-12)


def test_lazy_tsetlin_results_are_the_model_as_it_was(client, rng):
    bits, labels = (rng.random((60, 8)) < 0.4).astype(np.uint8), rng.integers(0, 2, 60)
    machine = TsetlinMachine(20, 10, 3.0, seed=0).fit(bits, labels, epochs=2, progress_bar=False)
    lazy, now = machine.class_sums(da.from_array(bits, chunks=7)), machine.class_sums(bits)
    machine.partial_fit(bits, labels)
    machine.partial_fit(bits, labels)
    assert not np.array_equal(machine.class_sums(bits), now)  # the model did change
    np.testing.assert_array_equal(lazy.compute(), now)


def test_dask_scores_check_shapes_texts_and_name_chunk_rows(client, rng):
    s, y = rng.normal(size=120), rng.integers(0, 2, 120)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.auroc(da.from_array(s).reshape(2, 60), da.from_array(y).reshape(60, 2))
    logits, targets = rng.normal(size=(9, 6, 11)), rng.integers(0, 11, (9, 6))
    lazy = da.from_array(logits, chunks=(3, 6, 11))
    for texts in ("abcdefghi", ["t"] * 12, ["a"] * 4):
        with pytest.raises(ValueError, match="texts: expected 9 texts"):
            mia.score_logits(lazy, targets, texts=texts)
    bad = logits.copy()
    bad[8, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"row \[2, 2\] .* chunk that starts at row 6"):
        mia.token_stats(da.from_array(bad, chunks=(3, 6, 11)), targets[:, :5]).logp.compute()


def test_musc_on_dask_keeps_the_in_memory_dtype(client, rng):
    patches = rng.normal(size=(5, 4, 3)).astype(np.float16)
    lazy = musc.mutual_scores(da.from_array(patches, chunks=(2, 4, 3)), 0.5)
    assert lazy.dtype == musc.mutual_scores(patches, 0.5).dtype == np.float32


@pytest.mark.parametrize("scale", [1e-200, 1.0, 1e200])
def test_musc_on_dask_equals_numpy_at_any_scale(client, rng, scale):
    patches = rng.normal(size=(7, 5, 4)) * scale
    want = musc.mutual_scores(patches, 0.3)
    np.testing.assert_allclose(want / scale, musc.mutual_scores(patches / scale, 0.3), rtol=1e-12)
    np.testing.assert_allclose(musc.mutual_scores(da.from_array(patches, chunks=(3, 5, 4)), 0.3).compute(), want,
                               rtol=1e-12)
