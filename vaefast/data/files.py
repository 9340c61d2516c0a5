"""Datasets of encoded images: a folder of image files, parquet files with an image column,
WebDataset tar shards. Each is listed once (sorted, so the row order is stable), keeps an
id per row (the path relative to the folder, ``FILE:ROW`` of a parquet file, ``SHARD:KEY``
of a tar) and its label, and fetches any slice of rows as encoded bytes;
``vaefast.data.decode`` turns them into pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vaefast.data.decode import EXTENSIONS, PIECE, Decoder, Preprocess, infer
from vaefast.data.sources import Source
from vaefast.errors import BadFile, VaefastError, first_line
from vaefast.extras import require

LABEL_COLUMNS = ("label", "labels", "y")
IMAGE_COLUMNS = ("image", "img", "jpg", "png", "images")
TAR_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


class Collection:
    """Encoded images, one per row: ``ids``, ``labels`` (or None), ``label_names``, and
    ``columns``: the scalar columns a table carries beside them (or None).

    ``refs(start, stop)`` gives what a decode worker needs for those rows — cheap to send
    (a path, a tar member's place) when the worker can read it itself with ``load``, else
    the encoded bytes (``load`` None)."""

    ids: list[str]
    labels: np.ndarray | None = None
    label_names: list[str] | None = None
    columns: dict[str, np.ndarray] | None = None
    load: Callable[[Any], bytes | str] | None = None

    def refs(self, start: int, stop: int) -> list:
        raise NotImplementedError

    def fetch(self, start: int, stop: int) -> list[bytes | str]:
        """The encoded images of rows [start, stop); a str says why one cannot be read."""
        refs = self.refs(start, stop)
        return refs if self.load is None else [self.load(r) for r in refs]


def read_file(path: str, what: str = "") -> bytes | str:
    """A file's bytes, or why it cannot be read (``what`` names it in the reason)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        return f"{what}{path + ' is ' if what else ''}unreadable ({e.strerror or e})"


def read_cell(ref: bytes | tuple[str] | str) -> bytes | str:
    """A table cell's image: its bytes, its file's bytes (a ``(path,)``), or why none."""
    return read_file(ref[0], "its image file ") if isinstance(ref, tuple) else ref


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
    first-level subfolders are the classes (labels in sorted name order, as its
    ``find_classes`` lists them); files directly in ``root`` have no label. Hidden
    entries (``.ipynb_checkpoints``, ``.DS_Store``, AppleDouble ``._*`` files) are
    skipped and counted in ``hidden`` (torchvision would list a hidden class folder). A
    class folder without images is refused, as torchvision refuses it, unless
    ``allow_empty_classes`` (its ``allow_empty=True``): then it keeps its index."""

    def __init__(self, root: Path, allow_empty_classes: bool = False):
        if not root.is_dir():
            raise VaefastError(f"{root}: no such folder")
        walk = _Walk()
        files = sorted(walk(str(root), ""))
        self.hidden, self.allow_empty_classes = walk.hidden, allow_empty_classes
        if not files:
            raise VaefastError(
                f"{root}: no image files ({', '.join(EXTENSIONS)}) in this "
                f"folder or below it{saved_dataset_hint(root)}"
            )
        self.root, self.ids = root, files
        classes = sorted(walk.folders)
        if classes:
            found = {f.split("/")[0] for f in files if "/" in f}
            empty = [c for c in classes if c not in found]
            if empty and not allow_empty_classes:
                raise VaefastError(
                    f"{root}: class folder {empty[0]!r} holds no image files"
                    f"{f' (nor do {len(empty) - 1} more)' if len(empty) > 1 else ''}; "
                    "torchvision's ImageFolder refuses an empty class too "
                    "(--allow-empty-classes keeps its label index, as its allow_empty=True)"
                )
            index = {c: k for k, c in enumerate(classes)}
            self.label_names = classes
            self.labels = np.array(
                [index[f.split("/")[0]] if "/" in f else -1 for f in files], np.int64
            )

    load = staticmethod(read_file)

    def refs(self, start: int, stop: int) -> list[str]:
        return [str(self.root / name) for name in self.ids[start:stop]]


class _Walk:
    """Lists image files under a folder as paths relative to the walk's root
    (``os.scandir``: no stat per file, which matters at a million files), skipping and
    counting hidden entries; ``folders`` are the root's visible subfolders."""

    def __init__(self):
        self.hidden = 0
        self.folders: list[str] = []

    def __call__(self, folder: str, prefix: str) -> list[str]:
        out = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    self.hidden += 1
                elif entry.is_dir():
                    if not prefix:
                        self.folders.append(entry.name)
                    out += self(entry.path, f"{prefix}{entry.name}/")
                elif os.path.splitext(entry.name)[1].lower() in EXTENSIONS and entry.is_file():
                    out.append(prefix + entry.name)
        return out


# --- tables: parquet files, Hugging Face datasets' arrow files ---------------------------


class _Table(Collection):
    """Rows of Arrow tables with an image column — Hugging Face's ``{bytes, path}`` struct
    (a cell with only a ``path`` is read from that file: absolute, or relative to its
    table file's folder, as ``datasets`` reads it) or plain binary — and optionally an
    integer label column, whose names come from the ``ClassLabel`` feature that
    ``datasets`` records in the schema's ``huggingface`` metadata. Every other column of
    numbers, booleans or strings (a caption, a split, a score) is kept in ``columns``, as
    float64 (NaN where null) or str ('' where null), for the store. Read a piece (a row
    group, a record batch) at a time, one cached."""

    def _setup(self, files: list[Path], root: Path, what: str) -> None:
        """Lists ``files`` (``_schema``, ``_rows``, ``_pieces`` of each), their ids
        ``REL:ROW`` and labels."""
        self.files, self.ids, self.column = files, [], None
        self._starts_of: list[int] = []
        labels, pieces, names, kept = [], [], None, {}
        for k, f in enumerate(files):
            schema = self._schema(f)
            features = hf_features(schema)
            column = _image_column(schema, features, f)
            if self.column not in (None, column):
                raise VaefastError(f"{f}: no column {self.column!r} like the other files")
            self.column = column
            label = next((c for c in LABEL_COLUMNS if c in schema.names), None) or next(
                (
                    c
                    for c, t in features.items()
                    if isinstance(t, dict) and t.get("_type") == "ClassLabel" and c in schema.names
                ),
                None,
            )
            if label and isinstance(features.get(label), dict):
                names = features[label].get("names") or names
            rel = f.relative_to(root).as_posix() if root.is_dir() else f.name
            first = len(self.ids)
            for piece, n_piece in enumerate(self._piece_rows(f)):
                pieces.append((k, piece, first))
                first += n_piece
            n = first - len(self.ids)
            self.ids += [f"{rel}:{r}" for r in range(n)]
            labels.append(_labels(self._column(f, label), f) if label else np.full(n, -1, np.int64))
            scalar = _scalar_columns(schema, {column, label})
            kept = {c: kept.get(c, []) for c in (scalar if k == 0 else kept) if c in scalar}
            for c in kept:  # the columns every file has
                kept[c].append(_scalars(self._column(f, c)))
        if not self.ids:
            raise VaefastError(f"{root}: the {what} hold no rows")
        y = np.concatenate(labels)
        if names:
            self.labels, self.label_names = y, [str(v) for v in names]
        elif (y >= 0).any():
            self.labels = y
            self.label_names = [str(v) for v in np.unique(y[y >= 0])]
        self.columns = {c: np.concatenate(v) for c, v in kept.items()} or None
        self._pieces = pieces
        self._starts = np.array([p[2] for p in pieces])
        self._cached: tuple[int, list] | None = None

    load = staticmethod(read_cell)

    def refs(self, start: int, stop: int) -> list:
        """Bytes, a (path,) to read, or a str saying why a cell holds no image."""
        out: list = []
        while start < stop:
            g = int(np.searchsorted(self._starts, start, side="right")) - 1
            if self._cached is None or self._cached[0] != g:
                k, piece, _ = self._pieces[g]
                self._cached = (g, _cells(self._piece(self.files[k], piece), self.files[k].parent))
            rows = self._cached[1]
            first = int(self._starts[g])
            take = rows[start - first : min(stop - first, len(rows))]
            out += take
            start += len(take)
        return out


class Parquet(_Table):
    """Parquet files: one, or every ``*.parquet`` under a folder."""

    def __init__(self, path: Path):
        require("parquet", "parquet: inputs")
        if not path.exists():
            raise VaefastError(f"{path}: no such parquet file or folder")
        files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
        if not files:
            raise VaefastError(
                f"{path}: no .parquet files in this folder or below it{saved_dataset_hint(path)}"
            )
        self._meta: dict[Path, Any] = {}
        self._setup(files, path, "parquet files")

    def _file(self, f: Path):
        if f not in self._meta:
            import pyarrow.parquet as pq

            try:
                self._meta[f] = pq.ParquetFile(f)
            except Exception as e:
                raise VaefastError(f"{f}: not a readable parquet file ({e})") from None
        return self._meta[f]

    def _schema(self, f: Path):
        return self._file(f).schema_arrow

    def _piece_rows(self, f: Path) -> list[int]:
        meta = self._file(f).metadata
        return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]

    def _column(self, f: Path, name: str):
        import pyarrow.parquet as pq

        return pq.read_table(f, columns=[name])[name]

    def _piece(self, f: Path, piece: int):
        return self._file(f).read_row_group(piece, columns=[self.column]).column(0)


class SavedDataset(_Table):
    """A Hugging Face ``datasets`` folder written by ``save_to_disk`` (``state.json``,
    ``dataset_info.json`` and Arrow stream files), or one such ``.arrow`` file; the files
    are memory-mapped and read a record batch at a time, as ``datasets`` reads them."""

    def __init__(self, path: Path):
        require("parquet", "hf: inputs")
        if not path.exists():
            raise VaefastError(f"{path}: no such folder or .arrow file")
        if (path / "dataset_dict.json").is_file():
            splits = sorted(p.name for p in path.iterdir() if (p / "state.json").is_file())
            raise VaefastError(
                f"{path}: a DatasetDict with the splits {', '.join(splits)}; "
                f"name one: hf:{path / (splits[0] if splits else 'SPLIT')}"
            )
        if path.is_dir():
            state = path / "state.json"
            if not state.is_file():
                raise VaefastError(
                    f"{path}: not a Hugging Face save_to_disk folder (no state.json)"
                )
            try:
                files = [path / d["filename"] for d in json.loads(state.read_text())["_data_files"]]
            except (ValueError, KeyError, TypeError) as e:
                raise VaefastError(f"{state}: not a datasets state file ({e})") from None
        else:
            files = [path]
        self._tables: dict[Path, Any] = {}
        self._info = path / "dataset_info.json" if path.is_dir() else None
        self._setup(files, path, "arrow files")

    def _table(self, f: Path):
        if f not in self._tables:
            import pyarrow as pa

            try:
                self._tables[f] = pa.ipc.open_stream(pa.memory_map(str(f))).read_all()
            except Exception as e:
                raise VaefastError(
                    f"{f}: not a readable Arrow stream file ({first_line(e)})"
                ) from None
        return self._tables[f]

    def _schema(self, f: Path):
        schema = self._table(f).schema
        if (
            b"huggingface" not in (schema.metadata or {})
            and self._info is not None
            and self._info.is_file()
        ):  # older files: the features are in the info
            features = json.loads(self._info.read_text()).get("features")
            schema = schema.with_metadata(
                {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
            )
        return schema

    def _piece_rows(self, f: Path) -> list[int]:
        return [b.num_rows for b in self._table(f).to_batches()]

    def _column(self, f: Path, name: str):
        return self._table(f)[name]

    def _piece(self, f: Path, piece: int):
        return self._table(f).to_batches()[piece].column(self.column)


def saved_dataset_hint(path: Path) -> str:
    """A hint when ``path`` is a ``datasets`` save_to_disk folder read as something else."""
    if path.is_dir() and (
        (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()
    ):
        return f" (it is a Hugging Face save_to_disk folder: write hf:{path})"
    return ""


def hf_features(schema) -> dict:
    """The ``datasets`` features recorded in an Arrow schema's metadata ({} if none)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        features = json.loads(raw)["info"]["features"]
    except (TypeError, ValueError, KeyError):
        return {}
    return features if isinstance(features, dict) else {}


def _cells(column, base: Path) -> list:
    """An image column's cells as refs: bytes, a (path,) of a cell that only names its
    file, or a str saying the cell is empty."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_struct(column.type):
        blobs = column.field("bytes").to_pylist()
        paths = (
            column.field("path").to_pylist()
            if column.type.get_field_index("path") >= 0
            else [None] * len(blobs)
        )
    else:
        blobs, paths = column.to_pylist(), [None] * len(column)
    return [
        b if b is not None else (str(base / p),) if p else "the image cell is empty"
        for b, p in zip(blobs, paths)
    ]


def _image_column(schema, features: dict, path: Path) -> str:
    """The image column: the ``datasets`` Image feature, else a {bytes, path} struct or a
    binary column, by name when several."""
    import pyarrow as pa

    def is_image(t) -> bool:
        return (
            pa.types.is_binary(t)
            or pa.types.is_large_binary(t)
            or (pa.types.is_struct(t) and t.get_field_index("bytes") >= 0)
        )

    found = [f.name for f in schema if is_image(f.type)]
    if not found:
        raise VaefastError(
            f"{path}: no image column (a binary column or Hugging Face's "
            f"{{bytes, path}} struct) among {schema.names}"
        )
    tagged = [
        c
        for c in found
        if isinstance(features.get(c), dict) and features[c].get("_type") == "Image"
    ]
    return next((c for c in tagged + list(IMAGE_COLUMNS) if c in found), found[0])


def _scalar_columns(schema, taken: set) -> list[str]:
    """The columns of numbers, booleans or strings (plain or dictionary-encoded) besides
    ``taken`` (the image and the label)."""
    import pyarrow as pa

    def scalar(t) -> bool:
        if pa.types.is_dictionary(t):
            t = t.value_type
        return (
            pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_boolean(t)
            or pa.types.is_string(t)
            or pa.types.is_large_string(t)
        )

    return [f.name for f in schema if f.name not in taken and scalar(f.type)]


def _scalars(column) -> np.ndarray:
    """A scalar column as float64 (NaN where null) or, for strings, str ('' where null)."""
    import pyarrow as pa

    t = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return np.array(["" if v is None else v for v in column.to_pylist()], dtype=object)
    return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), np.float64)


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
    body, head, tail = m.group(1), pattern[: m.start()], pattern[m.end() :]
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
            raise VaefastError(
                f"{pattern}: {len(missing)} of {len(shards)} shards do not "
                f"exist (first: {missing[0]})"
            )
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
            raise VaefastError(
                f"{pattern}: no samples with an image "
                f"({'/'.join(TAR_IMAGE_KEYS)}) in {len(shards)} shard(s)"
            )
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
                prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
                if kind != b"5":
                    out.append(
                        (
                            (prefix + b"/" + name if prefix else name).decode("utf-8"),
                            offset + 512,
                            size,
                        )
                    )
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
        raise VaefastError(
            f"{shard}: sample {key}'s cls is {text[:20]!r}, not an integer"
        ) from None


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
            raise BadFile(
                f"{self.spec}: {self.collection.ids[start + k]}: {failed[k]}",
                self.collection.ids[start + k],
                failed[k],
            )
        if bad is not None:
            bad.update({start + k: why for k, why in failed.items()})
        return X

    def fingerprint(self) -> dict[str, Any]:
        """The spec, the row count, a hash of the sorted id list (a changed folder is a
        different input) and the preprocessing."""
        if not self._ids_sha:
            self._ids_sha = hashlib.sha256("\n".join(self.ids).encode()).hexdigest()
        return {
            "spec": self.spec,
            "rows": self.n,
            "ids_sha256": self._ids_sha,
            "preprocess": self.preprocess.to_dict(),
        } | ({"allow_empty_classes": True} if self.allow_empty_classes else {})

    @property
    def hidden(self) -> int:
        """Hidden files and folders skipped while listing (an image folder's)."""
        return getattr(self.collection, "hidden", 0)

    @property
    def allow_empty_classes(self) -> bool:
        return getattr(self.collection, "allow_empty_classes", False)

    def start(self) -> None:
        """Start the decode processes (when there are enough rows to need them)."""
        if self.n > PIECE:
            self.decoder.start()

    def close(self) -> None:
        self._ahead = None
        self.decoder.close()


def open_files(
    collection: Collection,
    spec: str,
    preprocess: Preprocess | None = None,
    workers: int | None = None,
) -> FileSource:
    """A FileSource over ``collection``; without ``preprocess``, images keep the first
    one's size and colour (for reading with no model to size them for)."""
    if preprocess is None:
        preprocess = infer(collection.fetch(0, 1)[0], collection.ids[0])
    return FileSource(
        spec,
        len(collection.ids),
        preprocess.shape,
        np.dtype(np.uint8),
        collection.labels,
        label_names=collection.label_names,
        columns=collection.columns,
        collection=collection,
        preprocess=preprocess,
        decoder=Decoder(preprocess, workers),
    )
