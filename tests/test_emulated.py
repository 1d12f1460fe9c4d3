"""Every CUDA kernel of ``cuda/`` executed on the CPU (HIP CPU Runtime) with the package's own
launch plans, and compared with the Rust kernel (and a float64 oracle where the Rust kernel is
not the reference) on the same inputs.

Test ids name the kernel and the instantiation (``float``, ``double``, ``fca_bf16``, ...);
``test_every_instantiation_is_executed`` keeps that table complete. ``mode1`` runs with random
barrier departure (surfaces shared-memory races a fixed order hides).
"""

from __future__ import annotations

import contextlib
import importlib
import os

import numpy as np
import pytest
import scipy.sparse as sp

from fastcore_ad import _core, _cuda, gaussian, mia, musc, tsetlin
from fastcore_ad._cuda import _runtime, plans

from . import emulation

_cuda_patchcore = importlib.import_module("fastcore_ad._cuda.patchcore")

pytestmark = pytest.mark.emulated

_MISSING = emulation.missing()
if _MISSING is not None:
    if os.environ.get("CI"):
        raise RuntimeError(f"emulated kernels cannot run in CI: {_MISSING}")
    pytest.skip(_MISSING, allow_module_level=True)


@pytest.fixture(scope="session", autouse=True)
def _launchers():
    """Compile every family's launcher once per session (cached across sessions by hash)."""
    emulation.build(list(_cuda.name_expressions()), parallel=2)


MODES = [pytest.param(0, id="mode0"), pytest.param(1, id="mode1")]


@pytest.fixture(params=MODES)
def rt(request):
    runtime = emulation.EmulatedRuntime(mode=request.param, seed=int.from_bytes(os.urandom(4), "little"))
    with _cuda.using(runtime):
        yield runtime


DTYPES = {"float": np.float32, "double": np.float64}
RTOL = {np.float32: 1e-5, np.float64: 1e-12}

# (test function, instantiation) pairs exercised below; checked against name_expressions().
COVERED = {
    "whitened_sq_norms<float, float>": "test_emulated_whitened_sq_norms[float",
    "whitened_sq_norms<double, double>": "test_emulated_whitened_sq_norms[double",
    "token_stats<float>": "test_emulated_token_stats[float",
    "token_stats<double>": "test_emulated_token_stats[double",
    "token_stats<fca_bf16>": "test_emulated_token_stats[fca_bf16",
    "token_stats<fca_f16>": "test_emulated_token_stats[fca_f16",
    "musc_lnamd<float>": "test_emulated_musc_lnamd[float",
    "musc_lnamd<double>": "test_emulated_musc_lnamd[double",
    "musc_pair_minima<float>": "test_emulated_musc_pair_minima[float",
    "musc_pair_minima<double>": "test_emulated_musc_pair_minima[double",
    "musc_top_k_mean<float>": "test_emulated_musc_top_k_mean[float",
    "musc_top_k_mean<double>": "test_emulated_musc_top_k_mean[double",
    "tsetlin_class_sums": "test_emulated_tsetlin_class_sums[",
    "tsetlin_mask_pool": "test_emulated_tsetlin_train_epoch[",
    "tsetlin_train_evaluate": "test_emulated_tsetlin_train_epoch[",
    "tsetlin_train_pick": "test_emulated_tsetlin_train_epoch[",
    "tsetlin_train_feedback": "test_emulated_tsetlin_train_epoch[",
    "musc_aligned_minima<float>": "test_emulated_musc_aligned_minima[float",
    "musc_aligned_minima<double>": "test_emulated_musc_aligned_minima[double",
    "row_norms<float>": "test_emulated_row_norms[float",
    "row_norms<double>": "test_emulated_row_norms[double",
    "knn_exact<float>": "test_emulated_knn_exact[float",
    "knn_exact<double>": "test_emulated_knn_exact[double",
    "coreset_update<float>": "test_emulated_coreset_update_and_pick[float",
    "coreset_update<double>": "test_emulated_coreset_update_and_pick[double",
    "coreset_pick": "test_emulated_coreset_update_and_pick[",
}


def test_every_instantiation_is_executed(request):
    expressions = {e for family in _cuda.name_expressions().values() for e in family}
    assert expressions == set(COVERED), "a kernel instantiation has no emulated test (or a stale entry)"
    if request.config.getoption("keyword") or request.config.getoption("deselect"):
        pytest.skip("the run was narrowed with -k / --deselect: the executed ids are not all here")
    ids = {item.nodeid.split("::")[-1] for item in request.session.items}
    for expr, prefix in COVERED.items():
        name, _, token = prefix.partition("[")
        found = [i for i in ids if i.startswith(name + "[") and (not token or token in i[len(name) + 1:-1].split("-"))]
        assert found, f"{expr}: no test id of {name} names {token}"


def _close(got, want, dtype, what):
    rtol = RTOL[np.dtype(dtype).type]
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, what
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN in different places"
    ok = ~np.isnan(want)
    scale = np.maximum(np.abs(want[ok]), 1.0)  # relative, with values below 1 held to the same absolute bound
    err = np.abs(got[ok] - want[ok]) / scale
    assert err.size == 0 or err.max() <= rtol, f"{what}: max relative error {err.max():.3g} > {rtol}"


# -- gaussian ----------------------------------------------------------------------------------

def _factor(rng, d, k, shape, dtype):
    w = rng.normal(size=(d, k)) / np.sqrt(d)
    if shape == "lower":
        w = np.tril(w)
        w[np.diag_indices(d)] = np.abs(w[np.diag_indices(d)]) + 1.0
    elif shape == "upper":
        w = np.triu(w)
        w[np.diag_indices(d)] = np.abs(w[np.diag_indices(d)]) + 1.0
    return w.astype(dtype)


@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("shape", ["lower", "upper", "full"])
@pytest.mark.parametrize("m,d", [(1, 1), (1, 37), (70, 33), (129, 65)])
def test_emulated_whitened_sq_norms(ctype, shape, m, d, rt, rng):
    dtype = DTYPES[ctype]
    k = d if shape != "full" else max(1, d - 3)
    x = rng.normal(size=(m, d)).astype(dtype)
    mean = rng.normal(size=d).astype(dtype)
    w = _factor(rng, d, k, shape, dtype)
    got = _cuda.mahalanobis(x, mean, w, shape)
    _close(got, _core.mahalanobis(x, mean, w, shape), dtype, "mahalanobis vs Rust")
    oracle = np.linalg.norm((x.astype(np.float64) - mean) @ w.astype(np.float64), axis=1)
    _close(got, oracle, dtype, "mahalanobis vs float64 oracle")
    assert got.dtype == dtype


@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("shape", ["lower", "upper", "full"])
def test_emulated_whitened_sq_norms_per_position(ctype, shape, rt, rng):
    dtype = DTYPES[ctype]
    m, positions, d = 5, 7, 19
    x = rng.normal(size=(m, positions, d)).astype(dtype)
    means = rng.normal(size=(positions, d)).astype(dtype)
    factors = np.stack([_factor(rng, d, d, shape, dtype) for _ in range(positions)])
    got = _cuda.mahalanobis_per_position(x, means, factors, shape)
    oracle = np.linalg.norm(np.einsum("mpd,pdk->mpk", x.astype(np.float64) - means, factors.astype(np.float64)), axis=2)
    _close(got, oracle, dtype, "per-position vs float64 oracle")
    if shape == "lower":
        _close(got, _core.mahalanobis_per_position(x, means, factors, shape), dtype, "per-position vs Rust")


@pytest.mark.parametrize("ctype", ["float", "double"])
def test_emulated_whitened_sq_norms_split_launches(ctype, rt, rng, monkeypatch):
    """Rows and positions past the grid limit are split over launches (limit lowered to 2 here)."""
    monkeypatch.setattr(plans, "MAX_GRID_YZ", 2)
    dtype = DTYPES[ctype]
    m, positions, d = 64 * 4 + 3, 5, 9
    x = rng.normal(size=(m, positions, d)).astype(dtype)
    means = rng.normal(size=(positions, d)).astype(dtype)
    factors = np.stack([_factor(rng, d, d, "lower", dtype) for _ in range(positions)])
    got = _cuda.mahalanobis_per_position(x, means, factors, "lower")
    _close(got, _core.mahalanobis_per_position(x, means, factors, "lower"), dtype, "split launches vs Rust")
    grids = [g for expr, g, _ in rt.launches if expr.startswith("whitened_sq_norms")]
    assert len(grids) == 9 and all(g[1] <= 2 and g[2] <= 2 for g in grids)


# -- mia ---------------------------------------------------------------------------------------

def _bf16_bits(x):
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)  # round to nearest even
    return (rounded >> 16).astype(np.uint16)


def _half_values(bits, half):
    if half == "float16":
        return bits.view(np.float16).astype(np.float64)
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def _token_oracle(values, targets):
    """float64 logp, mu, sigma, max_logp of each row (NaN for rows with NaN/+inf or no finite value)."""
    b, t = targets.shape
    logp, mu, sigma, top = (np.full((b, t), np.nan) for _ in range(4))
    for i in range(b):
        for j in range(t):
            z = values[i, j]
            if np.isnan(z).any() or np.isposinf(z).any() or not np.isfinite(z).any():
                continue
            mx = z.max()
            e = np.exp(z - mx)
            lp = (z - mx) - np.log(e.sum())  # relative to the maximum: no cancellation at large offsets
            p = np.exp(lp)
            logp[i, j] = lp[targets[i, j]]
            mu[i, j] = np.sum(p * lp)
            sigma[i, j] = np.sqrt(np.sum(p * (lp - mu[i, j]) ** 2))
            top[i, j] = lp.max()
    return logp, mu, sigma, top


TOKEN_CASES = [
    pytest.param(1, 1, 1, 0.0, id="one-row-vocab1"),
    pytest.param(2, 3, 257, 0.0, id="vocab257"),
    pytest.param(3, 5, 1000, 100.0, id="offset1e2"),
    pytest.param(2, 4, 777, 3e4, id="offset3e4"),
]


@pytest.mark.parametrize("ctype", ["float", "double", "fca_bf16", "fca_f16"])
@pytest.mark.parametrize("batch,time_,vocab,offset", TOKEN_CASES)
def test_emulated_token_stats(ctype, batch, time_, vocab, offset, rt, rng):
    half = {"fca_bf16": "bfloat16", "fca_f16": "float16"}.get(ctype)
    if half == "float16" and offset > 6e4:
        pytest.skip("float16 holds no such logits")
    scale = 4.0 if offset == 0 else 8.0
    raw = rng.normal(size=(batch, time_ + 1, vocab)) * scale + offset
    if ctype == "double":
        logits = raw
    elif ctype == "float":
        logits = raw.astype(np.float32)
    elif half == "float16":
        logits = raw.astype(np.float16).view(np.uint16)
    else:
        logits = _bf16_bits(raw)
    targets = rng.integers(0, vocab, size=(batch, time_)).astype(np.int64)
    if time_ > 1:
        targets[0, 1] = int(np.argmax(raw[0, 1]))          # a target at the maximum
    mask = np.ones((batch, time_), dtype=np.uint8)
    mask[-1, -1] = 0 if batch * time_ > 1 else 1         # a padded position
    logits = np.ascontiguousarray(logits)
    got = _cuda.token_stats(logits, targets, mask, half or "bfloat16", None, True)
    want = _core.token_stats(logits, targets, mask, half or "bfloat16", None, True)
    assert len(got) == len(want) == 4
    dtype = np.float64 if ctype == "double" else np.float32
    for name, g, w in zip(("logp", "mu", "sigma", "max_logp"), got, want):
        _close(g, w, dtype, f"{name} vs Rust")
    values = raw if ctype == "double" else (
        raw.astype(np.float32).astype(np.float64) if ctype == "float" else _half_values(logits, half))
    oracle = _token_oracle(values[:, :time_], targets)
    for name, g, w in zip(("logp", "mu", "sigma", "max_logp"), got, oracle):
        w = np.where(mask != 0, w, np.nan)
        _close(g, w, dtype, f"{name} vs float64 oracle")


@pytest.mark.parametrize("ctype", ["float", "double"])
def test_emulated_token_stats_bad_rows(ctype, rt, rng):
    """Rows with no finite logit, NaN or +inf give NaN on both paths; ties at the maximum are exact."""
    dtype = DTYPES[ctype]
    logits = rng.normal(size=(1, 5, 70)).astype(dtype)
    logits[0, 0] = -np.inf
    logits[0, 1, 3] = np.nan
    logits[0, 2, 5] = np.inf
    logits[0, 3] = 2.5                                    # all equal: sigma 0, logp = -log V
    targets = np.zeros((1, 5), dtype=np.int64)
    got = _cuda.token_stats(logits, targets, None, "bfloat16", None, True)
    want = _core.token_stats(logits, targets, None, "bfloat16", None, True)
    for g, w in zip(got, want):
        _close(g, w, dtype, "bad rows vs Rust")
    assert got[3][0, 3] == -np.log(70) or abs(got[3][0, 3] + np.log(70)) < 1e-6  # all equal: top-1 is 1/V
    assert np.isnan(got[0][0, :3]).all()
    assert got[2][0, 3] == 0.0 and abs(got[0][0, 3] + np.log(70)) < 1e-6


def test_emulated_token_stats_grid_stride(rt, rng, monkeypatch):
    """More rows than blocks: the kernel strides over rows (block count lowered to 3 here)."""
    monkeypatch.setattr(plans, "TOKEN_STATS_MAX_BLOCKS", 3)
    logits = rng.normal(size=(2, 6, 50)).astype(np.float32)
    targets = rng.integers(0, 50, size=(2, 6)).astype(np.int64)
    got = _cuda.token_stats(logits, targets, None, "bfloat16")
    want = _core.token_stats(logits, targets, None, "bfloat16")
    for g, w in zip(got, want):
        _close(g, w, np.float32, "grid-stride vs Rust")
    assert rt.launches[-1][1] == (3, 1, 1)


# -- musc --------------------------------------------------------------------------------------

@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("shape,r", [((1, 1, 1, 1), 1), ((2, 5, 6, 7), 3), ((2, 4, 3, 300), 5)])
def test_emulated_musc_lnamd(ctype, shape, r, rt, rng, monkeypatch):
    dtype = DTYPES[ctype]
    x = rng.normal(size=shape).astype(dtype)
    got = _cuda.musc_lnamd(x, r)
    _close(got, _core.musc_lnamd(x, r), dtype, "lnamd vs Rust")
    # Split into launches of 7 patches (2**31 - 1 on a device): the same result.
    cuda_musc = importlib.import_module("fastcore_ad._cuda.musc")
    monkeypatch.setattr(cuda_musc, "_LNAMD_MAX_GRID_X", 7)
    np.testing.assert_array_equal(_cuda.musc_lnamd(x, r), got)
    monkeypatch.setattr(cuda_musc, "_LNAMD_MAX_GRID_X", plans.MAX_GRID_X)
    if dtype == np.float64:  # squares past float64's range: both paths measure the scaled image
        huge = x * 1e200
        _close(_cuda.musc_lnamd(huge, r), _core.musc_lnamd(huge, r), dtype, "lnamd of huge values vs Rust")
        _close(_cuda.musc_lnamd(huge, r), got, dtype, "lnamd of huge values vs the values")


@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("n,p,c,max_memory", [(2, 1, 1, None), (4, 70, 19, None), (5, 33, 8, 1), (3, 65, 40, 2000)])
def test_emulated_musc_pair_minima(ctype, n, p, c, max_memory, rt, rng):
    dtype = DTYPES[ctype]
    x = rng.normal(size=(n, p, c)).astype(dtype)
    got = _cuda.musc_mutual_scores(x, 0.5, max_memory)
    _close(got, _core.musc_mutual_scores(x, 0.5, max_memory), dtype, "mutual scores vs Rust")
    bank = rng.normal(size=(n + 1, p + 2, c)).astype(dtype)
    got = _cuda.musc_scores_against_bank(x, bank, 0.3, max_memory)
    _close(got, _core.musc_scores_against_bank(x, bank, 0.3, max_memory), dtype, "bank scores vs Rust")


@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("top_ratio", [pytest.param(1e-9, id="k1"), pytest.param(1.0, id="kmax"),
                                       pytest.param(0.5, id="khalf")])
def test_emulated_musc_top_k_mean(ctype, top_ratio, rt, rng):
    """Ties: duplicated images give exact zero distances, and equal minima must be counted once each."""
    dtype = DTYPES[ctype]
    base = rng.normal(size=(3, 20, 6)).astype(dtype)
    x = np.concatenate([base, base[:2], base[:1]])      # 6 images, several exact duplicates
    got = _cuda.musc_mutual_scores(x, top_ratio, None)
    want = _core.musc_mutual_scores(x, top_ratio, None)
    _close(got, want, dtype, "top-k mean vs Rust")
    refs = x.shape[0] - 1
    k = musc.top_k(refs, top_ratio)
    d = np.sqrt(((x[:, None, :, None, :].astype(np.float64) - x[None, :, None, :, :]) ** 2).sum(-1)).min(-1)
    oracle = np.stack([np.sort(np.delete(d[i], i, axis=0), axis=0)[:k].mean(0) for i in range(x.shape[0])])
    _close(got, oracle, dtype, "top-k mean vs float64 oracle")


@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("shape,window,ratio", [((2, 1, 1, 1), 0, 1.0), ((4, 3, 5, 7), 1, 0.5), ((5, 4, 4, 3), 2, 1e-9)])
def test_emulated_musc_aligned_minima(ctype, shape, window, ratio, rt, rng):
    dtype = DTYPES[ctype]
    x = rng.normal(size=shape).astype(dtype)
    if shape[0] > 3:
        x[3] = x[1]                                          # ties at distance 0
    got = _cuda.musc_aligned_mutual_scores(x, ratio, window)
    _close(got, _core.musc_aligned_mutual_scores(x, ratio, window), dtype, "aligned scores vs Rust")


def test_emulated_musc_pair_minima_split_jobs(rt, rng, monkeypatch):
    monkeypatch.setattr(plans, "MUSC_MAX_JOBS_PER_LAUNCH", 2)
    x = rng.normal(size=(5, 9, 4)).astype(np.float32)
    _close(_cuda.musc_mutual_scores(x, 0.5, None), _core.musc_mutual_scores(x, 0.5, None), np.float32, "split jobs")
    assert sum(1 for e, _, _ in rt.launches if e.startswith("musc_pair_minima")) == 5


# -- tsetlin -----------------------------------------------------------------------------------

@pytest.mark.parametrize("coalesced", [False, True], ids=["per-class", "coalesced"])
@pytest.mark.parametrize("n_features", [1, 70, 130])
def test_emulated_tsetlin_class_sums(coalesced, n_features, rt, rng):
    X = (rng.random((40, n_features)) < 0.3).astype(np.uint8)
    y = rng.integers(0, 3, size=40)
    model = tsetlin.TsetlinMachine(n_clauses=10, threshold=5, coalesced=coalesced, seed=1).fit(X, y, epochs=1)
    banks, clauses, lw = model.action_.shape
    fw = lw // 2
    # Random sparse include bits inside the features (padding bits stay 0), random weights.
    bits = rng.random((banks, clauses, 2, fw * 64)) < 3.0 / max(n_features, 1)
    bits[..., n_features:] = False
    action = np.packbits(bits, axis=-1, bitorder="little").view("<u8").reshape(banks, clauses, lw).astype(np.uint64)
    weights = rng.integers(-5, 6, size=model.weights_.shape).astype(np.int32)
    docs = tsetlin._pack((rng.random((37, n_features)) < 0.5).astype(np.uint8))
    cfg = model._config()
    got = _cuda.tsetlin_class_sums(cfg, action, weights, docs)
    want = _core.tsetlin_class_sums(cfg, action, weights, docs)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got[:, : want.shape[1]], want)


def test_emulated_tsetlin_class_sums_split_launches(rt, rng, monkeypatch):
    monkeypatch.setattr(plans, "MAX_GRID_YZ", 1)
    X = (rng.random((30, 50)) < 0.3).astype(np.uint8)
    y = rng.integers(0, 2, size=30)
    model = tsetlin.TsetlinMachine(n_clauses=200, threshold=5, seed=2).fit(X, y, epochs=1)
    docs = tsetlin._pack(X)
    cfg = model._config()
    got = _cuda.tsetlin_class_sums(cfg, model.action_, model.weights_, docs)
    np.testing.assert_array_equal(got, _core.tsetlin_class_sums(cfg, model.action_, model.weights_, docs))
    assert sum(1 for e, _, _ in rt.launches if e == "tsetlin_class_sums") == 4  # 400 clauses / 128


TRAIN_CONFIG = dict(n_features=70, n_classes=3, n_clauses=12, state_bits=8, threshold=6, specificity=3.0,
                    weighted=True, boost_true_positive=True, focused_negatives=True, max_included_literals=0,
                    negated_literals=True, max_negated_literals=0, absorbing=None, clause_drop_p=0.0, coalesced=False, seed=7)

# One option varied at a time, then combinations (70 and 130 features cross 64-bit words).
TRAIN_CASES = [
    pytest.param({}, id="default"),
    pytest.param({"weighted": False}, id="unweighted"),
    pytest.param({"coalesced": True}, id="coalesced"),
    pytest.param({"coalesced": True, "weighted": False}, id="coalesced-unweighted"),
    pytest.param({"absorbing": 124}, id="absorbing124"),
    pytest.param({"state_bits": 3, "absorbing": 0}, id="bits3-absorbing0"),
    pytest.param({"max_included_literals": 4}, id="budget4"),
    pytest.param({"clause_drop_p": 0.3}, id="drop"),
    pytest.param({"focused_negatives": False}, id="uniform"),
    pytest.param({"negated_literals": False}, id="positive-only"),
    pytest.param({"max_negated_literals": 2}, id="negation-cap2"),
    pytest.param({"max_negated_literals": 3, "max_included_literals": 5, "coalesced": True}, id="negation-cap-budget-coalesced"),
    pytest.param({"max_negated_literals": 1, "state_bits": 3, "absorbing": 1, "n_features": 130}, id="negation-cap-bits3"),
    pytest.param({"negated_literals": False, "coalesced": True, "max_included_literals": 3}, id="positive-only-coalesced"),
    pytest.param({"boost_true_positive": False}, id="no-boost"),
    pytest.param({"state_bits": 2}, id="bits2"),
    pytest.param({"state_bits": 3, "absorbing": 1}, id="bits3-absorbing1"),
    pytest.param({"state_bits": 10, "n_features": 130, "specificity": 1.0}, id="bits10-s1"),
    pytest.param({"state_bits": 16, "threshold": 20, "n_clauses": 10}, id="bits16"),
    pytest.param({"n_classes": 2, "n_features": 64}, id="two-classes-one-word"),
    pytest.param({"coalesced": True, "focused_negatives": False, "max_included_literals": 3, "clause_drop_p": 0.2,
                  "boost_true_positive": False, "absorbing": 2, "n_clauses": 15}, id="coalesced-combined"),
    pytest.param({"focused_negatives": False, "weighted": False, "state_bits": 3, "absorbing": 1, "clause_drop_p": 0.25,
                  "max_included_literals": 6, "n_features": 130}, id="per-class-combined"),
]


def _train_data(rng, cfg, n):
    f, k = cfg["n_features"], cfg["n_classes"]
    X = rng.random((n, f)) < 0.3
    # Labels that follow a few features (some past the first word), so clauses fire and grow.
    y = (X[:, 3].astype(np.int64) + 2 * X[:, f - 4]) % k
    flip = rng.random(n) < 0.1
    y[flip] = rng.integers(0, k, size=int(flip.sum()))
    return X, y.astype(np.int64)


def _csr(X):
    rows, cols = np.nonzero(X)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=X.shape[0]))]).astype(np.int64)
    return indptr, cols.astype(np.int32)


def _shaped_state(cfg):
    """The state as TsetlinMachine holds it: shaped views of the arrays the Rust kernel returns."""
    action, lower, weights = _core.tsetlin_initial_state(cfg)
    banks = 1 if cfg["coalesced"] else cfg["n_classes"]
    lw = 2 * ((cfg["n_features"] + 63) // 64)
    return [action.reshape(banks, cfg["n_clauses"], lw),
            lower.reshape(banks, cfg["n_clauses"], lw, cfg["state_bits"] - 1),
            weights.reshape(banks * cfg["n_clauses"], -1) if cfg["coalesced"] else weights.reshape(banks, -1)]


def _train_both(cfg, docs, y, orders, n_jobs=None):
    """Train from the same initial state on both paths; the states must agree after every epoch."""
    want, got = _shaped_state(cfg), _shaped_state(cfg)
    for epoch, order in enumerate(orders):
        _core.tsetlin_train_epoch(cfg, *want, docs, y, order, epoch)
        _cuda.tsetlin_train_epoch(cfg, *got, docs, y, order, epoch, n_jobs)
        for name, g, w in zip(("action", "lower", "weights"), got, want):
            assert g.dtype == w.dtype and g.shape == w.shape, name
            assert np.array_equal(g, w), f"{name} differs from the Rust state after epoch {epoch}"
    return got


@pytest.mark.parametrize("options", TRAIN_CASES)
def test_emulated_tsetlin_train_epoch(options, rt, rng):
    cfg = {**TRAIN_CONFIG, **options}
    n = 60
    X, y = _train_data(rng, cfg, n)
    docs = tsetlin._pack(X.astype(np.uint8))
    orders = [rng.permutation(n).astype(np.int64) for _ in range(3)]
    action, _, _ = _train_both(cfg, docs, y, orders)
    assert action.any(), "no literal was included"
    names = {e for e, _, _ in rt.launches}
    assert {"tsetlin_mask_pool", "tsetlin_train_evaluate", "tsetlin_train_pick", "tsetlin_train_feedback"} <= names


@pytest.mark.parametrize("coalesced", [False, True], ids=["per-class", "coalesced"])
@pytest.mark.parametrize("layout", ["packed", "csr"])
@pytest.mark.parametrize("orders", ["permutation", "repeats"])
def test_emulated_tsetlin_train_epoch_docs_and_orders(coalesced, layout, orders, rt, rng):
    """CSR documents are packed on the way in; an order may repeat examples or leave some out."""
    cfg = {**TRAIN_CONFIG, "coalesced": coalesced, "n_features": 100, "clause_drop_p": 0.1}
    n = 45
    X, y = _train_data(rng, cfg, n)
    X[5] = False                                          # an empty document
    docs = tsetlin._pack(X.astype(np.uint8)) if layout == "packed" else _csr(X)
    if orders == "permutation":
        order_list = [rng.permutation(n).astype(np.int64) for _ in range(2)]
    else:
        order_list = [rng.integers(0, n, size=2 * n).astype(np.int64),
                      np.repeat(np.arange(n // 3), 3).astype(np.int64)]
    _train_both(cfg, docs, y, order_list, n_jobs=1)


def test_emulated_tsetlin_train_empty_order(rt, rng):
    cfg = dict(TRAIN_CONFIG)
    X, y = _train_data(rng, cfg, 10)
    state = _shaped_state(cfg)
    before = [a.copy() for a in state]
    _cuda.tsetlin_train_epoch(cfg, *state, tsetlin._pack(X.astype(np.uint8)), y, np.zeros(0, np.int64), 0)
    assert all(np.array_equal(a, b) for a, b in zip(state, before))


def test_emulated_tsetlin_training_learns(rt, rng):
    """A rule over two features in different words is learnt from CUDA-trained state alone."""
    cfg = {**TRAIN_CONFIG, "n_clauses": 20, "threshold": 10, "seed": 3}
    n = 90
    X = rng.random((n, cfg["n_features"])) < 0.3
    y = np.where(X[:, 3] & ~X[:, 66], 1, np.where(X[:, 66], 2, 0)).astype(np.int64)
    docs = tsetlin._pack(X.astype(np.uint8))
    state = _shaped_state(cfg)
    for epoch in range(10):
        _cuda.tsetlin_train_epoch(cfg, *state, docs, y, rng.permutation(n).astype(np.int64), epoch)
    assert state[0].any()
    sums = _cuda.tsetlin_class_sums(cfg, state[0], state[2], docs)
    assert (sums.argmax(axis=1) == y).mean() >= 0.9


class _CopyingArrays:
    """numpy, except that ``asarray`` always copies: stands in for a device whose arrays are not the host's."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def asarray(x, dtype=None):
        return np.array(x, dtype=dtype, copy=True)


def test_emulated_tsetlin_train_updates_host_arrays_through_device_copies(rng):
    """Host state arrays given to a runtime whose device arrays are copies are written back in place."""
    runtime = emulation.EmulatedRuntime()
    runtime.xp = _CopyingArrays()
    cfg = dict(TRAIN_CONFIG)
    X, y = _train_data(rng, cfg, 40)
    docs = tsetlin._pack(X.astype(np.uint8))
    order = rng.permutation(40).astype(np.int64)
    want, got = _shaped_state(cfg), _shaped_state(cfg)
    _core.tsetlin_train_epoch(cfg, *want, docs, y, order, 0)
    with _cuda.using(runtime):
        _cuda.tsetlin_train_epoch(cfg, *got, docs, y, order, 0)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def _bad_training_calls(cfg, docs, y, n):
    order = np.arange(n, dtype=np.int64)
    state = _shaped_state
    return [
        pytest.param(lambda: (state(cfg), docs, y + 1, order), "y", id="y-class"),
        pytest.param(lambda: (state(cfg), docs, -y - 1, order), "y", id="y-negative"),
        pytest.param(lambda: (state(cfg), docs, y[:-1], order), "y", id="y-length"),
        pytest.param(lambda: (state(cfg), docs, y, order + 1), "order", id="order-past-end"),
        pytest.param(lambda: (state(cfg), docs, y, order - 1), "order", id="order-negative"),
        pytest.param(lambda: (state(cfg), (np.array([0, 1]), np.array([70], np.int32)), y[:1], order[:1]), "X",
                     id="csr-feature"),
        pytest.param(lambda: (state(cfg), docs | np.uint64(1 << 63), y, order), "X", id="packed-padding"),
        pytest.param(lambda: ([a[..., :-1] if i == 1 else a for i, a in enumerate(state(cfg))], docs, y, order),
                     "model state", id="state-size"),
    ]


_BAD_CFG = dict(TRAIN_CONFIG)
_BAD_X = (np.random.default_rng(0).random((8, 70)) < 0.3).astype(np.uint8)
_BAD_Y = np.arange(8, dtype=np.int64) % 3


@pytest.mark.parametrize("make,name", _bad_training_calls(_BAD_CFG, tsetlin._pack(_BAD_X), _BAD_Y, 8))
def test_emulated_tsetlin_train_bad_input_is_the_rust_error(make, name, rt):
    args = make()
    with pytest.raises(ValueError, match=name) as on_cuda:
        _cuda.tsetlin_train_epoch(_BAD_CFG, *[np.ascontiguousarray(a) for a in args[0]], *args[1:], 0)
    with pytest.raises(ValueError) as on_cpu:
        _core.tsetlin_train_epoch(_BAD_CFG, *[np.ascontiguousarray(a) for a in args[0]], *args[1:], 0)
    assert str(on_cuda.value) == str(on_cpu.value)
    assert not rt.launches, "a bad input must be refused before any kernel runs"


def test_emulated_tsetlin_train_refuses_wrong_dtypes_and_layouts(rt):
    cfg = dict(TRAIN_CONFIG)
    docs, y, order = tsetlin._pack(_BAD_X), _BAD_Y, np.arange(8, dtype=np.int64)
    action, lower, weights = _shaped_state(cfg)
    with pytest.raises(TypeError, match="weights"):
        _cuda.tsetlin_train_epoch(cfg, action, lower, weights.astype(np.int64), docs, y, order, 0)
    with pytest.raises(ValueError, match="lower"):
        _cuda.tsetlin_train_epoch(cfg, action, np.asfortranarray(lower), weights, docs, y, order, 0)
    with pytest.raises(ValueError, match="state_bits"):
        _cuda.tsetlin_train_epoch({**cfg, "state_bits": 17}, action, lower, weights, docs, y, order, 0)


# -- patchcore ---------------------------------------------------------------------------------

@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("m,n,d,k", [(1, 1, 1, 1), (5, 70, 6, 32), (9, 130, 17, 3)])
def test_emulated_knn_exact(ctype, metric, m, n, d, k, rt, rng):
    dtype = DTYPES[ctype]
    q = rng.normal(size=(m, d)).astype(dtype)
    b = rng.normal(size=(n, d)).astype(dtype)
    if n > 3:
        b[3] = b[1]                                  # a tie: the lower index first
        q[0] = b[1]
    got_d, got_i = _cuda.knn(q, b, k, metric)
    want_d, want_i = _core.knn(q, b, k, metric)
    np.testing.assert_array_equal(got_i, want_i)
    _close(got_d, want_d, np.float64, "knn distances vs Rust")


@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("n,d", [(1, 1), (3, 7), (300, 130)])
def test_emulated_row_norms(ctype, n, d, rt, rng):
    """The cosine norms, summed in order as Rust's exact_dot (np.add.accumulate is sequential)."""
    x = rng.normal(size=(n, d)).astype(DTYPES[ctype])
    wide = x.astype(np.float64)
    np.testing.assert_array_equal(_cuda_patchcore.row_norms(x), np.sqrt(np.add.accumulate(wide * wide, axis=1)[:, -1]))


@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("n,d,n_select,start", [(1, 1, 1, 0), (300, 5, 40, 17), (600, 3, 600, 0)])
def test_emulated_coreset_update_and_pick(ctype, n, d, n_select, start, rt, rng):
    dtype = DTYPES[ctype]
    x = rng.normal(size=(n, d)).astype(dtype)
    if n > 4:
        x[4] = x[2]                                  # duplicates: distance ties
    got = _cuda.greedy_coreset(x, n_select, start)
    np.testing.assert_array_equal(got, _core.greedy_coreset(x, n_select, start))


def test_knn_plan_refuses_k_past_the_kernel_lists():
    with pytest.raises(ValueError, match="k"):
        plans.knn_exact(10, 33)


# -- the public API on the CUDA backend --------------------------------------------------------

@contextlib.contextmanager
def cuda_backend():
    """numpy arrays dispatched to the CUDA backend (emulated): the whole public path of a GPU call."""
    runtime = emulation.EmulatedRuntime()
    modules = (gaussian, mia, musc, tsetlin)
    saved = [m.kernels for m in modules]
    for module in modules:
        module.kernels = lambda backend: _cuda
    try:
        with _cuda.using(runtime):
            yield runtime
    finally:
        for module, original in zip(modules, saved):
            module.kernels = original


def test_public_api_on_the_cuda_backend_matches_the_cpu(rng):
    x = rng.normal(size=(20, 6)).astype(np.float32)
    mean, factor = np.zeros(6, np.float32), np.eye(6, dtype=np.float32)
    feats = rng.normal(size=(3, 4, 4, 5)).astype(np.float32)
    logits = rng.normal(size=(2, 5, 30)).astype(np.float32)
    targets = rng.integers(0, 30, size=(2, 4))

    def run():
        return (gaussian.mahalanobis(x, mean, factor), musc.mutual_scores(musc.lnamd(feats, 3), 0.5),
                *mia.token_stats(logits, targets, np.array([4, 2])))

    with cuda_backend() as runtime:
        got = run()
    assert {e.split("<")[0] for e, _, _ in runtime.launches} == {
        "whitened_sq_norms", "musc_lnamd", "musc_pair_minima", "musc_top_k_mean", "token_stats"}
    for g, w in zip(got, run()):
        _close(g, w, np.float32, "public API, CUDA backend vs CPU")


FIT_OPTIONS = [
    pytest.param({}, id="default"),
    pytest.param({"weighted": False, "boost_true_positive": False}, id="unweighted-no-boost"),
    pytest.param({"coalesced": True, "n_clauses": 15}, id="coalesced"),
    pytest.param({"absorbing": 120, "max_included_literals": 5}, id="absorbing-budget"),
    pytest.param({"clause_drop_p": 0.25, "negative_sampling": "uniform"}, id="drop-uniform"),
    pytest.param({"negated_literals": False}, id="positive-only"),
    pytest.param({"max_negated_literals": 2, "max_included_literals": 4}, id="negation-cap"),
]


def _fitted_on_both_backends(fit):
    """``fit()`` run on the CUDA backend (emulated), then on the CPU: both results, after checking
    that the training and prediction kernels were launched."""
    with cuda_backend() as runtime:
        on_cuda = fit()
    assert {e.split("<")[0] for e, _, _ in runtime.launches} >= {"tsetlin_train_feedback", "tsetlin_class_sums"}
    return on_cuda, fit()


def _assert_same_machines(pairs):
    for a, b in pairs:
        for name in ("action_", "lower_", "weights_"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert any(b.action_.any() for _, b in pairs)


@pytest.mark.parametrize("options", FIT_OPTIONS)
def test_tsetlin_fit_on_the_cuda_backend_is_the_cpu_model(rng, options):
    X = (rng.random((60, 75)) < 0.3).astype(np.uint8)
    y = rng.integers(0, 3, 60)
    X[:, 3] = y == 1  # something to learn
    seed = int(rng.integers(0, 2**62))
    params = dict(n_clauses=12, threshold=6, specificity=3.0, seed=seed) | options

    def train():
        tm = tsetlin.TsetlinMachine(**params).fit(X, y, epochs=2, progress_bar=False)
        return tm.partial_fit(sp.csr_matrix(X), y)  # a third epoch from CSR input

    with cuda_backend() as runtime:
        on_cuda = train()
    assert {e.split("<")[0] for e, _, _ in runtime.launches} >= {"tsetlin_train_evaluate", "tsetlin_train_feedback"}
    _assert_same_machines([(on_cuda, train())])


def test_tsetlin_ensemble_on_the_cuda_backend_is_the_cpu_vote(rng):
    X = (rng.random((50, 70)) < 0.3).astype(np.uint8)
    y = rng.integers(0, 3, 50)
    X[:, 5] = y == 2
    seed = int(rng.integers(0, 2**62))

    def vote():
        machine = tsetlin.TsetlinMachine(n_clauses=10, threshold=5, specificity=3.0, seed=seed)
        fitted = tsetlin.TsetlinEnsemble(machine, n_estimators=2).fit(X, y, epochs=2, progress_bar=False)
        return fitted, fitted.votes(X)

    (on_cuda, cuda_votes), (on_cpu, cpu_votes) = _fitted_on_both_backends(vote)
    _assert_same_machines(list(zip(on_cuda.estimators_, on_cpu.estimators_)))
    np.testing.assert_array_equal(np.asarray(cuda_votes), cpu_votes)


@pytest.mark.parametrize("vote, features_per_class", [(1, 7), (2, "auto")])
def test_tsetlin_one_vs_rest_on_the_cuda_backend_is_the_cpu_vote(rng, vote, features_per_class):
    X = (rng.random((60, 80)) < 0.25).astype(np.uint8)
    y = rng.integers(0, 4, 60)
    X[:, 2], X[:, 9] = y == 1, y == 3
    seed = int(rng.integers(0, 2**62))

    def vote_of():
        machine = tsetlin.TsetlinMachine(n_clauses=8, threshold=5, specificity=3.0, seed=seed)
        model = machine if vote == 1 else tsetlin.TsetlinEnsemble(machine, n_estimators=vote)
        fitted = tsetlin.TsetlinOneVsRest(model, features_per_class=features_per_class).fit(
            X, y, epochs=2, progress_bar=False)
        return fitted, fitted.votes(X)

    (on_cuda, cuda_votes), (on_cpu, cpu_votes) = _fitted_on_both_backends(vote_of)
    for got, want in zip(on_cuda.feature_columns_, on_cpu.feature_columns_, strict=True):
        np.testing.assert_array_equal(got, want)
    pairs = list(zip(on_cuda.estimators_, on_cpu.estimators_))
    if vote > 1:
        pairs = [pair for a, b in pairs for pair in zip(a.estimators_, b.estimators_)]
    assert len(pairs) == 4 * vote
    _assert_same_machines(pairs)
    np.testing.assert_array_equal(np.asarray(cuda_votes), cpu_votes)


BAD_INPUTS = [
    (lambda: gaussian.mahalanobis(np.zeros((3, 4)), np.zeros(5), np.eye(4)), ValueError, "mean"),
    (lambda: gaussian.mahalanobis(np.full((3, 4), np.nan), np.zeros(4), np.eye(4)), ValueError, "x"),
    (lambda: musc.mutual_scores(np.zeros((1, 4, 3)), 0.5), ValueError, "patches"),
    (lambda: musc.lnamd(np.zeros((1, 4, 3)), 3), ValueError, "features"),
    (lambda: mia.token_stats(np.zeros((1, 2, 3), np.float32), np.array([[0, 5]])), ValueError, "targets"),
    (lambda: mia.token_stats(np.zeros((1, 2, 3), np.int8), np.array([[0, 1]])), TypeError, "logits"),
]


@pytest.mark.parametrize("index", range(len(BAD_INPUTS)))
def test_bad_input_is_the_same_error_on_both_backends(index):
    call, error, name = BAD_INPUTS[index]
    with cuda_backend() as runtime, pytest.raises(error, match=name) as on_cuda:
        call()
    with pytest.raises(error, match=name) as on_cpu:
        call()
    assert str(on_cuda.value) == str(on_cpu.value)


# -- launch plans ------------------------------------------------------------------------------

def test_both_runtimes_launch_through_the_same_plan_check():
    assert emulation.EmulatedRuntime.launch is _runtime.Runtime.launch
    assert _runtime.CupyRuntime.launch is _runtime.Runtime.launch


def test_the_emulated_run_calls_the_shared_plan_functions(rt, rng, monkeypatch):
    calls = []
    for name in ("whitened_sq_norms", "token_stats", "musc_lnamd", "musc_pairs", "musc_pair_minima",
                 "musc_top_k_mean", "tsetlin_class_sums"):
        original = getattr(plans, name)
        monkeypatch.setattr(plans, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    _cuda.mahalanobis(rng.normal(size=(3, 4)), np.zeros(4), np.eye(4), "lower")
    _cuda.token_stats(rng.normal(size=(1, 2, 9)), np.zeros((1, 2), np.int64), None, "bfloat16")
    _cuda.musc_mutual_scores(_cuda.musc_lnamd(rng.normal(size=(2, 3, 3, 4)), 1).reshape(2, 9, 4), 0.5)
    assert set(calls) == {"whitened_sq_norms", "token_stats", "musc_lnamd", "musc_pairs", "musc_pair_minima",
                          "musc_top_k_mean"}


@pytest.mark.parametrize("m,positions", [(4_194_241, 1), (10, 65_536), (70_000_000, 70_000)])
def test_gaussian_plan_fits_cuda_grid_limits(m, positions):
    launches = plans.whitened_sq_norms(m, 300, positions)
    for piece in launches:
        plans.check_launch(piece)
    covered = {(piece.offsets["pos0"] + z, piece.offsets["row_tile0"] + y)
               for piece in launches if piece.grid[1] * piece.grid[2] < 5000
               for z in range(piece.grid[2]) for y in range(piece.grid[1])}
    total = sum(piece.grid[1] * piece.grid[2] for piece in launches)
    assert total == positions * -(-m // 64)
    if total < 5000:
        assert len(covered) == total


def test_tsetlin_plan_fits_cuda_grid_limits():
    launches = plans.tsetlin_class_sums(1000, 128 * 65_535 + 1)
    assert [p.offsets["clause_tile0"] for p in launches] == [0, 65_535]
    for piece in launches:
        plans.check_launch(piece)


def test_lnamd_plan_splits_past_the_grid_limit():
    launches = plans.musc_lnamd(3 * plans.MAX_GRID_X + 5)
    assert [p.offsets["patch0"] for p in launches] == [0, plans.MAX_GRID_X, 2 * plans.MAX_GRID_X, 3 * plans.MAX_GRID_X]
    assert [p.grid[0] for p in launches] == [plans.MAX_GRID_X] * 3 + [5]
    for piece in launches:
        plans.check_launch(piece)


def test_tsetlin_training_plans_fit_cuda_limits():
    for clauses in (1, 10, 129, 1 << 24):
        for piece in (*plans.tsetlin_train_evaluate(3 * clauses), *plans.tsetlin_train_feedback(clauses, False),
                      *plans.tsetlin_train_feedback(clauses, True), *plans.tsetlin_train_pick(),
                      *plans.tsetlin_mask_pool()):
            plans.check_launch(piece)
    (evaluate,) = plans.tsetlin_train_evaluate(300)
    (feedback,) = plans.tsetlin_train_feedback(300, False)
    assert evaluate.grid[0] * evaluate.threads >= 300 and feedback.grid[0] * feedback.threads >= 600
    (pool,) = plans.tsetlin_mask_pool()
    assert pool.grid[0] * pool.threads >= plans.TSETLIN_POOL_CHUNKS


def test_a_plan_past_the_limits_is_refused():
    with pytest.raises(ValueError, match="exceeds CUDA"):
        plans.check_launch(plans.launch((1, 65_536), (16, 16)))
    with pytest.raises(ValueError, match="patches"):
        plans.musc_pair_minima(3, 64 * 65_536, 10)


def test_musc_plan_numbers_come_from_the_rust_definitions():
    plan = plans.musc_pairs(10, 9, 100, 64, 0.3, 10_000, 4, 1.0, 2.0)
    assert plan.k == _core.musc_top_k(9, 0.3) == 2
    assert plan.chunk == _core.musc_chunk_of_queries(10, 9, 100, 10_000, 8) == 1
    assert plan.tol == _core.musc_key_tolerance(64, 1.0, 2.0, 4) > 0
    assert musc.top_k(9, 0.3) == plan.k
