"""Pictures the explorer serves: a row's input read back from the store's recorded source
(as ``plot --embeddings`` reads it), and decodes of latents through the exported decoder,
batched across concurrent requests into one runtime call."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from functools import lru_cache

import numpy as np

from vaefast import runtime
from vaefast.errors import VaefastError
from vaefast.images import png

log = logging.getLogger("vaefast.explore")

DECODE_BATCH = 256  # latents decoded in one runtime call at most
DECODE_QUEUE = 4096  # latents waiting at most; beyond, requests are refused as busy


class Busy(Exception):
    """The decode queue is full."""


class Inputs:
    """Rows of the store's input as displayable images; ``note`` says why there are none
    (a missing, moved or changed source) and the map works without them."""

    def __init__(self, vae: runtime.ExportedVAE, recorded: dict) -> None:
        from vaefast.data import reopen

        self.vae, self.source, self.note = vae, None, None
        try:
            source = reopen(recorded, 1)
            if source.fingerprint() != recorded:
                raise VaefastError(f"{recorded['spec']} has changed since it was embedded")
            self.source = source
        except (VaefastError, OSError) as e:
            self.note = f"input images unavailable: {e}"
            log.warning("vaefast explore: %s", self.note)
        self.thumbnail = lru_cache(maxsize=4096)(self._thumbnail)

    def _thumbnail(self, row: int) -> bytes:
        return png(self.vae.images(self.source.rows(row, row + 1)))


class Decoder:
    """One shared runtime decoding latents for every request: requests that arrive while
    a call runs are decoded together in the next (up to ``DECODE_BATCH`` latents)."""

    def __init__(self, vae: runtime.ExportedVAE) -> None:
        self.vae = vae
        self._lock = threading.Condition()
        self._queue: list[tuple[np.ndarray, Future]] = []
        self._waiting = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="vaefast-decode", daemon=True)
        self._thread.start()

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Displayable decodes of latents ``z`` [k, *latent_shape]."""
        future: Future = Future()
        with self._lock:
            if self._waiting + len(z) > DECODE_QUEUE:
                raise Busy
            self._queue.append((z, future))
            self._waiting += len(z)
            self._lock.notify()
        return future.result()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                batch, size = [], 0
                while self._queue and (not batch or size + len(self._queue[0][0]) <= DECODE_BATCH):
                    z, future = self._queue.pop(0)
                    batch.append((z, future))
                    size += len(z)
                self._waiting -= size
            self._run(batch)

    def _run(self, batch: list[tuple[np.ndarray, Future]]) -> None:
        try:
            out = self.vae.images(self.vae.decode(np.concatenate([z for z, _ in batch])))
        except Exception as e:  # each waiting request gets the error
            for _, future in batch:
                future.set_exception(e)
            return
        start = 0
        for z, future in batch:
            future.set_result(out[start : start + len(z)])
            start += len(z)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout=10)
