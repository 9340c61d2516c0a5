"""One encoded image -> the model's input: every valid image of any size is read, by
every resize rule, as torchvision's Resize + CenterCrop would read it, turned as its EXIF
orientation says (or not, when asked)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import encoded, photo_crops
from vaefast.data.decode import RESIZES, Preprocess, crop_box, decode

PIL_LIMIT = 2 * 89_478_485  # PIL refuses images over twice MAX_IMAGE_PIXELS
# the encoders' fastest effort: the same formats and decoders, a fifth of the encoding time
# (PNG stored blocks, WebP method 0); what these tests vary is size and geometry
QUICK = {"PNG": {"compress_level": 0}, "WEBP": {"method": 0}, "JPEG": {}}


def _image(w: int, h: int, channels: int, seed: int) -> np.ndarray:
    """A smooth image (so resampling differences stay small) with some detail."""
    rng = np.random.default_rng(seed)
    across = np.sin(np.arange(w) / max(w, 1) * 6.3 + rng.uniform(0, 6))  # separable: one
    down = np.cos(np.arange(h) / max(h, 1) * 4.1 + rng.uniform(0, 6))  # sin per column
    base = 127 + 100 * across[None, :] * down[:, None]
    image = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
    return (
        image
        if channels == 1
        else np.stack([image, image[::-1, ::-1] if h > 1 else image, 255 - image], axis=-1)
    )


def _box_inside(w: int, h: int, tw: int, th: int, draft: int) -> bool:
    """crop_box for a w x h image (its area cut to PIL's limit), target tw x th, read
    whole or draft-reduced: the box lies inside the pixels it is in, and is not empty."""
    if w * h > PIL_LIMIT:
        w = PIL_LIMIT // h
    dw, dh = -(-w // draft), -(-h // draft)  # a JPEG draft's size (rounded up)
    x0, y0, x1, y1 = crop_box(w, h, tw, th, dw, dh)
    return 0 <= x0 < x1 <= dw and 0 <= y0 < y1 <= dh


@settings(max_examples=1000, deadline=None)
@given(
    w=st.integers(1, 100_000),
    h=st.integers(1, 100_000),
    tw=st.integers(1, 1024),
    th=st.integers(1, 1024),
    draft=st.sampled_from([1, 2, 4, 8]),
)
def test_crop_box_lies_inside_every_image(w, h, tw, th, draft):
    """Any size up to PIL's limit, any target, the full image or a draft-reduced one: the
    box PIL is handed is never outside the image and never empty. Hypothesis leans to
    each range's edges; the sweep below covers the sizes between."""
    assert _box_inside(w, h, tw, th, draft)


def test_crop_box_lies_inside_every_image_of_a_sweep_over_all_scales():
    """200,000 seeded cases, sizes and targets log-uniform over their whole ranges."""
    rng = np.random.default_rng(0)
    n = 200_000
    sizes = np.exp(rng.uniform(0, np.log(100_001), (n, 2))).astype(np.int64)
    targets = np.exp(rng.uniform(0, np.log(1025), (n, 2))).astype(np.int64)
    drafts = rng.choice([1, 2, 4, 8], n)
    cases = np.column_stack([sizes, targets, drafts]).tolist()
    outside = [case for case in cases if not _box_inside(*case)]
    assert not outside, outside[:5]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    w=st.integers(1, 700),
    h=st.integers(1, 700),
    tw=st.integers(1, 96),
    th=st.integers(1, 96),
    rule=st.sampled_from(sorted(RESIZES)),
    fmt=st.sampled_from(["PNG", "JPEG", "WEBP"]),
    channels=st.sampled_from([1, 3]),
)
def test_every_valid_image_is_read_at_the_models_size(w, h, tw, th, rule, fmt, channels):
    """Real encoded files of random sizes and formats (JPEGs take the draft path whenever
    the target is at most half their size) are read by every rule, never refused."""
    blob = encoded(_image(w, h, 3, w * 7919 + h), fmt, **QUICK[fmt])
    out, upscaled = decode(blob, Preprocess(th, tw, channels, rule))
    assert out.shape == ((th, tw) if channels == 1 else (th, tw, 3)) and out.dtype == np.uint8


def _torchvision_resize_center_crop(image, t: int):
    """torchvision's ``Resize(t)`` + ``CenterCrop(t)`` on a PIL image, step by step as its
    ``functional.resize`` / ``center_crop`` compute them (its wheel here is built against
    another torch, so its code is restated): the shorter side to t, the longer to
    ``int(t * long / short)``, bilinear with antialias (PIL's), then a t x t crop at
    ``int(round(excess / 2.0))``."""
    from PIL import Image

    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(t * long / short)
    size = (t, new_long) if w <= h else (new_long, t)
    resized = image.resize(size, Image.Resampling.BILINEAR)
    left, top = int(round((size[0] - t) / 2.0)), int(round((size[1] - t) / 2.0))
    return resized.crop((left, top, left + t, top + t))


@settings(max_examples=300, deadline=None)
@given(w=st.integers(1, 900), h=st.integers(1, 900), t=st.integers(1, 96))
def test_crop_equals_torchvision_resize_then_center_crop(w, h, t):
    """The default rule resamples once, from a box, what torchvision resizes whole and
    then crops; PNG input (no draft), so the pixels agree to one grey level."""
    from PIL import Image

    image = _image(w, h, 3, w + 31 * h)
    ours, _ = decode(encoded(image, "PNG", **QUICK["PNG"]), Preprocess(t, t, 3))
    theirs = np.asarray(_torchvision_resize_center_crop(Image.fromarray(image), t))
    assert np.abs(ours.astype(int) - theirs).max() <= 1


def test_the_reported_sizes_that_were_refused_are_read():
    """COCO's most common size through a 64x64 model, and the draft sizes that hit the
    float crop box (left edge -3.6e-15, top edge -7e-15)."""
    for w, h, t in ((640, 427, 64), (160, 107, 64), (200, 160, 28)):
        for fmt in ("JPEG", "PNG"):
            out, _ = decode(encoded(_image(w, h, 3, 0), fmt), Preprocess(t, t, 1))
            assert out.shape == (t, t)


def _with_orientation(image: np.ndarray, orientation: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=95, exif=exif)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_as_datasets_applies_it(orientation):
    """``transpose`` (the default) equals PIL's ``ImageOps.exif_transpose``, which the
    ``datasets`` Image feature applies; ``ignore`` reads the stored pixels, as
    torchvision's loader does. A portrait photo stored landscape comes out portrait."""
    from PIL import Image, ImageOps

    stored = photo_crops(1, 60, 120)[0]  # landscape as stored
    blob = _with_orientation(stored, orientation)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(blob))))
    h, w = shown.shape[:2]
    turned, _ = decode(blob, Preprocess(h, w, 3))
    assert turned.shape == shown.shape
    assert np.abs(turned.astype(int) - shown).mean() < 1
    ignored, _ = decode(blob, Preprocess(60, 120, 3, exif="ignore"))
    assert np.abs(ignored.astype(int) - np.asarray(Image.open(io.BytesIO(blob)))).mean() < 1
    if orientation in (6, 8):
        assert (h, w) == (120, 60)


def test_exif_orientation_with_a_draft_decode():
    """A large rotated JPEG read small (the DCT's reduced decode) is turned too."""
    from PIL import Image, ImageOps

    stored = _image(800, 400, 3, 0)
    blob = _with_orientation(stored, 6)
    shown = ImageOps.exif_transpose(Image.open(io.BytesIO(blob)))  # 400 wide, 800 high
    fast, _ = decode(blob, Preprocess(56, 28, 3, "squash"))
    slow = np.asarray(shown.resize((28, 56), Image.Resampling.BILINEAR))
    assert np.abs(fast.astype(int) - slow).mean() < 4


def test_an_image_beyond_the_decompression_bomb_limit_is_named_not_a_crash():
    from PIL import Image

    from vaefast.data.decode import BadImage

    buf = io.BytesIO()
    Image.new("L", (20_000, 10_000)).save(buf, format="PNG")  # 2e8 pixels > 2 x limit
    with pytest.raises(BadImage, match="decompression bomb"):
        decode(buf.getvalue(), Preprocess(28, 28, 1))


def test_unknown_exif_rule_is_refused_by_name():
    from vaefast.errors import VaefastError

    with pytest.raises(VaefastError, match="transpose, ignore"):
        Preprocess(28, 28, 1, exif="rotate")
