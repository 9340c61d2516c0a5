"""Encoded images (JPEG, PNG, BMP, WebP, TIFF bytes) -> the model's input, in parallel.

The one place PIL images live: bytes come in, uint8 arrays [n, H, W] (grey) or
[n, H, W, 3] (RGB) go out. Each image is converted to the model's channels (alpha
composited on white; CMYK, palette and 16-bit images converted) and resized to the
model's size by a named rule (``RESIZES``). JPEGs are decoded at a reduced scale when
the target is at most half the source (PIL's ``draft``: the DCT does the downscaling,
which is most of the decode cost saved and nothing lost at the output size).
"""

from __future__ import annotations

import io
import math
import os
import threading
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from vaefast.errors import VaefastError, first_line

# torchvision's IMG_EXTENSIONS: a file its ImageFolder lists is one we list
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
RESIZES = {
    "crop": "resize the shorter side to the model's, then center-crop (torchvision's "
    "Resize + CenterCrop)",
    "squash": "resize to the model's size, ignoring the aspect ratio",
    "pad": "resize the longer side to the model's, then pad with black to the model's size",
}
EXIF = {
    "transpose": "turn the image as its EXIF Orientation says (what an image viewer shows, "
    "and what Hugging Face datasets' Image feature does)",
    "ignore": "use the pixels as stored (torchvision's default loader)",
}
PIECE = 32  # images per task sent to a decode worker
WHITE = (255, 255, 255, 255)


@dataclass(frozen=True)
class Preprocess:
    """How an encoded image becomes one model input: ``height`` x ``width`` pixels with
    ``channels`` (1 grey, 3 RGB), turned by its EXIF orientation or not (``exif``, a name
    in ``EXIF``), resized by ``resize`` (a name in ``RESIZES``)."""

    height: int
    width: int
    channels: int
    resize: str = "crop"
    exif: str = "transpose"

    def __post_init__(self):
        if self.resize not in RESIZES:
            raise VaefastError(f"unknown resize {self.resize!r}; use {', '.join(RESIZES)}")
        if self.exif not in EXIF:
            raise VaefastError(f"unknown exif rule {self.exif!r}; use {', '.join(EXIF)}")
        if self.channels not in (1, 3):
            raise VaefastError(
                f"images can be read as 1 (grey) or 3 (RGB) channels, "
                f"the model takes {self.channels}"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        """One decoded sample: (H, W) grey or (H, W, 3) RGB."""
        return (self.height, self.width) if self.channels == 1 else (self.height, self.width, 3)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def for_model(
        cls, display_shape: Sequence[int], resize: str = "crop", exif: str = "transpose"
    ) -> "Preprocess":
        """The preprocessing to a model whose input displays as (H, W) or (H, W, C)."""
        h, w = int(display_shape[0]), int(display_shape[1])
        channels = int(display_shape[2]) if len(display_shape) == 3 else 1
        if channels == 4:
            raise VaefastError(
                "images can be read for 1- or 3-channel models; this model takes 4 channels"
            )
        return cls(h, w, channels, resize, exif)


class BadImage(Exception):
    """An encoded image that cannot be decoded; the message says why."""


def infer(blob: bytes, name: str, resize: str = "crop", exif: str = "transpose") -> Preprocess:
    """Preprocessing that keeps an image as it is (its size as shown; grey stays grey,
    anything else becomes RGB): for reading images with no model to size them for."""
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(blob))
    except Exception as e:
        raise VaefastError(f"{name}: not a readable image ({_reason(e)})") from None
    grey = im.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
    w, h = _shown_size(im, exif)
    return Preprocess(h, w, 1 if grey else 3, resize, exif)


def _turned(im, exif: str) -> bool:
    """Whether the image is shown a quarter turn from how it is stored (EXIF orientation
    5-8) under the ``exif`` rule."""
    return exif == "transpose" and _orientation(im) in (5, 6, 7, 8)


def _orientation(im) -> int:
    if "exif" not in im.info and im.format != "TIFF":  # no EXIF block: nothing to parse
        return 1
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block is no orientation, as PIL's exif_transpose says
        return 1


def _shown_size(im, exif: str) -> tuple[int, int]:
    w, h = im.size
    return (h, w) if _turned(im, exif) else (w, h)


def decode(blob: bytes, prep: Preprocess) -> tuple[np.ndarray, bool]:
    """One image as uint8 ``prep.shape``, and whether it had to be upscaled.
    Raises BadImage naming what is wrong with it."""
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(blob))
        w, h = _shown_size(im, prep.exif)
        scale = _scale(w, h, prep)
        if im.format == "JPEG" and im.mode in ("L", "RGB") and scale <= 0.5:
            im.draft(
                "L" if prep.channels == 1 else "RGB",
                (math.ceil(im.width * scale), math.ceil(im.height * scale)),
            )
        im.load()  # the decode: a truncated or corrupt file fails here
        if prep.exif == "transpose" and _orientation(im) != 1:
            from PIL import ImageOps

            im = ImageOps.exif_transpose(im)
        im = _convert(im, prep.channels)
        return np.asarray(_resize(im, w, h, prep)), scale > 1.0
    except Exception as e:
        raise BadImage(_reason(e)) from None


def _reason(e: Exception) -> str:
    text = first_line(e)
    return "not an image file PIL can identify" if "cannot identify image file" in text else text


def _scale(w: int, h: int, prep: Preprocess) -> float:
    """Source pixels -> model pixels, along the axis the resize rule fits."""
    sx, sy = prep.width / w, prep.height / h
    # pad fits the longer side; crop fills the shorter; squash upscales if either grows
    return min(sx, sy) if prep.resize == "pad" else max(sx, sy)


def _convert(im, channels: int):
    """To 'L' or 'RGB': alpha over white, 16-bit and float scaled to 8 bits."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode != "F" and (im.mode.startswith("I;16") or a.max() > 255) else 255.0
        im = Image.fromarray(np.clip(a * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        im.mode == "P" and "transparency" in im.info
    ):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba)
    return im.convert("L" if channels == 1 else "RGB")


def _resize(im, w0: int, h0: int, prep: Preprocess):
    """Resize by the rule, from the (possibly draft-reduced) image ``im`` of an original
    w0 x h0 image."""
    from PIL import Image

    bilinear = Image.Resampling.BILINEAR
    w, h = im.size
    size = (prep.width, prep.height)
    if prep.resize == "squash":
        return im.resize(size, bilinear)
    if prep.resize == "crop":
        return im.resize(size, bilinear, box=crop_box(w0, h0, prep.width, prep.height, w, h))
    s = min(prep.width / w, prep.height / h)
    inner = (max(1, round(w * s)), max(1, round(h * s)))
    canvas = Image.new(im.mode, size, 0)
    canvas.paste(
        im.resize(inner, bilinear), ((prep.width - inner[0]) // 2, (prep.height - inner[1]) // 2)
    )
    return canvas


def crop_box(
    w0: int, h0: int, tw: int, th: int, w: int | None = None, h: int | None = None
) -> tuple[float, float, float, float]:
    """The region of a w0 x h0 image that ``crop`` resizes to tw x th, as torchvision's
    ``Resize`` + ``CenterCrop`` choose it: the side that fills the target is scaled to it
    exactly, the other to ``int(...)`` of its scaled length; the crop's offsets are
    ``int(round(excess / 2))``. All of it in integers, so the box is never outside the
    image; given ``w`` x ``h`` (the same image draft-decoded smaller), the box is in those
    pixels, clamped to them.
    """
    if tw * h0 >= th * w0:  # the width fills the target (w0 is the "shorter" side)
        rw, rh = tw, max(th, h0 * tw // w0)
    else:
        rw, rh = max(tw, w0 * th // h0), th
    left, top = int(round((rw - tw) / 2.0)), int(round((rh - th) / 2.0))
    w, h = w or w0, h or h0
    x0, x1 = left * w / rw, (left + tw) * w / rw
    y0, y1 = top * h / rh, (top + th) * h / rh
    return (max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1))


def decode_many(
    refs: Sequence, prep: Preprocess, load: Callable | None = None
) -> tuple[np.ndarray, dict[int, str], int]:
    """Images [n, *prep.shape] uint8 (zeros where one failed), {position: reason} of the
    failures, and how many were upscaled. ``refs`` are encoded images, or what ``load``
    reads them from (in the worker: a file's path, a tar member's place); a str coming
    back from ``load`` says why a file could not be read."""
    out = np.zeros((len(refs), *prep.shape), np.uint8)
    bad: dict[int, str] = {}
    upscaled = 0
    for k, ref in enumerate(refs):
        blob = ref if load is None else load(ref)
        if isinstance(blob, str):
            bad[k] = blob
            continue
        try:
            out[k], up = decode(blob, prep)
            upscaled += up
        except BadImage as e:
            bad[k] = str(e)
    return out, bad, upscaled


def default_workers() -> int:
    """Decode processes by default: the cores this process may use."""
    return (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )


class Decoder:
    """``decode_many`` over ``workers`` processes (in this process for one worker).

    Processes, not threads: PIL keeps the GIL for part of each image, and two decode
    processes beat two threads on small JPEGs (measured in RESULTS.md). They are forked
    (cheap, and unlike spawn or forkserver they never re-run the caller's main script, so
    ``vaefast.embed(...)`` works in a script without a ``__main__`` guard); ``start`` forks
    them early, before ONNX Runtime starts its threads, where the platform forks at all
    (spawned elsewhere). They end with this process however it ends
    (``vaefast.lifeline``).
    """

    def __init__(self, prep: Preprocess, workers: int | None = None):
        self.prep = prep
        self.workers = default_workers() if workers is None else max(1, int(workers))
        self._pool = None

    def start(self) -> None:
        """Start the worker processes now (they otherwise start on the first large batch)."""
        if self.workers > 1 and self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            import PIL.Image  # noqa: F401  (imported once here, inherited by the workers)

            from vaefast.lifeline import die_with_parent

            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            main = threading.current_thread() is threading.main_thread()
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context(method),
                initializer=die_with_parent,
                initargs=(os.getpid(), main),
            )
            for _ in range(self.workers):  # fork every worker now (lazily otherwise)
                self._pool.submit(int)

    def submit(
        self, refs: Sequence, load: Callable | None = None
    ) -> Callable[[], tuple[np.ndarray, dict[int, str], int]]:
        """Start decoding ``refs`` (see ``decode_many``); the returned function waits for
        and returns the result. Small batches, or one worker, decode in this process when
        the result is asked for."""
        if self.workers == 1 or len(refs) <= PIECE:
            return lambda: decode_many(refs, self.prep, load)
        self.start()
        starts = range(0, len(refs), PIECE)
        futures = [
            self._pool.submit(decode_many, refs[s : s + PIECE], self.prep, load) for s in starts
        ]

        def result():
            parts = [f.result() for f in futures]
            bad = {s + k: why for s, (_, b, _) in zip(starts, parts) for k, why in b.items()}
            return np.concatenate([p[0] for p in parts]), bad, sum(p[2] for p in parts)

        return result

    def __call__(
        self, refs: Sequence, load: Callable | None = None
    ) -> tuple[np.ndarray, dict[int, str], int]:
        return self.submit(refs, load)()

    def close(self) -> None:
        """Stop the decode processes (they start again if needed)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
