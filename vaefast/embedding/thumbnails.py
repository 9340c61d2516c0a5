"""Thumbnails of a store's input rows, read back from the source it recorded (as the
explorer and ``plot --embeddings`` read it), for the parquet export's ``image`` column."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from vaefast.errors import VaefastError

THUMBNAIL_SIDE = 128  # longest side, in pixels; smaller images are kept as they are
# The column in the struct Hugging Face ``datasets`` stores its Image feature as, which
# ``datasets`` decodes to PIL images and embedding-atlas (pandas.read_parquet) shows
IMAGE_FEATURE = {"_type": "Image"}


def thumbnailer(attrs: dict[str, Any]) -> Callable[[np.ndarray], list[bytes | None]]:
    """PNG bytes of the store's input rows (``attrs``: the store's ``vaefast`` attributes):
    a function of sorted row numbers. The recorded input must still be there, unchanged, and
    the recorded model folder must still open; otherwise one line says which."""
    from vaefast import runtime
    from vaefast.data import reopen

    recorded = attrs.get("input")
    if not recorded:
        raise VaefastError("--with-images: this store records no input to read images from")
    try:
        source = reopen(recorded, 1)
    except (VaefastError, OSError) as e:
        raise VaefastError(f"--with-images: input images unavailable: {e}") from None
    if source.fingerprint() != recorded:
        raise VaefastError(f"--with-images: {recorded['spec']} has changed since it was embedded")
    vae = runtime.load(attrs["model"], providers="cpu", spin=False)

    def thumbnails(rows: np.ndarray) -> list[bytes | None]:  # None: an undecodable file
        from vaefast.images import png

        first, last, bad = int(rows[0]), int(rows[-1]) + 1, {}
        images = vae.images(source.rows(first, last, bad))[rows - first]
        return [
            None if first + i in bad else png(_shrunk(image)[None])
            for i, image in zip(rows - first, images)
        ]

    return thumbnails


def _shrunk(image: np.ndarray) -> np.ndarray:
    """An [H, W] or [H, W, C] image in [0, 1] with its longest side at most THUMBNAIL_SIDE."""
    h, w = image.shape[:2]
    if max(h, w) <= THUMBNAIL_SIDE:
        return image
    from PIL import Image

    scale = THUMBNAIL_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    pixels = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.asarray(Image.fromarray(pixels).resize(size, Image.LANCZOS), np.float32) / 255.0
