"""``fastcore-ad detect`` usage errors: one line ``error: ...`` on stderr, exit status 2, and
found before the network is loaded or any feature is computed."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from fastcore_ad import cli, features
from fastcore_ad.features import EfficientNetLite0

from .reference import features as reference

Image = pytest.importorskip("PIL.Image")
HAS_MUSC = importlib.util.find_spec("fastcore_ad.musc") is not None


@pytest.fixture
def heavy_work(monkeypatch):
    """Counts the expensive steps: loading the network and extracting features."""
    calls = {"backbone": 0, "extract": 0}
    model = EfficientNetLite0(reference.random_state(np.random.default_rng(7)), backend="numpy", progress=False)
    extract = model.extract

    def backbone(*args, **kwargs):
        calls["backbone"] += 1
        return model

    def counted_extract(*args, **kwargs):
        calls["extract"] += 1
        return extract(*args, **kwargs)

    monkeypatch.setattr(features, "backbone", backbone)
    monkeypatch.setattr(model, "extract", counted_extract)
    return calls


def _folder(path, count, rng):
    path.mkdir()
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, size=(24, 24, 3)).astype(np.uint8)).save(path / f"img_{i}.png")
    return path


def _usage_error(capsys, argv):
    """Runs the command, checks the one-line error and exit status 2; returns the line."""
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_output_path_that_is_a_file_fails_before_any_work(tmp_path, rng, capsys, heavy_work):
    images = _folder(tmp_path / "images", 3, rng)
    taken = tmp_path / "results"
    taken.write_text("not a folder")
    line = _usage_error(capsys, ["detect", str(images), "--out", str(taken), "--image-size", "32"])
    assert "--out" in line and "not a folder" in line
    line = _usage_error(capsys, ["detect", str(images), "--out", str(taken / "inside"), "--image-size", "32"])
    assert "--out" in line and "is a file" in line
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "overlays").write_text("")
    assert "--out" in _usage_error(capsys, ["detect", str(images), "--out", str(tmp_path / "out")])
    assert heavy_work == {"backbone": 0, "extract": 0}
    assert taken.read_text() == "not a folder"


@pytest.mark.parametrize("argv, words", [
    (["--layers", "stage3", "stage9"], ["--layers", "stage9"]),
    (["--layers", "stage3", "--image-size", "0"], ["--image-size"]),
    (["--sigma", "1e9"], ["--sigma"]),
    (["--sigma", "-1"], ["--sigma", ">= 0"]),
    (["--sigma", "nan"], ["--sigma"]),
    (["--top", "-1"], ["--top"]),
    (["--max-overlays", "-3"], ["--max-overlays"]),
    (["--method", "gaussian"], ["--train"]),
    (["--method", "patchcore"], ["--train"]),
    (["--method", "musc", "--train", "."], ["--train", "zero-shot"]),
    (["--out", ""], ["--out", "expected a folder name"]),
    (["--weights", "/dev/zero"], ["--weights", "not a regular file"]),
    (["--image-size", "big"], ["--image-size", "invalid int value"]),
    (["--method", "padim"], ["--method", "invalid choice"]),
])
def test_bad_arguments_fail_before_any_work(tmp_path, rng, capsys, heavy_work, argv, words):
    images = _folder(tmp_path / "images", 3, rng)
    line = _usage_error(capsys, ["detect", str(images), "--out", str(tmp_path / "out"), *argv])
    assert all(word in line for word in words), line
    assert heavy_work == {"backbone": 0, "extract": 0}
    assert not (tmp_path / "out").exists()


def test_missing_folders_and_too_few_images(tmp_path, rng, capsys, heavy_work):
    images = _folder(tmp_path / "images", 3, rng)
    line = _usage_error(capsys, ["detect", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert "no such folder" in line and "missing" in line
    line = _usage_error(capsys, ["detect", str(images), "--method", "gaussian", "--train", str(tmp_path / "nope"),
                                 "--out", str(tmp_path / "out")])
    assert "--train" in line and "no such folder" in line
    single = _folder(tmp_path / "single", 1, rng)
    line = _usage_error(capsys, ["detect", str(images), "--method", "patchcore", "--train", str(single),
                                 "--out", str(tmp_path / "out")])
    assert "--train needs at least 2 readable images for --method patchcore" in line
    # Two images: Ledoit-Wolf cannot shrink, so every per-position covariance would be singular.
    line = _usage_error(capsys, ["detect", str(images), "--method", "gaussian", "--train",
                                 str(_folder(tmp_path / "two", 2, rng)), "--out", str(tmp_path / "out")])
    assert "--train needs at least 3 readable images for --method gaussian, got 2" in line
    if HAS_MUSC:
        line = _usage_error(capsys, ["detect", str(single), "--out", str(tmp_path / "out")])
        assert "--method musc" in line and "at least 2" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    # The command line's names, not load_images' arguments (source, pattern).
    assert _usage_error(capsys, ["detect", str(empty), "--out", str(tmp_path / "out")]).startswith(
        "error: FOLDER: no image files")
    line = _usage_error(capsys, ["detect", str(images), "--method", "gaussian", "--train", str(empty),
                                 "--out", str(tmp_path / "out")])
    assert line.startswith("error: --train: no image files")
    line = _usage_error(capsys, ["detect", str(images), "--out", str(tmp_path / "out"), "--pattern", "../*.png"])
    assert line.startswith("error: --pattern: expected a glob relative to the folder")
    assert heavy_work == {"backbone": 0, "extract": 0}
    assert not (tmp_path / "out").exists()


def test_the_console_command_prints_one_line_and_exits_2(tmp_path):
    env = dict(os.environ, FASTCORE_AD_PROGRESS="0")
    for argv in (["detect", str(tmp_path / "missing")], ["detect", str(tmp_path), "--layers", "stage9"]):
        result = subprocess.run([sys.executable, "-m", "fastcore_ad.cli", *argv], capture_output=True, text=True,
                                env=env, timeout=120)
        assert result.returncode == 2 and result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


@pytest.mark.parametrize("method", ["gaussian", "patchcore"])
def test_a_valid_run_still_writes_its_results(tmp_path, rng, capsys, heavy_work, method):
    train = _folder(tmp_path / "train", 12, rng)
    images = _folder(tmp_path / "images", 3, rng)
    out = tmp_path / "out"
    assert cli.main(["detect", str(images), "--method", method, "--train", str(train), "--out", str(out),
                     "--image-size", "32", "--layers", "stage2", "--sigma", "0", "--max-overlays", "1"]) == 0
    assert heavy_work == {"backbone": 1, "extract": 2}
    assert (out / "scores.csv").is_file() and len(list((out / "overlays").iterdir())) == 1
    output = capsys.readouterr().out
    assert "written" in output and method in output


def test_training_images_that_do_not_vary_are_a_usage_error(tmp_path, rng, capsys, heavy_work):
    same = tmp_path / "same"
    same.mkdir()
    picture = Image.fromarray(rng.integers(0, 256, size=(24, 24, 3)).astype(np.uint8))
    for i in range(3):
        picture.save(same / f"copy_{i}.png")
    images = _folder(tmp_path / "images", 2, rng)
    line = _usage_error(capsys, ["detect", str(images), "--method", "gaussian", "--train", str(same), "--out",
                                 str(tmp_path / "out"), "--image-size", "32", "--layers", "stage2"])
    assert "--train: the features of the 3 training images do not vary enough" in line


def test_a_single_file_as_folder_is_listed_by_its_name(tmp_path, rng, capsys, heavy_work):
    train = _folder(tmp_path / "train", 4, rng)
    image = _folder(tmp_path / "images", 1, rng) / "img_0.png"
    assert cli.main(["detect", str(image), "--method", "gaussian", "--train", str(train), "--out",
                     str(tmp_path / "out"), "--image-size", "32", "--layers", "stage2", "--sigma", "0"]) == 0
    assert "#1 img_0.png" in capsys.readouterr().out


def test_overlays_of_files_sharing_a_name_are_all_written(tmp_path, rng, capsys, heavy_work):
    train = _folder(tmp_path / "train", 12, rng)
    images = tmp_path / "images"
    images.mkdir()
    # Three files named a0, and one already named as a numbered clash would be.
    for name in ("a0.png", "a0.jpg", "a0.bmp", "images_a0_2.png"):
        Image.fromarray(rng.integers(0, 256, size=(24, 24, 3)).astype(np.uint8)).save(images / name)
    out = tmp_path / "out"
    assert cli.main(["detect", str(images), "--method", "gaussian", "--train", str(train), "--out", str(out),
                     "--image-size", "32", "--layers", "stage2", "--sigma", "0"]) == 0
    assert len(list((out / "overlays").iterdir())) == 4
    assert "4 overlay(s)" in capsys.readouterr().out


def test_weights_and_output_folders_fail_before_any_work(tmp_path, rng, capsys, heavy_work):
    images = _folder(tmp_path / "images", 3, rng)
    out = str(tmp_path / "out")
    line = _usage_error(capsys, ["detect", str(images), "--out", out, "--weights", str(tmp_path)])
    assert "--weights" in line and "is a folder" in line
    line = _usage_error(capsys, ["detect", str(images), "--out", out, "--weights", str(tmp_path / "none.pth")])
    assert "--weights" in line and "no such file" in line
    if os.path.isdir("/proc") and os.getuid() == 0:  # writable to access(), yet nothing can be made there
        assert "--out: cannot create" in _usage_error(capsys, ["detect", str(images), "--out", "/proc/fastcore_ad_x"])
    assert heavy_work == {"backbone": 0, "extract": 0}
    assert not (tmp_path / "out").exists()


def test_demo_only_needs_at_least_one_family(capsys):
    assert cli.main(["demo", "--only"]) == 2
    assert "--only: expected at least one argument" in capsys.readouterr().err


def test_demo_whose_output_folder_is_a_file_is_a_usage_error(tmp_path, monkeypatch, capsys):
    import tempfile

    (tmp_path / "fastcore_ad_demo").write_text("a file where the demo's folder goes")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cli.main(["demo", "--only", "textures"]) == 2
    assert "demo (textures): out_dir: cannot make the folder" in capsys.readouterr().err
