"""Regression tests for wrong answers, panics and races found by hostile use: each compares with an
independent oracle (numpy / scikit-learn) or asserts the clear error that replaced a panic."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fastcore_ad import GaussianAD, _core, gaussian, musc
from fastcore_ad.tsetlin import TsetlinMachine


def _per_position_oracle(x, means, factors):
    return np.linalg.norm(np.einsum("mpd,pdk->mpk", x.astype(np.float64) - means, factors.astype(np.float64)), axis=2)


@pytest.mark.parametrize("layout", ["upper", "full"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_position_distances_take_any_factor_layout(layout, dtype, rng):
    """scikit-learn's precisions_cholesky_ is upper triangular; dense whitening matrices work too."""
    m, positions, d = 6, 4, 140
    x = rng.normal(size=(m, positions, d)).astype(dtype)
    means = rng.normal(size=(positions, d)).astype(dtype)
    factors = []
    for _ in range(positions):
        w = rng.normal(size=(d, d)) / np.sqrt(d)
        if layout == "upper":
            w = np.triu(w) + np.eye(d)
        factors.append(w)
    factors = np.stack(factors).astype(dtype)
    got = gaussian.mahalanobis_per_position(x, means, factors)
    want = _per_position_oracle(x, means, factors)
    np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("covariance", ["oas", "ledoit_wolf", "empirical"])
@pytest.mark.parametrize("magnitude", [1e-80, 1e77, 1e150])
def test_gaussian_fit_is_scale_invariant(covariance, magnitude, rng):
    from sklearn.covariance import OAS, LedoitWolf

    X = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    small = GaussianAD(covariance=covariance, reg=0.0).fit(X)
    big = GaussianAD(covariance=covariance, reg=0.0).fit(X * magnitude)
    assert big.shrinkage_ == pytest.approx(small.shrinkage_, rel=1e-12, abs=1e-15)
    if covariance != "empirical":
        reference = (OAS if covariance == "oas" else LedoitWolf)().fit(X).shrinkage_
        assert big.shrinkage_ == pytest.approx(reference, rel=1e-9)
    Y = rng.normal(size=(20, 6))
    np.testing.assert_allclose(big.decision_function(Y * magnitude), small.decision_function(Y), rtol=1e-9)


@pytest.mark.parametrize("dtype,magnitude", [(np.float32, 1e20), (np.float32, 1e30), (np.float64, 1e160),
                                             (np.float64, 1e200)])
def test_musc_scores_stay_exact_at_large_magnitudes(dtype, magnitude, rng):
    x = rng.normal(size=(4, 6, 5))
    want = musc.mutual_scores(x, 0.5) * magnitude  # distances scale exactly
    got = musc.mutual_scores((x * magnitude).astype(dtype), 0.5)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-5 if dtype == np.float32 else 1e-12)
    bank = rng.normal(size=(3, 7, 5))
    want_b = musc.scores_against_bank(x, bank, 0.5) * magnitude
    got_b = musc.scores_against_bank((x * magnitude).astype(dtype), (bank * magnitude).astype(dtype), 0.5)
    np.testing.assert_allclose(got_b.astype(np.float64), want_b, rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_musc_distances_past_the_float_range_are_an_error():
    x = np.zeros((3, 2, 4), dtype=np.float32)
    x[0, 0, :] = 3e38
    x[1, 0, :] = -3e38
    with pytest.raises(ValueError, match="patches: the distances overflow"):
        musc.mutual_scores(x, 0.5)


F32 = np.float32
CORE_BAD_CALLS = [
    ("mahalanobis 1-D x", lambda: _core.mahalanobis(np.zeros(3, F32), np.zeros(3, F32), np.eye(3, dtype=F32), "lower")),
    ("mahalanobis short factor", lambda: _core.mahalanobis(np.zeros((2, 3), F32), np.zeros(3, F32),
                                                           np.zeros((2, 3), F32), "lower")),
    ("mahalanobis short mean", lambda: _core.mahalanobis(np.zeros((2, 3), F32), np.zeros(2, F32),
                                                         np.eye(3, dtype=F32), "lower")),
    ("per position 2-D x", lambda: _core.mahalanobis_per_position(np.zeros((2, 3), F32), np.zeros((1, 3), F32),
                                                                  np.zeros((1, 3, 3), F32), "lower")),
    ("per position short factors", lambda: _core.mahalanobis_per_position(
        np.zeros((2, 2, 3), F32), np.zeros((2, 3), F32), np.zeros((1, 3, 3), F32), "lower")),
    ("fit_gaussian 1-D", lambda: _core.fit_gaussian(np.zeros(5), "empirical", 0.1)),
    ("fit_gaussian_per_position 2-D", lambda: _core.fit_gaussian_per_position(np.zeros((5, 3)), "empirical", 0.1)),
    ("aupro 2-D maps", lambda: _core.aupro(np.zeros((4, 4)), np.zeros(16, np.uint8), 0.3)),
    ("aupro short masks", lambda: _core.aupro(np.zeros((1, 4, 4)), np.zeros(15, np.uint8), 0.3)),
    ("pro_curve short masks", lambda: _core.pro_curve(np.zeros((1, 4, 4)), np.zeros(3, np.uint8), 0.3)),
    ("binary_summary mismatched", lambda: _core.binary_summary(np.zeros(5), np.zeros(4, np.uint8), [], [])),
    ("curve_counts mismatched", lambda: _core.curve_counts(np.zeros(5), np.zeros(6, np.uint8))),
    ("token_stats long targets", lambda: _core.token_stats(np.zeros((1, 2, 3), F32), np.zeros((1, 3), np.int64))),
    ("token_stats short mask", lambda: _core.token_stats(np.zeros((1, 2, 3), F32), np.zeros((1, 2), np.int64),
                                                         np.ones(1, np.uint8))),
    ("min_k_means short mask", lambda: _core.min_k_means(np.zeros((2, 3)), [0.5], np.ones(5, np.uint8))),
]


@pytest.mark.parametrize("case", range(len(CORE_BAD_CALLS)), ids=[c[0] for c in CORE_BAD_CALLS])
def test_core_entry_points_raise_instead_of_panicking(case):
    _, call = CORE_BAD_CALLS[case]
    with pytest.raises(ValueError):
        call()


def test_concurrent_training_and_prediction_do_not_panic(rng):
    X = (rng.random((300, 64)) < 0.2).astype(np.uint8)
    y = rng.integers(0, 2, size=300)
    model = TsetlinMachine(50, 10, 3.0, seed=0).fit(X, y, progress_bar=False)
    errors = []

    def train():
        try:
            for _ in range(5):
                model.partial_fit(X, y)
        except Exception as exc:  # noqa: BLE001 - any exception is the failure reported below
            errors.append(exc)

    def predict():
        try:
            for _ in range(20):
                model.decision_function(X)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=train)] + [threading.Thread(target=predict) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def _saved_model(tmp_path, rng, n_features=70):
    X = (rng.random((80, n_features)) < 0.3).astype(np.uint8)
    y = rng.integers(0, 3, size=80)
    model = TsetlinMachine(12, 5, 3.0, seed=0).fit(X, y, progress_bar=False)
    path = tmp_path / "model.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return model, arrays, X


def _write(path, arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


@pytest.mark.parametrize("defect", ["nan_weights", "huge_weights", "one_class", "duplicate_classes", "2d_classes",
                                    "bits_past_features", "wrong_shape", "bomb"])
def test_loading_a_defective_model_is_a_clear_error(defect, tmp_path, rng):
    model, arrays, _ = _saved_model(tmp_path, rng)
    if defect == "nan_weights":
        arrays["weights"] = arrays["weights"].astype(np.float64)
        arrays["weights"].flat[0] = np.nan
    elif defect == "huge_weights":
        arrays["weights"] = arrays["weights"].astype(np.float64)
        arrays["weights"].flat[0] = 1e20
    elif defect == "one_class":
        arrays["classes"] = arrays["classes"][:1]
    elif defect == "duplicate_classes":
        arrays["classes"] = np.array([0, 0, 1])
    elif defect == "2d_classes":
        arrays["classes"] = arrays["classes"].reshape(1, -1)
    elif defect == "bits_past_features":
        arrays["action"] = arrays["action"].copy()
        arrays["action"][0, 0, 1] |= np.uint64(1) << np.uint64(63)   # feature 127 of a 70-feature model
    elif defect == "wrong_shape":
        arrays["action"] = arrays["action"][:, :-1]
    elif defect == "bomb":
        arrays["lower"] = np.zeros((1 << 27,), dtype=np.uint64)         # 1 GiB of zeros deflates to ~1 MB
    path = tmp_path / "bad.npz"
    if defect == "bomb":
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    else:
        _write(path, arrays)
    with pytest.raises(ValueError, match="bad.npz"):
        TsetlinMachine.load(path)


def test_truncated_and_flipped_model_files_are_value_errors(tmp_path, rng):
    model, arrays, X = _saved_model(tmp_path, rng)
    good = (tmp_path / "model.npz").read_bytes()
    loaded = TsetlinMachine.load(tmp_path / "model.npz")
    np.testing.assert_array_equal(loaded.decision_function(X), model.decision_function(X))
    for name, data in (("truncated", good[: len(good) // 2]), ("flipped", good[: len(good) // 2] + bytes([good[len(good) // 2] ^ 0xFF]) + good[len(good) // 2 + 1 :])):
        path = tmp_path / f"{name}.npz"
        path.write_bytes(data)
        with pytest.raises(ValueError, match=name):
            TsetlinMachine.load(path)


@pytest.mark.parametrize("n_clauses", [10**9, 2**62])
def test_absurd_model_sizes_are_refused_before_allocating(n_clauses, rng):
    X = (rng.random((4, 20)) < 0.5).astype(np.uint8)
    with pytest.raises(MemoryError, match="n_clauses"):
        TsetlinMachine(n_clauses=n_clauses, threshold=5, seed=0).fit(X, [0, 1, 0, 1], progress_bar=False)
    config = {"n_features": 20, "n_classes": 2, "n_clauses": n_clauses, "state_bits": 8, "threshold": 5,
              "specificity": 3.0, "weighted": True, "boost_true_positive": True, "focused_negatives": True,
              "max_included_literals": 40, "negated_literals": True, "max_negated_literals": 0, "absorbing": None, "clause_drop_p": 0.0, "coalesced": False, "seed": 1}
    with pytest.raises(ValueError, match="n_clauses"):
        _core.tsetlin_initial_state(config)


def test_a_csr_matrix_too_wide_for_memory_is_refused():
    sp = pytest.importorskip("scipy.sparse")
    X = sp.csr_matrix((np.ones(2), (np.array([0, 1]), np.array([0, 2**33 - 1]))), shape=(2, 2**33))
    with pytest.raises(MemoryError, match="n_features"):
        TsetlinMachine(n_clauses=10, threshold=5, seed=0).fit(X, [0, 1], progress_bar=False)


def test_a_huge_broadcast_view_fails_by_name():
    view = np.broadcast_to(np.float64(1.0), (2**20, 2**20))   # 2**40 elements, no memory behind it
    from fastcore_ad import gaussian

    with pytest.raises(MemoryError, match="x"):
        gaussian.mahalanobis(view, np.zeros(2**20), np.eye(2, dtype=np.float64)[:1, :1])


UNCLEAR_CALLS = [
    ("reg", TypeError, lambda: GaussianAD(reg="a").fit(np.ones((10, 3)) + np.eye(10, 3))),
    ("top_ratio", TypeError, lambda: musc.mutual_scores(np.zeros((3, 4, 2)), top_ratio=None)),
    ("k_list", TypeError, lambda: musc.rscin(np.arange(3.0), np.eye(3), k_list=None)),
    ("ratio", ValueError, lambda: __import__("fastcore_ad").mia.min_k(np.zeros((2, 5)), ratio=[0.1, 0.2])),
    ("max_fpr", TypeError, lambda: __import__("fastcore_ad").metrics.tpr_at_fpr(np.arange(4.0), [0, 1, 0, 1],
                                                                                 max_fpr=True)),
]


@pytest.mark.parametrize("case", range(len(UNCLEAR_CALLS)), ids=[c[0] for c in UNCLEAR_CALLS])
def test_bad_parameters_are_named(case):
    name, error, call = UNCLEAR_CALLS[case]
    with pytest.raises(error, match=name):
        call()


def test_musc_takes_one_degree_as_a_number(rng):
    from fastcore_ad import MuSc

    x = rng.normal(size=(3, 4, 4, 2))
    np.testing.assert_array_equal(MuSc(degrees=3).predict(x).patch_scores,
                                  MuSc(degrees=(3,)).predict(x).patch_scores)
