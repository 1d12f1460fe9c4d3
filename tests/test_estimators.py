"""The scikit-learn side of GaussianAD, TsetlinMachine and MuSc: scikit-learn's own estimator
checks, pipelines, NotFittedError, the one n_jobs / device rule, and the Tsetlin Machine's
thermometer encoding of non-binary features (against the plain oracle, pass-through of 0/1
data, rules with thresholds, persistence)."""

import json
import re

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from fastcore_ad import GaussianAD, MuSc, TsetlinEnsemble, TsetlinMachine, TsetlinOneVsRest
from fastcore_ad import tsetlin as tsetlin_module
from fastcore_ad._base import check_n_jobs

from .reference import thermometer as ref
from .test_contract import _write

SMALL_TM = dict(n_clauses=20, threshold=10, specificity=3.0, seed=0)


@parametrize_with_checks([GaussianAD(progress=False), TsetlinMachine(**SMALL_TM),
                          TsetlinEnsemble(TsetlinMachine(**SMALL_TM), n_estimators=2),
                          TsetlinEnsemble(TsetlinMachine(**SMALL_TM), n_estimators=2, features_per_machine=0.5),
                          # features_per_class ranks non-negative features only (refusing the checks' data)
                          TsetlinOneVsRest(TsetlinMachine(**SMALL_TM))])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_tags_say_what_each_estimator_is():
    from sklearn.utils import get_tags

    tm, gaussian, musc = get_tags(TsetlinMachine()), get_tags(GaussianAD()), get_tags(MuSc())
    assert tm.estimator_type == "classifier" and tm.input_tags.sparse and tm.non_deterministic
    assert not get_tags(TsetlinMachine(seed=0)).non_deterministic
    # predict gives 1 for anomalies and 0 otherwise: not scikit-learn's -1 / +1 outlier detector.
    assert gaussian.estimator_type is None and not gaussian.input_tags.sparse and not gaussian.target_tags.required
    assert not musc.requires_fit


def test_gaussian_in_a_pipeline(rng):
    X = rng.normal(size=(200, 5)) * [1.0, 10.0, 100.0, 0.1, 3.0] + 7.0
    pipe = make_pipeline(StandardScaler(), GaussianAD(progress=False)).fit(X)
    scaled = StandardScaler().fit_transform(X)
    np.testing.assert_allclose(pipe.decision_function(X), GaussianAD().fit(scaled).decision_function(scaled),
                               rtol=1e-12)
    assert pipe.predict(X).shape == (200,)
    clone(pipe).fit(X)


# ------------------------------------------------------------------------------------------------
# Not fitted, n_jobs and device


def _binary_data(rng, n=60, f=8):
    X = rng.integers(0, 2, size=(n, f), dtype=np.uint8)
    return X, X[:, 0] ^ X[:, 1]


def test_methods_before_fit_raise_not_fitted(rng):
    X, _ = _binary_data(rng)
    calls = [lambda: GaussianAD().predict(X), lambda: GaussianAD().decision_function(X),
             lambda: GaussianAD().score_samples(X), lambda: GaussianAD().mean_]
    tm = TsetlinMachine(**SMALL_TM)
    calls += [lambda: tm.predict(X), lambda: tm.decision_function(X), lambda: tm.class_sums(X),
              lambda: tm.clause_outputs(X), lambda: tm.rules(), lambda: tm.explain(X[0]), lambda: tm.save("x.npz")]
    for call in calls:
        with pytest.raises(NotFittedError, match="not fitted") as info:
            call()
        assert isinstance(info.value, RuntimeError)  # what the estimators raised before
    for model in (GaussianAD(), tm):
        with pytest.raises(NotFittedError):
            check_is_fitted(model)
    check_is_fitted(MuSc())  # predict needs no fit: the batch scores itself


def _runs(rng):
    """One call per estimator that validates its parameters: (name, function of params)."""
    X, y = _binary_data(rng)
    features = rng.normal(size=(3, 4, 4, 5)).astype(np.float32)
    return {
        "GaussianAD": lambda **p: GaussianAD(progress=False, **p).fit(rng.normal(size=(30, 3))),
        "TsetlinMachine": lambda **p: TsetlinMachine(**SMALL_TM, **p).fit(X, y, progress_bar=False),
        "MuSc": lambda **p: MuSc(degrees=(1,), progress=False, **p).predict(features),
    }


@pytest.mark.parametrize("params, error", [
    (dict(n_jobs=0), ValueError),
    (dict(n_jobs=True), TypeError),
    (dict(n_jobs=np.bool_(False)), TypeError),
    (dict(n_jobs=2.0), TypeError),
    (dict(n_jobs="4"), TypeError),
    (dict(device="tpu"), ValueError),
    (dict(device=None), ValueError),
])
def test_one_rule_and_one_message_for_bad_n_jobs_and_device(rng, params, error):
    messages = set()
    for name, run in _runs(rng).items():
        with pytest.raises(error) as info:
            run(**params)
        messages.add(str(info.value))
    assert len(messages) == 1, messages
    assert next(iter(messages)).startswith(next(iter(params)) + ":")


@pytest.mark.parametrize("n_jobs", [None, 1, 2, -1, -2, -2**40, 10**30, np.int32(3)])
def test_accepted_n_jobs_give_the_same_results(rng, n_jobs):
    assert check_n_jobs(n_jobs) == (None if n_jobs is None else int(n_jobs))
    X, y = _binary_data(rng)
    base = TsetlinMachine(**SMALL_TM).fit(X, y, epochs=2, progress_bar=False)
    other = TsetlinMachine(**SMALL_TM, n_jobs=n_jobs).fit(X, y, epochs=2, progress_bar=False)
    np.testing.assert_array_equal(other.action_, base.action_)
    np.testing.assert_array_equal(other.decision_function(X), base.decision_function(X))
    Z = rng.normal(size=(50, 4))
    np.testing.assert_array_equal(GaussianAD(n_jobs=n_jobs).fit(Z).decision_function(Z),
                                  GaussianAD().fit(Z).decision_function(Z))
    features = rng.normal(size=(3, 4, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(MuSc(degrees=(1,), n_jobs=n_jobs).predict(features).patch_scores,
                                  MuSc(degrees=(1,)).predict(features).patch_scores)


def test_n_jobs_changed_after_fit_is_checked_at_use(rng):
    X, y = _binary_data(rng)
    tm = TsetlinMachine(**SMALL_TM).fit(X, y, progress_bar=False)
    gaussian = GaussianAD().fit(rng.normal(size=(30, 3)))
    for call in (lambda: tm.set_params(n_jobs=0).predict(X), lambda: gaussian.set_params(n_jobs=0).predict(
            rng.normal(size=(2, 3)))):
        with pytest.raises(ValueError, match="n_jobs: must be None or a nonzero integer"):
            call()


def test_cuda_device_without_a_gpu_is_the_same_error_everywhere(rng):
    from .conftest import GPU

    if GPU:
        pytest.skip("a GPU is present")
    X, y = _binary_data(rng)
    tm = TsetlinMachine(**SMALL_TM).fit(X, y, progress_bar=False).set_params(device="cuda")
    Z = rng.normal(size=(30, 3))
    calls = [lambda: tm.predict(X), lambda: TsetlinMachine(**SMALL_TM, device="cuda").fit(X, y, progress_bar=False),
             lambda: GaussianAD(device="cuda").fit(Z),
             lambda: MuSc(degrees=(1,), device="cuda").predict(rng.normal(size=(3, 4, 4, 5)))]
    messages = set()
    for call in calls:
        with pytest.raises(RuntimeError, match="device='cuda'") as info:
            call()
        messages.add(str(info.value))
    assert len(messages) == 1


# ------------------------------------------------------------------------------------------------
# Thermometer encoding of non-binary features


def _tabular(rng, n=300, f=5, kind="normal"):
    if kind == "normal":
        X = rng.normal(size=(n, f))
    elif kind == "integers":
        X = rng.integers(-3, 4, size=(n, f)).astype(np.float64)
    else:  # mostly zeros, some negative values: the sparse case that sets bits for zeros
        X = np.where(rng.random((n, f)) < 0.7, 0.0, rng.normal(size=(n, f)))
    X[:, -1] = 2.5  # a constant feature
    y = (X[:, 0] + 0.5 * X[:, 1] > 0.2).astype(np.int64)
    return X, y


def _oracle_thresholds(tm):
    encoder = tm.thermometer_
    return [encoder.thresholds[encoder.offsets[j]:encoder.offsets[j + 1]].tolist() for j in range(encoder.n_features)]


@pytest.mark.parametrize("kind", ["normal", "integers", "sparse_like"])
@pytest.mark.parametrize("max_bits", [1, 3, 8])
def test_thermometer_equals_the_oracle(rng, kind, max_bits):
    X, _ = _tabular(rng, n=int(rng.integers(5, 200)), kind=kind)
    X = X.astype(rng.choice([np.float32, np.float64]))
    if kind == "sparse_like":
        X[:, 2] = 0  # a column with nothing stored in the CSR matrix below
    y = np.arange(len(X)) % 2
    tm = TsetlinMachine(**SMALL_TM, max_bits=max_bits).fit(X, y, progress_bar=False)
    expected = ref.thresholds(X, max_bits)
    assert _oracle_thresholds(tm) == expected
    assert all(1 <= len(t) <= max_bits for t in expected)
    bits = ref.encode(X, expected)
    np.testing.assert_array_equal(tm.thermometer_.encode_dense(X), bits.astype(bool))
    # The same values as CSR with some zeros stored explicitly: same thresholds, same bits.
    coo, stored_zeros = sp.coo_matrix(X), np.argwhere(X == 0)[::2]
    stored_zeros = stored_zeros[stored_zeros[:, 1] != 2]
    csr = sp.csr_matrix((np.r_[coo.data, np.zeros(len(stored_zeros), X.dtype)],
                         (np.r_[coo.row, stored_zeros[:, 0]], np.r_[coo.col, stored_zeros[:, 1]])), shape=X.shape)
    from_sparse = TsetlinMachine(**SMALL_TM, max_bits=max_bits).fit(csr, y, progress_bar=False)
    assert _oracle_thresholds(from_sparse) == expected
    indptr, indices = tm.thermometer_.encode_csr(csr)
    dense = np.zeros_like(bits)
    for r in range(len(X)):
        dense[r, indices[indptr[r]:indptr[r + 1]]] = 1
    np.testing.assert_array_equal(dense, bits)


def test_a_thermometer_model_is_the_binary_model_of_the_oracle_bits(rng):
    X, y = _tabular(rng)
    tm = TsetlinMachine(**SMALL_TM, max_bits=4).fit(X, y, epochs=3, progress_bar=False)
    bits = ref.encode(X, ref.thresholds(X, 4))
    binary = TsetlinMachine(**SMALL_TM, booleanizer="none").fit(bits, y, epochs=3, progress_bar=False)
    np.testing.assert_array_equal(tm.action_, binary.action_)
    np.testing.assert_array_equal(tm.weights_, binary.weights_)
    np.testing.assert_array_equal(tm.class_sums(X), binary.class_sums(bits))
    assert tm.n_features_in_ == X.shape[1] and binary.n_features_in_ == bits.shape[1]
    assert tm.score(X, y) > 0.7  # the majority class is about 0.58; 0.79 seen on rare draws


def test_sparse_input_is_encoded_like_dense_input(rng):
    X, y = _tabular(rng, kind="sparse_like")
    dense = TsetlinMachine(**SMALL_TM).fit(X, y, epochs=2, progress_bar=False)
    sparse = TsetlinMachine(**SMALL_TM).fit(sp.csr_matrix(X), y, epochs=2, progress_bar=False)
    np.testing.assert_array_equal(sparse.thermometer_.thresholds, dense.thermometer_.thresholds)
    np.testing.assert_array_equal(sparse.action_, dense.action_)
    for Xin in (sp.csr_matrix(X), sp.csc_matrix(X), sp.coo_array(X)):
        np.testing.assert_array_equal(dense.class_sums(Xin), dense.class_sums(X))
    # Non-negative data stays sparse: a stored value sets at most max_bits bits, a zero none.
    counts = sp.csr_matrix(np.abs(X))
    encoder = TsetlinMachine(**SMALL_TM).fit(counts, y, progress_bar=False).thermometer_
    indptr, _ = encoder.encode_csr(counts)
    assert indptr[-1] <= counts.nnz * 8


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float32, bool])
def test_binary_input_passes_through_unchanged(rng, dtype):
    X, y = _binary_data(rng, n=200, f=70)
    X = X.astype(dtype)
    for Xin in (X, sp.csr_matrix(X)):
        auto = TsetlinMachine(**SMALL_TM).fit(Xin, y, epochs=2, progress_bar=False)
        none = TsetlinMachine(**SMALL_TM, booleanizer="none").fit(Xin, y, epochs=2, progress_bar=False)
        assert auto.thermometer_ is None
        np.testing.assert_array_equal(auto.action_, none.action_)
        np.testing.assert_array_equal(auto.lower_, none.lower_)
        np.testing.assert_array_equal(auto.weights_, none.weights_)
        np.testing.assert_array_equal(auto.decision_function(Xin), none.decision_function(Xin))
        # A pass-through model still wants 0/1 input, with the error it always gave.
        with pytest.raises(ValueError, match="binary"):
            auto.predict(np.asarray(X, dtype=np.float64) * 2)


def test_booleanizer_none_rejects_non_binary_input(rng):
    X, y = _tabular(rng)
    with pytest.raises(ValueError, match="expected binary features"):
        TsetlinMachine(**SMALL_TM, booleanizer="none").fit(X, y)
    with pytest.raises(ValueError, match="expected binary features"):
        TsetlinMachine(**SMALL_TM, booleanizer="none").fit(sp.csr_matrix(X), y)
    for params, match in ((dict(booleanizer="quantile"), "booleanizer"), (dict(max_bits=0), "max_bits")):
        with pytest.raises(ValueError, match=match):
            TsetlinMachine(**SMALL_TM, **params).fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        TsetlinMachine(**SMALL_TM).fit(np.where(X > 2, np.nan, X), y)
    tm = TsetlinMachine(**SMALL_TM).fit(X, y, progress_bar=False)
    with pytest.raises(ValueError, match="NaN"):
        tm.predict(np.full((2, X.shape[1]), np.inf))


def test_binary_decision_function_is_the_margin_of_the_class_sums(rng):
    X, y = _tabular(rng)
    tm = TsetlinMachine(**SMALL_TM).fit(X, y, epochs=2, progress_bar=False)
    sums = tm.class_sums(X)
    margin = tm.decision_function(X)
    np.testing.assert_array_equal(margin, sums[:, 1] - sums[:, 0])
    np.testing.assert_array_equal(tm.classes_[(margin > 0).astype(int)], tm.predict(X))
    multi = TsetlinMachine(**SMALL_TM).fit(X, np.arange(len(X)) % 3, progress_bar=False)
    np.testing.assert_array_equal(multi.decision_function(X), multi.class_sums(X))


def test_partial_fit_learns_the_encoding_once(rng):
    X, y = _tabular(rng)
    tm = TsetlinMachine(**SMALL_TM, max_bits=4)
    tm.partial_fit(X[:100], y[:100], classes=[0, 1])
    thresholds = tm.thermometer_.thresholds.copy()
    tm.partial_fit(X[100:] * 10, y[100:])
    np.testing.assert_array_equal(tm.thermometer_.thresholds, thresholds)
    assert _oracle_thresholds(tm) == ref.thresholds(X[:100], 4)


def test_rules_read_thresholds_and_stay_faithful(rng):
    X, y = _tabular(rng)
    tm = TsetlinMachine(40, 10, 3.0, seed=2, max_bits=4).fit(X, y, epochs=5, progress_bar=False)
    rules = tm.rules()
    assert rules and all(r.thresholds is not None and len(r.thresholds) == len(r.literals) for r in rules)
    term = re.compile(r"^(NOT )?x\d+ > -?\d")
    for rule in rules:
        terms = str(rule)[len("IF "):str(rule).index(" THEN ")].split(" AND ")
        assert all(term.match(t) for t in terms), str(rule)
    assert any(" > " in str(r) for r in rules)
    named = tm.rules(feature_names=["age", "height", "weight", "income", "zone"])
    assert all(re.match(r"^IF (NOT )?(age|height|weight|income|zone) > ", str(r)) for r in named)
    # Summing the weights of the rules that fire on the raw row gives the class sums.
    sums = tm.class_sums(X[:40])
    for i in range(40):
        expected = dict.fromkeys(tm.classes_.tolist(), 0)
        for rule in rules:
            if rule.fires(X[i]):
                expected[rule.class_label] += rule.weight
        assert list(expected.values()) == sums[i].tolist()
    why = tm.explain(X[0])
    assert all(r.fires(X[0]) and r.fires(sp.csr_matrix(X[:1])) for r in why["rules"])
    assert list(why["class_sums"].values()) == sums[0].tolist()


# ------------------------------------------------------------------------------------------------
# Persistence of the encoding


def _arrays_saved(model, path):
    """Save ``model`` to ``path`` and read back its arrays."""
    model.save(path)
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _saved(tmp_path, rng):
    X, y = _tabular(rng)
    tm = TsetlinMachine(**SMALL_TM, max_bits=5).fit(X, y, epochs=2, progress_bar=False)
    return tm, _arrays_saved(tm, tmp_path / "model.npz"), X


def test_save_and_load_keep_the_encoding(tmp_path, rng):
    tm, arrays, X = _saved(tmp_path, rng)
    assert int(arrays["version"]) == tsetlin_module.FORMAT_VERSION == 2
    assert arrays["threshold_counts"].shape == (X.shape[1],)
    loaded = TsetlinMachine.load(tmp_path / "model.npz")
    np.testing.assert_array_equal(loaded.thermometer_.thresholds, tm.thermometer_.thresholds)
    np.testing.assert_array_equal(loaded.decision_function(X), tm.decision_function(X))
    assert [str(r) for r in loaded.rules()] == [str(r) for r in tm.rules()]
    assert loaded.get_params() == tm.get_params()


def test_version_1_files_still_load(tmp_path, rng):
    X, y = _binary_data(rng)
    tm = TsetlinMachine(**SMALL_TM).fit(X, y, progress_bar=False)
    arrays = _arrays_saved(tm, tmp_path / "model.npz")
    meta = json.loads(str(arrays["meta"]))
    for key in ("booleanizer", "max_bits"):
        del meta["params"][key]
    arrays.update(version=np.array(1), meta=np.array(json.dumps(meta)))
    loaded = TsetlinMachine.load(_write(tmp_path / "v1.npz", arrays))
    assert loaded.thermometer_ is None
    np.testing.assert_array_equal(loaded.decision_function(X), tm.decision_function(X))


@pytest.mark.parametrize("defect", ["nan", "inf", "decreasing", "counts_shape", "count_zero", "count_past_max_bits",
                                    "thresholds_shape", "only_counts", "only_thresholds", "float_counts",
                                    "booleanizer_none", "overflowing_counts", "bomb"])
def test_loading_a_defective_encoding_is_a_clear_error(tmp_path, rng, defect):
    _, arrays, _ = _saved(tmp_path, rng)
    counts, thresholds = arrays["threshold_counts"], arrays["thresholds"]
    if defect in ("nan", "inf"):
        thresholds[1] = np.nan if defect == "nan" else np.inf
    elif defect == "decreasing":
        thresholds[: counts[0]] = thresholds[: counts[0]][::-1].copy()
        assert counts[0] > 1
    elif defect == "counts_shape":
        arrays["threshold_counts"] = counts[:-1]
    elif defect == "count_zero":
        counts[-1], counts[0] = 0, counts[0] + counts[-1]
    elif defect == "count_past_max_bits":
        counts[0], counts[1] = 6, counts[0] + counts[1] - 6
    elif defect == "thresholds_shape":
        arrays["thresholds"] = thresholds[:-1]
    elif defect == "only_counts":
        del arrays["thresholds"]
    elif defect == "only_thresholds":
        del arrays["threshold_counts"]
    elif defect == "float_counts":
        arrays["threshold_counts"] = counts.astype(np.float64)
    elif defect == "booleanizer_none":
        meta = json.loads(str(arrays["meta"]))
        meta["params"]["booleanizer"] = "none"
        arrays["meta"] = np.array(json.dumps(meta))
    elif defect == "overflowing_counts":  # counts whose int64 sum wraps round to the thresholds' size
        meta = json.loads(str(arrays["meta"]))
        meta["params"]["max_bits"] = 2**63 - 1
        arrays["meta"] = np.array(json.dumps(meta))
        arrays["threshold_counts"] = np.array([2**62] * 4 + [thresholds.size], dtype=np.int64)
    elif defect == "bomb":
        arrays["thresholds"] = np.zeros(1 << 22)  # 32 MiB deflating from kilobytes: rejected by its header
    path = tmp_path / "bad.npz"
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)  # the bomb inflates; the other defects do not mind
    with pytest.raises(ValueError, match="bad.npz"):
        TsetlinMachine.load(path)
