"""Datasets as the user's own tools wrote them: Hugging Face ``datasets`` (``to_parquet``
of image paths, embedded bytes, ``save_to_disk``) and torchvision-style folders with the
files people's machines leave in them — read with the labels those tools give."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.helpers import EXPORTED, encoded, photo_crops, run_cli, write_image_folder
from vaefast import data
from vaefast.embedding import store
from vaefast.data.decode import Preprocess
from vaefast.embedding.pipeline import embed

MODEL = EXPORTED / "mnist5k-conv-z16"
N = 36


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hf") / "folder"
    write_image_folder(root, photo_crops(N, seed=3), classes=3)
    return root


@pytest.fixture(scope="module")
def saved(folder) -> dict[str, Path]:
    """The folder as ``datasets`` saves it: ``to_parquet`` of a dataset of image paths (the
    cells carry the path and no bytes), of a dataset with the bytes in it, and
    ``save_to_disk``; rows in the folder's order, labels a ``ClassLabel``."""
    datasets = pytest.importorskip("datasets")
    from datasets import ClassLabel, Features, Image

    source = data.open_source(f"images:{folder}", Preprocess(28, 28, 1), decode_workers=1)
    features = Features({"image": Image(), "label": ClassLabel(names=source.label_names)})
    paths = [str(folder / i) for i in source.ids]
    by_path = datasets.Dataset.from_dict(
        {"image": paths, "label": source.labels.tolist()}, features=features
    )
    cells = [{"bytes": (folder / i).read_bytes(), "path": None} for i in source.ids]
    with_bytes = datasets.Dataset.from_dict(
        {"image": cells, "label": source.labels.tolist()}, features=features
    )
    out = folder.parent
    by_path.to_parquet(str(out / "paths.parquet"))
    with_bytes.to_parquet(str(out / "bytes.parquet"))
    by_path.save_to_disk(str(out / "saved"))
    return {"paths": out / "paths.parquet", "bytes": out / "bytes.parquet", "saved": out / "saved"}


def _store(spec: str, out: Path) -> dict:
    embed(MODEL, spec, out, progress=False, decode_workers=1)
    stored = store.load(out)
    return {
        "mu": stored["mu"],
        "logvar": stored["logvar"],
        "labels": stored["labels"],
        "label_names": stored["attrs"]["label_names"],
    }


def test_datasets_files_give_the_folders_store_bit_for_bit(folder, saved, tmp_path):
    reference = _store(f"images:{folder}", tmp_path / "folder.zarr")
    assert reference["label_names"] == ["class_0", "class_1", "class_2"]
    for name, spec in (
        ("paths", f"parquet:{saved['paths']}"),
        ("bytes", f"parquet:{saved['bytes']}"),
        ("saved", f"hf:{saved['saved']}"),
        ("bare", str(saved["saved"])),
    ):
        got = _store(spec, tmp_path / f"{name}.zarr")
        for key in ("mu", "logvar", "labels"):
            np.testing.assert_array_equal(got[key], reference[key], err_msg=f"{name} {key}")
        assert got["label_names"] == reference["label_names"], name


def test_a_relative_path_cell_is_read_beside_its_parquet_file(folder, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.copytree(folder, tmp_path / "images")
    files = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "images").rglob("*.jpg"))
    cells = pa.array(
        [{"bytes": None, "path": f} for f in files],
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    pq.write_table(pa.table({"image": cells}), tmp_path / "rel.parquet")
    source = data.open_source(f"parquet:{tmp_path / 'rel.parquet'}", Preprocess(28, 28, 1))
    assert source.rows(0, source.n).shape == (len(files), 28, 28)


def test_missing_path_cells_are_named_or_skipped(saved, tmp_path):
    import pyarrow.parquet as pq

    table = pq.read_table(saved["paths"])
    cells = table.column("image").to_pylist()
    missing = str(tmp_path / "gone" / "lost.jpg")
    cells[5] = {"bytes": None, "path": missing}
    import pyarrow as pa

    broken = table.set_column(0, "image", pa.array(cells, table.schema.field("image").type))
    pq.write_table(
        broken.replace_schema_metadata(table.schema.metadata), tmp_path / "broken.parquet"
    )
    spec = f"parquet:{tmp_path / 'broken.parquet'}"
    result = run_cli("embed", str(MODEL), spec, "--out", str(tmp_path / "b.zarr"), "--quiet")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert missing in result.stderr and "broken.parquet:5" in result.stderr
    result = run_cli(
        "embed", str(MODEL), spec, "--out", str(tmp_path / "s.zarr"), "--quiet", "--skip-bad"
    )
    assert result.returncode == 0, result.stderr
    skipped = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["skipped"][:]
    assert (
        missing in str(skipped[5])
        and np.isnan(zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["mu"][5]).all()
    )


def test_saved_dataset_errors_name_the_format(saved, folder, tmp_path):
    datasets = pytest.importorskip("datasets")
    no_image = tmp_path / "numbers"
    datasets.Dataset.from_dict({"x": [1, 2, 3]}).save_to_disk(str(no_image))
    for spec, words in (
        (f"hf:{no_image}", "no image column"),
        (f"images:{saved['saved']}", f"write hf:{saved['saved']}"),
        (f"parquet:{saved['saved']}", f"write hf:{saved['saved']}"),
        (f"hf:{folder}", "not a Hugging Face save_to_disk folder"),
    ):
        result = run_cli("embed", str(MODEL), spec, "--out", str(tmp_path / "x.zarr"))
        assert result.returncode == 2 and words in result.stderr, (spec, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "x.zarr").exists()


# --- torchvision's folder rule ---------------------------------------------------------


def _torchvision_classes(root: Path) -> list[str]:
    """torchvision's ``datasets.folder.find_classes``, as it is written there."""
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())


def test_empty_class_folder_is_refused_or_keeps_its_index(folder, tmp_path):
    root = tmp_path / "with_empty"
    shutil.copytree(folder, root)
    (root / "class_1a").mkdir()  # empty, sorted between class_1 and class_2
    result = run_cli("embed", str(MODEL), f"images:{root}", "--out", str(tmp_path / "e.zarr"))
    assert result.returncode == 2 and "'class_1a' holds no image files" in result.stderr
    assert "--allow-empty-classes" in result.stderr and not (tmp_path / "e.zarr").exists()
    source = data.open_source(f"images:{root}", Preprocess(28, 28, 1), allow_empty_classes=True)
    assert source.label_names == _torchvision_classes(root)
    assert set(source.labels) == {0, 1, 3}  # class_2 keeps index 3, as torchvision gives it


def test_hidden_files_and_folders_are_skipped_and_counted(folder, tmp_path):
    root = tmp_path / "from_a_mac"
    shutil.copytree(folder, root)
    image = encoded(photo_crops(1)[0])
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "x.jpg").write_bytes(image)
    (root / "class_0" / "._000000.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (root / "class_0" / ".DS_Store").write_bytes(b"Bud1")
    source = data.open_source(f"images:{root}", Preprocess(28, 28, 1))
    assert source.label_names == ["class_0", "class_1", "class_2"] and source.n == N
    result = run_cli(
        "embed", str(MODEL), f"images:{root}", "--out", str(tmp_path / "h.zarr"), "--quiet"
    )
    assert result.returncode == 0, result.stderr
    assert "3 hidden file(s) or folder(s)" in result.stdout


def test_exif_rule_is_part_of_the_stores_identity(folder, tmp_path):
    out = tmp_path / "x.zarr"
    embed(MODEL, f"images:{folder}", out, progress=False, decode_workers=1)
    assert store.load(out)["attrs"]["input"]["preprocess"]["exif"] == "transpose"
    result = run_cli("embed", str(MODEL), f"images:{folder}", "--out", str(out), "--exif", "ignore")
    assert result.returncode == 2 and "--force" in result.stderr


def test_webdataset_shardwriter_shards_give_the_folders_labels(folder, tmp_path):
    """Shards as ``webdataset.ShardWriter`` writes them (``__key__``, ``jpg``, ``cls``)."""
    wds = pytest.importorskip("webdataset")
    source = data.open_source(f"images:{folder}", Preprocess(28, 28, 1), decode_workers=1)
    (tmp_path / "shards").mkdir()
    with wds.ShardWriter(
        str(tmp_path / "shards" / "train-%04d.tar"), maxcount=10, verbose=0
    ) as sink:
        for i, name in enumerate(source.ids):
            sink.write(
                {
                    "__key__": f"s{i:05d}",
                    "jpg": (folder / name).read_bytes(),
                    "cls": int(source.labels[i]),
                }
            )
    shards = data.open_source(
        f"wds:{tmp_path / 'shards' / 'train-{0000..0003}.tar'}",
        Preprocess(28, 28, 1),
        decode_workers=1,
    )
    np.testing.assert_array_equal(shards.labels, source.labels)
    np.testing.assert_array_equal(shards.rows(0, N), source.rows(0, N))


def test_the_inputs_own_columns_are_kept_exported_and_open_in_xarray(folder, tmp_path):
    """A dataset's scalar columns (a caption, a split, a score, a flag) travel with the
    rows: stored beside μ, coordinates in xarray, columns of the parquet export — from
    ``to_parquet`` and ``save_to_disk`` alike; a column named like one of ours is renamed."""
    datasets = pytest.importorskip("datasets")
    pytest.importorskip("xarray")
    import pyarrow.parquet as pq
    from datasets import ClassLabel, Features, Image, Value

    from tests.helpers import xarray_dataset

    source = data.open_source(f"images:{folder}", Preprocess(28, 28, 1), decode_workers=1)
    rng = np.random.default_rng(0)
    columns = {
        "caption": [f"photo {i} of {source.ids[i]}" for i in range(N)],
        "split": ["train" if i % 3 else "test" for i in range(N)],
        "score": rng.random(N).astype(np.float32).tolist(),
        "flagged": [bool(i % 5 == 0) for i in range(N)],
        "mu": [None if i == 7 else i for i in range(N)],  # ours: stored as input_mu
    }
    features = Features(
        {
            "image": Image(),
            "label": ClassLabel(names=source.label_names),
            "caption": Value("string"),
            "split": Value("string"),
            "score": Value("float32"),
            "flagged": Value("bool"),
            "mu": Value("int64"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {"image": [str(folder / i) for i in source.ids], "label": source.labels.tolist()} | columns,
        features=features,
    )
    ds.to_parquet(str(tmp_path / "t.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    for spec in (f"parquet:{tmp_path / 't.parquet'}", f"hf:{tmp_path / 'saved'}"):
        out = tmp_path / f"{spec[:2]}.zarr"
        embed(MODEL, spec, out, progress=False, decode_workers=1)
        x = xarray_dataset(out)
        assert {"caption", "split", "score", "flagged", "input_mu"} <= set(x.coords)
        assert x.mu.dims == ("row", "latent") and x.mu.shape == (N, 16)
        assert list(x.caption.values) == columns["caption"]
        assert list(x.split.values) == columns["split"]
        np.testing.assert_allclose(x.score.values, columns["score"], rtol=1e-7)
        assert x.flagged.values.tolist() == [float(v) for v in columns["flagged"]]
        assert np.isnan(x.input_mu.values[7]) and x.input_mu.values[8] == 8
        assert x.caption.attrs["description"] == "the input's column 'caption'"
        store.export(out, "parquet", tmp_path / f"{spec[:2]}.parquet")
        table = pq.read_table(tmp_path / f"{spec[:2]}.parquet")
        assert table.column_names[-5:] == ["caption", "split", "score", "flagged", "input_mu"]
        assert table.column("split").to_pylist() == columns["split"]
        assert table.column("mu").type.list_size == 16  # ours, untouched
