"""A finished embedding store as the explorer draws it: 2-D maps, per-row colour values
and the level-of-detail selection of the rows in a view.

Everything here is read through :mod:`vaefast.embedding.store`, a row chunk at a time; the
server holds the maps (8 bytes a row each), the labels, mean σ, a seeded rank per row
and, when it fits ``MU_CACHE_BYTES``, μ itself (for neighbours, traversal and colour by
a latent dimension; otherwise those read the store a chunk at a time).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vaefast.embedding import store
from vaefast.layout import chunk_bounds

MU_CACHE_BYTES = 512 * 2**20  # μ held in memory up to this size
TRAVERSAL_DIMS = 8  # latent dimensions offered for traversal when Z is large


def as_integer(text: str, signed: bool = False) -> int | None:
    """The integer ``text`` spells in ASCII digits (a leading ``-`` when ``signed``), else
    None: a row or label number from a request, where ``str.isdigit`` would also pass
    ``"¹"`` and ``lstrip("-")`` ``"--5"``, both of which ``int()`` refuses."""
    return int(text) if re.fullmatch(r"-?[0-9]+" if signed else "[0-9]+", text) else None


FRAME_MARGIN = 1.04  # the outermost points sit 4 % inside the map's edge, drawn whole


def _frame(xy: np.ndarray) -> tuple[float, float, float]:
    """(centre x, centre y, half width) that put positions into [-1, 1] with a margin,
    aspect kept."""
    if not np.isfinite(xy).any():
        return 0.0, 0.0, 1.0
    lo, hi = np.nanmin(xy, axis=0), np.nanmax(xy, axis=0)
    centre = (lo + hi) / 2
    half = float(np.max(hi - lo)) / 2 * FRAME_MARGIN
    return float(centre[0]), float(centre[1]), half or 1.0


@dataclass
class Selection:
    """Rows chosen for a view, in the order they are sent."""

    rows: np.ndarray  # uint32
    total: int  # rows in the view before the limit


class Columns:
    """The rows of one finished store, ready to be drawn and questioned."""

    def __init__(
        self, path: str | os.PathLike, model_sha256: str, model_dir: str, seed: int = 0
    ) -> None:
        self.path = Path(path)
        self.group = store.open_embeddings(path)
        self.attrs = store.info(self.group)
        store.check_model(self.attrs, model_sha256, path, model_dir)
        g = self.group
        self.n = store.n_rows(g)
        self.latent_shape = tuple(int(s) for s in g["mu"].shape[1:])
        self.z = int(np.prod(self.latent_shape))
        self.skipped = store.skipped_rows(g)
        self.labels = np.asarray(g["labels"][:], np.int64) if "labels" in g else None
        self.label_names = self.attrs.get("label_names")
        self.ids = np.asarray(g["ids"][:], dtype=object) if "ids" in g else None
        self.inputs = {c: _input_column(g[c]) for c in store.input_columns(g)}
        self.mu = None
        if self.n * self.z * 4 <= MU_CACHE_BYTES:
            self.mu = store.read_mu(g, slice(0, self.n))
        self.sigma_mean, self._stats = self._scan()
        self.drawn = np.isfinite(self.sigma_mean)
        rank = np.random.default_rng(seed).permutation(self.n).astype(np.uint32)
        self.rank = rank  # a row's place in the seeded overview sample (lower: shown sooner)
        self._maps: dict[str, np.ndarray] = {}
        self.frames: dict[str, tuple[float, float, float]] = {}  # map -> _frame
        self._principal: tuple[np.ndarray, np.ndarray] | None = None

    # --- per-row values -------------------------------------------------------------

    def chunks(self):
        """(start, stop) of each row chunk of the store."""
        step = self.group["mu"].chunks[0]
        return (chunk_bounds(c, step, self.n) for c in range(-(-self.n // step)))

    def _scan(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Mean σ per row and μ's mean, variance, and second moments (for PCA), in one
        pass over the store."""
        sigma = np.empty(self.n, np.float32)
        count, total = 0, np.zeros(self.z)
        gram = np.zeros((self.z, self.z)) if self.z <= 4096 else None
        for start, stop in self.chunks():
            logvar = np.asarray(self.group["logvar"][start:stop], np.float32)
            sigma[start:stop] = np.exp(0.5 * logvar.reshape(stop - start, -1)).mean(axis=1)
            mu = self.mu_rows(slice(start, stop)).astype(np.float64)
            mu = mu[np.isfinite(mu).all(axis=1)]
            count, total = count + len(mu), total + mu.sum(axis=0)
            if gram is not None:
                gram += mu.T @ mu
        mean = total / max(count, 1)
        stats = {"mean": mean, "count": np.array(count)}
        if gram is not None:
            cov = gram / max(count, 1) - np.outer(mean, mean)
            stats["cov"] = cov
            stats["var"] = np.diag(cov).copy()
        return sigma, stats

    def mu_rows(self, rows) -> np.ndarray:
        """μ of ``rows`` (a slice or sorted row numbers) as float32 [k, Z]."""
        if self.mu is not None:
            return self.mu[rows]
        return store.read_mu(self.group, rows)

    def sigma_rows(self, rows) -> np.ndarray:
        """σ of ``rows`` (a slice or sorted row numbers) as float32 [k, Z] (read from the
        store a chunk at a time)."""
        return np.exp(0.5 * store.read_rows(self.group, "logvar", rows))

    def label_name(self, label: int | None) -> str | None:
        if label is None or label < 0:
            return None
        names = self.label_names
        return names[label] if names and label < len(names) else str(label)

    def traversal_dims(self) -> list[dict[str, float]]:
        """The dimensions offered for traversal: all of them up to ``TRAVERSAL_DIMS``,
        else those with the largest variance of μ, with the range a slider covers
        (mean ± 3 standard deviations)."""
        var = self._stats.get("var")
        if var is None:  # too large for the covariance: a sample of rows
            var = self.mu_rows(np.sort(np.argsort(self.rank)[:10_000])).var(axis=0)
        dims = np.argsort(-var, kind="stable")[:TRAVERSAL_DIMS]
        mean = self._stats["mean"]
        return [
            {
                "dim": int(d),
                "lo": float(mean[d] - 3 * np.sqrt(var[d])),
                "hi": float(mean[d] + 3 * np.sqrt(var[d])),
            }
            for d in sorted(dims)
        ]

    # --- maps -------------------------------------------------------------------------

    def maps(self) -> list[str]:
        """The maps this store can show, best first (``MAPS``' order)."""
        return [name for name, kind in MAPS.items() if kind.available(self)]

    def positions(self, name: str) -> np.ndarray:
        """Normalised 2-D positions [N, 2] float32 of map ``name`` (NaN: skipped rows)."""
        if name not in self.maps():
            raise KeyError(name)
        if name not in self._maps:
            xy = MAPS[name].positions(self)
            xy[~self.drawn] = np.nan
            cx, cy, half = self.frames[name] = _frame(xy)
            self._maps[name] = ((xy - (cx, cy)) / half).astype(np.float32)
        return self._maps[name]

    def principal_axes(self) -> tuple[np.ndarray, np.ndarray]:
        """μ's two principal axes [Z, 2] and the share of μ's variance each explains
        (from the one-pass covariance, or a sample's when Z is too large for it); a sign
        convention makes them deterministic."""
        if self._principal is None:
            cov = self._stats.get("cov")
            if cov is None:
                rows = np.sort(np.argsort(self.rank)[:10_000])
                sample = self.mu_rows(rows).astype(np.float64)
                cov = np.cov(sample[np.isfinite(sample).all(axis=1)], rowvar=False)
            vals, vecs = np.linalg.eigh(cov)
            axes = vecs[:, ::-1][:, :2]
            axes *= np.where(axes[np.abs(axes).argmax(axis=0), [0, 1]] < 0, -1.0, 1.0)
            self._principal = axes, vals[::-1][:2] / max(float(vals.sum()), 1e-300)
        return self._principal

    def pca(self) -> np.ndarray:
        """The rows projected on μ's two principal axes."""
        mean = self._stats["mean"]
        axes = self.principal_axes()[0]
        out = np.empty((self.n, 2))
        for start, stop in self.chunks():
            out[start:stop] = (self.mu_rows(slice(start, stop)) - mean) @ axes
        return out

    # --- views ------------------------------------------------------------------------

    def select(
        self, name: str, box: tuple[float, float, float, float] | None, limit: int
    ) -> Selection:
        """The drawn rows of map ``name`` inside ``box`` (x0, y0, x1, y1; None: all), at
        most ``limit`` of them: those first in the seeded sample, so a view's points are a
        superset of the overview's there and the same request gives the same rows."""
        xy = self.positions(name)
        keep = self.drawn.copy()
        if box is not None:
            x0, y0, x1, y1 = box
            keep &= (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
        rows = np.flatnonzero(keep)
        total = len(rows)
        if total > limit:
            rows = np.sort(rows[np.argpartition(self.rank[rows], limit - 1)[:limit]])
        return Selection(rows.astype(np.uint32), total)

    def lasso(self, name: str, polygon: np.ndarray) -> np.ndarray:
        """Every drawn row of map ``name`` inside ``polygon`` ([k, 2] in the map's
        normalised coordinates), as sorted uint32: the page's own even-odd rule
        (``pointsInPolygon``), computed here over all rows, drawn in the overview or not."""
        xy = self.positions(name)
        (x0, y0), (x1, y1) = polygon.min(axis=0), polygon.max(axis=0)
        x, y = xy[:, 0], xy[:, 1]
        rows = np.flatnonzero(self.drawn & (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))
        px, py = x[rows].astype(np.float64), y[rows].astype(np.float64)
        inside = np.zeros(len(rows), bool)
        for (ax, ay), (bx, by) in zip(polygon, np.roll(polygon, 1, axis=0)):
            crosses = (ay > py) != (by > py)
            with np.errstate(divide="ignore", invalid="ignore"):
                inside ^= crosses & (px < ((bx - ax) * (py - ay)) / (by - ay) + ax)
        return rows[inside].astype(np.uint32)

    def points(self, name: str, sel: Selection) -> bytes:
        """The selected rows as the page draws them, little-endian, 16 bytes a point:
        uint32 count k, then row uint32[k], x float32[k], y float32[k], label int16[k]
        (-1: none) and mean σ as uint16[k] over the store's range of mean σ."""
        rows = sel.rows
        xy = self.positions(name)[rows]
        labels = (
            np.full(len(rows), -1, np.int16)
            if self.labels is None
            else np.clip(self.labels[rows], -1, 32767).astype("<i2")
        )
        lo, hi = self.sigma_range()
        scaled = (self.sigma_mean[rows] - lo) / ((hi - lo) or 1.0)
        sigma = np.round(np.clip(scaled, 0, 1) * 65535).astype("<u2")
        return b"".join(
            [
                np.uint32(len(rows)).astype("<u4").tobytes(),
                rows.astype("<u4").tobytes(),
                np.ascontiguousarray(xy[:, 0], "<f4").tobytes(),
                np.ascontiguousarray(xy[:, 1], "<f4").tobytes(),
                labels.tobytes(),
                sigma.tobytes(),
            ]
        )

    def dimension(self, dim: int, rows: np.ndarray) -> bytes:
        """μ's dimension ``dim`` of ``rows`` (sorted, as :meth:`select` gives them) as
        little-endian uint16 over its range in the store (mean ± 3 standard deviations)."""
        lo, hi = self.dim_range(dim)
        values = self.mu_rows(rows)[:, dim] if len(rows) else np.zeros(0)
        scaled = (values - lo) / ((hi - lo) or 1.0)
        return np.round(np.clip(scaled, 0, 1) * 65535).astype("<u2").tobytes()

    def dim_range(self, dim: int) -> tuple[float, float]:
        mean = float(self._stats["mean"][dim])
        var = self._stats.get("var")
        sd = float(np.sqrt(var[dim])) if var is not None else 1.0
        return mean - 3 * sd, mean + 3 * sd

    def sigma_range(self) -> tuple[float, float]:
        s = self.sigma_mean[self.drawn]
        return (float(s.min()), float(s.max())) if len(s) else (0.0, 1.0)

    def column(self, name: str, rows: np.ndarray) -> bytes:
        """The input's column ``name`` for ``rows`` (sorted, as :meth:`select` gives
        them) as little-endian uint16: numbers over their range, categories as the index
        of their value (the count of values where a row has none)."""
        col = self.inputs[name]
        if col.kind == "number":
            lo, hi = col.range
            scaled = (col.values[rows] - lo) / ((hi - lo) or 1.0)
            return np.round(np.nan_to_num(np.clip(scaled, 0, 1)) * 65535).astype("<u2").tobytes()
        return col.codes[rows].astype("<u2").tobytes()

    # --- one row ----------------------------------------------------------------------

    def row(self, r: int) -> dict[str, Any]:
        """What the page shows about row ``r``."""
        label = None if self.labels is None else int(self.labels[r])
        out: dict[str, Any] = {
            "row": r,
            "id": None if self.ids is None else str(self.ids[r]),
            "label": label,
            "label_name": self.label_name(label),
            "skipped": self.skipped.get(r),
            "columns": {name: col.value(r) for name, col in self.inputs.items()},
        }
        if r in self.skipped:
            return out
        out["sigma_mean"] = float(self.sigma_mean[r])
        out["mu"] = self.mu_rows(slice(r, r + 1))[0].tolist()
        out["sigma"] = self.sigma_rows(slice(r, r + 1))[0].tolist()
        out["maps"] = {m: self.positions(m)[r].tolist() for m in self._maps}
        return out

    def search(self, text: str, limit: int) -> list[int]:
        """Rows whose id contains ``text``, whose label name (or number) equals it, or
        whose input column holds it (a category equal, a text containing it, either case);
        ``NAME:VALUE`` asks one input column alone, ``NAME>X`` (``>=``, ``<``, ``<=``) a
        column of numbers."""
        text = text.strip()
        asked = _column_query(text, self.inputs)
        if asked is not None:
            name, op, value = asked
            return np.flatnonzero(self.inputs[name].matches(op, value))[:limit].tolist()
        hits = np.zeros(self.n, bool)
        for col in self.inputs.values():
            if col.kind != "number" and text:
                hits |= col.matches(":", text)
        if self.labels is not None:
            names = self.label_names or []
            wanted = [i for i, name in enumerate(names) if name == text]
            label = as_integer(text, signed=True)
            hits |= np.isin(self.labels, wanted if label is None else [*wanted, label])
        row = as_integer(text)
        if self.ids is not None and text:
            hits |= np.fromiter((text in i for i in self.ids), bool, self.n)
        elif row is not None and row < self.n:
            hits[row] = True
        return np.flatnonzero(hits)[:limit].tolist()

    def meta(self) -> dict[str, Any]:
        """The store's facts the page starts from."""
        if "mu" in self.maps():
            self.positions("mu")  # its frame maps the plane back to z
        lo, hi = self.sigma_range()
        return {
            "rows": self.n,
            "drawn": int(self.drawn.sum()),
            "skipped": len(self.skipped),
            "latent_shape": list(self.latent_shape),
            "z": self.z,
            "spatial": len(self.latent_shape) == 3,
            "maps": self.maps(),
            "map_titles": {name: MAPS[name].title for name in self.maps()},
            "map_axes": {name: list(MAPS[name].axes(self)) for name in self.maps()},
            "labels": self.labels is not None,
            "label_names": self.label_names,
            "label_count": 0 if self.labels is None else int(self.labels.max(initial=-1)) + 1,
            "unlabelled": self.n if self.labels is None else int((self.labels < 0).sum()),
            "sigma_range": [lo, hi],
            "traversal": self.traversal_dims(),
            "input": self.attrs["input"].get("spec"),
            "columns": [col.describe(name) for name, col in self.inputs.items()],
            "skipped_rows": [
                {"row": r, "id": None if self.ids is None else str(self.ids[r]), "reason": why}
                for r, why in list(self.skipped.items())[:100]
            ],
        } | ({"mu_frame": list(self.frames["mu"])} if "mu" in self.maps() else {})


CATEGORIES = 24  # a column of strings with at most this many values colours by value


class InputColumn:
    """One of the input's own columns as the page uses it: ``number`` (colour over its
    range, compare), ``category`` (colour by value, match a value) or ``text`` (search)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        if values.dtype.kind == "f":
            self.kind = "number"
            finite = values[np.isfinite(values)]
            self.range = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
            return
        values = np.asarray(values, dtype=object)
        seen: set[str] = set()
        for v in values:  # stops at the first value past CATEGORIES: a text column
            if v and v not in seen:
                seen.add(v)
                if len(seen) > CATEGORIES:
                    break
        self.kind = "category" if len(seen) <= CATEGORIES else "text"
        if self.kind == "category":  # '' is no value: coded as the count of values
            self.categories = sorted(seen)
            code = {c: k for k, c in enumerate(self.categories)}
            n = len(self.categories)
            self.codes = np.fromiter((code.get(v, n) for v in values), np.int64, len(values))
            self._lower = [c.lower() for c in self.categories]
        else:
            self._lower_values = [str(v).lower() for v in values]
        self.values = values

    def value(self, r: int) -> float | str | None:
        v = self.values[r]
        if self.kind == "number":
            return float(v) if np.isfinite(v) else None
        return str(v) or None

    def matches(self, op: str, value: str) -> np.ndarray:
        """Rows where the column ``op`` (``:``, ``>``, ``>=``, ``<``, ``<=``) ``value``."""
        if self.kind == "number":
            x = float(value)
            v = self.values
            with np.errstate(invalid="ignore"):
                return {":": v == x, ">": v > x, ">=": v >= x, "<": v < x, "<=": v <= x}[op]
        wanted = value.lower()
        if self.kind == "category":
            found = [k for k, c in enumerate(self._lower) if c == wanted]
            return np.isin(self.codes, found)
        return np.fromiter((wanted in v for v in self._lower_values), bool, len(self.values))

    def describe(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "kind": self.kind}
        if self.kind == "number":
            out["range"] = list(self.range)
        elif self.kind == "category":
            out["values"] = self.categories
            out["missing"] = int((self.codes == len(self.categories)).sum())
        return out


def _input_column(array) -> InputColumn:
    values = np.asarray(array[:])
    return InputColumn(values.astype(np.float64) if values.dtype.kind == "f" else values)


def _column_query(text: str, inputs: dict[str, InputColumn]) -> tuple[str, str, str] | None:
    """(column, operator, value) when ``text`` asks one input column: ``NAME:VALUE``, or
    ``NAME>X`` and the like for a column of numbers (X a number); else None."""
    found = re.fullmatch(r"\s*([^:<>=]+?)\s*(:|>=|<=|>|<)\s*(.*?)\s*", text)
    if not found or found.group(1) not in inputs:
        return None
    name, op, value = found.groups()
    col = inputs[name]
    if col.kind == "number":
        try:
            float(value)
        except ValueError:
            return None
    elif op != ":":
        return None
    return name, op, value


@dataclass(frozen=True)
class MapKind:
    """A 2-D map of a store's rows: its title, whether a store has it, its positions
    [N, 2] float64 (skipped rows are set to NaN by the caller)."""

    title: str
    available: Callable[[Columns], bool]
    positions: Callable[[Columns], np.ndarray]
    axes: Callable[[Columns], tuple[str, str]]  # what the map's x and y are


MAPS: dict[str, MapKind] = {  # best first: the page opens the first a store has
    "mu": MapKind(  # Z = 2: μ itself is the map, nothing projected
        "μ (Z = 2)",
        lambda c: c.z == 2,
        lambda c: c.mu_rows(slice(0, c.n)).astype(np.float64),
        lambda c: ("μ₁", "μ₂"),
    ),
    "tsne": MapKind(
        "t-SNE of μ",
        lambda c: "tsne" in c.group,
        lambda c: np.asarray(c.group["tsne"][:], np.float64),
        lambda c: ("t-SNE 1", "t-SNE 2"),
    ),
    "pca": MapKind(
        "PCA of μ",
        lambda c: True,
        Columns.pca,
        lambda c: tuple(
            f"PC{k + 1} ({100 * r:.1f} % of μ's variance)"
            for k, r in enumerate(c.principal_axes()[1])
        ),
    ),
}
