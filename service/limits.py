"""What one /predict request may cost: image shape limits, the response budget, body pacing.

Every check here runs before the expensive work. The image's width and height come
from its header (`image_size`), so an image over a limit is refused without decoding a
pixel; the response budget (`check_image`) is settled from those numbers and the
query, so a request that would return more than ``max_output_pixels`` never reaches
decoding or the model; `choose_map_size` settles the size of the maps themselves
(``resolution=auto`` scales them down to the budget instead of refusing); `BodyPace`
bounds how long and how slowly a body may arrive.

docs/serving.md ("Limits and memory") has the bytes per pixel each output choice
costs, which is what these limits bound.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable

from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile
from PIL.PngImagePlugin import PngImageFile
from PIL.WebPImagePlugin import WebPImageFile

from service.errors import (
    AspectRatioError,
    BodyTimeoutError,
    ImageTooTallError,
    ImageTooWideError,
    OutputTooLargeError,
    TooManyPixelsError,
)
from service.schemas import MapSize, Resolution
from service.settings import Settings

# A slow start (TLS, a phone waking its radio) is not yet a slow upload.
BODY_RATE_GRACE_S = 5.0

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from the header of PNG/JPEG/WebP ``data``, as stored (before EXIF
    orientation); None when the bytes are not one of those or the header is unreadable
    (decoding then reports why).

    Uses Pillow's format readers directly rather than ``Image.open``: those parse only
    the header, and skip ``Image.open``'s decompression-bomb check, whose threshold is
    a process-wide global; the limits below are the service's own.
    """
    reader: Callable[[io.BytesIO], Image.Image] | None = None
    if data.startswith(_PNG_SIGNATURE):
        reader = PngImageFile
    elif data.startswith(_JPEG_SIGNATURE):
        reader = JpegImageFile
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        reader = WebPImageFile
    if reader is None:
        return None
    try:
        with reader(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception:  # crafted headers make Pillow's parsers raise many types
        return None
    return int(width), int(height)


def check_image(width: int, height: int, settings: Settings, *, output_size: tuple[int, int] | None) -> None:
    """Refuse an image of ``width`` × ``height`` over a limit, each limit with its own error.

    ``output_size`` is ``(width, height)`` of the maps the request asks for (None when it
    asks for the model's resolution, which the model's card already bounds).

    Raises:
        ImageTooWideError: (413) wider than ``max_width``.
        ImageTooTallError: (413) taller than ``max_height``.
        AspectRatioError: (422) long side over ``max_aspect_ratio`` times the short side.
        TooManyPixelsError: (413) more than ``max_pixels``.
        OutputTooLargeError: (413) maps over ``max_output_pixels``.
    """
    if width > settings.max_width:
        raise ImageTooWideError(
            f"the image is {width} pixels wide; the limit is {settings.max_width} (SCENE_MAX_WIDTH)"
        )
    if height > settings.max_height:
        raise ImageTooTallError(
            f"the image is {height} pixels tall; the limit is {settings.max_height} (SCENE_MAX_HEIGHT)"
        )
    ratio = max(width, height) / max(1, min(width, height))
    if ratio > settings.max_aspect_ratio:
        raise AspectRatioError(
            f"the image is {width}×{height}, an aspect ratio of {ratio:.4g}:1; the limit is "
            f"{settings.max_aspect_ratio:g}:1 (SCENE_MAX_ASPECT_RATIO)"
        )
    if width * height > settings.max_pixels:
        raise TooManyPixelsError(
            f"the image has {width}×{height} = {width * height:,} pixels; the limit is "
            f"{settings.max_pixels:,} (SCENE_MAX_PIXELS)"
        )
    if output_size is not None:
        out_width, out_height = output_size
        if out_width * out_height > settings.max_output_pixels:
            raise OutputTooLargeError(
                f"maps at the image's size would be {out_width}×{out_height} = {out_width * out_height:,} "
                f"pixels; the limit is {settings.max_output_pixels:,} output pixels "
                "(SCENE_MAX_OUTPUT_PIXELS). Ask for resolution=auto (maps scaled down to fit) or "
                f"resolution=model, or send an image with at most {settings.max_output_pixels:,} pixels"
            )


def largest_fitting_size(height: int, width: int, max_pixels: int) -> tuple[int, int]:
    """The largest ``(height, width)`` of at most ``max_pixels`` pixels with the aspect ratio of the input.

    The long side is the largest integer for which the short side, rounded to keep the
    ratio, still fits; the short side is at least 1. An image that already fits keeps its size.
    """
    if height * width <= max_pixels:
        return height, width
    long_side, short_side = max(height, width), min(height, width)

    def short_for(long: int) -> int:
        return max(1, round(long * short_side / long_side))

    # sqrt gives the real-valued answer; rounding the short side moves it by at most a pixel or two.
    best = max(1, math.floor(long_side * math.sqrt(max_pixels / (height * width))) - 2)
    while best > 1 and best * short_for(best) > max_pixels:
        best -= 1
    while best + 1 < long_side and (best + 1) * short_for(best + 1) <= max_pixels:
        best += 1
    short = short_for(best)
    return (best, short) if height >= width else (short, best)


def choose_map_size(
    image_size: tuple[int, int], resolution: Resolution, model_size: tuple[int, int], max_output_pixels: int
) -> tuple[tuple[int, int], MapSize]:
    """The ``(height, width)`` of the maps for an upright image of ``image_size`` (H, W), and why.

    ``resolution=original`` was checked against the budget from the header already;
    ``auto`` never exceeds it.
    """
    height, width = image_size
    pixels = height * width

    def note(returned: str, reason: str) -> MapSize:
        return MapSize.model_validate(
            {
                "requested": resolution,
                "returned": returned,
                "image_width": width,
                "image_height": height,
                "reason": reason,
            }
        )

    if resolution is Resolution.model:
        return model_size, note("model", "resolution=model: the model's input size")
    if resolution is Resolution.original:
        return image_size, note("original", "resolution=original: the image's own size")
    if pixels <= max_output_pixels:
        return image_size, note(
            "original",
            f"the image's own size: its {pixels:,} pixels fit the output budget of "
            f"{max_output_pixels:,} (SCENE_MAX_OUTPUT_PIXELS)",
        )
    size = largest_fitting_size(height, width, max_output_pixels)
    return size, note(
        "scaled",
        f"the image's {width}×{height} = {pixels:,} pixels are over the output budget of "
        f"{max_output_pixels:,} (SCENE_MAX_OUTPUT_PIXELS), so the maps are the largest size that fits "
        f"with the same aspect ratio, {size[1]}×{size[0]}; ask for resolution=original with a smaller "
        "image, or a larger budget, for maps at the image's size",
    )


class BodyPace:
    """Deadlines for a body's arrival: all of it within ``body_timeout_s``, and after a grace of
    `BODY_RATE_GRACE_S` at least ``body_min_rate`` bytes per second on average.

    `wait_s` is how long the next chunk may take; `error` is the 408 once it did not come.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._timeout_s = settings.body_timeout_s
        self._min_rate = settings.body_min_rate
        self.received = 0

    def add(self, size: int) -> None:
        self.received += size

    def wait_s(self) -> float:
        """Seconds the next chunk may take before one of the deadlines passes (≥ 0)."""
        deadline = self._timeout_s
        if self._min_rate > 0:
            deadline = min(deadline, BODY_RATE_GRACE_S + self.received / self._min_rate)
        return max(0.0, self._started + deadline - self._clock())

    def error(self) -> BodyTimeoutError:
        """The 408 for this body, saying which deadline it missed."""
        elapsed = self._clock() - self._started
        if elapsed >= self._timeout_s:
            return BodyTimeoutError(
                f"the body did not arrive within {self._timeout_s:g} s (SCENE_BODY_TIMEOUT_S); "
                f"{self.received} bytes came"
            )
        return BodyTimeoutError(
            f"the body came at {self.received / max(elapsed, 1e-9):.0f} bytes/s; the minimum is "
            f"{self._min_rate} bytes/s after the first {BODY_RATE_GRACE_S:g} s (SCENE_BODY_MIN_RATE)"
        )


def check_request(data: bytes, settings: Settings, *, maps_at_image_size: bool) -> None:
    """`check_image` on ``data``'s header: call it after the body is read and before decoding.

    ``maps_at_image_size`` is True for ``resolution=original`` (the maps then have the
    image's size; EXIF rotation swaps the sides, which leaves the pixel count alone).
    Bytes without a readable header pass: decoding answers for them.
    """
    size = image_size(data)
    if size is not None:
        check_image(*size, settings, output_size=size if maps_at_image_size else None)
