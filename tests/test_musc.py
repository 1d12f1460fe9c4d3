"""MuSc kernels and model against the plain numpy oracle in tests/reference/musc.py."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcore_ad import MuSc, _core, musc
from tests.reference import musc as ref

RTOL = {np.float32: 1e-5, np.float64: 1e-10}
ATOL = {np.float32: 1e-7, np.float64: 1e-13}


def close(got, want, dtype):
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=RTOL[dtype], atol=ATOL[dtype])


# ------------------------------------------------------------------------------------------ LNAMD

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("r", [1, 3, 5])
def test_lnamd_matches_reference(rng, dtype, r):
    x = (rng.normal(size=(3, 5, 7, 6)) * 3 + 1).astype(dtype)
    got = musc.lnamd(x, r)
    assert got.dtype == dtype and got.shape == x.shape
    close(got, ref.lnamd(x, r), dtype)


def test_lnamd_box_larger_than_the_map_and_constant_images(rng):
    x = rng.normal(size=(2, 2, 3, 4))
    close(musc.lnamd(x, 5), ref.lnamd(x, 5), np.float64)
    constant = np.ones((2, 3, 3, 4))
    # A constant map standardises to zeros; zero patches stay zero (no NaN).
    assert np.array_equal(musc.lnamd(constant, 3), np.zeros_like(constant))


# ---------------------------------------------------------------------------------- mutual scores

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_mutual_scores_match_reference_on_random_features(rng, dtype, n):
    p = int(rng.integers(1, 60))
    c = int(rng.integers(1, 40))
    x = rng.normal(size=(n, p, c)).astype(dtype)
    got = musc.mutual_scores(x)
    assert got.dtype == dtype and got.shape == (n, p)
    close(got, ref.mutual_scores(x), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mutual_scores_across_tile_boundaries_on_unit_vectors(rng, dtype):
    # 1031 patches: two product tiles of 516 + 515 rows and columns (tiles hold <= 1024);
    # 530 patches: one tile; 1 patch: a 1 x 1 tile.
    for p, grid in ((1031, (1, 1031)), (530, (10, 53)), (1, (1, 1))):
        x = rng.normal(size=(3, p, 6)).astype(dtype)
        z = musc.lnamd(x.reshape(3, *grid, 6), 1).reshape(3, p, 6)
        close(musc.mutual_scores(z, 0.5), ref.mutual_scores(z, 0.5), dtype)


@pytest.mark.parametrize("max_memory", [1, 3 * 40 * 8, None])
def test_bounded_memory_gives_the_same_scores(rng, max_memory):
    x = rng.normal(size=(6, 40, 5))
    close(musc.mutual_scores(x, max_memory=max_memory), ref.mutual_scores(x), np.float64)


def test_duplicated_images_score_exactly_zero(rng):
    x = rng.normal(size=(3, 50, 32)).astype(np.float32)
    x = np.concatenate([x, x[:1]])  # image 3 duplicates image 0
    z = musc.lnamd(x.reshape(4, 5, 10, 32), 3).reshape(4, 50, 32)
    got = musc.mutual_scores(z, top_ratio=0.3)  # k = 1: the duplicate is the nearest image
    assert np.all(got[0] == 0.0) and np.all(got[3] == 0.0)
    close(got, ref.mutual_scores(z, 0.3), np.float32)


def test_identical_patches_and_all_equal_images(rng):
    x = np.repeat(rng.normal(size=(3, 1, 16)), 20, axis=1)  # every patch of an image is the same
    close(musc.mutual_scores(x), ref.mutual_scores(x), np.float64)
    same = np.ones((4, 9, 3), dtype=np.float32)
    assert np.array_equal(musc.mutual_scores(same), np.zeros((4, 9), dtype=np.float32))


@pytest.mark.parametrize("gap", [1e-2, 1e-3, 3e-4, 1e-5])
def test_near_duplicate_patches_keep_exact_small_distances(rng, gap):
    # On unit vectors sqrt(2 - 2 a.b) loses these distances to cancellation; the exact recheck keeps them.
    a = rng.normal(size=(2, 40, 256))
    a /= np.linalg.norm(a, axis=-1, keepdims=True)
    b = a.copy()
    step = rng.normal(size=a.shape)
    b += gap * step / np.linalg.norm(step, axis=-1, keepdims=True)
    x = np.concatenate([a, b]).astype(np.float32)
    got = musc.mutual_scores(x, top_ratio=0.34)  # k = 1
    want = ref.mutual_scores(x, 0.34)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_near_uniform_background_keeps_exact_distances(rng):
    # Hundreds of patches per image within the rounding bound of each other (a uniform
    # background): every one is a candidate and the true nearest must still win.
    base = rng.normal(size=256)
    base /= np.linalg.norm(base)
    x = base + 3e-4 * rng.normal(size=(4, 300, 256))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    x = x.astype(np.float32)
    np.testing.assert_allclose(musc.mutual_scores(x), ref.mutual_scores(x), rtol=1e-5)


def test_k_rounds_down_with_at_least_one(rng):
    assert [musc.top_k(r, 0.3) for r in (1, 2, 3, 4, 10, 31)] == [1, 1, 1, 1, 3, 9]
    x = rng.normal(size=(11, 7, 3))
    for ratio in (0.3, 1.0, 0.05):
        close(musc.mutual_scores(x, ratio), ref.mutual_scores(x, ratio), np.float64)


def test_four_dimensional_input_keeps_the_grid(rng):
    x = rng.normal(size=(3, 4, 5, 6))
    got = musc.mutual_scores(x)
    assert got.shape == (3, 4, 5)
    close(got.reshape(3, 20), ref.mutual_scores(x.reshape(3, 20, 6)), np.float64)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 5), p=st.integers(1, 30), c=st.integers(1, 20), ratio=st.floats(0.01, 1.0),
       seed=st.integers(0, 2**32 - 1), f32=st.booleans())
def test_mutual_scores_property(n, p, c, ratio, seed, f32):
    dtype = np.float32 if f32 else np.float64
    x = np.random.default_rng(seed).normal(size=(n, p, c)).astype(dtype)
    close(musc.mutual_scores(x, ratio), ref.mutual_scores(x, ratio), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scores_against_bank_match_reference(rng, dtype):
    q = rng.normal(size=(2, 1100, 4)).astype(dtype)
    bank = rng.normal(size=(3, 21, 4)).astype(dtype)
    for max_memory in (None, 1):
        close(musc.scores_against_bank(q, bank, 0.5, max_memory=max_memory),
              ref.scores_against_bank(q, bank, 0.5), dtype)


# ------------------------------------------------------------------------------------------ RsCIN

def test_rscin_matches_reference(rng):
    s = rng.normal(size=9)
    e = rng.normal(size=(9, 12))
    for k_list in [(1, 2, 3), (1,), (4, 20)]:
        close(musc.rscin(s, e, k_list), ref.rscin(s, e, k_list), np.float64)


def test_rscin_stays_a_weighted_mean_of_its_scores(rng):
    # Image 1 points away from image 0 and nearly across image 2: with its negative similarity
    # kept, its row summed to about 1e-3 and its score left [0, 1] (about -2e6).
    out = musc.rscin(np.array([0.0, 1.0, 0.5]), np.array([[1.0, 0.0], [-1.0, 1e-3], [0.0, 1.0]]), k_list=(3,))
    assert ((out >= 0.0) & (out <= 1.0)).all()
    np.testing.assert_allclose(out, ref.rscin([0.0, 1.0, 0.5], [[1.0, 0.0], [-1.0, 1e-3], [0.0, 1.0]], (3,)),
                               rtol=1e-12)
    scores, embeddings = rng.normal(size=6), rng.normal(size=(6, 4))
    for scale in (1e-200, 1e-20):  # norms whose squares vanish, or below any fixed floor
        np.testing.assert_allclose(musc.rscin(scores, embeddings * scale), musc.rscin(scores, embeddings),
                                   rtol=1e-12, atol=1e-14)
    embeddings[2] = 0.0
    with pytest.raises(ValueError, match="embeddings: image 2 has an all-zero embedding"):
        musc.rscin(scores, embeddings)


def test_rscin_equal_scores_give_zeros(rng):
    assert np.array_equal(musc.rscin(np.ones(4), rng.normal(size=(4, 3))), np.zeros(4))


# ------------------------------------------------------------------------------------------ model

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_musc_predict_matches_reference(rng, dtype):
    layers = [rng.normal(size=(4, 6, 5, 8)).astype(dtype), rng.normal(size=(4, 6, 5, 12)).astype(dtype)]
    emb = rng.normal(size=(4, 10))
    result = MuSc().predict(layers, embeddings=emb)
    want_image, want_patch = ref.musc(layers, embeddings=emb)
    assert result.patch_scores.shape == (4, 6, 5) and result.patch_scores.dtype == dtype
    close(result.patch_scores, want_patch, dtype)
    close(result.image_scores_raw, want_patch.reshape(4, -1).max(axis=1), dtype)
    # RsCIN's min-max normalisation magnifies float32 rounding of the raw scores by up to
    # 1 / (max - min): its own arithmetic (float64) is checked on the raw scores we produced.
    close(result.image_scores, ref.rscin(result.image_scores_raw, emb), np.float64)
    if dtype == np.float64:
        close(result.image_scores, want_image, dtype)


def test_musc_single_layer_without_embeddings_n_equals_two(rng):
    x = rng.normal(size=(2, 4, 4, 5))
    result = MuSc(degrees=(1, 3)).predict(x)
    want_image, want_patch = ref.musc([x], degrees=(1, 3))
    close(result.patch_scores, want_patch, np.float64)
    close(result.image_scores, want_image, np.float64)


def test_musc_fit_then_predict_scores_against_the_bank(rng):
    bank = [rng.normal(size=(5, 4, 6, 8)), rng.normal(size=(5, 4, 6, 3))]
    new = [rng.normal(size=(1, 4, 6, 8)), rng.normal(size=(1, 4, 6, 3))]
    result = MuSc().fit(bank).predict(new)
    maps = []
    for lb, ln in zip(bank, new):
        for r in (1, 3, 5):
            zb = ref.lnamd(lb, r).reshape(5, 24, -1)
            zn = ref.lnamd(ln, r).reshape(1, 24, -1)
            maps.append(ref.scores_against_bank(zn, zb, 0.3))
    close(result.patch_scores.reshape(1, -1), np.mean(maps, axis=0), np.float64)


def test_anomaly_maps_upsample_and_smooth(rng):
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    x = rng.normal(size=(3, 5, 4, 6))
    result = MuSc(degrees=(1,)).predict(x, image_size=(17, 11))
    up = result.anomaly_maps(align_corners=True)
    close(up, ref.bilinear_align_corners(result.patch_scores, (17, 11)), np.float64)
    smooth = result.anomaly_maps((17, 11), sigma=2.0, align_corners=True)
    want = np.stack([scipy_ndimage.gaussian_filter(m, 2.0, mode="reflect", truncate=4.0) for m in up])
    close(smooth, want, np.float64)
    assert result.anomaly_maps(8).shape == (3, 8, 8)


def test_demo_separates_the_pasted_anomalies():
    rows = musc.demo()
    assert rows and float(rows[0]["result"].split()[-1]) >= 0.9


def test_kernels_release_the_gil(rng):
    x = rng.normal(size=(6, 200, 64)).astype(np.float32)
    barrier = threading.Barrier(2)
    results = []

    def work():
        barrier.wait()
        results.append(musc.mutual_scores(x, n_jobs=1))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and np.array_equal(results[0], results[1])


# ----------------------------------------------------------------------------------------- errors

def test_errors(rng):
    x = rng.normal(size=(3, 4, 4, 5))
    with pytest.raises(ValueError, match="at least 2 images"):
        MuSc().predict(x[:1])
    with pytest.raises(ValueError, match="at least 2 images"):
        musc.mutual_scores(x[:1].reshape(1, 16, 5))
    with pytest.raises(ValueError, match="at least 2 images"):
        _core.musc_mutual_scores(x[:1].reshape(1, 16, 5), 0.3)
    bad = x.copy()
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match="features.*NaN"):
        MuSc().predict(bad)
    bad[1, 2, 3, 0] = np.inf
    with pytest.raises(ValueError, match=r"features\[1\].*NaN or infinity"):
        MuSc().predict([x, bad])
    with pytest.raises(ValueError, match=r"features\[1\]"):
        MuSc().predict([x, rng.normal(size=(3, 4, 5, 5))])
    with pytest.raises(ValueError, match=r"features\[2\]"):
        MuSc().predict([x, x, rng.normal(size=(2, 4, 4, 5))])
    with pytest.raises(ValueError, match="dimensions"):
        MuSc().predict(x[0])
    with pytest.raises(ValueError, match="empty list"):
        MuSc().predict([])
    with pytest.raises(ValueError, match="odd"):
        MuSc(degrees=(1, 2)).predict(x)
    with pytest.raises(ValueError, match="odd"):
        musc.lnamd(x, 4)
    with pytest.raises(ValueError, match="odd"):
        _core.musc_lnamd(x, 4)
    for ratio in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="top_ratio"):
            MuSc(top_ratio=ratio).predict(x)
        with pytest.raises(ValueError, match="top_ratio"):
            _core.musc_mutual_scores(x.reshape(3, 16, 5), ratio)
    with pytest.raises(ValueError, match="k_list"):
        MuSc(k_list=(0,)).predict(x, embeddings=rng.normal(size=(3, 2)))
    with pytest.raises(ValueError, match="k_list"):
        musc.rscin(np.ones(3), np.ones((3, 2)), ())
    with pytest.raises(ValueError, match="embeddings"):
        MuSc().predict(x, embeddings=rng.normal(size=(4, 2)))
    with pytest.raises(ValueError, match="embeddings"):
        musc.rscin(np.ones(3), np.ones((2, 2)))
    # RsCIN compares the images of a batch: one image alone is refused, not scored 0.
    with pytest.raises(ValueError, match="^image_scores: RsCIN re-scores images against each other"):
        musc.rscin(np.array([5.0]), np.ones((1, 2)))
    banked = MuSc(degrees=(1,), progress=False).fit(x)
    with pytest.raises(ValueError, match="^embeddings: RsCIN .* needs at least 2"):
        banked.predict(x[:1], embeddings=rng.normal(size=(1, 2)))
    assert banked.predict(x[:2], embeddings=rng.normal(size=(2, 2))).image_scores.shape == (2,)
    with pytest.raises(ValueError, match="device"):
        MuSc(device="tpu").predict(x)
    with pytest.raises(ValueError, match="max_memory"):
        musc.mutual_scores(x.reshape(3, 16, 5), max_memory=0)
    with pytest.raises(ValueError, match="channels"):
        musc.scores_against_bank(x.reshape(3, 16, 5), rng.normal(size=(2, 16, 4)))
    with pytest.raises(ValueError, match="channels"):
        MuSc().fit(x).predict(rng.normal(size=(1, 4, 4, 6)))
    with pytest.raises(ValueError, match="layer"):
        MuSc().fit([x, x]).predict(x)
    with pytest.raises(ValueError, match="empty"):
        musc.mutual_scores(np.zeros((2, 0, 3)))
    with pytest.raises(TypeError, match="numeric"):
        musc.mutual_scores(np.array([["a"]]))
    with pytest.raises(ValueError, match="image_size"):
        MuSc(degrees=(1,)).predict(x).anomaly_maps()
    for size in ("16", (16.9, 8.2), True, 16.0, (4, 4, 4)):  # never read as digits, truncated or 1 x 1
        with pytest.raises(ValueError, match="^image_size: expected a positive int or"):
            MuSc(degrees=(1,)).predict(x).anomaly_maps(size)
        with pytest.raises(ValueError, match="^image_size: expected a positive int or"):
            MuSc(degrees=(1,)).predict(x, image_size=size)
    with pytest.raises(ValueError, match="sigma"):
        MuSc(degrees=(1,)).predict(x).anomaly_maps(8, sigma=0)


# -------------------------------------------------------------------------------------------- GPU

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_matches_rust(rng, dtype):
    import cupy as cp

    x = rng.normal(size=(5, 9, 11, 70)).astype(dtype)
    for r in (1, 3, 5):
        z_gpu = musc.lnamd(cp.asarray(x), r)
        z = musc.lnamd(x, r)
        close(z_gpu.get(), z.astype(np.float64), dtype)
    z = z.reshape(5, 99, 70)
    for max_memory in (None, 1):
        close(musc.mutual_scores(cp.asarray(z), max_memory=max_memory).get(), musc.mutual_scores(z).astype(np.float64), dtype)
    dup = np.concatenate([z, z[:1]])
    got = musc.mutual_scores(cp.asarray(dup), top_ratio=0.2).get()
    assert np.all(got[0] == 0) and np.all(got[-1] == 0)
    bank = rng.normal(size=(4, 130, 70)).astype(dtype)
    close(musc.scores_against_bank(cp.asarray(z), cp.asarray(bank)).get(),
          musc.scores_against_bank(z, bank).astype(np.float64), dtype)


@pytest.mark.gpu
def test_cuda_model_matches_cpu_model(rng):
    import cupy as cp

    layers = [rng.normal(size=(4, 7, 7, 32)).astype(np.float32) for _ in range(2)]
    cpu = MuSc().predict(layers)
    gpu = MuSc().predict([cp.asarray(lv) for lv in layers])
    close(gpu.patch_scores.get(), cpu.patch_scores.astype(np.float64), np.float32)
    assert isinstance(gpu.anomaly_maps(28), cp.ndarray)


@pytest.mark.parametrize("scale", [1e160, 1e300])
def test_lnamd_and_rscin_ignore_a_scale_whose_squares_overflow(scale, rng):
    x = rng.normal(size=(3, 5, 4, 6))
    x[1] += 7.0  # an image whose mean dominates its spread
    # x * scale rounds every value once, so scores of order 1 may differ by a few 1e-14.
    np.testing.assert_allclose(musc.lnamd(x * scale, 3), musc.lnamd(x, 3), rtol=1e-12, atol=1e-12)
    scores, embeddings = rng.normal(size=5), rng.normal(size=(5, 4))
    # The scores come back min-max normalised to [0, 1]: compare them absolutely near zero too.
    np.testing.assert_allclose(musc.rscin(scores, embeddings * scale), musc.rscin(scores, embeddings), rtol=1e-12,
                               atol=1e-14)


def test_rscin_scores_spanning_the_float_range_stay_finite():
    # max - min of these scores overflows to inf; the min-max normalisation gave NaN.
    out = musc.rscin(np.array([-1e308, 1e308, 0.0]), np.eye(3), k_list=(1,))
    np.testing.assert_allclose(out, [0.0, 1.0, 0.5])


@pytest.mark.parametrize("r", [float("inf"), float("nan"), 2**70 + 1, None, 2, 0])
def test_lnamd_degree_out_of_range_is_a_value_error(rng, r):
    with pytest.raises(ValueError, match="^r: the box size must be a positive odd integer"):
        musc.lnamd(rng.normal(size=(2, 3, 3, 4)), r)
    with pytest.raises(ValueError, match="^degrees: every box size"):
        MuSc(degrees=(1, r)).predict(rng.normal(size=(3, 3, 3, 4)))


def test_anomaly_map_sigma_must_be_finite(rng):
    result = MuSc(degrees=(1,), progress=False).predict(rng.normal(size=(3, 4, 4, 8)))
    with pytest.raises(ValueError, match="sigma"):
        result.anomaly_maps(16, sigma=float("inf"))


def test_huge_max_memory_and_window_are_accepted(rng):
    patches = rng.normal(size=(3, 4, 8))
    np.testing.assert_array_equal(musc.mutual_scores(patches, max_memory=2**70), musc.mutual_scores(patches))
    scores, embeddings = np.array([1.0, 3.0, 2.0]), rng.normal(size=(3, 4))
    np.testing.assert_array_equal(musc.rscin(scores, embeddings, k_list=(2**70,)),
                                  musc.rscin(scores, embeddings, k_list=(3,)))


def test_large_sigma_smooths_without_one_pass_per_tap(rng):
    # sigma=1e5 on a 16-pixel map used to loop over 800001 taps (sigma=1e9: 64 GB of taps).
    result = MuSc(degrees=(1,), progress=False).predict(rng.normal(size=(3, 4, 4, 8)))
    maps = result.anomaly_maps(16, sigma=1e5)
    np.testing.assert_allclose(maps, np.broadcast_to(maps.mean(axis=(1, 2), keepdims=True), maps.shape), rtol=1e-6)
    with pytest.raises(ValueError, match="sigma"):
        result.anomaly_maps(16, sigma=1e9)
    # A kernel wider than the reflection period still equals scipy's filter.
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    plain = result.anomaly_maps(16)
    np.testing.assert_allclose(result.anomaly_maps(16, sigma=7.5),
                               scipy_ndimage.gaussian_filter(plain, sigma=(0, 7.5, 7.5), mode="reflect"), rtol=1e-5, atol=1e-6)


def test_cpu_scoring_keeps_its_minima_within_free_memory(rng, monkeypatch):
    """Without max_memory the CPU kernels keep half the free memory's worth of per-pair minima
    at once (query images in chunks, the same scores), and refuse, before allocating, a problem
    in which one query image's minima cannot fit."""
    from fastcore_ad import _memory

    x = rng.normal(size=(30, 200, 3)).astype(np.float32)
    bank = rng.normal(size=(25, 200, 3)).astype(np.float32)
    want, want_bank = musc.mutual_scores(x), musc.scores_against_bank(x, bank)
    # 30 x 200 float32 minima per query image: 24 KB; 60 KB free makes chunks of one image
    monkeypatch.setattr(_memory, "available_bytes", lambda: 60_000)
    np.testing.assert_array_equal(musc.mutual_scores(x), want)
    np.testing.assert_array_equal(musc.scores_against_bank(x, bank), want_bank)
    monkeypatch.setattr(_memory, "available_bytes", lambda: 19_000)
    with pytest.raises(MemoryError, match="patches: one image's minima against 30 images of 200 patches"):
        musc.mutual_scores(x)
    with pytest.raises(MemoryError, match="queries: one image's minima against a bank of 25 images"):
        musc.scores_against_bank(x, bank)
    monkeypatch.setattr(_memory, "available_bytes", lambda: 30_000)
    np.testing.assert_array_equal(musc.scores_against_bank(x, bank), want_bank)  # 20 KB per query fits


def test_musc_settings_are_named_errors():
    x = np.zeros((3, 4, 4, 2))
    for bad, error in (("x", TypeError), (float("inf"), ValueError), (1.5, ValueError), (0, ValueError)):
        with pytest.raises(error, match="max_memory"):
            MuSc(max_memory=bad, progress=False).predict(x)
        with pytest.raises(error, match="max_memory"):
            musc.mutual_scores(x, max_memory=bad)
    for bad in (("a",), None, (1.7,), (True,)):
        with pytest.raises(TypeError, match="k_list"):
            MuSc(k_list=bad, progress=False).predict(x)
        with pytest.raises(TypeError, match="k_list"):
            musc.rscin(np.arange(3.0), np.eye(3), bad)
    with pytest.raises(ValueError, match="window"):
        musc.mutual_scores(x, aligned=True, window=-1)
    np.testing.assert_array_equal(musc.mutual_scores(x + np.arange(4)[:, None, None], aligned=True, window=2**70),
                                  musc.mutual_scores(x + np.arange(4)[:, None, None], aligned=True, window=4))
    with pytest.raises(ValueError, match="references"):
        musc.top_k(-1, 0.3)
    with pytest.raises(ValueError, match="top_ratio"):
        musc.top_k(10, 1.5)
    assert musc.top_k(10, 0.3) == 3
