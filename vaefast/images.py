"""Image grids written as torchvision's ``save_image`` writes them, without torchvision, and
PNG bytes of images (the explorer's pictures, the parquet export's thumbnails)."""

from __future__ import annotations

import io
import os

import numpy as np


def make_grid(images: np.ndarray, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """Tile [N, H, W] (grey) or [N, H, W, C] (colour) images in [0, 1] into one image,
    ``nrow`` per row, black padding."""
    n, h, w = images.shape[:3]
    ncol = min(nrow, n)
    nrows = -(-n // ncol)
    grid = np.zeros(
        (nrows * (h + padding) + padding, ncol * (w + padding) + padding, *images.shape[3:]),
        dtype=np.float32,
    )
    for k in range(n):
        r, c = divmod(k, ncol)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top : top + h, left : left + w] = images[k]
    return grid


def save_grid(path: str | os.PathLike, images: np.ndarray, nrow: int = 8) -> None:
    """Write [N, H, W] or [N, H, W, C] images in [0, 1] as one PNG grid."""
    from PIL import Image

    grid = make_grid(np.clip(images, 0.0, 1.0), nrow)
    Image.fromarray((grid * 255.0 + 0.5).astype(np.uint8)).save(path, format="PNG")


def png(images: np.ndarray, padding: int = 0) -> bytes:
    """[N, H, W] or [N, H, W, C] images in [0, 1] as one PNG, side by side."""
    from PIL import Image

    grid = make_grid(np.clip(images, 0.0, 1.0), nrow=len(images), padding=padding)
    buf = io.BytesIO()
    Image.fromarray((grid * 255.0 + 0.5).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
