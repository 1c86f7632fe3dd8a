"""Images in and maps out: decoding uploads, resizing to and from the model's size.

The model sees every image resized (aspect ratio not kept) to the training resolution
in its card, with the card's filter, because that is what it was trained on. Maps go
back to the uploaded image's size with nearest neighbour for labels (which must not
blend) and bilinearly for confidence and depth.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from scene_contract.model import DEFAULT_RESIZE
from service.errors import CorruptImageError, ServiceError, TooManyPixelsError, UnsupportedMediaTypeError

ACCEPTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
RGBImage = npt.NDArray[np.uint8]
_EXIF_ORIENTATION = 0x0112
# Requests run side by side, each in its own thread; OpenCV's own pool would only
# oversubscribe the cores.
cv2.setNumThreads(1)


def decode_image(data: bytes, max_pixels: int) -> RGBImage:
    """Decode PNG/JPEG/WebP bytes to ``uint8 [H, W, 3]`` RGB, upright per its EXIF orientation.

    The pixel count is checked from the header, before any pixel is decoded.

    Raises:
        TooManyPixelsError: more than ``max_pixels`` (width × height).
        CorruptImageError: not one of the accepted formats, truncated, or undecodable.
    """
    return decode_upload(data, max_pixels)[0]


def decode_upload(
    data: bytes,
    max_pixels: int,
    at_least: tuple[int, int] | Callable[[tuple[int, int]], tuple[int, int]] | None = None,
) -> tuple[RGBImage, tuple[int, int]]:
    """`decode_image`, and the upright image's full size ``(H, W)``.

    With ``at_least`` = (height, width), a JPEG is decoded at the smallest of libjpeg's
    1/1, 1/2, 1/4 and 1/8 scales that still covers that size upright (scaling in the
    DCT, several times cheaper than decoding every pixel); for when only the model's
    input, or maps smaller than the image, are needed from the pixels. ``at_least`` may
    also be a function of the full upright size giving that size. Other formats decode
    in full.
    """
    # The limit is checked from the header below. Pillow's own bomb check (a process-wide
    # global, left alone) only fires for images far over any sensible limit.
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        # Pillow raises past twice its threshold and quotes that; the limit is ours.
        raise TooManyPixelsError(
            f"the image has over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels; the limit is {max_pixels:,}"
        ) from None
    except UnidentifiedImageError:
        raise _not_accepted(data) from None
    except MemoryError:
        raise
    except Exception as error:  # crafted headers make Pillow's parsers raise many types
        raise CorruptImageError(f"not a readable PNG, JPEG or WebP image: {error}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise TooManyPixelsError(f"the image has {width}×{height} pixels; the limit is {max_pixels}")
    try:
        # EXIF orientations 5-8 turn the image a quarter: the stored sides swap upright.
        turned = image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
        full_size = (width, height) if turned else (height, width)
        if at_least is not None and image.format == "JPEG":
            needed = at_least(full_size) if callable(at_least) else at_least
            stored = (needed[0], needed[1]) if turned else (needed[1], needed[0])
            image.draft("RGB", stored)
        image.load()
        upright = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError:
        raise TooManyPixelsError(
            f"the image has over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels; the limit is {max_pixels:,}"
        ) from None
    except MemoryError:
        raise
    except Exception as error:
        raise CorruptImageError(f"the image is truncated or corrupt: {error}") from None
    return _to_rgb(upright), full_size


def _not_accepted(data: bytes) -> ServiceError:
    """415 for a real image in a format the service does not take (GIF, BMP, TIFF...), else 400."""
    try:
        with Image.open(io.BytesIO(data)) as other:
            found = other.format
    except Exception:
        found = None
    if found:
        return UnsupportedMediaTypeError(f"the image is {found}; send PNG, JPEG or WebP")
    return CorruptImageError("the bytes are not a PNG, JPEG or WebP image")


def _to_rgb(image: Image.Image) -> RGBImage:
    """Any Pillow mode as ``uint8 [H, W, 3]``; alpha is dropped, 16-bit scaled to 8."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # Pillow's I→RGB conversion clips at 255 instead of scaling 16-bit greys.
        wide = np.asarray(image).astype(np.uint32)
        image = Image.fromarray((np.clip(wide, 0, 65535) // 257).astype(np.uint8))
    elif image.mode in ("P", "PA") and "transparency" in image.info:
        image = image.convert("RGBA")
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return rgb


def preprocess(image: RGBImage, size: tuple[int, int], resize: str = DEFAULT_RESIZE) -> RGBImage:
    """Resize ``uint8 [H, W, 3]`` to ``size`` = (height, width) with the card's ``resize`` filter.

    The filter is the one training resized its frames with (the card's ``input.resize``).
    """
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    resized = Image.fromarray(image).resize((width, height), Image.Resampling[resize.upper()])
    return np.asarray(resized, dtype=np.uint8)


def resize_nearest(values: npt.NDArray[Any], size: tuple[int, int]) -> npt.NDArray[Any]:
    """Nearest-neighbour resize of ``[..., h, w]`` to ``[..., H, W]``, sampling pixel centres.

    Any dtype (uint16 instance ids included, which Pillow cannot resize).
    """
    height, width = size
    if values.shape[-2:] == (height, width):
        return values
    rows = nearest_sources(height, values.shape[-2])
    cols = nearest_sources(width, values.shape[-1])
    # Two one-axis takes: about 4x faster than one 2-D fancy index at 2048x1024.
    return np.take(np.take(values, rows, axis=-2), cols, axis=-1)


def nearest_sources(size: int, source_size: int) -> npt.NDArray[np.intp]:
    """For each of ``size`` output pixels along an axis, the source pixel `resize_nearest` samples.

    Non-decreasing, so each source pixel feeds a contiguous run of output pixels (empty
    for some when shrinking).
    """
    centres = (np.arange(size) + 0.5) * source_size / size
    return np.minimum(centres.astype(np.intp), source_size - 1)


def resize_bilinear(values: npt.NDArray[np.float32], size: tuple[int, int]) -> npt.NDArray[np.float32]:
    """Bilinear resize of float32 ``[h, w]`` to ``[H, W]`` (antialiased when shrinking).

    Enlarging, the usual case (maps go back to the upload's size), runs in OpenCV: the
    same values as Pillow's to about 1e-7, 25 times faster at 2048x1024
    (docs/benchmarks.md). Shrinking stays with Pillow, whose filter widens to
    antialias where OpenCV's bilinear would skip pixels.
    """
    height, width = size
    if values.shape == (height, width):
        return values
    if height >= values.shape[0] and width >= values.shape[1]:
        enlarged = cv2.resize(np.ascontiguousarray(values, dtype=np.float32), (width, height))
        return np.asarray(enlarged, dtype=np.float32)
    image = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
