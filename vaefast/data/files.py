"""Datasets of encoded images: a folder of image files, parquet files with an image column,
WebDataset tar shards. Each is listed once (sorted, so the row order is stable), keeps an
id per row (the path relative to the folder, ``FILE:ROW`` of a parquet file, ``SHARD:KEY``
of a tar) and its label, and fetches any slice of rows as encoded bytes;
``vaefast.data.decode`` turns them into pixels.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vaefast.data.decode import EXTENSIONS, PIECE, Decoder, Preprocess, infer
from vaefast.data.sources import Source
from vaefast.errors import BadFile, VaefastError

LABEL_COLUMNS = ("label", "labels", "y")
IMAGE_COLUMNS = ("image", "img", "jpg", "png", "images")
TAR_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


class Collection:
    """Encoded images, one per row: ``ids``, ``labels`` (or None), ``label_names``.

    ``refs(start, stop)`` gives what a decode worker needs for those rows — cheap to send
    (a path, a tar member's place) when the worker can read it itself with ``load``, else
    the encoded bytes (``load`` None)."""

    ids: list[str]
    labels: np.ndarray | None = None
    label_names: list[str] | None = None
    load: Callable[[Any], bytes | str] | None = None

    def refs(self, start: int, stop: int) -> list:
        raise NotImplementedError

    def fetch(self, start: int, stop: int) -> list[bytes | str]:
        """The encoded images of rows [start, stop); a str says why one cannot be read."""
        refs = self.refs(start, stop)
        return refs if self.load is None else [self.load(r) for r in refs]


def read_file(path: str) -> bytes | str:
    """A file's bytes, or why it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        return f"unreadable ({e.strerror or e})"


def read_member(place: tuple[str, int, int]) -> bytes | str:
    """A tar member's bytes from (tar path, data offset, size), or why they cannot be read."""
    path, offset, size = place
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    return data if len(data) == size else "truncated tar member"


# --- image folders -----------------------------------------------------------------------


class Folder(Collection):
    """Image files under ``root``, recursively, by torchvision's ImageFolder rule: the
    first-level subfolders are the classes (labels in sorted name order); files directly
    in ``root`` have no label."""

    def __init__(self, root: Path):
        if not root.is_dir():
            raise VaefastError(f"{root}: no such folder")
        files = sorted(_image_files(str(root), ""))
        if not files:
            raise VaefastError(f"{root}: no image files ({', '.join(EXTENSIONS)}) in this "
                               "folder or below it")
        self.root, self.ids = root, files
        classes = sorted({f.split("/")[0] for f in files if "/" in f})
        if classes:
            index = {c: k for k, c in enumerate(classes)}
            self.label_names = classes
            self.labels = np.array([index.get(f.split("/")[0], -1) if "/" in f else -1
                                    for f in files], np.int64)

    load = staticmethod(read_file)

    def refs(self, start: int, stop: int) -> list[str]:
        return [str(self.root / name) for name in self.ids[start:stop]]


def _image_files(folder: str, prefix: str) -> list[str]:
    """Image files under ``folder``, as paths relative to the walk's root (``os.scandir``:
    no stat per file, which matters at a million files)."""
    out = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir():
                out += _image_files(entry.path, f"{prefix}{entry.name}/")
            elif os.path.splitext(entry.name)[1].lower() in EXTENSIONS and entry.is_file():
                out.append(prefix + entry.name)
    return out


# --- parquet -----------------------------------------------------------------------------


class Parquet(Collection):
    """Parquet files (one, or every ``*.parquet`` under a folder) with an image column —
    Hugging Face's ``{bytes, path}`` struct or plain binary — and optionally an integer
    label column; images are read a row group at a time, never the whole file."""

    def __init__(self, path: Path):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise VaefastError("parquet: inputs need pyarrow: pip install "
                               "'vaefast[parquet]'") from None
        files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
        if not path.exists():
            raise VaefastError(f"{path}: no such parquet file or folder")
        if not files:
            raise VaefastError(f"{path}: no .parquet files in this folder or below it")
        self.files, self.ids, self.column, labels = [], [], None, []
        groups = []  # (file index, row group, first row of the group overall)
        for k, f in enumerate(files):
            try:
                meta = pq.ParquetFile(f)
            except Exception as e:
                raise VaefastError(f"{f}: not a readable parquet file ({e})") from None
            names = meta.schema_arrow.names
            column = self.column or _image_column(meta.schema_arrow, f)
            if column not in names:
                raise VaefastError(f"{f}: no column {column!r} like the other files")
            self.column = column
            label = next((c for c in LABEL_COLUMNS if c in names), None)
            rel = f.relative_to(path).as_posix() if path.is_dir() else f.name
            n, first = meta.metadata.num_rows, len(self.ids)
            for g in range(meta.num_row_groups):
                groups.append((k, g, first))
                first += meta.metadata.row_group(g).num_rows
            self.ids += [f"{rel}:{r}" for r in range(n)]
            labels.append(_labels(pq.read_table(f, columns=[label])[label], f) if label
                          else np.full(n, -1, np.int64))
            self.files.append(f)
        if not self.ids:
            raise VaefastError(f"{path}: the parquet files hold no rows")
        y = np.concatenate(labels)
        if (y >= 0).any():
            self.labels = y
            self.label_names = [str(v) for v in np.unique(y[y >= 0])]
        self._groups = groups
        self._starts = np.array([g[2] for g in groups])
        self._cached: tuple[int, Any] | None = None

    def _group(self, index: int):
        if self._cached is None or self._cached[0] != index:
            import pyarrow.parquet as pq

            k, g, _ = self._groups[index]
            table = pq.ParquetFile(self.files[k]).read_row_group(g, columns=[self.column])
            column = table.column(0).combine_chunks()
            if hasattr(column, "field"):  # {bytes, path} struct
                column = column.field("bytes")
            self._cached = (index, column.to_pylist())
        return self._cached[1]

    def refs(self, start: int, stop: int) -> list[bytes | str]:
        out: list[bytes | str] = []
        while start < stop:
            g = int(np.searchsorted(self._starts, start, side="right")) - 1
            rows = self._group(g)
            first = int(self._starts[g])
            take = rows[start - first:min(stop - first, len(rows))]
            out += [b if b is not None else "the image cell is empty" for b in take]
            start += len(take)
        return out


def _image_column(schema, path: Path) -> str:
    """The image column: a {bytes, path} struct or a binary column, by name when several."""
    import pyarrow as pa

    def is_image(t) -> bool:
        return pa.types.is_binary(t) or pa.types.is_large_binary(t) or (
            pa.types.is_struct(t) and t.get_field_index("bytes") >= 0)

    found = [f.name for f in schema if is_image(f.type)]
    if not found:
        raise VaefastError(f"{path}: no image column (a binary column or Hugging Face's "
                           f"{{bytes, path}} struct) among {schema.names}")
    return next((c for c in IMAGE_COLUMNS if c in found), found[0])


def _labels(column, path: Path) -> np.ndarray:
    y = column.to_numpy(zero_copy_only=False)
    if y.dtype.kind not in "iu":
        raise VaefastError(f"{path}: label column has type {column.type}, expected integers")
    return y.astype(np.int64)


# --- WebDataset --------------------------------------------------------------------------


def expand_braces(pattern: str) -> list[str]:
    """WebDataset's shard patterns: ``shards-{000..127}.tar`` (zero padding kept),
    ``{a,b}``; several braces expand as a product."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    body, head, tail = m.group(1), pattern[:m.start()], pattern[m.end():]
    r = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if r:
        lo, hi = int(r.group(1)), int(r.group(2))
        width = len(r.group(1))
        options = [f"{i:0{width}d}" for i in range(lo, hi + 1)]
    else:
        options = body.split(",")
    return [p for o in options for p in expand_braces(head + o + tail)]


@dataclass
class _Member:
    shard: int
    offset: int
    size: int


class Shards(Collection):
    """WebDataset tar shards: each sample's image under a jpg/jpeg/png/webp key, its label
    (optional) under ``cls``. The tars' headers are read once; images by offset."""

    def __init__(self, pattern: str):
        shards = expand_braces(pattern)
        missing = [s for s in shards if not Path(s).is_file()]
        if missing:
            raise VaefastError(f"{pattern}: {len(missing)} of {len(shards)} shards do not "
                               f"exist (first: {missing[0]})")
        self.shards, self.ids, self._members = shards, [], []
        labels: list[int] = []
        for k, shard in enumerate(shards):
            samples: dict[str, dict[str, tuple[int, int]]] = {}
            for name, offset, size in _tar_members(shard):
                key, _, ext = _split_key(name)
                samples.setdefault(key, {})[ext.lower()] = (offset, size)
            with open(shard, "rb") as f:
                for key, parts in samples.items():
                    ext = next((e for e in TAR_IMAGE_KEYS if e in parts), None)
                    if ext is None:
                        continue
                    self._members.append(_Member(k, *parts[ext]))
                    self.ids.append(f"{Path(shard).name}:{key}")
                    labels.append(_tar_label(f, parts.get("cls"), shard, key))
        if not self.ids:
            raise VaefastError(f"{pattern}: no samples with an image "
                               f"({'/'.join(TAR_IMAGE_KEYS)}) in {len(shards)} shard(s)")
        y = np.array(labels, np.int64)
        if (y >= 0).any():
            self.labels = y
            self.label_names = [str(v) for v in np.unique(y[y >= 0])]

    load = staticmethod(read_member)

    def refs(self, start: int, stop: int) -> list[tuple[str, int, int]]:
        return [(self.shards[m.shard], m.offset, m.size) for m in self._members[start:stop]]


def _split_key(name: str) -> tuple[str, str, str]:
    """WebDataset's rule: the key is the path up to the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), dot, ext


def _tar_members(shard: str) -> list[tuple[str, int, int]]:
    """(name, data offset, size) of a tar's regular files. Plain ustar headers are parsed
    directly (a few microseconds each, against tarfile's tens); a tar using pax or GNU
    long-name headers is listed by tarfile."""
    out = []
    try:
        with open(shard, "rb") as f:
            offset = 0
            while True:
                f.seek(offset)
                header = f.read(512)
                if len(header) < 512 or header == bytes(512):
                    break
                kind = header[156:157]
                if kind not in (b"0", b"\0", b"5"):  # pax, GNU long names, links: tarfile
                    return _tar_members_by_tarfile(shard)
                size = int(header[124:136].rstrip(b" \0") or b"0", 8)
                name = header[:100].split(b"\0", 1)[0]
                prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" \
                    else b""
                if kind != b"5":
                    out.append(((prefix + b"/" + name if prefix else name).decode("utf-8"),
                                offset + 512, size))
                offset += 512 + -(-size // 512) * 512
    except (OSError, ValueError, UnicodeDecodeError):
        return _tar_members_by_tarfile(shard)
    return out


def _tar_members_by_tarfile(shard: str) -> list[tuple[str, int, int]]:
    try:
        with tarfile.open(shard, "r:") as tar:
            return [(i.name, i.offset_data, i.size) for i in tar if i.isfile()]
    except (tarfile.TarError, OSError) as e:
        raise VaefastError(f"{shard}: not a readable tar file ({e})") from None


def _tar_label(f, place: tuple[int, int] | None, shard: str, key: str) -> int:
    """A sample's ``cls`` member (read from the open shard ``f``) as an int; -1 if none."""
    if place is None:
        return -1
    f.seek(place[0])
    text = f.read(place[1]).decode("utf-8", "replace").strip()
    try:
        return int(text)
    except ValueError:
        raise VaefastError(f"{shard}: sample {key}'s cls is {text[:20]!r}, not an "
                           "integer") from None


# --- the source ---------------------------------------------------------------------------


@dataclass
class FileSource(Source):
    """A Collection read as pixels: ``rows`` decodes (in parallel) to the preprocessing's
    shape, uint8. A file that cannot be decoded raises BadFile naming it, unless a ``bad``
    dict is passed, which then receives {row: reason} (those rows are zeros)."""

    collection: Collection | None = None
    preprocess: Preprocess | None = None
    decoder: Decoder | None = None
    upscaled: int = 0
    _ids_sha: str = field(default="", repr=False)
    _ahead: tuple | None = field(default=None, repr=False)

    def _submit(self, start: int, stop: int):
        return self.decoder.submit(self.collection.refs(start, stop), self.collection.load)

    @property
    def ids(self) -> list[str]:
        return self.collection.ids

    def rows(self, start: int, stop: int, bad: dict[int, str] | None = None) -> np.ndarray:
        """Rows [start, stop) decoded; the next as many rows start decoding now (read in
        order, as embed does, the workers never wait between chunks)."""
        ahead, self._ahead = self._ahead, None
        job = ahead[2] if ahead and ahead[:2] == (start, stop) else self._submit(start, stop)
        if stop < self.n:
            after = min(self.n, 2 * stop - start)
            self._ahead = (stop, after, self._submit(stop, after))
        X, failed, upscaled = job()
        self.upscaled += upscaled
        if failed and bad is None:
            k = min(failed)
            raise BadFile(f"{self.spec}: {self.collection.ids[start + k]}: {failed[k]}",
                          self.collection.ids[start + k], failed[k])
        if bad is not None:
            bad.update({start + k: why for k, why in failed.items()})
        return X

    def fingerprint(self) -> dict[str, Any]:
        """The spec, the row count, a hash of the sorted id list (a changed folder is a
        different input) and the preprocessing."""
        if not self._ids_sha:
            self._ids_sha = hashlib.sha256("\n".join(self.ids).encode()).hexdigest()
        return {"spec": self.spec, "rows": self.n, "ids_sha256": self._ids_sha,
                "preprocess": self.preprocess.to_dict()}

    def start(self) -> None:
        """Start the decode processes (when there are enough rows to need them)."""
        if self.n > PIECE:
            self.decoder.start()

    def close(self) -> None:
        self._ahead = None
        self.decoder.close()


def open_files(collection: Collection, spec: str, preprocess: Preprocess | None = None,
               workers: int | None = None) -> FileSource:
    """A FileSource over ``collection``; without ``preprocess``, images keep the first
    one's size and colour (for reading with no model to size them for)."""
    if preprocess is None:
        preprocess = infer(collection.fetch(0, 1)[0], collection.ids[0])
    return FileSource(spec, len(collection.ids), preprocess.shape, np.dtype(np.uint8),
                      collection.labels, label_names=collection.label_names,
                      collection=collection, preprocess=preprocess,
                      decoder=Decoder(preprocess, workers))
