"""The explorer in a Jupyter notebook: ``widget(model, store)`` is an anywidget showing
the explorer's page, whose API requests travel over the kernel's widget channel and are
answered in the kernel by the same Starlette app ``vaefast explore`` serves — no port is
opened, so it works wherever the notebook does (a remote JupyterLab included). The
selection is the ``selected`` trait (rows), read as a DataFrame with ``.selection``,
set with ``.select(rows)`` and observed with ``.observe(handler, names="selected")``;
``.colour_by`` colours the map by a column of the input or by any array of values."""

from __future__ import annotations

import asyncio
import os
import threading
import urllib.parse
from importlib import resources
from typing import Any

import numpy as np

from vaefast.errors import VaefastError
from vaefast.extras import require

require("notebook", "vaefast.explore.widget")

import anywidget  # noqa: E402
import traitlets  # noqa: E402

STATIC = resources.files("vaefast.explore").joinpath("static")


def page() -> str:
    """The explorer's page as one document (the bundle inlined) that relays its requests
    to the widget instead of fetching them."""
    html = STATIC.joinpath("index.html").read_text()
    bundle = STATIC.joinpath("explorer.js").read_text().replace("</script", "<\\/script")
    script = f"<script>window.VAEFAST_RELAY = true</script>\n<script>{bundle}</script>"
    tag = '<script src="explorer.js"></script>'
    if tag not in html:
        raise VaefastError("the explorer's page does not load its bundle as expected")
    return html.replace(tag, script)


class _Caller:
    """Calls an ASGI app in process, on an event loop of its own thread."""

    def __init__(self, app) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="vaefast-widget", daemon=True).start()

    def __call__(self, method: str, target: str, body: bytes) -> tuple[int, dict, bytes]:
        call = self._call(method, target, body)
        return asyncio.run_coroutine_threadsafe(call, self.loop).result(timeout=120)

    async def _call(self, method: str, target: str, body: bytes) -> tuple[int, dict, bytes]:
        path, _, query = target.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": urllib.parse.unquote(path),
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 0),
        }
        pending = [{"type": "http.request", "body": body, "more_body": False}]
        out: dict[str, Any] = {"status": 500, "headers": {}, "body": b""}

        async def receive():
            return pending.pop() if pending else {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                out["status"] = message["status"]
                out["headers"] = {k.decode(): v.decode() for k, v in message.get("headers", [])}
            elif message["type"] == "http.response.body":
                out["body"] += message.get("body", b"")

        await self.app(scope, receive, send)
        return out["status"], out["headers"], out["body"]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


class ExplorerWidget(anywidget.AnyWidget):
    """The explorer of one store in a notebook cell (see the module's docstring)."""

    _esm = STATIC.joinpath("widget.js").read_text()
    _page = traitlets.Unicode().tag(sync=True)
    height = traitlets.Int(640).tag(sync=True)
    selected = traitlets.List(traitlets.Int()).tag(sync=True)

    def __init__(self, explorer, height: int = 640) -> None:
        from vaefast.explore import app

        super().__init__(_page=page(), height=height)
        self._explorer = explorer
        self._cols = explorer.cols
        self._call = _Caller(app.build(explorer))
        self.on_msg(self._answer)

    def _answer(self, _widget, content: dict, buffers: list) -> None:
        if not isinstance(content, dict) or content.get("vaefast") != "request":
            return
        body = bytes(buffers[0]) if buffers else (content.get("body") or "").encode()
        status, headers, payload = self._call(content["method"], content["path"], body)
        reply = {"vaefast": "response", "view": content.get("view"), "id": content["id"]}
        self.send(reply | {"status": status, "headers": headers}, [payload])

    @property
    def selection(self):
        """The selected rows as a pandas DataFrame: row, id, label, label_name, mu and
        sigma (one array per row), each map's x and y, and the input's own columns."""
        import pandas as pd

        cols = self._cols
        rows = np.unique(np.asarray(self.selected, np.int64))
        frame: dict[str, Any] = {"row": rows}
        frame["id"] = cols.ids[rows] if cols.ids is not None else rows.astype(str)
        if cols.labels is not None:
            frame["label"] = cols.labels[rows]
            frame["label_name"] = [cols.label_name(int(v)) for v in cols.labels[rows]]
        empty = np.zeros((0, cols.z), np.float32)
        mu = cols.mu_rows(rows) if len(rows) else empty
        sigma = cols.sigma_rows(rows) if len(rows) else empty
        frame["mu"], frame["sigma"] = list(mu), list(sigma)
        for name in cols.maps():
            xy = cols.positions(name)[rows]
            frame[f"{name}_x"], frame[f"{name}_y"] = xy[:, 0], xy[:, 1]
        for name, col in cols.inputs.items():
            frame[name] = col.values[rows]
        return pd.DataFrame(frame)

    def select(self, rows) -> None:
        """Select ``rows`` (row numbers of the store) on the page, as a lasso would."""
        rows = sorted({int(r) for r in np.asarray(rows).ravel()})
        if rows and (rows[0] < 0 or rows[-1] >= self._cols.n):
            raise VaefastError(f"rows must be in [0, {self._cols.n}); got {rows[0]}..{rows[-1]}")
        self.selected = rows
        self.send({"vaefast": "command", "select": rows})

    def colour_by(self, values, name: str = "values") -> None:
        """Colour the map by ``values``: ``"label"``, ``"sigma"``, one of the input's
        columns by name, or an array with one value per row of the store (numbers colour
        over their range, up to 24 distinct strings by value) shown as ``name``."""
        from vaefast.explore.columns import InputColumn

        cols = self._cols
        if isinstance(values, str):
            if values in ("label", "sigma"):
                self.send({"vaefast": "command", "colour": values})
                return
            if values not in cols.inputs:
                known = ", ".join(["label", "sigma", *cols.inputs])
                raise VaefastError(f"no column {values!r} to colour by; the store has {known}")
            name, column = values, cols.inputs[values]
        else:
            array = np.asarray(values)
            if array.shape != (cols.n,):
                raise VaefastError(
                    f"colour_by needs one value per row: {cols.n}, got {array.shape}"
                )
            number = array.dtype.kind in "iufb"
            column = InputColumn(array.astype(np.float64) if number else array.astype(object))
        if column.kind == "text":
            raise VaefastError(f"{name!r} has more than 24 distinct values; search it instead")
        cols.inputs[name] = column
        described = column.describe(name)
        self.send({"vaefast": "command", "colour": f"col:{name}", "column": described})

    def close(self) -> None:
        """Close the widget and release its decoder and event loop."""
        self._call.close()
        self._explorer.decoder.close()
        super().close()


def widget(
    model: str | os.PathLike, store: str | os.PathLike, *, height: int = 640, **options: Any
) -> ExplorerWidget:
    """The explorer of ``store`` (a finished ``vaefast embed`` store of ``model``) as a
    notebook widget ``height`` pixels tall; ``options`` (``providers``, ``variant``,
    ``precision``, ``max_points``, ``threads``) choose the decoding runtime and the rows
    drawn as for :func:`vaefast.explore.serve`."""
    from vaefast.explore import open_explorer

    return ExplorerWidget(open_explorer(model, store, **options), height)
