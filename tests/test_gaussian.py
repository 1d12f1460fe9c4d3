import pickle
import threading

import numpy as np
import pytest
from scipy.linalg import cholesky
from sklearn.covariance import OAS, EmpiricalCovariance, LedoitWolf

import fastcore_ad
from fastcore_ad import GaussianAD, SingularCovarianceError, mahalanobis
from fastcore_ad.gaussian import mahalanobis_per_position
from tests.reference import gaussian as ref


def correlated(rng, n, d, dtype=np.float64):
    # Near the identity: G / sqrt(d) + I is near-singular about once in a thousand draws.
    mix = 0.3 * rng.normal(size=(d, d)) / np.sqrt(d) + np.eye(d)
    return (rng.normal(size=(n, d)) @ mix + rng.normal(size=d)).astype(dtype)


def random_gaussian(rng, d):
    a = rng.normal(size=(d, d))
    cov = a @ a.T / d + np.eye(d) * 0.5
    precision = np.linalg.inv(cov)
    return rng.normal(size=d), precision


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 2e-4)])
@pytest.mark.parametrize("m, d", [(1, 1), (5, 3), (257, 129), (600, 300)])
def test_mahalanobis_equals_quadratic_form(rng, m, d, dtype, tol):
    mean, precision = random_gaussian(rng, d)
    x = (rng.normal(size=(m, d)) * 2 + mean).astype(dtype)
    # The kernel gets the mean rounded to dtype: so does the oracle (near the mean that rounding
    # is most of the distance).
    expect = ref.mahalanobis_quadratic(x, mean.astype(dtype).astype(np.float64), precision)
    lower = np.linalg.cholesky(precision)  # precision = L @ L.T, L lower
    got = mahalanobis(x, mean.astype(dtype), lower.astype(dtype))
    assert got.dtype == dtype and got.shape == (m,)
    np.testing.assert_allclose(got, expect, rtol=tol)
    # scikit-learn's GaussianMixture convention: an upper-triangular factor.
    upper = np.linalg.inv(cholesky(np.linalg.inv(precision), lower=True)).T
    np.testing.assert_allclose(mahalanobis(x, mean.astype(dtype), upper.astype(dtype)), expect, rtol=tol)
    # A dense whitening matrix works too.
    eigenvalues, eigenvectors = np.linalg.eigh(precision)
    dense = (eigenvectors * np.sqrt(eigenvalues)).astype(dtype)
    np.testing.assert_allclose(mahalanobis(x, mean.astype(dtype), dense), expect, rtol=tol * 10)


def test_single_row_and_errors(rng):
    assert float(mahalanobis(np.array([3.0, 4.0]), np.zeros(2), np.eye(2))) == 5.0
    with pytest.raises(ValueError, match="mean"):
        mahalanobis(np.zeros((2, 3)), np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match="precision_cholesky"):
        mahalanobis(np.zeros((2, 3)), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="x: contains NaN"):
        mahalanobis(np.full((2, 3), np.nan), np.zeros(3), np.eye(3))
    bad_factor = np.eye(3)
    bad_factor[2, 1] = np.nan
    with pytest.raises(ValueError, match="precision_cholesky: contains NaN"):
        mahalanobis(np.ones((2, 3)), np.zeros(3), bad_factor)
    with pytest.raises(ValueError, match="x: contains NaN"):
        mahalanobis_per_position(np.full((2, 1, 3), np.inf), np.zeros((1, 3)), np.eye(3)[None])
    with pytest.raises(ValueError, match="x: empty"):
        mahalanobis(np.zeros((0, 3)), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="dimensions"):
        mahalanobis(np.zeros((2, 3, 1)), np.zeros(3), np.eye(3))


@pytest.mark.parametrize("estimator, peer", [("ledoit_wolf", LedoitWolf), ("empirical", EmpiricalCovariance), ("oas", OAS)])
@pytest.mark.parametrize("n, d", [(300, 40), (50, 120), (10, 1)])
def test_covariance_equals_sklearn(rng, estimator, peer, n, d):
    X = correlated(rng, n, d)
    if estimator == "empirical" and d >= n:
        with pytest.raises(SingularCovarianceError, match="reg"):
            GaussianAD(covariance=estimator).fit(X)
        return
    model = GaussianAD(covariance=estimator).fit(X)
    theirs = peer().fit(X)
    np.testing.assert_allclose(model.covariance_, theirs.covariance_, rtol=1e-6, atol=1e-12 * np.abs(theirs.covariance_).max())
    np.testing.assert_allclose(model.mean_, theirs.location_, rtol=1e-12, atol=1e-12)
    if estimator != "empirical":
        assert model.shrinkage_ == pytest.approx(theirs.shrinkage_, rel=1e-6)
    expect = np.sqrt(theirs.mahalanobis(X[:20]))
    np.testing.assert_allclose(model.decision_function(X[:20]), expect, rtol=1e-6)
    # precision = L @ L.T with L lower triangular
    L = model.precision_cholesky_
    assert not np.triu(L, 1).any()
    np.testing.assert_allclose(L @ L.T @ model.covariance_, np.eye(d), atol=1e-6)


def test_ledoit_wolf_equals_the_paper(rng):
    X = correlated(rng, 40, 15)
    cov, shrinkage = ref.ledoit_wolf(X)
    model = GaussianAD().fit(X)
    assert model.shrinkage_ == pytest.approx(shrinkage, rel=1e-9)
    np.testing.assert_allclose(model.covariance_, cov, rtol=1e-9)


def test_reg_adds_to_the_diagonal(rng):
    X = correlated(rng, 100, 8)
    plain = GaussianAD(covariance="empirical").fit(X)
    reg = GaussianAD(covariance="empirical", reg=0.5).fit(X)
    np.testing.assert_allclose(reg.covariance_, plain.covariance_ + 0.5 * np.eye(8), rtol=1e-12)


def test_singular_covariance_is_a_clear_error():
    X = np.ones((20, 3))
    X[:, 0] = np.arange(20)
    with pytest.raises(SingularCovarianceError, match="reg"):
        GaussianAD(covariance="empirical").fit(X)
    assert issubclass(SingularCovarianceError, fastcore_ad.FastcoreError)
    # Ledoit-Wolf shrinkage repairs it.
    assert np.isfinite(GaussianAD().fit(X).decision_scores_).all()


def test_npca_equals_reference(rng):
    X = correlated(rng, 400, 12)
    model = GaussianAD(covariance="empirical", npca=0.9).fit(X)
    np.testing.assert_allclose(model.decision_function(X[:50]), ref.npca_scores(X, X[:50], 0.9), rtol=1e-8)


def test_threshold_predict_and_contamination(rng):
    X = correlated(rng, 1000, 5)
    model = GaussianAD(contamination=0.05).fit(X)
    assert model.threshold_ == pytest.approx(np.quantile(model.decision_scores_, 0.95))
    assert model.predict(X).mean() == pytest.approx(0.05, abs=0.002)
    assert set(np.unique(model.predict(X))) <= {0, 1}
    np.testing.assert_array_equal(model.score_samples(X[:5]), -model.decision_function(X[:5]))


def test_levels_sum_scores(rng):
    a, b = correlated(rng, 200, 6), correlated(rng, 200, 9)
    model = GaussianAD().fit([a, b])
    single_a, single_b = GaussianAD().fit(a), GaussianAD().fit(b)
    np.testing.assert_allclose(model.decision_function([a[:7], b[:7]]),
                               single_a.decision_function(a[:7]) + single_b.decision_function(b[:7]), rtol=1e-12)
    assert isinstance(model.mean_, list) and len(model.mean_) == 2
    with pytest.raises(ValueError, match="feature level"):
        model.decision_function(a)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-8), (np.float32, 1e-3)])
def test_per_position_equals_independent_fits(rng, dtype, tol):
    n, h, w, d = 60, 3, 4, 10
    X = rng.normal(size=(n, h, w, d)).astype(dtype)
    X[..., 0] += np.arange(h * w).reshape(h, w)  # different Gaussians per position
    model = GaussianAD().fit(X)
    test = rng.normal(size=(5, h, w, d)).astype(dtype)
    scores = model.decision_function(test)
    assert scores.shape == (5, h, w) and scores.dtype == dtype
    for r in range(h):
        for c in range(w):
            lw = LedoitWolf().fit(X[:, r, c].astype(np.float64))
            np.testing.assert_allclose(scores[:, r, c], np.sqrt(lw.mahalanobis(test[:, r, c])), rtol=tol)


def test_per_position_kernel_matches_quadratic_form(rng):
    m, p, d = 300, 7, 33  # m larger than one row tile
    means = rng.normal(size=(p, d))
    precisions = [random_gaussian(rng, d)[1] for _ in range(p)]
    factors = np.stack([np.linalg.cholesky(q) for q in precisions])
    x = rng.normal(size=(m, p, d))
    got = mahalanobis_per_position(x, means, factors)
    for j in range(p):
        np.testing.assert_allclose(got[:, j], ref.mahalanobis_quadratic(x[:, j], means[j], precisions[j]), rtol=1e-9)


def test_fit_errors(rng):
    with pytest.raises(ValueError, match="covariance"):
        GaussianAD(covariance="robust").fit(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        GaussianAD().fit(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="NaN"):
        GaussianAD().fit(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="contamination"):
        GaussianAD(contamination=0.7).fit(np.zeros((5, 2)))
    model = GaussianAD().fit(correlated(rng, 50, 4))
    with pytest.raises(ValueError, match="4 features"):
        model.decision_function(np.zeros((3, 5)))
    with pytest.raises(RuntimeError, match="fit"):
        GaussianAD().decision_function(np.zeros((3, 5)))


def test_pickle_round_trip(rng):
    X = correlated(rng, 100, 6)
    model = GaussianAD().fit(X)
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.decision_function(X), model.decision_function(X))


def test_thread_count_does_not_change_results(rng):
    X = correlated(rng, 3000, 64, np.float32)
    model = GaussianAD(n_jobs=1).fit(X)
    one = model.decision_function(X)
    model.set_params(n_jobs=2)
    np.testing.assert_array_equal(one, model.decision_function(X))


def test_gil_is_released_during_scoring(rng):
    """A Python thread keeps ticking while the kernel runs, which only works if the kernel
    releases the GIL."""
    import time

    x = rng.normal(size=(20000, 256)).astype(np.float32)
    L = np.linalg.cholesky(np.eye(256) * 2.0).astype(np.float32)
    mean = np.zeros(256, np.float32)
    mahalanobis(x, mean, L, n_jobs=1)  # warm up
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    start = time.perf_counter()
    for _ in range(5):
        mahalanobis(x, mean, L, n_jobs=1)
    end = time.perf_counter()
    stop.set()
    t.join()
    during = [s for s in ticks if start < s < end]
    # With the GIL held for the whole call the ticker would get ~one tick per call.
    assert len(during) > 20


@pytest.mark.gpu
def test_cuda_mahalanobis_matches_rust(rng):
    import cupy as cp

    for dtype, tol in ((np.float32, 1e-4), (np.float64, 1e-10)):
        mean, precision = random_gaussian(rng, 130)
        L = np.linalg.cholesky(precision).astype(dtype)
        x = rng.normal(size=(1000, 130)).astype(dtype)
        cpu = mahalanobis(x, mean.astype(dtype), L)
        gpu = mahalanobis(cp.asarray(x), cp.asarray(mean.astype(dtype)), cp.asarray(L))
        assert isinstance(gpu, cp.ndarray) and gpu.dtype == dtype
        np.testing.assert_allclose(gpu.get(), cpu, rtol=tol)
        np.testing.assert_allclose(gpu.get(), ref.mahalanobis_quadratic(x, mean, precision), rtol=tol)


@pytest.mark.gpu
def test_cuda_per_position_matches_rust(rng):
    import cupy as cp

    X = rng.normal(size=(40, 3, 5, 20)).astype(np.float32)
    model = GaussianAD().fit(X)
    test = rng.normal(size=(9, 3, 5, 20)).astype(np.float32)
    cpu = model.decision_function(test)
    gpu = model.decision_function(cp.asarray(test))
    np.testing.assert_allclose(gpu.get(), cpu, rtol=1e-4)


def test_per_position_means_of_the_wrong_shape_are_rejected(rng):
    x = rng.normal(size=(5, 9, 4))
    factors = np.broadcast_to(np.eye(4), (9, 4, 4)).copy()
    # [3, 12] holds 9 * 4 values but is not [9, 4]: it used to be reshaped silently.
    for means in (np.zeros((3, 12)), np.zeros(36)):
        with pytest.raises(ValueError, match="means"):
            mahalanobis_per_position(x, means, factors)
    maps = x.reshape(5, 3, 3, 4)
    np.testing.assert_allclose(mahalanobis_per_position(maps, np.zeros((3, 3, 4)), factors),
                               np.linalg.norm(maps, axis=-1))


def test_infinite_reg_is_a_value_error(rng):
    with pytest.raises(ValueError, match="reg"):
        GaussianAD(reg=np.inf, progress=False).fit(rng.normal(size=(20, 3)))


def test_levels_with_different_sample_counts_are_rejected(rng):
    with pytest.raises(ValueError, match=r"X\[1\]: expected 20 samples"):
        GaussianAD(progress=False).fit([rng.normal(size=(20, 3)), rng.normal(size=(25, 2))])
    model = GaussianAD(progress=False).fit([rng.normal(size=(20, 3)), rng.normal(size=(20, 2))])
    with pytest.raises(ValueError, match=r"X\[1\]: expected 2 samples"):
        model.decision_function([rng.normal(size=(2, 3)), rng.normal(size=(3, 2))])


def test_feature_maps_on_different_grids_are_rejected_and_bad_scoring_input_is_named(rng):
    fine, coarse = rng.normal(size=(40, 8, 8, 3)), rng.normal(size=(40, 4, 4, 3))
    grid = r"X\[1\]: feature maps on a 4 x 4 grid, X\[0\] on 8 x 8"
    with pytest.raises(ValueError, match=grid):
        GaussianAD(progress=False).fit([fine, coarse])
    with pytest.raises(ValueError, match=grid):
        GaussianAD(progress=False).partial_fit([fine, coarse])
    streaming = GaussianAD(progress=False).partial_fit([fine, fine])
    with pytest.raises(ValueError, match=r"X\[1\]: expected feature maps of \(8, 8\)"):
        streaming.partial_fit([fine, coarse])
    # Scoring names the argument the caller passed: X, or X[i] of levels.
    model = GaussianAD(progress=False).fit(rng.normal(size=(30, 4)))
    for bad, message in ((np.nan, "X: contains NaN"), (1e200, "X: the distances overflow")):
        with pytest.raises(ValueError, match=message):
            model.decision_function(np.full((2, 4), bad))
    maps = GaussianAD(progress=False).fit([fine, fine])
    with pytest.raises(ValueError, match=r"X\[1\]: contains NaN"):
        maps.decision_function([fine[:2], np.full((2, 8, 8, 3), np.nan)])


def test_distances_past_the_float64_range_are_an_error_not_inf():
    # The squared norm of [1e200, 1e200] overflows float64: it used to come back as inf.
    with pytest.raises(ValueError, match="overflow"):
        mahalanobis(np.array([[1e200, 1e200]]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="overflow"):
        mahalanobis_per_position(np.full((1, 1, 2), 1e200), np.zeros((1, 2)), np.eye(2)[None])
    big = mahalanobis(np.float32([[1e38, 1e38]]), np.zeros(2, np.float32), np.eye(2, dtype=np.float32))
    np.testing.assert_allclose(big, [np.sqrt(2) * 1e38], rtol=1e-6)


def test_nested_lists_of_rows_are_one_array_not_levels(rng):
    """``fit(X.tolist())`` is ``fit(X)`` (scikit-learn's list input); a list of 2-D arrays stays a
    list of levels; a model refuses the other kind with a message saying which it was fitted on."""
    X, Y = rng.normal(size=(40, 3)), rng.normal(size=(7, 3))
    model = GaussianAD().fit(X)
    from_lists = GaussianAD().fit(X.tolist())
    np.testing.assert_array_equal(from_lists.decision_function(Y.tolist()), model.decision_function(Y))
    np.testing.assert_array_equal(model.decision_function(tuple(map(tuple, Y))), model.decision_function(Y))
    with pytest.raises(ValueError, match="fitted on one array"):
        model.decision_function([Y])
    two = GaussianAD().fit([X, X[:, :2]])
    np.testing.assert_allclose(two.decision_function([Y, Y[:, :2]]),
                               model.decision_function(Y) + GaussianAD().fit(X[:, :2]).decision_function(Y[:, :2]))
    with pytest.raises(ValueError, match="fitted on a list of 2 feature levels"):
        two.decision_function(Y)
    with pytest.raises(ValueError, match="expected 2 feature level"):
        two.decision_function([Y])


def test_singular_covariance_advice_fits_the_estimator():
    constant = np.ones((10, 3))
    for covariance in ("ledoit_wolf", "oas"):
        with pytest.raises(SingularCovarianceError, match=f"covariance='{covariance}' shrinks") as info:
            GaussianAD(covariance=covariance).fit(constant)
        assert "use a shrinkage estimator" not in str(info.value)
    with pytest.raises(SingularCovarianceError, match="use a shrinkage estimator"):
        GaussianAD(covariance="empirical").fit(constant)
    assert np.isfinite(GaussianAD(reg=1e-3).fit(constant).decision_function(constant)).all()


def test_fits_whose_matrices_cannot_fit_are_refused_before_allocating(rng, monkeypatch):
    """A few rows of many features imply d x d matrices: with 10 MiB free, 2,000 features (five
    32 MB matrices) or 300 features at 16 positions are a MemoryError naming X, raised before
    the core allocates anything (a failed allocation there would abort the process)."""
    from fastcore_ad import ClassGaussian, _memory

    wide = rng.normal(size=(3, 2000)).astype(np.float32)
    maps = rng.normal(size=(3, 4, 4, 300)).astype(np.float32)
    small = rng.normal(size=(40, 6))
    monkeypatch.setattr(_memory, "available_bytes", lambda: 10 << 20)
    with pytest.raises(MemoryError, match="X: a Gaussian over 2000 features: needs"):
        GaussianAD(covariance="ledoit_wolf").fit(wide)
    with pytest.raises(MemoryError, match="X: Gaussians over 300 features at 16 positions: needs"):
        GaussianAD(covariance="ledoit_wolf").fit(maps)
    with pytest.raises(MemoryError, match=r"X\[1\]: a Gaussian over 2000 features"):
        GaussianAD(covariance="ledoit_wolf").fit([small, wide])
    for tied, what in ((True, "a tied covariance"), (False, "2 covariances")):
        with pytest.raises(MemoryError, match=f"X: {what} over 2000 features: needs"):
            ClassGaussian(tied=tied).fit(np.vstack([wide, wide]), [0, 0, 0, 1, 1, 1])
    # what fits still fits, and gives the plain numpy estimate
    model = GaussianAD(covariance="empirical").fit(small)
    np.testing.assert_allclose(model.covariance_, np.cov(small, rowvar=False, bias=True), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("covariance", ["empirical", "ledoit_wolf", "oas"])
def test_fits_at_the_ends_of_the_float_range(covariance, rng):
    """A regulariser under tiny features, and features near 1e300, used to overflow the scaled
    fit (a singular-covariance error, NaN covariances); subnormal features without a regulariser
    have no representable precision and say so."""
    import warnings

    from fastcore_ad import ClassGaussian

    X, T, y = rng.normal(size=(60, 4)), rng.normal(size=(6, 4)), rng.integers(0, 2, 60)
    base = GaussianAD(covariance=covariance, reg=0.0).fit(X).decision_function(T)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for scale in (1e-200, 1e300):
            model = GaussianAD(covariance=covariance, reg=0.0).fit(X * scale)
            np.testing.assert_allclose(model.decision_function(T * scale), base, rtol=1e-9)
            assert not np.isnan(model.covariance_).any()
        # reg = 1 on features of 1e-200: the covariance is reg * I to float64 precision.
        tiny = GaussianAD(covariance=covariance, reg=1.0).fit(X * 1e-200)
        want = np.linalg.norm(T * 1e-200 - X.mean(axis=0) * 1e-200, axis=1)
        np.testing.assert_allclose(tiny.decision_function(T * 1e-200), want, rtol=1e-9, atol=0)
        np.testing.assert_array_equal(ClassGaussian(covariance=covariance).fit(X * 1e-200, y).predict(T * 1e-200),
                                      ClassGaussian(covariance=covariance).fit(X, y).predict(T))
    with pytest.raises(ValueError, match="X: features this small .* add reg > 0"):
        GaussianAD(covariance=covariance, reg=0.0).fit(X * 1e-310)


def test_a_failed_refit_keeps_the_fitted_gaussian(rng):
    X = rng.normal(size=(40, 4))
    model = GaussianAD(progress=False).fit(X)
    before = model.decision_function(X)
    with pytest.raises(ValueError, match=r"X\[1\]: need at least 2 samples"):
        model.fit([X, X[:1]])
    np.testing.assert_array_equal(model.decision_function(X), before)
