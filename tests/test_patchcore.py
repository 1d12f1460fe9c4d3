"""Exact kNN and the greedy k-center coreset against plain numpy implementations of the same rules."""

from __future__ import annotations

import numpy as np
import pytest

from fastcore_ad import knn, patchcore


def _knn_oracle(q, b, k, metric):
    q64, b64 = q.astype(np.float64), b.astype(np.float64)
    if metric == "euclidean":
        dist = np.sqrt(((q64[:, None, :] - b64[None, :, :]) ** 2).sum(-1))
    else:
        dist = 1.0 - (q64 @ b64.T) / np.linalg.norm(q64, axis=1)[:, None] / np.linalg.norm(b64, axis=1)[None, :]
    order = np.lexsort((np.broadcast_to(np.arange(b.shape[0]), dist.shape), dist), axis=1)[:, :k]
    return np.take_along_axis(dist, order, axis=1), order


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,n,d,k", [(1, 1, 1, 1), (7, 50, 3, 50), (300, 2100, 17, 1), (257, 2049, 5, 9)])
def test_knn_equals_float64_brute_force(metric, dtype, m, n, d, k, rng):
    q = rng.normal(size=(m, d)).astype(dtype)
    b = rng.normal(size=(n, d)).astype(dtype)
    if n > 3:
        b[3] = b[1]                                 # exact duplicate: ties go to the lower index
        q[0] = b[1]                                 # a query on a bank point: distance 0
    dist, idx = knn(q, b, k, metric=metric)
    want_d, want_i = _knn_oracle(q, b, k, metric)
    assert dist.dtype == np.float64 and idx.dtype == np.int64 and dist.shape == (m, k)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(dist, want_d, rtol=1e-12, atol=1e-12)


def test_knn_many_equal_distances_break_ties_by_index(rng):
    b = np.repeat(rng.normal(size=(3, 4)), 5, axis=0)   # every vector five times
    q = b[[0, 7, 14]] + 0.0
    dist, idx = knn(q, b, 7)
    want_d, want_i = _knn_oracle(q, b, 7, "euclidean")
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(dist, want_d, atol=1e-12)


def test_knn_rejects_bad_input(rng):
    q, b = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))
    with pytest.raises(ValueError, match="k"):
        knn(q, b, 6)
    with pytest.raises(ValueError, match="k"):
        knn(q, b, 0)
    with pytest.raises(TypeError, match="k"):
        knn(q, b, 1.5)
    with pytest.raises(ValueError, match="bank"):
        knn(q, rng.normal(size=(5, 3)))
    with pytest.raises(ValueError, match="metric"):
        knn(q, b, metric="manhattan")
    with pytest.raises(ValueError, match="queries"):
        knn(np.full((2, 4), np.nan), b)
    zero = b.copy()
    zero[2] = 0.0
    with pytest.raises(ValueError, match="bank: row 2"):
        knn(q, zero, metric="cosine")


def _coreset_oracle(x, n_select, start):
    x = x.astype(np.float64)
    min_d2 = np.full(x.shape[0], np.inf)
    chosen, centre = [], start
    for _ in range(n_select):
        chosen.append(centre)
        min_d2 = np.minimum(min_d2, ((x - x[centre]) ** 2).sum(axis=1))
        candidates = np.where(np.isin(np.arange(len(x)), chosen), -1.0, min_d2)  # unselected points only
        centre = int(np.argmax(candidates))          # first maximum: the lowest index on ties
    return np.array(chosen)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,d,n_select,start", [(1, 1, 1, 0), (40, 3, 40, 5), (9000, 8, 300, 123), (500, 130, 1, 7),
                                                 (6000, 130, 700, 11)])
def test_greedy_coreset_equals_the_numpy_rule(dtype, n, d, n_select, start, rng):
    x = rng.normal(size=(n, d)).astype(dtype)
    got = patchcore.greedy_coreset(x, n_select, start=start, progress_bar=False)
    np.testing.assert_array_equal(got, _coreset_oracle(x, n_select, start))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_greedy_coreset_on_clusters_equals_the_numpy_rule(dtype, rng):
    # Tight clusters far apart, a lattice with exact ties and repeated points: most points sit
    # far below the leader and wait many steps between measurements, many queue bounds are equal,
    # and a careless tie order or slack would change the choice.
    centres = rng.normal(size=(12, 6)) * 50.0
    clusters = (centres[rng.integers(0, 12, 1500)] + rng.normal(size=(1500, 6)) * 0.3).astype(dtype)
    lattice = np.stack(np.meshgrid(*[np.arange(4.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    lattice = np.hstack([lattice, np.zeros((len(lattice), 3))]).astype(dtype)
    x = np.vstack([clusters, lattice, clusters[:200]])
    for n_select, start in ((len(x) // 2, 0), (700, 1700)):
        got = patchcore.greedy_coreset(x, n_select, start=start, progress_bar=False)
        np.testing.assert_array_equal(got, _coreset_oracle(x, n_select, start))


def test_greedy_coreset_ties_and_duplicates():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [1.0, 0.0]])
    got = patchcore.greedy_coreset(x, 6, progress_bar=False)
    np.testing.assert_array_equal(got, _coreset_oracle(x, 6, 0))
    assert got[:3].tolist() == [0, 1, 2]   # four points at distance 1: the lowest index first


def test_greedy_coreset_raises_what_its_progress_raises(rng, monkeypatch):
    # Ctrl-C runs Python's signal handler inside the progress callback: the KeyboardInterrupt
    # must stop the selection and reach the caller, with the bar closed.
    x = rng.normal(size=(400, 3))
    seen, closed = [], []

    class Bar:
        stop_at = 128

        def update(self, count):
            seen.append(count)
            if sum(seen) >= self.stop_at:
                raise KeyboardInterrupt

        def close(self):
            closed.append(True)

    monkeypatch.setattr(patchcore, "progress", lambda *args, **kwargs: Bar())
    with pytest.raises(KeyboardInterrupt):
        patchcore.greedy_coreset(x, 300)
    assert seen == [64, 64] and closed == [True]
    # Reports that raise nothing leave the selection as it was.
    seen.clear()
    Bar.stop_at = 301
    np.testing.assert_array_equal(patchcore.greedy_coreset(x, 300), _coreset_oracle(x, 300, 0))
    assert sum(seen) == 300


def test_greedy_coreset_indices_are_distinct_once_every_point_is_covered(rng):
    assert patchcore.greedy_coreset(np.zeros((5, 2)), 5, progress_bar=False).tolist() == [0, 1, 2, 3, 4]
    x = np.repeat(rng.normal(size=(4, 3)), 3, axis=0)[rng.permutation(12)]  # four points, three copies each
    got = patchcore.greedy_coreset(x, 10, start=5, progress_bar=False)
    np.testing.assert_array_equal(got, _coreset_oracle(x, 10, 5))
    assert len(set(got.tolist())) == 10


@pytest.mark.parametrize("dtype,scale", [(np.float64, 1e200), (np.float64, 1e-200), (np.float32, 1e30),
                                         (np.float32, 1e-30)])
def test_knn_and_coreset_at_extreme_magnitudes(dtype, scale, rng):
    """Squared distances of such values overflow or underflow; the results must not change."""
    q, b = rng.normal(size=(20, 5)), rng.normal(size=(60, 5))
    d, i = knn(q, b, 4)
    d_far, i_far = knn((q * scale).astype(dtype), (b * scale).astype(dtype), 4)
    np.testing.assert_array_equal(i_far, i)
    np.testing.assert_allclose(d_far / scale, d, rtol=1e-6 if dtype == np.float32 else 1e-12)
    x = rng.normal(size=(200, 4))
    np.testing.assert_array_equal(patchcore.greedy_coreset((x * scale).astype(dtype), 30, progress_bar=False),
                                  _coreset_oracle(x.astype(dtype).astype(np.float64), 30, 0))
    # Cosine ignores scale: tiny or huge rows have a direction.
    _, ic = knn(q * scale, b, 3, metric="cosine")
    np.testing.assert_array_equal(ic, knn(q, b, 3, metric="cosine")[1])



def test_knn_refuses_a_distance_no_float_holds():
    np.testing.assert_array_equal(knn(np.array([[1e308]]), np.array([[-5e307]]), 1)[0], [[1.5e308]])
    with pytest.raises(ValueError, match="^queries, bank: a distance overflows float64"):
        knn(np.array([[1.7e308]]), np.array([[-1.7e308]]), 1)

def test_knn_measures_in_the_finer_of_the_two_dtypes():
    q = np.array([[1.0]], np.float32)
    d, i = knn(q, np.array([[1 + 2e-9], [1 + 1e-9]]), 2)  # float32 would round both to 1
    assert i.tolist() == [[1, 0]]
    np.testing.assert_allclose(d, [[1e-9, 2e-9]], rtol=1e-6)


def test_greedy_coreset_rejects_bad_input(rng):
    x = rng.normal(size=(10, 3))
    for bad, name in ((0, "n_select"), (11, "n_select")):
        with pytest.raises(ValueError, match=name):
            patchcore.greedy_coreset(x, bad)
    with pytest.raises(ValueError, match="start"):
        patchcore.greedy_coreset(x, 2, start=10)
    with pytest.raises(TypeError, match="n_select"):
        patchcore.greedy_coreset(x, True)
    with pytest.raises(ValueError, match="X"):
        patchcore.greedy_coreset(x[:, :0], 1)


# -- PatchCore -------------------------------------------------------------------------------

def _patchcore_oracle(train, test, ratio, b, seed, locality=3):
    """The paper's pipeline on aggregated patches (musc.lnamd), brute force in float64."""
    from fastcore_ad import musc

    tr = musc.lnamd(train, locality).reshape(-1, train.shape[-1]).astype(np.float64)
    te = musc.lnamd(test, locality)
    n, h, w, c = te.shape
    te = te.reshape(-1, c).astype(np.float64)
    rng = np.random.default_rng(seed)
    start = int(rng.integers(tr.shape[0]))
    chosen = _coreset_oracle(tr, max(1, int(ratio * tr.shape[0])), start)
    bank = tr[chosen]
    d = np.sqrt(((te[:, None, :] - bank[None]) ** 2).sum(-1))
    patch = d.min(axis=1).reshape(n, h * w)
    nearest = d.argmin(axis=1).reshape(n, h * w)
    scores = []
    for i in range(n):
        p = int(np.argmax(patch[i]))
        m_star = nearest[i, p]
        bank_d = np.sqrt(((bank - bank[m_star]) ** 2).sum(-1))
        neighbours = np.lexsort((np.arange(len(bank)), bank_d))[:b]
        to_n = np.sqrt(((te[i * h * w + p] - bank[neighbours]) ** 2).sum(-1))
        s = patch[i, p]
        # With m* as its only neighbour the softmax is 1: no re-weighting then.
        weight = 1 - np.exp(s) / np.exp(to_n).sum() if len(neighbours) >= 2 else 1.0
        scores.append(weight * s)
    return np.array(scores), patch.reshape(n, h, w)


@pytest.mark.parametrize("ratio,b", [(0.3, 3), (1.0, 1), (0.05, 9)])
def test_patchcore_equals_the_papers_pipeline(ratio, b, rng):
    from fastcore_ad import PatchCore

    train = rng.normal(size=(5, 6, 7, 10))
    test = rng.normal(size=(3, 6, 7, 10))
    test[1, 2, 2] += 4.0
    model = PatchCore(coreset_ratio=ratio, projection_dim=None, num_neighbors=b, seed=3).fit(train)
    result = model.predict(test, image_size=(12, 14))
    want_img, want_patch = _patchcore_oracle(train, test, ratio, b, 3)
    np.testing.assert_allclose(result.patch_scores, want_patch, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result.image_scores, want_img, rtol=1e-9, atol=1e-12)
    assert result.anomaly_maps().shape == (3, 12, 14)
    for size in ("16", (16.9, 8.2), True, 16.0):
        with pytest.raises(ValueError, match="^image_size: expected a positive int or"):
            result.anomaly_maps(size)
        with pytest.raises(ValueError, match="^image_size: expected a positive int or"):
            model.predict(test, image_size=size)
    with pytest.raises(ValueError, match=r"^locality: must lie in \[1, 2147483647\]"):
        PatchCore(locality=2**31 + 1).fit(train)
    np.testing.assert_allclose(model.decision_function(test), want_img, rtol=1e-9, atol=1e-12)


def test_patchcore_projection_levels_and_errors(rng):
    from fastcore_ad import PatchCore, musc

    train = [rng.normal(size=(4, 8, 8, 6)).astype(np.float32), rng.normal(size=(4, 4, 4, 5)).astype(np.float32)]
    model = PatchCore(coreset_ratio=0.2, projection_dim=4, seed=7).fit(train)
    assert model.memory_bank_.shape == (int(0.2 * 4 * 64), 11) and model.patch_grid_ == (8, 8)
    # The coreset is the greedy rule in the projected space from the seeded start.
    rng_model = np.random.default_rng(7)
    projection = patchcore.sparse_random_projection(11, 4, rng_model.integers(2**63))
    start = int(rng_model.integers(4 * 64))
    flat = model._patches(train, "features")[0].reshape(-1, 11)
    want = _coreset_oracle(flat @ projection.astype(np.float32), len(model.coreset_indices_), start)
    np.testing.assert_array_equal(model.coreset_indices_, want)
    np.testing.assert_array_equal(model.memory_bank_, flat[want])
    assert musc.lnamd(train[0], 3).shape == (4, 8, 8, 6)
    for shape, name in (((0, 4), "n_features"), ((4, -3), "n_components")):
        with pytest.raises(ValueError, match=f"^{name}: must be at least 1"):
            patchcore.sparse_random_projection(*shape, 0)
    with pytest.raises(MemoryError, match="n_features x n_components"):
        patchcore.sparse_random_projection(10**7, 10**7, 0)
    with pytest.raises(ValueError, match="coreset_ratio"):
        PatchCore(coreset_ratio=0).fit(train)
    with pytest.raises(ValueError, match="locality"):
        PatchCore(locality=2).fit(train)
    for name in ("projection_dim", "num_neighbors"):
        with pytest.raises(ValueError, match=f"^{name}: must be at least 1, got 0$"):
            PatchCore(**{name: 0}).fit(train)
    with pytest.raises(RuntimeError, match="not fitted"):
        PatchCore().predict(train)
    with pytest.raises(ValueError, match=r"fitted on 2 level\(s\) of 6, 5 channels, got 1 level\(s\) of 6"):
        model.predict(train[0])
    # Swapped levels, or the same channels in one array, would read the bank's columns wrongly.
    swapped = [rng.normal(size=(2, 4, 4, 5)), rng.normal(size=(2, 8, 8, 6))]
    with pytest.raises(ValueError, match="got 2 level"):
        model.predict(swapped)
    with pytest.raises(ValueError, match="got 1 level"):
        model.predict(rng.normal(size=(2, 8, 8, 11)))


def test_patchcore_scores_without_re_weighting_when_one_neighbour(rng):
    from fastcore_ad import PatchCore

    train, test = rng.normal(size=(3, 5, 5, 4)), rng.normal(size=(2, 5, 5, 4))
    test[1, 1, 1] += 5.0
    one = PatchCore(coreset_ratio=0.5, projection_dim=None, num_neighbors=1, seed=0).fit(train).predict(test)
    np.testing.assert_array_equal(one.image_scores, one.patch_scores.reshape(2, -1).max(axis=1))
    assert (one.image_scores > 0).all()  # not the 0 that 1 - softmax over one neighbour gives
    # A bank of one vector (every training patch equal) has no second neighbour either.
    flat = PatchCore(projection_dim=None, seed=0).fit(np.ones((2, 3, 3, 4))).predict(test)
    np.testing.assert_array_equal(flat.image_scores, flat.patch_scores.reshape(2, -1).max(axis=1))
    assert (flat.image_scores > 0).all()
