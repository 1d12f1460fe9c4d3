"""Regression tests for wrong answers, panics and races found by hostile use: each compares with an
independent oracle (numpy / scikit-learn) or asserts the clear error that replaced a panic."""

from __future__ import annotations

import io
import json
import os
import threading
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

from fastcore_ad import GaussianAD, _core, gaussian, musc
from fastcore_ad.tsetlin import TsetlinMachine, text_pipeline


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

    # A random rotation with bounded stretch: an ill-conditioned mixing (condition numbers of 1e9
    # occur) would turn the rounding of X * magnitude into errors far above the tolerance.
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    X = rng.normal(size=(200, 6)) @ (rotation * rng.uniform(0.3, 3.0, size=6))
    small = GaussianAD(covariance=covariance, reg=0.0).fit(X)
    big = GaussianAD(covariance=covariance, reg=0.0).fit(X * magnitude)
    assert big.shrinkage_ == pytest.approx(small.shrinkage_, rel=1e-12, abs=1e-15)
    if covariance != "empirical":
        reference = (OAS if covariance == "oas" else LedoitWolf)().fit(X).shrinkage_
        assert big.shrinkage_ == pytest.approx(reference, rel=1e-9)
    Y = rng.normal(size=(20, 6))
    np.testing.assert_allclose(big.decision_function(Y * magnitude), small.decision_function(Y), rtol=1e-9)


@pytest.mark.parametrize("magnitude", [1e-160, 1e160])
def test_gaussian_npca_is_scale_invariant(magnitude, rng):
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    X = rng.normal(size=(200, 6)) @ (rotation * np.array([0.3, 0.5, 1.0, 1.5, 2.0, 3.0]))
    small = GaussianAD(npca=0.5).fit(X)
    big = GaussianAD(npca=0.5).fit(X * magnitude)
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


def _edit_meta(arrays, **changes):
    meta = json.loads(str(arrays["meta"]))
    for key, value in changes.items():
        if key == "params":
            meta["params"].update(value)
        else:
            meta[key] = value
    arrays["meta"] = np.array(json.dumps(meta))


def _write_short_member(path, arrays, name):
    """An .npz whose member ``name`` declares its true shape but stores half of its bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():
            buf = io.BytesIO()
            if key == name:
                header = {"descr": np.lib.format.dtype_to_descr(value.dtype), "fortran_order": False,
                          "shape": value.shape}
                np.lib.format.write_array_header_1_0(buf, header)
                data = np.ascontiguousarray(value).tobytes()
                buf.write(data[: len(data) // 2])
            else:
                np.lib.format.write_array(buf, np.asarray(value), allow_pickle=False)
            archive.writestr(key + ".npy", buf.getvalue())


META_DEFECTS = {
    "seed_too_large": dict(seed_=2**70), "negative_seed": dict(seed_=-1), "epochs_not_int": dict(epochs_="a"),
    "epochs_list": dict(epochs_=[1]), "threshold_too_large": dict(threshold_=2**64),
    "odd_clauses": dict(n_clauses_=11), "bad_param": dict(params={"state_bits": 40}),
}


@pytest.mark.parametrize("defect", ["nan_weights", "huge_weights", "one_class", "duplicate_classes", "2d_classes",
                                    "bits_past_features", "wrong_shape", "bomb", "compressed", "short_member",
                                    "unsorted_classes", "zero_weight", "flipped_polarity", "version_not_int",
                                    "meta_not_json", *META_DEFECTS])
def test_loading_a_defective_model_is_a_clear_error(defect, tmp_path, rng):
    model, arrays, _ = _saved_model(tmp_path, rng)
    path = tmp_path / "bad.npz"
    if defect in META_DEFECTS:
        _edit_meta(arrays, **META_DEFECTS[defect])
    elif defect == "unsorted_classes":
        arrays["classes"] = arrays["classes"][::-1].copy()
    elif defect == "zero_weight":
        arrays["weights"] = arrays["weights"].copy()
        arrays["weights"][0, 0] = 0
    elif defect == "flipped_polarity":
        arrays["weights"] = arrays["weights"].copy()
        arrays["weights"][1, 1] = 3     # an odd clause votes against its class: weight <= -1
    elif defect == "version_not_int":
        arrays["version"] = np.array("abc")
    elif defect == "meta_not_json":
        arrays["meta"] = np.array("{not json")
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
    if defect in ("bomb", "compressed"):
        # "compressed": the genuine arrays, every shape consistent, but deflated; a small file
        # could then hold a model of any size, so compressed members are refused.
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    elif defect == "short_member":
        _write_short_member(path, arrays, "lower")
    else:
        _write(path, arrays)
    with pytest.raises(ValueError, match="bad.npz"):
        TsetlinMachine.load(path)
    # The same arrays written as save() writes them load (the defect, not the writer, is refused).
    if defect == "compressed":
        assert TsetlinMachine.load(_write(tmp_path / "good.npz", arrays)).predict(np.zeros((1, 70), np.uint8)).shape == (1,)


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
    ("threshold", ValueError, lambda: TsetlinMachine(10, 2**63).fit(np.eye(4, dtype=np.uint8), [0, 1, 0, 1])),
    ("contamination", TypeError, lambda: GaussianAD(contamination="a").fit(np.eye(10, 3) + 1)),
    ("npca", TypeError, lambda: GaussianAD(npca="a").fit(np.eye(10, 3) + 1)),
    ("ratio", TypeError, lambda: __import__("fastcore_ad").mia.min_k(np.zeros((2, 5)), None)),
    ("max_included_literals", ValueError,
     lambda: TsetlinMachine(10, 5, max_included_literals=2**70).fit(np.eye(4, dtype=np.uint8), [0, 1, 0, 1])),
    ("max_negated_literals", ValueError,
     lambda: TsetlinMachine(10, 5, max_negated_literals=2**70).fit(np.eye(4, dtype=np.uint8), [0, 1, 0, 1])),
    ("ratio", ValueError, lambda: __import__("fastcore_ad").mia.min_k(np.zeros((2, 5)), ratio=[0.1, 0.2])),
    ("max_fpr", TypeError, lambda: __import__("fastcore_ad").metrics.tpr_at_fpr(np.arange(4.0), [0, 1, 0, 1],
                                                                                 max_fpr=True)),
    # Python ints past float64's range, and strings where a switch belongs
    ("max_fpr", ValueError, lambda: __import__("fastcore_ad").metrics.tpr_at_fpr(np.arange(4.0), [0, 1, 0, 1],
                                                                                 max_fpr=10**400)),
    ("reg", ValueError, lambda: GaussianAD(reg=10**400).fit(np.ones((10, 3)) + np.eye(10, 3))),
    ("reg", ValueError, lambda: __import__("fastcore_ad").ClassGaussian(reg=10**400).fit(np.eye(6, 2), [0, 1] * 3)),
    ("return_threshold", TypeError, lambda: __import__("fastcore_ad").metrics.f1_max(np.arange(4.0), [0, 1, 0, 1],
                                                                                      return_threshold="no")),
    ("progress", TypeError, lambda: GaussianAD(progress="no").fit(np.ones((10, 3)) + np.eye(10, 3))),
    ("progress", TypeError, lambda: musc.MuSc(progress="no").predict(np.zeros((3, 2, 2, 3)))),
    ("sigma", ValueError, lambda: __import__("fastcore_ad").maps.smooth(np.zeros((1, 4, 4)), sigma=10**400)),
    ("truncate", ValueError, lambda: __import__("fastcore_ad").maps.smooth(np.zeros((1, 4, 4)), 1.0, truncate=10**400)),
    ("a", ValueError, lambda: __import__("fastcore_ad").mia.dc_pdd(np.zeros(3), np.zeros(3), np.ones(5), a=10**400)),
    ("contamination", ValueError, lambda: GaussianAD(contamination=10**400).fit(np.eye(10, 3) + 1)),
    ("progress_bar", TypeError, lambda: TsetlinMachine(10, 5).fit(np.eye(4, dtype=np.uint8), [0, 1, 0, 1],
                                                                   progress_bar="no")),
    ("progress_bar", TypeError, lambda: __import__("fastcore_ad").patchcore.greedy_coreset(np.eye(3), 1,
                                                                                          progress_bar="no")),
    ("progress_bar", TypeError, lambda: __import__("fastcore_ad").features.load_images(".", progress_bar="no")),
    ("return_model", TypeError, lambda: __import__("importlib").import_module("fastcore_ad.pipeline")
     .per_position_gaussian(np.zeros((2, 2, 2, 3)), np.zeros((1, 2, 2, 3)), 4, return_model="no")),
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


def test_labels_with_nan_none_or_unorderable_types_are_refused(rng):
    X = (rng.random((40, 6)) < 0.4).astype(np.uint8)
    for bad in (np.nan, None, float("inf")):
        y = np.array([0.0, 1.0, bad, 1.0] * 10, dtype=object)
        with pytest.raises(ValueError, match="y: contains NaN"):
            TsetlinMachine(10, 5, 3.0, seed=0).fit(X, y, epochs=1, progress_bar=False)
    mixed = np.array([1, "a"] * 20, dtype=object)
    with pytest.raises(TypeError, match="y: labels of types"):
        TsetlinMachine(10, 5, 3.0, seed=0).fit(X, mixed, epochs=1, progress_bar=False)
    with pytest.raises(ValueError, match="classes: contains NaN"):
        TsetlinMachine(10, 5, 3.0, seed=0).partial_fit(X, [0, 1] * 20, classes=[0, 1, np.nan])
    # Object labels without NaN still work, and give the classes np.unique gives.
    ok = np.array(["b", "a"] * 20, dtype=object)
    assert TsetlinMachine(10, 5, 3.0, seed=0).fit(X, ok, epochs=1, progress_bar=False).classes_.tolist() == ["a", "b"]


def _with_duplicates(rng, dense, pieces):
    """``dense`` as a CSR matrix storing each non-zero as ``pieces`` entries (value / pieces)
    in shuffled order: duplicated, unsorted indices."""
    rows, cols = np.nonzero(dense)
    rows, cols = np.repeat(rows, pieces), np.repeat(cols, pieces)
    shuffled = rng.permutation(len(rows))
    rows, cols = rows[shuffled], cols[shuffled]
    by_row = np.argsort(rows, kind="stable")
    indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=dense.shape[0]))]
    data = dense[rows[by_row], cols[by_row]] / pieces
    return sp.csr_matrix((data, cols[by_row], indptr), shape=dense.shape)


def test_csr_duplicates_add_up_as_in_the_dense_matrix(rng):
    """A CSR matrix with repeated (row, column) entries means their sum, as ``toarray()`` does:
    the model equals the one trained on the dense matrix (counts, thermometer-encoded; and 0/1
    stored as halves, binary once summed)."""
    y = rng.integers(0, 2, 120)
    counts = rng.binomial(3, 0.15, size=(120, 30)).astype(np.float64)
    for dense, pieces in ((counts, 3), ((counts > 0).astype(np.float64), 2)):
        dup = _with_duplicates(rng, dense, pieces)
        assert not dup.has_canonical_format and dup.nnz == pieces * np.count_nonzero(dense)
        np.testing.assert_allclose(dup.toarray(), dense)
        dense_model = TsetlinMachine(10, 5, 3.0, seed=1).fit(dense, y, epochs=2, progress_bar=False)
        sparse_model = TsetlinMachine(10, 5, 3.0, seed=1).fit(dup, y, epochs=2, progress_bar=False)
        assert (sparse_model.thermometer_ is None) == (dense_model.thermometer_ is None) == (pieces == 2)
        if dense_model.thermometer_ is not None:
            np.testing.assert_array_equal(sparse_model.thermometer_.thresholds, dense_model.thermometer_.thresholds)
        np.testing.assert_array_equal(sparse_model.action_, dense_model.action_)
        np.testing.assert_array_equal(sparse_model.class_sums(dup), dense_model.class_sums(dense))
        assert dup.nnz == pieces * np.count_nonzero(dense)  # the caller's matrix was not merged in place


def test_refused_training_calls_leave_the_model_as_it_was(rng):
    X = (rng.random((60, 8)) < 0.4).astype(np.uint8)
    y = rng.integers(0, 2, 60)
    fresh = TsetlinMachine(10, 5, 3.0, seed=3)
    with pytest.raises(ValueError, match="not among classes"):
        fresh.partial_fit(X, y, classes=[0, 7])
    assert not fresh.__sklearn_is_fitted__()
    fitted = TsetlinMachine(10, 5, 3.0, seed=3).fit(X, y, epochs=2, progress_bar=False)
    before = (fitted.action_.copy(), fitted.weights_.copy(), fitted.epochs_)
    for bad, match in (((X[:, :5], y), "validation_data: X has 5 features"), ((X, y[:-1]), "validation_data: y_val"),
                       (X, "validation_data: expected a pair")):
        with pytest.raises(ValueError, match=match):
            fitted.fit(X, y, validation_data=bad, progress_bar=False)
        np.testing.assert_array_equal(fitted.action_, before[0])
        np.testing.assert_array_equal(fitted.weights_, before[1])
        assert fitted.epochs_ == before[2]


def test_prediction_errors_say_what_is_wrong(rng):
    X = (rng.random((60, 8)) < 0.4).astype(np.uint8)
    y = rng.integers(0, 2, 60)
    tm = TsetlinMachine(10, 5, 3.0, seed=0).fit(X, y, epochs=1, progress_bar=False)
    with pytest.raises(ValueError, match="fitted on 0/1 input"):
        tm.predict(X * 2)
    nan = X.astype(np.float64)
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="X: contains NaN"):
        tm.predict(nan)
    with pytest.raises(ValueError, match="fitted on 0/1 input"):
        tm.partial_fit(X * 3, y)
    with pytest.raises(ValueError, match="labels are strings but classes_ are numbers"):
        tm.score(X, y.astype(str))
    assert tm.score(X, y.astype(np.float64)) == tm.score(X, y)
    with pytest.raises(ValueError, match="booleanizer='auto'"):
        TsetlinMachine(10, 5, 3.0, booleanizer="none").fit(X * 2, y, epochs=1, progress_bar=False)


def test_text_pipeline_explains_one_text():
    texts = ["fever and cough", "broken arm"] * 10
    pipe = text_pipeline(max_features=10, min_df=1, n_clauses=10, threshold=5, specificity=3.0, seed=0)
    pipe.fit(texts, ["resp", "ortho"] * 10, tm__epochs=2, tm__progress_bar=False)
    assert pipe.explain("a cough")["prediction"] in ("resp", "ortho")
    for bad in (["a cough"], None):
        with pytest.raises(TypeError, match="text: expected one document"):
            pipe.explain(bad)


@pytest.mark.parametrize("n_jobs, error", [(0, ValueError), (True, TypeError), (np.bool_(False), TypeError)])
def test_functions_take_n_jobs_under_the_estimators_rule(n_jobs, error):
    """metrics and mia refuse what the estimators refuse (check_n_jobs): 0 threads, bools."""
    mia = __import__("fastcore_ad").mia
    calls = [lambda: __import__("fastcore_ad").metrics.auroc([0.1, 0.9, 0.5], [0, 1, 1], n_jobs=n_jobs),
             lambda: mia.min_k(np.zeros((2, 5)), 0.5, n_jobs=n_jobs)]
    for call in calls:
        with pytest.raises(error, match="n_jobs"):
            call()
    assert __import__("fastcore_ad").metrics.auroc([0.1, 0.9, 0.5], [0, 1, 1], n_jobs=-1) == 1.0


_UNDER_ULIMIT = """
import resource, sys
import numpy as np
from fastcore_ad import GaussianAD, TsetlinMachine
from fastcore_ad.patchcore import knn
from fastcore_ad._memory import _first_int
rng = np.random.default_rng(0)
X = {"gaussian": lambda: rng.normal(size=(3, 9000)).astype(np.float32),
     "tsetlin": lambda: (rng.random((20, 20000)) < 0.01).astype(np.uint8),
     "knn": lambda: rng.normal(size=(20000, 4))}[sys.argv[1]]()
# 600 MiB above what the process maps now: each call below needs gigabytes.
used = _first_int("/proc/self/status", "VmSize:") * 1024
resource.setrlimit(resource.RLIMIT_AS, (used + 600 * 2**20, resource.RLIM_INFINITY))
try:
    if sys.argv[1] == "gaussian":
        GaussianAD(progress=False).fit(X)
    elif sys.argv[1] == "tsetlin":
        TsetlinMachine(n_clauses=20000, threshold=50, seed=0).fit(X, [0, 1] * 10, epochs=1, progress_bar=False)
    else:
        knn(X, X, k=20000)
except MemoryError as exc:
    print("MemoryError:", exc)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc/self/status (Linux)")
@pytest.mark.parametrize("case", ["gaussian", "tsetlin", "knn"])
def test_allocations_past_ulimit_are_memory_errors_not_aborts(case):
    # A failed allocation inside the Rust core aborts the interpreter: the checks before it must
    # count the address-space limit (ulimit -v), not only the system's free memory.
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _UNDER_ULIMIT, case], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "MemoryError:" in run.stdout and "memory is available" in run.stdout
