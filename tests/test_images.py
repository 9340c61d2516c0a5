"""Datasets of encoded images: image folders, parquet, WebDataset shards — decoded to the
model's input, embedded with every row traceable to its file, bad files named or skipped."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.helpers import (
    EXPORTED,
    embed_killed_midway,
    encoded,
    photo_crops,
    run_cli,
    write_image_folder,
    write_image_parquet,
    write_shards,
)
from vaefast import data
from vaefast.embedding import store
from vaefast.data.decode import Preprocess, decode
from vaefast.embedding.pipeline import embed

pytestmark = pytest.mark.slow  # run first: a long file at the end would leave a worker idle

MODEL = EXPORTED / "mnist5k-conv-z16"  # 1x28x28: photos become grey 28x28 crops


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return photo_crops(240)


@pytest.fixture(scope="module")
def folder(photos, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_image_folder(root, photos, classes=3)
    return root


def _mu(path: Path) -> np.ndarray:
    return zarr.open_group(str(path), mode="r")["mu"][:]


# --- reading ---------------------------------------------------------------------------


def test_image_folder_follows_imagefolder_rule(folder, photos, tmp_path):
    root = tmp_path / "mixed"
    shutil.copytree(folder, root)
    (root / "loose.png").write_bytes(encoded(photos[0], "PNG"))
    (root / "notes.txt").write_text("not an image, ignored")
    source = data.open_source(f"images:{root}", Preprocess(28, 28, 1))
    assert source.n == len(photos) + 1
    assert source.label_names == ["class_0", "class_1", "class_2"]
    assert source.ids[0] == "class_0/000000.jpg" and source.ids[-1] == "loose.png"
    assert source.labels[0] == 0 and source.labels[-1] == -1  # no class: -1
    assert source.rows(0, 4).shape == (4, 28, 28) and source.rows(0, 4).dtype == np.uint8


def test_xarray_opens_an_image_folder_store_with_ids_and_class_names(folder, tmp_path):
    from tests.helpers import xarray_dataset

    out = tmp_path / "e.zarr"
    embed(MODEL, f"images:{folder}", out, progress=False)
    ds = xarray_dataset(out)
    assert ds.mu.dims == ("row", "latent") and {"ids", "labels", "skipped"} <= set(ds.coords)
    assert ds.ids.values[0] == "class_0/000000.jpg" and (ds.skipped.values == "").all()
    assert ds.labels.attrs["label_names"] == ["class_0", "class_1", "class_2"]
    np.testing.assert_array_equal(ds.mu.values, _mu(out))


def test_folder_parquet_and_shards_give_the_same_embeddings(folder, photos, tmp_path):
    labels = np.arange(len(photos)) % 3
    write_image_parquet(tmp_path / "photos.parquet", photos, labels, row_group_size=50)
    shards = tmp_path / "shards"
    shards.mkdir()
    pattern = write_shards(shards, photos, labels, per_shard=100)
    order = np.argsort([f"class_{i % 3}/{i:06d}.jpg" for i in range(len(photos))])
    stores = {}
    for name, spec in (
        ("folder", f"images:{folder}"),
        ("parquet", f"parquet:{tmp_path / 'photos.parquet'}"),
        ("wds", f"wds:{pattern}"),
    ):
        out = tmp_path / f"{name}.zarr"
        embed(MODEL, spec, out, chunk_rows=64, progress=False)
        stores[name] = store.load(out)
    # the folder lists files sorted (class folders first); parquet and tars keep row order
    np.testing.assert_array_equal(stores["folder"]["mu"], stores["parquet"]["mu"][order])
    np.testing.assert_array_equal(stores["parquet"]["mu"], stores["wds"]["mu"])
    np.testing.assert_array_equal(stores["parquet"]["labels"], labels)
    assert stores["parquet"]["ids"][61] == "photos.parquet:61"
    assert stores["wds"]["ids"][150] == "shard-001.tar:sample000150"
    assert stores["folder"]["attrs"]["label_names"] == ["class_0", "class_1", "class_2"]


def test_embedding_matches_decoding_then_encoding(folder):
    from vaefast import runtime

    source = data.open_source(f"images:{folder}", Preprocess(28, 28, 1), decode_workers=1)
    X = source.rows(0, source.n)
    mu, _ = runtime.load(MODEL).encode(X)
    parallel = data.open_source(f"images:{folder}", Preprocess(28, 28, 1), decode_workers=2)
    np.testing.assert_array_equal(parallel.rows(0, parallel.n), X)  # same pixels either way
    parallel.close()
    store_mu = None
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        embed(MODEL, f"images:{folder}", Path(d) / "e.zarr", progress=False)
        store_mu = _mu(Path(d) / "e.zarr")
    np.testing.assert_allclose(store_mu, mu, atol=1e-6)


# --- preprocessing ----------------------------------------------------------------------


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG") if mode else Image.fromarray(array).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def test_transparent_pixels_are_composited_on_white():
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    out, _ = decode(_png(rgba), Preprocess(8, 8, 3))
    assert (out == 255).all()


def test_sixteen_bit_images_are_scaled_not_clipped():
    grey16 = np.full((8, 8), 32768, np.uint16)  # half of 65535
    out, _ = decode(_png(grey16), Preprocess(8, 8, 1))
    assert abs(int(out.mean()) - 128) <= 1


def test_palette_cmyk_and_grey_sources_become_the_models_channels(photos):
    from PIL import Image

    image = Image.fromarray(photos[0])
    for mode, fmt in (("P", "PNG"), ("CMYK", "JPEG"), ("L", "JPEG"), ("L", "PNG")):
        buf = io.BytesIO()
        image.convert(mode).save(buf, format=fmt)
        rgb, _ = decode(buf.getvalue(), Preprocess(28, 28, 3))
        grey, _ = decode(buf.getvalue(), Preprocess(28, 28, 1))
        assert rgb.shape == (28, 28, 3) and grey.shape == (28, 28)


@pytest.mark.parametrize("rule", ["crop", "squash", "pad"])
def test_resize_rules(rule):
    wide = np.full((20, 40), 200, np.uint8)  # a wide light image
    out, upscaled = decode(_png(wide), Preprocess(10, 10, 1, rule))
    assert out.shape == (10, 10) and not upscaled
    if rule == "pad":  # fits the width: black bands above and below
        assert out[0].max() == 0 and out[5].min() > 150
    else:
        assert out.min() > 150


def test_reduced_scale_jpeg_decode_matches_a_full_decode(photos):
    """PIL's draft (the DCT scales the JPEG down) against decoding it whole, then resizing."""
    from PIL import Image

    blob = encoded(photos[3])
    fast, _ = decode(blob, Preprocess(28, 28, 1))
    full = Image.open(io.BytesIO(blob)).convert("L")
    w, h = full.size
    side = min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    slow = np.asarray(full.resize((28, 28), Image.Resampling.BILINEAR, box=box))
    assert np.abs(fast.astype(int) - slow).mean() < 4  # of 255


def test_small_images_are_upscaled_and_counted(tmp_path):
    (tmp_path / "small").mkdir()
    for i in range(3):
        (tmp_path / "small" / f"{i}.png").write_bytes(_png(np.full((10, 12), 50 * i, np.uint8)))
    result = run_cli(
        "embed",
        str(MODEL),
        f"images:{tmp_path / 'small'}",
        "--out",
        str(tmp_path / "s.zarr"),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "3 image(s) smaller than the model's input were upscaled" in result.stdout


# --- bad files --------------------------------------------------------------------------


def _folder_with_a_bad_file(folder: Path, tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "with_bad"
    shutil.copytree(folder, root)
    bad = "class_2/000200.jpg"  # a late row: earlier chunks finish first
    data_ = (root / bad).read_bytes()
    (root / bad).write_bytes(data_[: len(data_) // 3])  # truncated
    return root, bad


def test_a_bad_file_stops_the_run_naming_it_and_the_finished_chunks_are_kept(folder, tmp_path):
    root, bad = _folder_with_a_bad_file(folder, tmp_path)
    out = tmp_path / "e.zarr"
    args = [
        "embed",
        str(MODEL),
        f"images:{root}",
        "--out",
        str(out),
        "--chunk-rows",
        "32",
        "--quiet",
        "--decode-workers",
        "1",
    ]
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and bad in result.stderr and "truncated" in result.stderr
    done = zarr.open_group(str(out), mode="r")["_progress/encoded"][:]
    assert 0 < done.sum() < len(done)
    shutil.copy(folder / bad, root / bad)  # fixed: the same command resumes and finishes
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "chunks resumed" in result.stdout and not result.stdout.startswith(
        f"wrote {out}: 240 rows (0 chunks"
    )
    embed(MODEL, f"images:{folder}", tmp_path / "clean.zarr", chunk_rows=32, progress=False)
    np.testing.assert_array_equal(_mu(out), _mu(tmp_path / "clean.zarr"))


def test_skip_bad_records_each_skipped_file_and_never_writes_a_zero_row(folder, tmp_path):
    root, bad = _folder_with_a_bad_file(folder, tmp_path)
    (root / "class_0" / "000003.jpg").write_text("not a jpeg")
    out = tmp_path / "e.zarr"
    result = run_cli(
        "embed",
        str(MODEL),
        f"images:{root}",
        "--out",
        str(out),
        "--tsne",
        "--skip-bad",
        "--quiet",
        "--chunk-rows",
        "64",
    )
    assert result.returncode == 0, result.stderr
    assert "skipped 2 file(s)" in result.stdout
    stored = store.load(out)
    rows = {stored["ids"][r]: why for r, why in stored["skipped"].items()}
    assert set(rows) == {bad, "class_0/000003.jpg"}
    assert "truncated" in rows[bad] and "identify" in rows["class_0/000003.jpg"]
    skipped = list(stored["skipped"])
    assert np.isnan(stored["mu"][skipped]).all() and np.isnan(stored["tsne"][skipped]).all()
    others = np.setdiff1d(np.arange(len(stored["mu"])), skipped)
    assert np.isfinite(stored["mu"][others]).all() and np.isfinite(stored["tsne"][others]).all()
    plots = run_cli(
        "plot", "latent", str(MODEL), "--embeddings", str(out), "--out", str(tmp_path / "plots")
    )
    assert plots.returncode == 0, plots.stderr


def test_resume_after_sigkill_gives_the_identical_store(folder, tmp_path):
    out = tmp_path / "e.zarr"
    args = [str(MODEL), f"images:{folder}", "--out", str(out), "--chunk-rows", "16", "--quiet"]
    embed_killed_midway(args, out)
    assert run_cli("embed", *args).returncode == 0
    embed(MODEL, f"images:{folder}", tmp_path / "clean.zarr", chunk_rows=16, progress=False)
    np.testing.assert_array_equal(_mu(out), _mu(tmp_path / "clean.zarr"))


def test_dask_splits_the_file_list_with_the_same_result(folder, tmp_path):
    pytest.importorskip("distributed")
    embed(MODEL, f"images:{folder}", tmp_path / "one.zarr", chunk_rows=64, progress=False)
    embed(
        MODEL,
        f"images:{folder}",
        tmp_path / "dask.zarr",
        chunk_rows=64,
        scheduler="local",
        workers=2,
        progress=False,
    )
    np.testing.assert_array_equal(_mu(tmp_path / "one.zarr"), _mu(tmp_path / "dask.zarr"))
    assert list(store.load(tmp_path / "dask.zarr")["ids"]) == list(
        store.load(tmp_path / "one.zarr")["ids"]
    )


def test_a_changed_folder_is_not_resumed_into(folder, tmp_path):
    root = tmp_path / "f"
    shutil.copytree(folder, root)
    out = tmp_path / "e.zarr"
    args = [str(MODEL), f"images:{root}", "--out", str(out), "--chunk-rows", "16", "--quiet"]
    embed_killed_midway(args, out)
    (root / "class_1" / "new.jpg").write_bytes((root / "class_1" / "000001.jpg").read_bytes())
    result = run_cli("embed", *args)
    assert result.returncode == 2 and "another input" in result.stderr


# --- downstream -------------------------------------------------------------------------


def test_embeddings_export_to_parquet_and_npy(folder, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "e.zarr"
    embed(MODEL, f"images:{folder}", out, tsne=True, chunk_rows=64, progress=False)
    stored = store.load(out)
    assert (
        run_cli("embeddings", str(out), "--to", "parquet", str(tmp_path / "e.parquet")).returncode
        == 0
    )
    table = pq.read_table(tmp_path / "e.parquet").to_pydict()
    assert table["id"] == list(stored["ids"]) and table["row"] == list(range(len(table["id"])))
    np.testing.assert_array_equal(np.array(table["mu"], np.float32), stored["mu"])
    np.testing.assert_array_equal(np.array(table["logvar"], np.float32), stored["logvar"])
    np.testing.assert_array_equal(table["tsne_x"], stored["tsne"][:, 0])
    names = stored["attrs"]["label_names"]
    assert table["label_name"] == [names[k] for k in stored["labels"]]
    meta = json.loads(pq.read_schema(tmp_path / "e.parquet").metadata[b"vaefast"])
    assert meta["latent_shape"] == [16] and meta["label_names"] == stored["attrs"]["label_names"]
    assert meta["model_sha256"] == stored["attrs"]["model_sha256"]
    assert meta["input"]["preprocess"] == stored["attrs"]["input"]["preprocess"]
    assert run_cli("embeddings", str(out), "--to", "npy", str(tmp_path / "npy")).returncode == 0
    np.testing.assert_array_equal(np.load(tmp_path / "npy" / "mu.npy"), stored["mu"])
    np.testing.assert_array_equal(np.load(tmp_path / "npy" / "logvar.npy"), stored["logvar"])
    assert list(np.load(tmp_path / "npy" / "ids.npy")) == list(stored["ids"])
    again = run_cli("embeddings", str(out), "--to", "npy", str(tmp_path / "npy"))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_with_images_the_export_carries_thumbnails_datasets_and_pandas_show(folder, tmp_path):
    """``--with-images``: each row's input as a PNG in the struct of ``datasets``' Image
    feature — ``datasets`` decodes it to the picture the model saw, and pandas (the reader
    embedding-atlas opens parquet with) gives the PNG bytes; .npy cannot hold them."""
    import datasets
    import pandas as pd

    from vaefast import runtime

    out, table = tmp_path / "e.zarr", tmp_path / "e.parquet"
    embed(MODEL, f"images:{folder}", out, chunk_rows=64, progress=False)
    done = run_cli("embeddings", str(out), "--to", "parquet", str(table), "--with-images")
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith(", image)")
    hf = datasets.Dataset.from_parquet(str(table), cache_dir=str(tmp_path / "hf-cache"))
    assert isinstance(hf.features["image"], datasets.Image)
    source = data.reopen(store.info(zarr.open_group(str(out), mode="r"))["input"])
    seen = runtime.load(MODEL, providers="cpu").images(source.rows(0, 5))  # [5, 28, 28]
    for k in (0, 4):
        picture = np.asarray(hf[k]["image"], np.float32) / 255.0
        assert picture.shape == seen[k].shape
        assert np.abs(picture - seen[k]).max() <= 0.5 / 255 + 1e-6
    cells = pd.read_parquet(table)["image"]
    assert len(cells) == hf.num_rows and cells[0]["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
    refused = run_cli("embeddings", str(out), "--to", "npy", str(tmp_path / "n"), "--with-images")
    assert refused.returncode == 2 and "--with-images needs --to parquet" in refused.stderr
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    embed(MODEL, f"images:{moved}", tmp_path / "m.zarr", progress=False)
    shutil.rmtree(moved)
    gone = run_cli(
        "embeddings", str(tmp_path / "m.zarr"), "--to", "parquet", str(tmp_path / "m.parquet"),
        "--with-images",
    )  # fmt: skip
    assert gone.returncode == 2 and "input images unavailable" in gone.stderr
    assert not (tmp_path / "m.parquet").exists()


def test_embedding_atlas_reads_the_export_with_its_thumbnails(folder, tmp_path):
    """Where embedding-atlas installs, its own loader opens the export: the map's columns,
    the class names and each thumbnail's PNG bytes as its image column shows them."""
    atlas = pytest.importorskip("embedding_atlas.utils")
    out, table = tmp_path / "e.zarr", tmp_path / "e.parquet"
    embed(MODEL, f"images:{folder}", out, tsne=True, tsne_max=100, progress=False)
    store.export(out, "parquet", table, with_images=True)
    frame = atlas.load_pandas_data(str(table))
    assert {"tsne_x", "tsne_y", "label_name", "image"} <= set(frame.columns)
    assert frame["image"][0]["bytes"][:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_reads_thumbnails_back_through_the_ids(folder, tmp_path):
    out = tmp_path / "e.zarr"
    embed(MODEL, f"images:{folder}", out, tsne=True, progress=False)
    result = run_cli(
        "plot", "all", str(MODEL), "--embeddings", str(out), "--out", str(tmp_path / "plots")
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "plots" / "uncertainty.png").stat().st_size > 0
    from vaefast import runtime
    from vaefast.plot import Latents

    lat = Latents.from_store(runtime.load(MODEL), out)
    assert lat.names == ["class_0", "class_1", "class_2"]
    assert lat.X[[5]].shape == (1, 28, 28)


def test_image_specs_work_for_every_command_that_reads_data(folder):
    split = data.load(f"images:{folder}", Preprocess(28, 28, 1))
    assert split.X_train.shape == (192, 28, 28) and split.X_test.shape == (48, 28, 28)
    assert split.X_train.max() <= 1.0 and split.label_names == ["class_0", "class_1", "class_2"]
    raw = data.read(f"images:{folder}")  # no model: the first image's size and colour
    assert raw.X.shape == (240, 160, 200, 3)


# --- bad input: one line, exit 2 -------------------------------------------------------


def _bad_inputs(tmp_path: Path, photos: np.ndarray) -> dict[str, tuple[str, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import tarfile

    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    pq.write_table(pa.table({"label": [1, 2]}), tmp_path / "noimage.parquet")
    with tarfile.open(tmp_path / "noimage.tar", "w") as tar:
        info = tarfile.TarInfo("sample0.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    return {
        "empty folder": (f"images:{tmp_path / 'empty'}", "no image files"),
        "no images": (f"images:{tmp_path / 'text'}", "no image files"),
        "missing folder": (f"images:{tmp_path / 'nope'}", "no such folder"),
        "parquet without images": (f"parquet:{tmp_path / 'noimage.parquet'}", "no image column"),
        "tar without images": (f"wds:{tmp_path / 'noimage.tar'}", "no samples with an image"),
        "no shard": (f"wds:{tmp_path / 'shard-{000..003}.tar'}", "do not exist"),
    }


def test_bad_datasets_give_one_line_and_exit_2(photos, tmp_path):
    pytest.importorskip("pyarrow")
    for case, (spec, words) in _bad_inputs(tmp_path, photos).items():
        out = tmp_path / f"{case}.zarr"
        result = run_cli("embed", str(MODEL), spec, "--out", str(out), "--quiet")
        assert result.returncode == 2, case
        assert result.stderr.count("\n") == 1 and words in result.stderr, (case, result.stderr)
        assert not out.exists(), case


def test_unknown_resize_rule_lists_the_rules(folder, tmp_path):
    result = run_cli(
        "embed",
        str(MODEL),
        f"images:{folder}",
        "--out",
        str(tmp_path / "e.zarr"),
        "--resize",
        "stretch",
    )
    assert result.returncode == 2 and "crop, squash, pad" in result.stderr


def test_a_script_without_a_main_guard_can_embed_in_parallel(folder, tmp_path):
    """Decode workers are forked, never started by re-running the caller's script."""
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(
        "import vaefast\n"
        f"s = vaefast.embed({str(MODEL)!r}, 'images:{folder}', "
        f"{str(tmp_path / 'e.zarr')!r}, decode_workers=2, progress=False)\n"
        "print('rows', s['rows'])\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("rows 240") == 1  # the script ran once


def test_tars_with_long_names_are_listed_by_tarfile(photos, tmp_path):
    import tarfile

    long_key = "d" * 120 + "/sample"  # past ustar's 100 characters: a pax header
    with tarfile.open(tmp_path / "long.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for ext, payload in (("jpg", encoded(photos[0])), ("cls", b"2")):
            info = tarfile.TarInfo(f"{long_key}.{ext}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    source = data.open_source(f"wds:{tmp_path / 'long.tar'}", Preprocess(28, 28, 1))
    assert source.ids == [f"long.tar:{long_key}"] and list(source.labels) == [2]
    assert source.rows(0, 1).shape == (1, 28, 28)


def test_train_export_embed_and_plot_all_read_an_image_folder(tmp_path):
    pytest.importorskip("torch")
    write_image_folder(tmp_path / "small", photo_crops(80, 32, 32), classes=2)
    spec = f"images:{tmp_path / 'small'}"
    steps = [
        (
            "train",
            "--data",
            spec,
            "--arch",
            "conv",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "run"),
        ),
        ("export", str(tmp_path / "run"), "--out", str(tmp_path / "exp")),
        ("embed", str(tmp_path / "exp"), spec, "--out", str(tmp_path / "e.zarr"), "--quiet"),
        ("plot", "latent", str(tmp_path / "exp"), "--out", str(tmp_path / "plots")),
    ]
    for args in steps:
        result = run_cli(*args)
        assert result.returncode == 0, (args[0], result.stderr[-2000:])
    import json

    meta = json.loads((tmp_path / "exp" / "model.json").read_text())
    assert meta["input_shape"] == [3, 32, 32] and meta["training"]["data"] == spec
    assert store.load(tmp_path / "e.zarr")["mu"].shape[0] == 80
