"""The latent explorer: a local web server and a WebGL page over a finished embedding
store — hover a point for its image, reconstruction and σ; click for decodes of
μ + σ·ε, neighbours in μ space and in the map, and latent traversal; lasso a region.

``serve(model, store)`` starts it in a background thread and returns a :class:`Server`
with its ``url`` and ``close()``; ``vaefast explore`` is a thin call of it. Needs the
``explore`` extra (Starlette, uvicorn); the page's bundle ships in the package.
``widget(model, store)`` shows the same page in a Jupyter notebook (the ``notebook``
extra), its API answered in the kernel.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass

from vaefast.runtime.engines import DEFAULT_PROVIDERS
from vaefast.errors import VaefastError
from vaefast.extras import require

__all__ = ["Server", "serve", "widget"]


@dataclass
class Server:
    """A running explorer: open ``url`` in a browser; ``close()`` stops it."""

    url: str
    host: str
    port: int
    token: str | None
    _server: object
    _thread: threading.Thread
    _explorer: object

    def close(self) -> None:
        """Stop serving and release the decoder (idempotent)."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._explorer.decoder.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and without
    # it a keep-alive response waits for a delayed ACK (~40 ms a request)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise VaefastError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    return sock


WILDCARDS = ("0.0.0.0", "::", "")


def _reachable(host: str) -> str:
    """How a URL names a server bound to ``host``: as given, or, for a bind to every
    address, this machine's own address (the one its default route leaves from), else its
    name — never 0.0.0.0, which no browser elsewhere can open."""
    if host in WILDCARDS:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect(("192.0.2.1", 9))  # a documentation address: nothing is sent
                host = s.getsockname()[0]
        except OSError:
            host = socket.gethostname()
    return f"[{host}]" if ":" in host else host


def open_explorer(
    model: str | os.PathLike,
    store: str | os.PathLike,
    providers: str = DEFAULT_PROVIDERS,
    variant: str = "fp32",
    precision: str | None = None,
    max_points: int | None = None,
    threads: int | None = None,
):
    """The explorer's state and API (``app.Explorer``) over ``store``, decoding with
    ``model`` loaded as :func:`vaefast.runtime.load` loads it: what ``serve`` serves and
    the notebook widget answers in the kernel."""
    from vaefast import runtime
    from vaefast.explore import app
    from vaefast.explore.columns import Columns

    vae = runtime.load(
        model, providers=providers, variant=variant, threads=threads, precision=precision
    )
    cols = Columns(store, vae.meta["weights_sha256"], str(model))
    return app.Explorer(vae, cols, max_points or app.MAX_POINTS)


def __getattr__(name: str):
    if name == "widget":  # loads anywidget only when asked for
        from vaefast.explore.notebook import widget

        return widget
    raise AttributeError(f"module 'vaefast.explore' has no attribute {name!r}")


def serve(
    model: str | os.PathLike,
    store: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    providers: str = DEFAULT_PROVIDERS,
    variant: str = "fp32",
    precision: str | None = None,
    max_points: int | None = None,
    threads: int | None = None,
) -> Server:
    """Serve the explorer of ``store`` (a finished ``vaefast embed`` store of ``model``).

    ``providers``, ``variant`` and ``precision`` choose the decoding runtime as for
    :func:`vaefast.runtime.load`. ``host``: 127.0.0.1 by default; any non-loopback
    address needs a token (``token``, or a random one put in the URL). ``port`` 0 picks a
    free one. ``max_points``: rows drawn at once (default ``app.MAX_POINTS``); above it
    the overview is a seeded sample and zooming in fetches the rows of the view.
    """
    require("explore", "the explorer")
    import uvicorn

    from vaefast.explore import app, auth

    explorer = open_explorer(model, store, providers, variant, precision, max_points, threads)
    token = auth.token_for(host, token)
    sock = _bind(host, port)
    config = uvicorn.Config(
        auth.Guard(app.build(explorer), token),
        log_level="warning",
        lifespan="off",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="vaefast-explore", daemon=True
    )
    thread.start()
    port = sock.getsockname()[1]
    shown = _reachable(host)
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    logging.getLogger("vaefast.explore").info("serving %s", url)
    return Server(url, host, port, token, server, thread, explorer)
