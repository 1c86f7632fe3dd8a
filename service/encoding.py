"""PNG encoders and decoders for the maps the service returns, numpy and Pillow only.

==============  =============================  ============================================
map             PNG                            values
==============  =============================  ============================================
semantic        8-bit grey                     train ids; 255 = ignore / unlabelled
instances       16-bit grey                    instance ids; 0 = no instance
depth           16-bit grey                    metres = value x ``scale_to_metres``
                                               (1/64 m: 1.6 cm steps, up to 1023.97 m);
                                               0 = sky (infinitely far), 65535 = no valid
                                               prediction; 65534 = that far or farther
overlay         8-bit RGB                      the image blended with class colours, with
                                               white instance outlines, for people to look at;
                                               likewise one per instance and one of depth
==============  =============================  ============================================

Depth is stored in metres, not inverse depth, because that is what a client wants to
read off a pixel; the fixed scale keeps every PNG comparable with every other. 1/64 m
covers the procedural street scenes (99% of their pixels are nearer than 121 m, 0.02%
beyond 1 km) with steps far finer than the model's error. The decoders are for tests
and Python clients; any PNG reader gives the same integers.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from scene_contract.drawing import colorize_instances, colorize_inverse_depth

DEPTH_SCALE_TO_METRES = 1 / 64
DEPTH_SKY = 0
DEPTH_INVALID = 65535
DEPTH_MAX_VALUE = 65534  # farther depths saturate here
OUTLINE_COLOR = (255, 255, 255)


@dataclass(frozen=True)
class DepthEncoding:
    """How to read a depth PNG back into metres.

    Attributes:
        scale_to_metres: metres per PNG unit (``DEPTH_SCALE_TO_METRES``).
        min_m: nearest finite depth in the image, metres, within what the PNG can
            express (one step to ``DEPTH_MAX_VALUE`` steps); None if no pixel has one
            (all sky or invalid).
        max_m: farthest finite depth, metres, likewise clamped; None likewise.
        sky_value: PNG value of sky (inverse depth <= 0: infinitely far).
        invalid_value: PNG value of pixels without a valid prediction (non-finite
            inverse depth).
        beyond_range: some pixels are farther than the PNG can express; they hold
            ``DEPTH_MAX_VALUE``, and ``max_m`` is that depth ("this far or farther").
    """

    scale_to_metres: float
    min_m: float | None
    max_m: float | None
    sky_value: int = DEPTH_SKY
    invalid_value: int = DEPTH_INVALID
    beyond_range: bool = False


def semantic_png(train_ids: npt.NDArray[np.uint8]) -> bytes:
    """8-bit greyscale PNG of a ``uint8 [H, W]`` train-id map."""
    _check_map(train_ids, np.uint8, "train_ids")
    return _png(Image.fromarray(train_ids))


def instance_png(instance_map: npt.NDArray[np.uint16]) -> bytes:
    """16-bit greyscale PNG of a ``uint16 [H, W]`` instance map (0 = no instance)."""
    _check_map(instance_map, np.uint16, "instance_map")
    return _png(Image.fromarray(instance_map))


def depth_png(inverse_depth: npt.NDArray[np.float32]) -> tuple[bytes, DepthEncoding]:
    """16-bit greyscale PNG of depth in metres from ``float32 [H, W]`` inverse depth (1/m).

    ``value = round(depth_m / scale_to_metres)``, clipped to ``1 .. DEPTH_MAX_VALUE`` so
    no depth reads as sky or invalid. Inverse depth ``<= 0`` is sky (``DEPTH_SKY``): the
    model regresses 0 there and lands a little either side of it. Non-finite inverse
    depth is ``DEPTH_INVALID``.
    """
    if inverse_depth.ndim != 2:
        raise ValueError(f"inverse_depth must be [H, W], got shape {inverse_depth.shape}")
    inverse = inverse_depth.astype(np.float32, copy=False)
    finite = np.isfinite(inverse)
    near = finite & (inverse > 0)
    # Tiny positive inverse depths overflow to inf metres, which then saturate like any far depth.
    with np.errstate(over="ignore"):
        depth = np.divide(np.float32(1.0), inverse, out=np.zeros_like(inverse), where=near)
        # float32 holds every step count exactly (< 2**24) and 1/x to 6e-8, far below a step.
        steps = np.rint(depth * np.float32(1 / DEPTH_SCALE_TO_METRES))
    values = np.clip(steps, 1, DEPTH_MAX_VALUE).astype(np.uint16)
    values[~near] = DEPTH_SKY
    values[~finite] = DEPTH_INVALID
    measured = depth[near & np.isfinite(depth)]
    farthest = DEPTH_MAX_VALUE * DEPTH_SCALE_TO_METRES
    encoding = DepthEncoding(
        scale_to_metres=DEPTH_SCALE_TO_METRES,
        min_m=float(np.clip(measured.min(), DEPTH_SCALE_TO_METRES, farthest)) if measured.size else None,
        max_m=float(np.clip(measured.max(), DEPTH_SCALE_TO_METRES, farthest)) if measured.size else None,
        beyond_range=bool((steps[near] > DEPTH_MAX_VALUE).any()),  # inf steps (overflow) included
    )
    return _png(Image.fromarray(values)), encoding


def overlay_png(
    image: npt.NDArray[np.uint8],
    semantic: npt.NDArray[np.uint8],
    instance_map: npt.NDArray[np.uint16] | None,
    palette: npt.NDArray[np.uint8],
    alpha: float = 0.5,
) -> bytes:
    """RGB PNG for people: ``image`` blended with class colours, instances outlined in white.

    Args:
        image: ``uint8 [H, W, 3]`` RGB.
        semantic: ``uint8 [H, W]`` train ids.
        instance_map: ``uint16 [H, W]`` instance ids (0 = none), or None for no outlines.
        palette: ``uint8 [256, 3]``; row ``train_id`` is that class's colour (the model
            card's colours, so the picture matches what the model was trained with).
        alpha: opacity of the class colours, 0 (image only) to 1 (colours only).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    _check_map(semantic, np.uint8, "semantic", image.shape[:2])
    if palette.shape != (256, 3):
        raise ValueError(f"palette must be [256, 3], got shape {palette.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    colors = palette.astype(np.float32)[semantic]
    blended = np.rint((1.0 - alpha) * image.astype(np.float32) + alpha * colors).astype(np.uint8)
    if instance_map is not None:
        _check_map(instance_map, np.uint16, "instance_map", image.shape[:2])
        blended[instance_outlines(instance_map)] = OUTLINE_COLOR
    return _png(Image.fromarray(blended))


def instances_overlay_png(
    image: npt.NDArray[np.uint8], instance_map: npt.NDArray[np.uint16], alpha: float = 0.5
) -> bytes:
    """RGB PNG for people: each instance of ``instance_map`` tinted its own colour, outlined in white."""
    _check_map(instance_map, np.uint16, "instance_map", image.shape[:2])
    tinted = np.rint(
        (1.0 - alpha) * image.astype(np.float32) + alpha * colorize_instances(instance_map).astype(np.float32)
    ).astype(np.uint8)
    picture = np.where((instance_map > 0)[..., None], tinted, image)
    picture[instance_outlines(instance_map)] = OUTLINE_COLOR
    return _png(Image.fromarray(picture))


def depth_color_png(inverse_depth: npt.NDArray[np.float32]) -> bytes:
    """RGB PNG for people: inverse depth as colours (near bright, sky dark, invalid grey)."""
    if inverse_depth.ndim != 2:
        raise ValueError(f"inverse_depth must be [H, W], got shape {inverse_depth.shape}")
    finite = np.where(np.isfinite(inverse_depth), inverse_depth, np.nan)
    return _png(Image.fromarray(colorize_inverse_depth(finite)))


def instance_outlines(instance_map: npt.NDArray[np.uint16]) -> npt.NDArray[np.bool_]:
    """``bool [H, W]``: instance pixels with a 4-neighbour of another id (inner boundary)."""
    edge = np.zeros(instance_map.shape, dtype=bool)
    vertical = instance_map[1:, :] != instance_map[:-1, :]
    horizontal = instance_map[:, 1:] != instance_map[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    outline: npt.NDArray[np.bool_] = edge & (instance_map > 0)
    return outline


def decode_png(data: bytes) -> npt.NDArray[Any]:
    """A PNG from this module back to its array.

    ``uint8 [H, W]`` for semantic maps, ``uint16 [H, W]`` for instance and depth maps,
    ``uint8 [H, W, 3]`` for overlays.

    Raises:
        ValueError: ``data`` is not a PNG Pillow can read.
    """
    try:
        with Image.open(io.BytesIO(data)) as picture:
            picture.load()
            if picture.format != "PNG":
                raise ValueError(f"expected a PNG, got {picture.format}")
            array = np.asarray(picture)
    except (OSError, SyntaxError) as error:  # Pillow raises these for corrupt or foreign data
        raise ValueError(f"not a readable PNG: {error}") from None
    # Older Pillow versions open 16-bit greyscale as 32-bit "I"; the values fit 16 bits.
    if array.dtype == np.int32:
        return array.astype(np.uint16)
    if array.dtype.byteorder == ">":
        return array.astype(array.dtype.newbyteorder("="))
    return array


def decode_depth_png(data: bytes, encoding: DepthEncoding) -> npt.NDArray[np.float32]:
    """Depth in metres ``float32 [H, W]`` from `depth_png`'s PNG: ``inf`` = sky, ``nan`` = invalid."""
    values = decode_png(data)
    if values.dtype != np.uint16 or values.ndim != 2:
        raise ValueError(f"a depth PNG is 16-bit greyscale, got {values.dtype} {values.shape}")
    depth = values.astype(np.float32) * np.float32(encoding.scale_to_metres)
    depth[values == encoding.sky_value] = np.inf
    depth[values == encoding.invalid_value] = np.nan
    return depth


def to_base64(data: bytes) -> str:
    """``data`` as ASCII base64 text, as the JSON responses carry PNGs."""
    return base64.b64encode(data).decode("ascii")


def from_base64(text: str) -> bytes:
    """The bytes of base64 ``text``; raises ``ValueError`` if it is not valid base64."""
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as error:
        raise ValueError(f"not valid base64: {error}") from None


def _check_map(
    array: npt.NDArray[Any], dtype: type[np.generic], name: str, shape: tuple[int, ...] | None = None
) -> None:
    if array.ndim != 2 or array.dtype != dtype:
        raise ValueError(f"{name} must be {np.dtype(dtype).name} [H, W], got {array.dtype} {array.shape}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, the image is {shape}")


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # Level 1: a third of the default's time for maps this size, files a little larger.
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
