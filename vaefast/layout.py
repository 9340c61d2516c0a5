"""Sample shapes: how stored rows map onto a model's input, and onto images to show.

Three shapes meet here:

- the *stored* shape of one sample, as a file holds it: ``[D]``, ``[H, W]``,
  ``[H, W, C]`` (channels-last, as images are usually stored) or ``[C, H, W]``;
- the model's ``input_shape`` (what its encoder takes after the batch axis): ``[D]``
  for an MLP, ``[C, H, W]`` for a convolutional VAE;
- the *display* ``image_shape``: ``[H, W]`` (grey) or ``[H, W, C]`` (colour), what
  matplotlib draws.

Spatial sizes: a fully convolutional model takes any height and width that are
multiples of its ``size_multiple``; :func:`input_shape_for` gives the input shape for
samples of another size, or one line saying why they cannot go in.

Pixel values follow one rule for every command (:func:`check_pixels`): integers in
[0, pixel scale], floats finite and in [0, 1].

Everything here is numpy only, shared by training (torch) and the runtime (no torch).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from vaefast.errors import BadRows, VaefastError

CHANNELS = (1, 3, 4)  # channel counts recognised in image arrays (grey, RGB, RGBA)


def _shape(x: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if x is None else tuple(int(s) for s in x)


def guess_image_shape(n_features: int) -> tuple[int, int] | None:
    """Square image shape for a feature count that is a perfect square, else None."""
    side = math.isqrt(n_features)
    return (side, side) if side * side == n_features else None


def stored_image_shape(sample_shape: Sequence[int]) -> tuple[int, ...] | None:
    """Display shape of samples stored as ``sample_shape`` ([D], [H, W], [H, W, C] or
    [C, H, W]); None when they are not images."""
    s = _shape(sample_shape)
    if len(s) == 1:
        return guess_image_shape(s[0])
    if len(s) == 2:
        return s
    if len(s) == 3:
        if s[-1] in CHANNELS and s[0] not in CHANNELS:
            return s[:2] if s[-1] == 1 else s
        if s[0] in CHANNELS:
            return s[1:] if s[0] == 1 else (s[1], s[2], s[0])
    return None


def channels_first(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """[H, W] or [H, W, C] -> the conv input shape [C, H, W]."""
    s = _shape(image_shape)
    return (1, *s) if len(s) == 2 else (s[2], s[0], s[1])


def display_shape(
    input_shape: Sequence[int], image_shape: Sequence[int] | None = None
) -> tuple[int, ...] | None:
    """Display shape of a model's inputs: from ``input_shape`` [C, H, W], else
    ``image_shape`` (flat models), else a square guess."""
    s = _shape(input_shape)
    if len(s) == 3:
        return s[1:] if s[0] == 1 else (s[1], s[2], s[0])
    if image_shape is not None:
        return _shape(image_shape)
    return guess_image_shape(int(np.prod(s)))


def describe(shape: Sequence[int]) -> str:
    return "[N, " + ", ".join(str(s) for s in shape) + "]"


def arrange(
    X: np.ndarray, input_shape: Sequence[int], image_shape: Sequence[int] | None = None
) -> np.ndarray:
    """Lay samples out as the model takes them: [N, *input_shape] (a view when possible).

    Accepted: exactly [N, *input_shape]; any shape of the same size for a flat model
    (rows flattened in stored order); for a [C, H, W] model, channels-last
    [N, H, W, C], [N, H, W] when C = 1, and flat rows when C = 1 or when
    ``image_shape`` says they are flattened [H, W, C] images. Anything else is an
    error naming both shapes.
    """
    target = _shape(input_shape)
    got = tuple(X.shape[1:])
    if got == target:
        return X
    size = int(np.prod(target))
    if len(target) == 1 and int(np.prod(got)) == size:
        return X.reshape(X.shape[0], size)
    if len(target) == 3:
        c, h, w = target
        if got == (h, w, c):
            return X.transpose(0, 3, 1, 2)
        if c == 1 and int(np.prod(got)) == size and (len(got) == 1 or got == (h, w)):
            return X.reshape(X.shape[0], 1, h, w)
        if got == (size,) and _shape(image_shape) == (h, w, c):
            return X.reshape(X.shape[0], h, w, c).transpose(0, 3, 1, 2)
    hint = f" (or channels-last {describe(target[1:] + target[:1])})" if len(target) == 3 else ""
    raise VaefastError(
        f"inputs have shape {describe(got)}; this model expects {describe(target)}{hint}"
    )


def to_display(
    X: np.ndarray, input_shape: Sequence[int], image_shape: Sequence[int] | None
) -> np.ndarray:
    """[N, *input_shape] values -> [N, H, W] or [N, H, W, C] images (a 1-row strip when
    the samples are not images)."""
    shape = display_shape(input_shape, image_shape)
    if len(_shape(input_shape)) == 3:
        X = X.transpose(0, 2, 3, 1)
        return X.reshape(X.shape[0], *shape)
    if shape is None or int(np.prod(shape)) != int(np.prod(X.shape[1:])):
        return X.reshape(X.shape[0], 1, -1)
    return X.reshape(X.shape[0], *shape)


def input_shape_for(
    sample_shape: Sequence[int], input_shape: Sequence[int], multiple: int | None
) -> tuple[int, ...]:
    """The [C, H', W'] a model of ``input_shape`` [C, H, W] takes for samples stored as
    ``sample_shape`` ([C, H', W'], [H', W', C], or [H', W'] when grey) when it accepts
    any size that is a multiple of ``multiple``; ``input_shape`` itself when the model
    has a fixed size or the samples have its size. A size it cannot take is an error
    naming the sizes it can."""
    target, got = _shape(input_shape), _shape(sample_shape)
    if not multiple or len(target) != 3 or got == target:
        return target
    c = target[0]
    if len(got) == 3 and got[0] == c and got[1:] != (c,) * 2:
        size = got[1:]
    elif len(got) == 3 and got[2] == c:
        size = got[:2]
    elif len(got) == 2 and c == 1:
        size = got
    else:
        return target  # not images of this model's channels: arrange() names the shapes
    if any(s < multiple or s % multiple for s in size):
        raise VaefastError(
            f"inputs are {size[0]}x{size[1]} images; this model takes heights "
            f"and widths that are multiples of {multiple} (e.g. "
            f"{target[1]}x{target[2]})"
        )
    return (c, *size)


def check_pixels(X: np.ndarray, scale: float = 255.0, name: str = "inputs") -> None:
    """The one pixel rule: integers in [0, ``scale``], floats finite and in [0, 1].

    Raises :class:`vaefast.errors.BadRows` naming the first bad row (NaN or inf, or values
    outside the range). Costs a min and a max over X; uint8 with scale 255 is free.
    """
    kind = X.dtype.kind
    if kind == "u" and X.dtype.itemsize == 1 and scale >= 255:
        return
    hi_ok = float(scale) if kind in "ui" else 1.0
    if X.size == 0:
        return
    lo, hi = X.min(), X.max()
    if lo >= 0 and hi <= hi_ok:  # False for NaN
        return
    flat = X.reshape(X.shape[0], -1)
    if kind == "f" and not np.isfinite(hi + lo):
        row = int(np.flatnonzero(~np.isfinite(flat).all(axis=1))[0])
        raise BadRows(f"{name}: NaN or inf at row {row}; clean the data first", row, "NaN or inf")
    row = int(np.flatnonzero(((flat < 0) | (flat > hi_ok)).any(axis=1))[0])
    expected = (
        f"integer pixels in [0, {scale:g}]"
        if kind in "ui"
        else "floats in [0, 1] (or uint8 pixels)"
    )
    raise BadRows(
        f"{name}: values span [{lo}, {hi}], first out of range at row {row}; expected {expected}",
        row,
        f"values outside [0, {hi_ok:g}]",
    )


def chunk_bounds(chunk: int, chunk_rows: int, n: int) -> tuple[int, int]:
    """[start, stop) of row chunk ``chunk`` of ``n`` rows cut ``chunk_rows`` at a time."""
    return chunk * chunk_rows, min((chunk + 1) * chunk_rows, n)
