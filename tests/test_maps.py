"""Anomaly maps (fastcore_ad.maps) against scipy.ndimage and scikit-image as independent
oracles, and one map for the same scores from every entry point (MuSc results, pipelines)."""

import doctest
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcore_ad import features, maps, pipeline
from fastcore_ad.musc import MuSc
from tests.reference import musc as musc_reference

ndimage = pytest.importorskip("scipy.ndimage")


def scipy_upsample(grid, size, align_corners):
    """Bilinear sampling at the convention's source coordinates, by scipy (border held)."""
    (h, w), (height, width) = grid.shape[1:], size

    def source(n_in, n_out):
        if align_corners:
            return np.arange(n_out) * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(n_out)
        return (np.arange(n_out) + 0.5) * n_in / n_out - 0.5

    rows, columns = np.meshgrid(source(h, height), source(w, width), indexing="ij")
    return np.stack([ndimage.map_coordinates(g, [rows, columns], order=1, mode="nearest") for g in grid])


def scipy_smooth(stack, sigma, mode="reflect", truncate=4.0):
    return ndimage.gaussian_filter(stack, sigma=(0, sigma, sigma), mode=mode, truncate=truncate)


# --- upsampling ------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), height=st.integers(1, 40), width=st.integers(1, 40),
       align_corners=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_upsample_equals_scipy_map_coordinates(h, w, height, width, align_corners, seed):
    grid = np.random.default_rng(seed).normal(size=(2, h, w))
    got = maps.upsample(grid, (height, width), align_corners=align_corners)
    np.testing.assert_allclose(got, scipy_upsample(grid, (height, width), align_corners), rtol=1e-12, atol=1e-12)


def test_upsample_half_pixel_equals_skimage_and_align_corners_equals_the_musc_reference(rng):
    transform = pytest.importorskip("skimage.transform")
    grid = rng.normal(size=(3, 7, 5))
    got = maps.upsample(grid, (29, 18))
    want = np.stack([transform.resize(g, (29, 18), order=1, mode="edge", anti_aliasing=False) for g in grid])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(maps.upsample(grid, (29, 18), align_corners=True),
                               musc_reference.bilinear_align_corners(grid, (29, 18)), rtol=1e-12, atol=1e-12)


def test_feature_resizing_uses_the_same_taps(rng):
    grid = rng.normal(size=(2, 6, 9)).astype(np.float32)
    np.testing.assert_allclose(features.resize_maps(grid, (13, 20)), maps.upsample(grid, (13, 20)), rtol=1e-6,
                               atol=1e-6)


# --- smoothing -------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", maps.MODES)
@pytest.mark.parametrize("sigma", [0.1, 0.6, 2.0, 4.0, 11.0])
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (5, 1), (17, 12), (40, 33)])
def test_smooth_equals_scipy_gaussian_filter(rng, mode, sigma, shape):
    stack = rng.normal(size=(2, *shape))
    np.testing.assert_allclose(maps.smooth(stack, sigma, mode=mode), scipy_smooth(stack, sigma, mode),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("truncate", [0.5, 2.0, 6.5])
def test_smooth_truncates_like_scipy(rng, truncate):
    stack = rng.normal(size=(1, 23, 14))
    np.testing.assert_allclose(maps.smooth(stack, 3.0, truncate=truncate), scipy_smooth(stack, 3.0, truncate=truncate),
                               rtol=1e-10, atol=1e-12)


def test_kernels_much_wider_than_the_map_fold_onto_it(rng):
    # 8001 taps per side on 6 pixels: scipy reflects again and again; the folded matrix too.
    stack = rng.normal(size=(1, 6, 4))
    for mode in maps.MODES:
        np.testing.assert_allclose(maps.smooth(stack, 2000.0, mode=mode), scipy_smooth(stack, 2000.0, mode),
                                   rtol=1e-9, atol=1e-12)


def test_dtypes_devices_and_single_maps(rng):
    grid = rng.normal(size=(4, 5)).astype(np.float32)
    single = maps.anomaly_maps(grid, (9, 7), sigma=1.5)
    assert single.shape == (9, 7) and single.dtype == np.float32
    np.testing.assert_array_equal(single, maps.anomaly_maps(grid[None], (9, 7), sigma=1.5)[0])
    assert maps.upsample(grid.astype(np.float64), 3).dtype == np.float64
    assert maps.smooth(np.ones((2, 3, 3), np.int64), 1.0).dtype == np.float64


def test_anomaly_maps_is_upsampling_then_smoothing(rng):
    grid = rng.normal(size=(3, 6, 4))
    for align_corners in (False, True):
        for mode in ("reflect", "nearest"):
            got = maps.anomaly_maps(grid, (24, 15), 2.5, align_corners=align_corners, mode=mode)
            want = scipy_smooth(scipy_upsample(grid, (24, 15), align_corners), 2.5, mode)
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(maps.anomaly_maps(grid, (24, 15)), maps.upsample(grid, (24, 15)), rtol=0, atol=0)



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maps_near_the_largest_float_stay_finite(rng, dtype):
    # Weighted means of values near the dtype's largest: partial sums overflowed (inf, then NaN).
    top = np.finfo(dtype).max
    flat = maps.anomaly_maps(np.full((1, 3, 3), top, dtype), 17, 2.0)
    assert np.isfinite(flat).all()
    np.testing.assert_allclose(flat, top, rtol=1e-6 if dtype == np.float32 else 1e-14)
    grid = rng.uniform(-1.0, 1.0, size=(2, 4, 5))
    big = maps.anomaly_maps((grid * (top / 2)).astype(dtype), (16, 13), 2.0)
    want = scipy_smooth(scipy_upsample(grid, (16, 13), False), 2.0, "reflect") * (top / 2)
    np.testing.assert_allclose(big, want, rtol=1e-5 if dtype == np.float32 else 1e-10, atol=top * 1e-7)

# --- arguments -------------------------------------------------------------------------------

@pytest.mark.parametrize("sigma", [0, -1.0, float("nan"), float("inf"), True, "4", None])
def test_bad_sigma_is_a_value_error_naming_it(sigma):
    with pytest.raises(ValueError, match="sigma"):
        maps.smooth(np.zeros((1, 4, 4)), sigma)


@pytest.mark.parametrize("call", [
    lambda: maps.smooth(np.zeros((1, 8, 8)), 1e7),
    lambda: maps.anomaly_maps(np.zeros((1, 2, 2)), 8, sigma=1e7),
    lambda: pipeline.upsample_maps(np.zeros((1, 2, 2)), 8, sigma=1e7),
    lambda: features.gaussian_blur(np.zeros((1, 8, 8)), 1e7),
    lambda: MuSc(degrees=(1,), progress=False).predict(np.random.default_rng(0).normal(size=(2, 2, 2, 3)))
    .anomaly_maps(8, sigma=1e7),
])
def test_a_huge_sigma_is_refused_before_allocating(call):
    # 8e7 taps would be 640 MB per array, and the old code allocated until the OOM killer.
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match="sigma"):
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20 and time.perf_counter() - start < 5.0


def test_the_largest_allowed_sigma_still_runs():
    sigma = (maps.MAX_RADIUS - 0.5) / maps.TRUNCATE
    out = maps.smooth(np.arange(12.0).reshape(1, 3, 4), sigma)
    np.testing.assert_allclose(out, np.full((1, 3, 4), 5.5), rtol=1e-6)
    with pytest.raises(ValueError, match="sigma"):
        maps.smooth(np.zeros((1, 3, 4)), sigma * 1.01)


def test_other_bad_arguments_are_named(rng):
    grid = rng.normal(size=(1, 3, 3))
    with pytest.raises(ValueError, match="mode"):
        maps.smooth(grid, 1.0, mode="edge")
    with pytest.raises(ValueError, match="truncate"):
        maps.smooth(grid, 1.0, truncate=0)
    with pytest.raises(ValueError, match="image_size"):
        maps.anomaly_maps(grid, (0, 4))
    with pytest.raises(ValueError, match="image_size"):
        maps.anomaly_maps(grid, (4, 4.5))
    with pytest.raises(ValueError, match="size"):
        maps.upsample(grid, (4, 4, 4))
    with pytest.raises(ValueError, match="grid_scores"):
        maps.anomaly_maps(np.zeros((1, 1, 3, 3)), 8)
    nan = grid.copy()
    nan[0, 1, 1] = np.nan  # one NaN would reach whole rows and columns through the matrices
    with pytest.raises(ValueError, match="NaN"):
        maps.anomaly_maps(nan, 8)
    with pytest.raises(TypeError, match="maps"):
        maps.upsample(np.array([["a"]]), 2)


# --- one map from every entry point ----------------------------------------------------------

@pytest.mark.parametrize("sigma", [None, 4.0])
@pytest.mark.parametrize("align_corners", [False, True])
def test_musc_results_and_pipelines_give_identical_maps(rng, sigma, align_corners):
    layers = [rng.normal(size=(4, 7, 7, 16)).astype(np.float32) for _ in range(2)]
    result = MuSc(progress=False).predict(layers)
    from_result = result.anomaly_maps((56, 48), sigma, align_corners=align_corners)
    from_pipeline = pipeline.upsample_maps(result.patch_scores, (56, 48), sigma, align_corners=align_corners)
    from_maps = maps.anomaly_maps(result.patch_scores, (56, 48), sigma, align_corners=align_corners)
    np.testing.assert_array_equal(from_result, from_pipeline)
    np.testing.assert_array_equal(from_result, from_maps)
    assert from_result.dtype == np.float32
    if not align_corners:
        scores, zero_shot = pipeline.musc_zero_shot(layers, (56, 48), sigma=sigma or 0)
        np.testing.assert_array_equal(zero_shot, from_result)
        np.testing.assert_array_equal(scores, result.image_scores.astype(np.float64))


def test_the_default_convention_is_half_pixel_with_reflected_borders(rng):
    result = MuSc(degrees=(1,), progress=False).predict(rng.normal(size=(3, 5, 4, 6)), image_size=(17, 11))
    patch = result.patch_scores
    want = scipy_smooth(scipy_upsample(patch, (17, 11), False), 2.0, "reflect")
    np.testing.assert_allclose(result.anomaly_maps(sigma=2.0), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pipeline.upsample_maps(patch, (17, 11), 2.0), want, rtol=1e-10, atol=1e-12)
    assert (maps.ALIGN_CORNERS, maps.MODE, maps.TRUNCATE) == (False, "reflect", 4.0)


def test_per_position_gaussian_maps_are_the_upsampled_grid_scores(rng):
    train = rng.normal(size=(30, 4, 4, 3)).astype(np.float32)
    test = rng.normal(size=(3, 4, 4, 3)).astype(np.float32)
    scores, pixel_maps, model = pipeline.per_position_gaussian(train, test, (16, 12), sigma=1.5, progress=False,
                                                               return_model=True)
    grid = np.asarray(model.decision_function(test), dtype=np.float32)
    np.testing.assert_array_equal(pixel_maps, maps.anomaly_maps(grid, (16, 12), 1.5))
    np.testing.assert_array_equal(scores, pixel_maps.reshape(3, -1).max(axis=1))


def test_module_docstring_examples_run():
    result = doctest.testmod(maps, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.gpu
def test_cupy_maps_equal_numpy_maps(rng):
    import cupy as cp

    grid = rng.normal(size=(3, 7, 9)).astype(np.float32)
    for sigma in (None, 4.0):
        got = maps.anomaly_maps(cp.asarray(grid), (56, 72), sigma)
        assert isinstance(got, cp.ndarray) and got.dtype == np.float32
        np.testing.assert_allclose(got.get(), maps.anomaly_maps(grid, (56, 72), sigma), rtol=1e-5, atol=1e-6)


def test_absurd_sizes_and_sigmas_are_named_errors_before_allocating():
    grid = np.ones((1, 3, 3))
    for call in (lambda: maps.smooth(grid, 1e308), lambda: maps.smooth(grid, 2.0, truncate=1e308),
                 lambda: maps.anomaly_maps(grid, 8, sigma=1e308)):
        with pytest.raises(ValueError, match="sigma: .* taps per side"):
            call()
    with pytest.raises(MemoryError, match="size: 1 map"):
        maps.upsample(grid, (10**12, 10**12))
    with pytest.raises(MemoryError, match="size: 1 map"):
        maps.upsample(grid, (1, 2**63))
    with pytest.raises(MemoryError, match="image_size"):
        maps.anomaly_maps(grid, (10**7, 10), sigma=1.0)  # the dense 10**7 x 10**7 smoothing matrix
    with pytest.raises(TypeError, match="align_corners: expected True or False, got 'no'"):
        maps.upsample(grid, 6, align_corners="no")
    assert maps.upsample(grid.astype(np.float16), 6).dtype == np.float32  # as the docstring says
