"""The explorer's HTTP API (Starlette): routes only. Each handler checks its request,
calls one function of ``columns``, ``images`` or ``neighbours`` and returns bytes or JSON.
Rows are addressed by index; a bad request is a JSON 4xx, an unexpected failure a JSON
500 without a traceback (logged here instead)."""

from __future__ import annotations

import csv
import io
import json
import logging
from importlib import resources

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vaefast.embedding import store
from vaefast.errors import VaefastError
from vaefast.explore import neighbours
from vaefast.explore.columns import Columns, as_integer
from vaefast.explore.images import Busy, Decoder, Inputs
from vaefast.images import png

log = logging.getLogger("vaefast.explore")

MAX_POINTS = 1_000_000  # rows drawn at once: above, the overview is a seeded sample
MAX_DECODE = 64  # latents per decode request
MAX_NEIGHBOURS = 100
MAX_SAMPLES = 32
MAX_SEARCH = 10_000
MAX_LASSO_VERTICES = 100_000
JSON_BODY_BYTES = 1 << 20


def _int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise HTTPException(400, f"{name} must be an integer, got {text!r}")
    if not lo <= value <= hi:
        raise HTTPException(400, f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def _float(request: Request, name: str) -> float:
    text = request.query_params.get(name, "")
    try:
        value = float(text)
    except ValueError:
        raise HTTPException(400, f"{name} must be a number, got {text!r}")
    if not np.isfinite(value):
        raise HTTPException(400, f"{name} must be finite")
    return value


class Explorer:
    """The state one server shares across requests: the store's columns, its inputs and
    the decoder."""

    def __init__(self, vae, cols: Columns, max_points: int = MAX_POINTS) -> None:
        self.vae, self.cols, self.max_points = vae, cols, max_points
        self.inputs = Inputs(vae, cols.attrs["input"])
        self.decoder = Decoder(vae)

    # --- checks ---------------------------------------------------------------------

    def _row(self, request: Request, drawn: bool = True) -> int:
        text = request.path_params["row"]
        r = as_integer(text)
        if r is None or r >= self.cols.n:
            raise HTTPException(404, f"no row {text!r}; rows are 0..{self.cols.n - 1}")
        if drawn and not self.cols.drawn[r]:
            raise HTTPException(404, f"row {r} was skipped: {self.cols.skipped.get(r)}")
        return r

    def _map(self, request: Request) -> str:
        name = request.query_params.get("map", self.cols.maps()[0])
        if name not in self.cols.maps():
            raise HTTPException(400, f"unknown map {name!r}; this store has {self.cols.maps()}")
        return name

    def _box(self, request: Request):
        names = ("x0", "y0", "x1", "y1")
        given = [n in request.query_params for n in names]
        if not any(given):
            return None
        if not all(given):
            raise HTTPException(400, "a view box needs x0, y0, x1 and y1")
        return tuple(_float(request, n) for n in names)

    def _selection(self, request: Request):
        limit = _int(request, "limit", self.max_points, 1, self.max_points)
        return self.cols.select(self._map(request), self._box(request), limit)

    async def _json(self, request: Request) -> dict:
        body = await request.body()
        if len(body) > JSON_BODY_BYTES:
            raise HTTPException(413, f"body over {JSON_BODY_BYTES} bytes")
        try:
            data = json.loads(body)
        except ValueError:
            raise HTTPException(400, "body is not JSON")
        except RecursionError:  # nesting deeper than Python's parser recurses
            raise HTTPException(400, "body is nested too deeply")
        if not isinstance(data, dict):
            raise HTTPException(400, "body must be a JSON object")
        return data

    def _decode(self, z: np.ndarray) -> Response:
        try:
            images = self.decoder.decode(z)
        except Busy:
            raise HTTPException(429, "decoder busy; try again")
        return Response(png(images), media_type="image/png")

    # --- endpoints --------------------------------------------------------------------

    def meta(self, request: Request) -> Response:
        out = self.cols.meta() | {
            "max_points": self.max_points,
            "model": self.vae.folder.name,
            "image_shape": list(self.vae.display_shape),
            "inputs": self.inputs.source is not None,
            "inputs_note": self.inputs.note,
        }
        return JSONResponse(out)

    def points(self, request: Request) -> Response:
        sel = self._selection(request)
        body = self.cols.points(self._map(request), sel)
        headers = {"X-Total-Rows": str(sel.total), "Cache-Control": "no-store"}
        return Response(body, media_type="application/octet-stream", headers=headers)

    def dimension(self, request: Request) -> Response:
        dim = _int(request, "dim", 0, 0, self.cols.z - 1)
        body = self.cols.dimension(dim, self._selection(request).rows)
        lo, hi = self.cols.dim_range(dim)
        headers = {"X-Range": f"{lo!r},{hi!r}", "Cache-Control": "no-store"}
        return Response(body, media_type="application/octet-stream", headers=headers)

    def column(self, request: Request) -> Response:
        """One of the input's own columns for the rows of a view, for colour (uint16)."""
        name = request.query_params.get("name", "")
        col = self.cols.inputs.get(name)
        if col is None:
            raise HTTPException(404, f"no input column {name!r}")
        if col.kind == "text":
            raise HTTPException(400, f"column {name!r} holds text; search it instead")
        body = self.cols.column(name, self._selection(request).rows)
        return Response(
            body, media_type="application/octet-stream", headers={"Cache-Control": "no-store"}
        )

    def row(self, request: Request) -> Response:
        return JSONResponse(self.cols.row(self._row(request, drawn=False)))

    def input_image(self, request: Request) -> Response:
        r = self._row(request, drawn=False)
        if self.inputs.source is None:
            raise HTTPException(404, self.inputs.note)
        return Response(self.inputs.thumbnail(r), media_type="image/png")

    def reconstruction(self, request: Request) -> Response:
        r = self._row(request)
        return self._decode(self.cols.mu_rows(slice(r, r + 1)).reshape(1, *self.cols.latent_shape))

    def samples(self, request: Request) -> Response:
        """Decodes of z = μ + σ·ε for ``n`` seeded draws of ε: the encoding's uncertainty."""
        r = self._row(request)
        n = _int(request, "n", 8, 1, MAX_SAMPLES)
        seed = _int(request, "seed", 0, 0, 2**31 - 1)
        mu = self.cols.mu_rows(slice(r, r + 1))[0]
        sigma = self.cols.sigma_rows(slice(r, r + 1))[0]
        eps = np.random.default_rng(seed).standard_normal((n, self.cols.z)).astype(np.float32)
        return self._decode((mu + sigma * eps).reshape(n, *self.cols.latent_shape))

    def sigma_map(self, request: Request) -> Response:
        """Spatial latents: σ per latent pixel (mean over channels), scaled to its max."""
        r = self._row(request)
        if len(self.cols.latent_shape) != 3:
            raise HTTPException(404, "σ maps exist for spatial latents only")
        sigma = self.cols.sigma_rows(slice(r, r + 1))[0].reshape(self.cols.latent_shape)
        plane = sigma.mean(axis=0)
        return Response(png(plane[None] / (plane.max() or 1.0)), media_type="image/png")

    def neighbours(self, request: Request) -> Response:
        r = self._row(request)
        k = _int(request, "k", 8, 1, MAX_NEIGHBOURS)
        return JSONResponse(
            {
                "latent": neighbours.in_latent(self.cols, r, k),
                "map": neighbours.in_map(self.cols, self._map(request), r, k),
            }
        )

    async def decode(self, request: Request) -> Response:
        """POST {"z": [[…], …]}: up to MAX_DECODE flat latents, decoded side by side."""
        z = (await self._json(request)).get("z")
        try:
            arr = np.asarray(z, np.float32)
        except (TypeError, ValueError):
            raise HTTPException(400, "z must be a list of lists of numbers")
        if arr.ndim != 2 or arr.shape[1] != self.cols.z or not 1 <= len(arr) <= MAX_DECODE:
            raise HTTPException(
                400, f"z must be 1..{MAX_DECODE} latents of {self.cols.z} numbers each"
            )
        if not np.isfinite(arr).all():
            raise HTTPException(400, "z must be finite")
        return self._decode(arr.reshape(len(arr), *self.cols.latent_shape))

    async def lasso(self, request: Request) -> Response:
        """POST a polygon (float64 x, y pairs, little-endian, in the map's normalised
        coordinates): every drawn row inside it as uint32, whatever the page draws."""
        body = await request.body()
        if len(body) % 16 or not 3 * 16 <= len(body) <= MAX_LASSO_VERTICES * 16:
            raise HTTPException(
                400, f"body must be 3..{MAX_LASSO_VERTICES} float64 (x, y) vertices"
            )
        polygon = np.frombuffer(body, "<f8").reshape(-1, 2)
        if not np.isfinite(polygon).all():
            raise HTTPException(400, "vertices must be finite")
        rows = self.cols.lasso(self._map(request), polygon)
        return Response(rows.tobytes(), media_type="application/octet-stream")

    async def selection(self, request: Request) -> Response:
        """POST rows (uint32 little-endian): count, label histogram, mean σ — or, with
        ``?format=csv``, the rows' ids as CSV, with ``?format=parquet`` the rows as the
        ``vaefast embeddings --to parquet`` export holds them (row, id, label, μ, log σ²)."""
        body = await request.body()
        if len(body) % 4 or len(body) > 4 * self.cols.n:
            raise HTTPException(400, "body must be at most one uint32 per row of the store")
        rows = np.unique(np.frombuffer(body, "<u4"))
        if len(rows) and rows[-1] >= self.cols.n:
            raise HTTPException(400, f"row {int(rows[-1])} out of range")
        fmt = request.query_params.get("format")
        if fmt == "csv":
            return Response(self._csv(rows), media_type="text/csv")
        if fmt == "parquet":
            try:
                body = store.parquet_of_rows(self.cols.group, rows)
            except VaefastError as e:
                raise HTTPException(400, str(e))
            return Response(body, media_type="application/vnd.apache.parquet")
        if fmt is not None:
            raise HTTPException(400, f"unknown format {fmt!r}; use csv or parquet")
        cols, out = self.cols, {"count": int(len(rows))}
        if cols.labels is not None:
            values, counts = np.unique(cols.labels[rows], return_counts=True)
            out["labels"] = {str(cols.label_name(int(v))): int(c) for v, c in zip(values, counts)}
        sig = cols.sigma_mean[rows]
        out["sigma_mean"] = float(np.nanmean(sig)) if np.isfinite(sig).any() else None
        return JSONResponse(out)

    def _csv(self, rows: np.ndarray) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        cols, names = self.cols, list(self.cols.inputs)
        writer.writerow(["row", "id", "label", *names])
        for r in rows.tolist():  # what the row's panel says, without reading its latents
            label = None if cols.labels is None else int(cols.labels[r])
            own = [cols.inputs[c].value(r) for c in names]
            writer.writerow(
                [r, "" if cols.ids is None else str(cols.ids[r]), cols.label_name(label) or ""]
                + ["" if v is None else v for v in own]
            )
        return buf.getvalue()

    def search(self, request: Request) -> Response:
        text = request.query_params.get("q", "")
        limit = _int(request, "limit", 1000, 1, MAX_SEARCH)
        return JSONResponse({"rows": self.cols.search(text, limit)})


def _page(name: str, media_type: str):
    def endpoint(request: Request) -> Response:
        body = resources.files("vaefast.explore").joinpath("static", name).read_bytes()
        return Response(body, media_type=media_type)

    return endpoint


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("vaefast explore: %s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal error (see the server's log)"}, status_code=500)


def build(ex: Explorer) -> Starlette:
    """The Starlette app serving ``ex``: the page, its bundle and the API."""
    routes = [
        Route("/", _page("index.html", "text/html; charset=utf-8")),
        Route("/explorer.js", _page("explorer.js", "text/javascript; charset=utf-8")),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/api/meta", ex.meta),
        Route("/api/points", ex.points),
        Route("/api/dimension", ex.dimension),
        Route("/api/column", ex.column),
        Route("/api/rows/{row}", ex.row),
        Route("/api/rows/{row}/input.png", ex.input_image),
        Route("/api/rows/{row}/reconstruction.png", ex.reconstruction),
        Route("/api/rows/{row}/samples.png", ex.samples),
        Route("/api/rows/{row}/sigma.png", ex.sigma_map),
        Route("/api/rows/{row}/neighbours", ex.neighbours),
        Route("/api/decode", ex.decode, methods=["POST"]),
        Route("/api/selection", ex.selection, methods=["POST"]),
        Route("/api/lasso", ex.lasso, methods=["POST"]),
        Route("/api/search", ex.search),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
