"""The /predict stages: decode → preprocess → (queue, inference) → postprocess → encode.

Each stage is a plain function of arrays with shapes in its docstring, timed into
``scene_stage_duration_seconds{stage=...}`` and the response's ``timings_ms``. The
CPU-heavy stages run in worker threads (`Pipeline.predict`, and the route for encode),
so a large image never stalls the event loop; inference runs in the micro-batcher's
thread.

Resolutions: the model sees every image resized (bilinear, aspect ratio not kept) to
the training resolution in its card, because that is what it was trained on. Maps come
back at the uploaded image's size by default — class and instance maps with nearest
neighbour (labels must not blend), confidence and depth bilinearly — or at the model's
size with ``resolution=model``.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from anyio import CapacityLimiter, to_thread
from PIL import Image, ImageOps, UnidentifiedImageError

from model_export.contract import (
    INSTANCE_OFFSETS,
    INVERSE_DEPTH,
    SEMANTIC,
    SEMANTIC_CONFIDENCE,
    ModelCard,
)
from service import encoding, metrics
from service.batching import MicroBatcher
from service.errors import (
    CorruptImageError,
    InferenceTimeoutError,
    ServiceError,
    TooManyPixelsError,
    UnsupportedMediaTypeError,
)
from service.postprocess import Instance, group_instances
from service.runtime import ModelRuntime, Outputs
from service.schemas import (
    ClassPresence,
    DepthResult,
    InstanceItem,
    InstancesResult,
    ModelInfo,
    Output,
    OverlayResult,
    PredictResponse,
    Resolution,
    SemanticResult,
    TaskSigma,
    TaskUncertainty,
    Timings,
)
from service.settings import Settings

ACCEPTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
RGBImage = npt.NDArray[np.uint8]
T = TypeVar("T")


@dataclass(frozen=True)
class PredictOptions:
    """What the client asked for (query parameters of /predict)."""

    outputs: frozenset[Output] = frozenset(Output)
    resolution: Resolution = Resolution.original
    overlay: bool = False
    overlay_alpha: float = 0.5


@dataclass
class StageClock:
    """Seconds per stage for one request; each stage is also observed in Prometheus."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        # Only completed stages are observed, so failures do not skew the histograms.
        self.record(name, time.perf_counter() - started)

    def record(self, name: str, seconds: float) -> None:
        self.seconds[name] = seconds
        metrics.STAGE_LATENCY.labels(stage=name).observe(seconds)

    def milliseconds(self, name: str) -> float:
        return round(self.seconds.get(name, 0.0) * 1000, 3)


@dataclass(frozen=True)
class Prediction:
    """Everything /predict returns, at the returned resolution ``[H, W]``.

    Attributes:
        image: uint8 [H, W, 3] RGB, the picture the maps describe (for the overlay).
        semantic: uint8 [H, W] train ids (always: the overlay and the class table use it).
        semantic_confidence: float32 [H, W] softmax probability of that class; None
            unless semantic was asked for.
        instance_map: uint16 [H, W] instance ids, 0 = none; None unless instances or
            the overlay were asked for.
        instances: the instances in ``instance_map``.
        instance_offsets: float32 [2, H, W] pixels of the returned map, (dy, dx); None
            unless instances were asked for.
        inverse_depth: float32 [H, W] 1/m, 0 = sky; None unless depth was asked for.
        batch_size: images in the ORT run this image was part of.
        clock: stage timings so far.
    """

    image: RGBImage
    semantic: npt.NDArray[np.uint8]
    semantic_confidence: npt.NDArray[np.float32] | None
    instance_map: npt.NDArray[np.uint16] | None
    instances: tuple[Instance, ...]
    instance_offsets: npt.NDArray[np.float32] | None
    inverse_depth: npt.NDArray[np.float32] | None
    batch_size: int
    clock: StageClock

    @property
    def height(self) -> int:
        return int(self.semantic.shape[0])

    @property
    def width(self) -> int:
        return int(self.semantic.shape[1])


def decode_image(data: bytes, max_pixels: int) -> RGBImage:
    """Decode PNG/JPEG/WebP bytes to ``uint8 [H, W, 3]`` RGB, upright per its EXIF orientation.

    The pixel count is checked from the header, before any pixel is decoded.

    Raises:
        TooManyPixelsError: more than ``max_pixels`` (width × height).
        CorruptImageError: not one of the accepted formats, truncated, or undecodable.
    """
    # Pillow's own bomb check uses this global; every request sets the same value.
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        # Pillow raises past twice its threshold and quotes that; the limit is ours.
        raise TooManyPixelsError(
            f"the image has over {2 * max_pixels:,} pixels; the limit is {max_pixels:,}"
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
        image.load()
        upright = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError:
        raise TooManyPixelsError(
            f"the image has over {2 * max_pixels:,} pixels; the limit is {max_pixels:,}"
        ) from None
    except MemoryError:
        raise
    except Exception as error:
        raise CorruptImageError(f"the image is truncated or corrupt: {error}") from None
    return _to_rgb(upright)


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


def preprocess(image: RGBImage, size: tuple[int, int]) -> RGBImage:
    """Resize ``uint8 [H, W, 3]`` to ``size`` = (height, width), bilinear, as in training."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def resize_nearest(values: npt.NDArray[Any], size: tuple[int, int]) -> npt.NDArray[Any]:
    """Nearest-neighbour resize of ``[..., h, w]`` to ``[..., H, W]``, sampling pixel centres.

    Any dtype (uint16 instance ids included, which Pillow cannot resize).
    """
    height, width = size
    if values.shape[-2:] == (height, width):
        return values
    rows = np.minimum(
        ((np.arange(height) + 0.5) * values.shape[-2] / height).astype(np.intp), values.shape[-2] - 1
    )
    cols = np.minimum(
        ((np.arange(width) + 0.5) * values.shape[-1] / width).astype(np.intp), values.shape[-1] - 1
    )
    return values[..., rows[:, None], cols[None, :]]


def resize_bilinear(values: npt.NDArray[np.float32], size: tuple[int, int]) -> npt.NDArray[np.float32]:
    """Bilinear resize of float32 ``[h, w]`` to ``[H, W]`` (antialiased when shrinking)."""
    height, width = size
    if values.shape == (height, width):
        return values
    image = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def measure_instances(instance_map: npt.NDArray[np.uint16], class_of: dict[int, int]) -> tuple[Instance, ...]:
    """Pixel count, bounding box and centroid of every id in ``instance_map`` (uint16 [H, W]).

    Same conventions as `service.postprocess.Instance`: ``bbox`` is ``(x0, y0, x1, y1)``
    in pixel edges, end-exclusive; ``centroid`` is ``(x, y)``, the mean of pixel centres
    (a pixel's centre is at +0.5). ``class_of`` maps instance id → train id. Measured on
    the map actually returned, so the numbers agree with its PNG at any resolution.
    """
    ys, xs = np.nonzero(instance_map)
    if ys.size == 0:
        return ()
    ids = instance_map[ys, xs].astype(np.intp)
    size = int(ids.max()) + 1
    counts = np.bincount(ids, minlength=size)
    sum_x = np.bincount(ids, weights=xs, minlength=size)
    sum_y = np.bincount(ids, weights=ys, minlength=size)
    x0 = np.full(size, np.iinfo(np.intp).max)
    y0 = np.full(size, np.iinfo(np.intp).max)
    x1 = np.zeros(size, dtype=np.intp)
    y1 = np.zeros(size, dtype=np.intp)
    np.minimum.at(x0, ids, xs)
    np.minimum.at(y0, ids, ys)
    np.maximum.at(x1, ids, xs + 1)
    np.maximum.at(y1, ids, ys + 1)
    return tuple(
        Instance(
            id=int(i),
            class_id=class_of.get(int(i), -1),
            pixel_count=int(counts[i]),
            bbox=(int(x0[i]), int(y0[i]), int(x1[i]), int(y1[i])),
            centroid=(float(sum_x[i] / counts[i] + 0.5), float(sum_y[i] / counts[i] + 0.5)),
        )
        for i in np.flatnonzero(counts)
    )


def classes_present(
    semantic: npt.NDArray[np.uint8], confidence: npt.NDArray[np.float32], card: ModelCard
) -> list[ClassPresence]:
    """Classes in ``semantic`` (uint8 [H, W]) with pixel share and mean confidence, largest first."""
    names = {c.train_id: c.name for c in card.classes}
    flat = semantic.ravel()
    counts = np.bincount(flat, minlength=256)
    confidence_sums = np.bincount(flat, weights=confidence.ravel(), minlength=256)
    present = sorted(np.flatnonzero(counts), key=lambda i: (-counts[i], i))
    return [
        ClassPresence(
            train_id=int(i),
            name=names.get(int(i), "ignore" if int(i) == card.ignore_index else f"train id {int(i)}"),
            pixel_fraction=float(counts[i] / flat.size),
            mean_confidence=float(np.clip(confidence_sums[i] / counts[i], 0.0, 1.0)),
        )
        for i in present
    ]


def palette(card: ModelCard) -> npt.NDArray[np.uint8]:
    """``uint8 [256, 3]``: row ``train_id`` is that class's colour from the card; others black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    for c in card.classes:
        table[c.train_id] = c.color
    return table


def task_uncertainty(card: ModelCard) -> TaskUncertainty:
    """Each task's σ and log σ² from the card, with its ``learned`` flag when the card has one."""
    raw = card.raw["task_uncertainty"]  # parse_model_card checked it is there

    def learned(task: str) -> bool | None:
        flag = raw[task].get("learned")
        return flag if isinstance(flag, bool) else None

    return TaskUncertainty(
        **{
            task: TaskSigma(sigma=value.sigma, log_variance=value.log_variance, learned=learned(task))
            for task, value in card.task_uncertainty.items()
        }
    )


class Pipeline:
    """Runs one request's image through the stages; shared by all requests of an app."""

    def __init__(self, runtime: ModelRuntime, batcher: MicroBatcher, settings: Settings) -> None:
        self.runtime = runtime
        self.batcher = batcher
        self.settings = settings
        self._palette = palette(runtime.card)
        self._class_names = {c.train_id: c.name for c in runtime.card.classes}
        self._task_uncertainty = task_uncertainty(runtime.card)
        self.cpu_limiter = CapacityLimiter(settings.cpu_concurrency or os.cpu_count() or 1)

    async def predict(self, data: bytes, options: PredictOptions, encode: Callable[[Prediction], T]) -> T:
        """Decode, preprocess, batch-infer, postprocess and ``encode`` ``data`` (encoded image bytes).

        The whole request gets ``request_timeout_s``: past it the client gets
        `InferenceTimeoutError` (a stage already running in a thread finishes first).
        """
        timeout_s = self.settings.request_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return await self._predict(data, options, encode)
        except TimeoutError:
            raise InferenceTimeoutError(f"no answer within {timeout_s:g} s; server overloaded") from None

    async def _predict(self, data: bytes, options: PredictOptions, encode: Callable[[Prediction], T]) -> T:
        # Decoding and postprocessing run in threads, at most `cpu_limiter`'s count at
        # once: each holds full-resolution arrays, so this bounds memory as well as CPU.
        # Postprocessing and ``encode`` share one hop: at 128x256 each hop costs a
        # noticeable share of the time the service adds to the model's.
        clock = StageClock()
        with self.batcher.incoming():
            prepared = await to_thread.run_sync(self._prepare, data, clock, limiter=self.cpu_limiter)
        image, model_input = prepared
        result = await self.batcher.infer(model_input, self.settings.request_timeout_s)
        clock.record("queue_wait", result.queue_wait_s)
        clock.record("inference", result.inference_s)
        shown = image if options.resolution is Resolution.original else model_input

        def finish() -> T:
            return encode(self._postprocess(result.outputs, shown, options, result.batch_size, clock))

        return await to_thread.run_sync(finish, limiter=self.cpu_limiter)

    def _prepare(self, data: bytes, clock: StageClock) -> tuple[RGBImage, RGBImage]:
        with clock.stage("decode"):
            image = decode_image(data, self.settings.max_pixels)
        with clock.stage("preprocess"):
            model_input = preprocess(image, self.runtime.input_size)
        return image, model_input

    def _postprocess(
        self,
        outputs: Outputs,
        image: RGBImage,
        options: PredictOptions,
        batch_size: int,
        clock: StageClock,
    ) -> Prediction:
        """Group instances at the model's resolution, then bring the asked-for maps to ``image``'s size."""
        with clock.stage("postprocess"):
            size = (int(image.shape[0]), int(image.shape[1]))
            semantic = outputs[SEMANTIC]  # uint8 [h, w]
            offsets = outputs[INSTANCE_OFFSETS]  # float32 [2, h, w], pixels of the model input
            want = options.outputs
            instance_map = confidence = inverse_depth = instance_offsets = None
            instances: tuple[Instance, ...] = ()
            if Output.semantic in want:
                confidence = resize_bilinear(outputs[SEMANTIC_CONFIDENCE], size)
            if Output.instances in want or options.overlay:
                # Offsets are in model pixels, so grouping happens at the model's resolution.
                grouped = group_instances(
                    semantic, offsets, self.runtime.card.thing_ids, method=self.settings.instance_method
                )
                instance_map = resize_nearest(grouped.instance_map, size)
                instances = measure_instances(instance_map, {i.id: i.class_id for i in grouped.instances})
            if Output.instances in want:
                scale_y, scale_x = size[0] / semantic.shape[0], size[1] / semantic.shape[1]
                instance_offsets = np.stack(
                    [resize_bilinear(offsets[0], size) * scale_y, resize_bilinear(offsets[1], size) * scale_x]
                )
            if Output.depth in want:
                model_depth = outputs[INVERSE_DEPTH][0]  # float32 [h, w], 1/m
                # Bilinear blending would give sky pixels a finite depth; sky stays exactly 0.
                sky = resize_nearest(model_depth, size) == 0
                inverse_depth = np.where(sky, np.float32(0.0), resize_bilinear(model_depth, size))
            prediction = Prediction(
                image=image,
                semantic=resize_nearest(semantic, size),
                semantic_confidence=confidence,
                instance_map=instance_map,
                instances=instances,
                instance_offsets=instance_offsets,
                inverse_depth=inverse_depth,
                batch_size=batch_size,
                clock=clock,
            )
        return prediction

    def encode_json(self, prediction: Prediction, options: PredictOptions, started: float) -> PredictResponse:
        """The JSON body: PNGs as base64, class and instance tables, timings."""
        card = self.runtime.card
        clock = prediction.clock
        with clock.stage("encode"):
            semantic = depth = instances = overlay = None
            if prediction.semantic_confidence is not None:
                semantic = SemanticResult(
                    png=encoding.to_base64(encoding.semantic_png(prediction.semantic)),
                    classes=classes_present(prediction.semantic, prediction.semantic_confidence, card),
                )
            if prediction.instance_map is not None and Output.instances in options.outputs:
                instances = InstancesResult(
                    items=[
                        InstanceItem(
                            id=item.id,
                            class_name=self._class_names.get(item.class_id, f"train id {item.class_id}"),
                            class_id=item.class_id,
                            pixel_count=item.pixel_count,
                            bbox=item.bbox,
                            centroid=item.centroid,
                        )
                        for item in prediction.instances
                    ],
                    png=encoding.to_base64(encoding.instance_png(prediction.instance_map)),
                )
            if prediction.inverse_depth is not None:
                png, scale = encoding.depth_png(prediction.inverse_depth)
                depth = DepthResult(
                    png=encoding.to_base64(png),
                    scale_to_metres=scale.scale_to_metres,
                    min_m=scale.min_m,
                    max_m=scale.max_m,
                    sky_value=scale.sky_value,
                    invalid_value=scale.invalid_value,
                    beyond_range=scale.beyond_range,
                )
            if options.overlay:
                overlay = OverlayResult(
                    png=encoding.to_base64(
                        encoding.overlay_png(
                            prediction.image,
                            prediction.semantic,
                            prediction.instance_map,
                            self._palette,
                            options.overlay_alpha,
                        )
                    ),
                    instances_png=(
                        encoding.to_base64(
                            encoding.instances_overlay_png(
                                prediction.image, prediction.instance_map, options.overlay_alpha
                            )
                        )
                        if prediction.instance_map is not None and Output.instances in options.outputs
                        else None
                    ),
                    depth_png=(
                        encoding.to_base64(encoding.depth_color_png(prediction.inverse_depth))
                        if prediction.inverse_depth is not None
                        else None
                    ),
                )
        return PredictResponse(
            model=ModelInfo(name=card.name, version=card.version, execution_provider=self.runtime.provider),
            task_uncertainty=self._task_uncertainty,
            width=prediction.width,
            height=prediction.height,
            batch_size=prediction.batch_size,
            semantic=semantic,
            instances=instances,
            depth=depth,
            overlay=overlay,
            timings_ms=timings(clock, started),
        )

    def encode_npz(self, prediction: Prediction) -> bytes:
        """The raw arrays as an uncompressed ``.npz`` (no pickle needed to read it).

        Arrays: ``semantic`` uint8 [H, W] and ``semantic_confidence`` float32 [H, W];
        ``instance_map`` uint16 [H, W], ``instance_offsets`` float32 [2, H, W] (pixels,
        (dy, dx)), ``instance_ids``/``instance_class_ids``/``instance_pixel_counts`` int64
        [K], ``instance_bboxes`` int64 [K, 4] (x0, y0, x1, y1), ``instance_centroids``
        float64 [K, 2] (x, y); ``inverse_depth`` float32 [H, W] (1/m, 0 = sky) — each
        group only when its output was asked for (the prediction holds only those).
        """
        arrays: dict[str, npt.NDArray[Any]] = {}
        with prediction.clock.stage("encode"):
            if prediction.semantic_confidence is not None:
                arrays["semantic"] = prediction.semantic
                arrays["semantic_confidence"] = prediction.semantic_confidence
            if prediction.instance_map is not None and prediction.instance_offsets is not None:
                items = prediction.instances
                arrays["instance_map"] = prediction.instance_map
                arrays["instance_offsets"] = prediction.instance_offsets
                arrays["instance_ids"] = np.array([i.id for i in items], dtype=np.int64)
                arrays["instance_class_ids"] = np.array([i.class_id for i in items], dtype=np.int64)
                arrays["instance_pixel_counts"] = np.array([i.pixel_count for i in items], dtype=np.int64)
                arrays["instance_bboxes"] = np.array([i.bbox for i in items], dtype=np.int64).reshape(-1, 4)
                arrays["instance_centroids"] = np.array(
                    [i.centroid for i in items], dtype=np.float64
                ).reshape(-1, 2)
            if prediction.inverse_depth is not None:
                arrays["inverse_depth"] = prediction.inverse_depth
            buffer = io.BytesIO()
            np.savez(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()


def timings(clock: StageClock, started: float) -> Timings:
    """Per-stage milliseconds and the total since ``started`` (a ``time.perf_counter()``)."""
    return Timings(
        decode=clock.milliseconds("decode"),
        preprocess=clock.milliseconds("preprocess"),
        queue=clock.milliseconds("queue_wait"),
        inference=clock.milliseconds("inference"),
        postprocess=clock.milliseconds("postprocess"),
        encode=clock.milliseconds("encode"),
        total=round((time.perf_counter() - started) * 1000, 3),
    )
