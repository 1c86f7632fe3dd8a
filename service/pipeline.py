"""The /predict stages: decode → preprocess → infer → postprocess → encode.

Each stage is a plain function of arrays, timed into
``scene_stage_duration_seconds{stage=...}``, the response's ``timings_ms`` and its
``Server-Timing`` header. The CPU-heavy stages run in worker threads, so a large image
never stalls the event loop; inference runs in the micro-batcher's thread.

Resolutions: the model sees every image resized to the training resolution in its card
(`service.imaging`). Maps come back at the uploaded image's size by default, scaled down
(aspect ratio kept) when that is over the output budget, at the image's size whatever
it is with ``resolution=original``, or at the model's size with ``resolution=model``
(`service.limits.choose_map_size`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from anyio import CapacityLimiter, to_thread

from scene_contract.model import (
    INSTANCE_OFFSETS,
    INVERSE_DEPTH,
    OUTPUT_NAMES,
    SEMANTIC,
    SEMANTIC_CONFIDENCE,
)
from service.batching import MicroBatcher
from service.errors import InferenceTimeoutError
from service.imaging import RGBImage, decode_upload, preprocess, resize_bilinear, resize_nearest
from service.instances import Instance, measure_resized
from service.limits import choose_map_size
from service.metrics import Stage
from service.postprocess import group_instances
from service.prediction import Prediction, PredictOptions, StageClock
from service.responses import ResponseEncoder
from service.runtime import ModelRuntime, Outputs
from service.schemas import MapSize, RequestedOutput
from service.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    """A finished /predict: the body, its media type and where the time went."""

    body: bytes
    media_type: str
    clock: StageClock
    total_s: float
    map_size: MapSize
    height: int
    width: int

    @property
    def headers(self) -> dict[str, str]:
        """``Server-Timing`` (each stage and the total, in milliseconds) and ``Scene-Map-Size``
        (the maps' size and why, for .npz answers, whose arrays carry no JSON beside them)."""
        stages = [f"{name.value};dur={seconds * 1000:.3f}" for name, seconds in self.clock.seconds.items()]
        note = self.map_size
        return {
            "Server-Timing": ", ".join([*stages, f"total;dur={self.total_s * 1000:.3f}"]),
            "Scene-Map-Size": f"{note.returned}; maps={self.width}x{self.height}; "
            f"image={note.image_width}x{note.image_height}",
        }


class Pipeline:
    """Runs one request's image through the stages; shared by all requests of an app."""

    def __init__(self, runtime: ModelRuntime, batcher: MicroBatcher, settings: Settings) -> None:
        self.runtime = runtime
        self.batcher = batcher
        self.settings = settings
        self.responses = ResponseEncoder(runtime.card, runtime.provider)
        # Threads doing decode or postprocess + encode at once. Each holds full-size
        # arrays, so this bounds memory as well as CPU.
        self.cpu_limiter = CapacityLimiter(settings.cpu_concurrency or os.cpu_count() or 1)

    async def predict(self, data: bytes, options: PredictOptions) -> Answer:
        """Decode, preprocess, batch-infer, postprocess and encode ``data`` (encoded image bytes).

        The whole request gets ``request_timeout_s``: past it the client gets
        `InferenceTimeoutError` (a stage already running in a thread finishes first).
        """
        timeout_s = self.settings.request_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return await self._predict(data, options)
        except TimeoutError:
            raise InferenceTimeoutError(f"no answer within {timeout_s:g} s; server overloaded") from None

    async def _predict(self, data: bytes, options: PredictOptions) -> Answer:
        started = time.perf_counter()
        clock = StageClock()
        with self.batcher.incoming():
            prepared = await to_thread.run_sync(self._prepare, data, options, clock, limiter=self.cpu_limiter)
        picture, (size, map_size), model_input = prepared
        result = await self.batcher.infer(model_input, self.settings.request_timeout_s)
        clock.record(Stage.QUEUE_WAIT, result.queue_wait_s)
        clock.record(Stage.INFERENCE, result.inference_s)

        # Postprocessing and encoding share one thread hop: at 128x256 each hop is a
        # noticeable share of what the service adds to the model's time.
        def finish() -> Answer:
            with clock.stage(Stage.POSTPROCESS):
                prediction = self.postprocess(
                    result.outputs, size, picture, options, result.batch_size, clock, map_size
                )
            body, media_type = self.responses.encode(prediction, options, started)  # timed inside
            return Answer(body, media_type, clock, time.perf_counter() - started, map_size, *size)

        return await to_thread.run_sync(finish, limiter=self.cpu_limiter)

    def _map_size(
        self, image_size: tuple[int, int], options: PredictOptions
    ) -> tuple[tuple[int, int], MapSize]:
        return choose_map_size(
            image_size, options.resolution, self.runtime.input_size, self.settings.max_output_pixels
        )

    async def infer(self, images: npt.NDArray[np.uint8] | list[bytes]) -> Outputs:
        """The model's outputs for a batch, for the open inference protocol.

        ``images`` is ``uint8 [N, H, W, 3]`` at the model's input size, or N encoded
        images, decoded and resized as for /predict. Each image goes through the
        micro-batcher on its own; the outputs come back stacked, batch axis first, at
        the model's input size. The whole call gets ``request_timeout_s``; when one
        image fails, the others are cancelled.
        """
        timeout_s = self.settings.request_timeout_s
        clock = StageClock()
        try:
            async with asyncio.timeout(timeout_s):
                if isinstance(images, list):
                    inputs = await _all(self._prepare_encoded(data, clock) for data in images)
                else:
                    inputs = list(images)
                results = await _all(self.batcher.infer(image, timeout_s) for image in inputs)
        except TimeoutError:
            raise InferenceTimeoutError(f"no answer within {timeout_s:g} s; server overloaded") from None
        clock.record(Stage.QUEUE_WAIT, max(result.queue_wait_s for result in results))
        clock.record(Stage.INFERENCE, max(result.inference_s for result in results))
        return {name: np.stack([result.outputs[name] for result in results]) for name in OUTPUT_NAMES}

    async def _prepare_encoded(self, data: bytes, clock: StageClock) -> RGBImage:
        with self.batcher.incoming():
            _, _, model_input = await to_thread.run_sync(
                self._prepare, data, PredictOptions(), clock, limiter=self.cpu_limiter
            )
        return model_input

    def _prepare(
        self, data: bytes, options: PredictOptions, clock: StageClock
    ) -> tuple[RGBImage | None, tuple[tuple[int, int], MapSize], RGBImage]:
        """The picture for the overlay at the maps' size (None without an overlay), the maps' size
        (H, W) with why it was chosen, and the model input."""
        model_size = self.runtime.input_size
        with clock.stage(Stage.DECODE):
            # A JPEG is decoded only as far as the model input, and the overlay's picture, need.
            def needed(image_size: tuple[int, int]) -> tuple[int, int]:
                if not options.overlay:
                    return model_size
                height, width = self._map_size(image_size, options)[0]
                return max(height, model_size[0]), max(width, model_size[1])

            image, image_size = decode_upload(data, self.settings.max_pixels, needed)
        chosen = self._map_size(image_size, options)
        with clock.stage(Stage.PREPROCESS):
            model_input = preprocess(image, model_size, self.runtime.card.input.resize)
            picture = None
            if options.overlay:
                picture = model_input if chosen[0] == model_size else preprocess(image, chosen[0])
        return picture, chosen, model_input

    def postprocess(
        self,
        outputs: Outputs,
        size: tuple[int, int],
        image: RGBImage | None,
        options: PredictOptions,
        batch_size: int,
        clock: StageClock,
        map_size: MapSize,
    ) -> Prediction:
        """Group instances at the model's resolution, then bring the asked-for maps to ``size`` (H, W).

        ``image`` is the picture at ``size`` for the overlay, None when none was asked for.
        """
        semantic = outputs[SEMANTIC]  # uint8 [h, w]
        offsets = outputs[INSTANCE_OFFSETS]  # float32 [2, h, w], pixels of the model input
        want = options.outputs
        instance_map = confidence = inverse_depth = instance_offsets = None
        instances: tuple[Instance, ...] = ()
        if RequestedOutput.semantic in want:
            confidence = resize_bilinear(outputs[SEMANTIC_CONFIDENCE], size)
        if RequestedOutput.instances in want or options.overlay:
            # Offsets are in model pixels, so grouping happens at the model's resolution;
            # the instances are measured once, exactly as on the map that is returned.
            grouped = group_instances(
                semantic, offsets, self.runtime.card.thing_ids, method=self.settings.instance_method
            )
            instance_map = resize_nearest(grouped.instance_map, size)
            instances = measure_resized(grouped.instance_map, grouped.class_of, size)
        if RequestedOutput.instances in want:
            scale_y, scale_x = size[0] / semantic.shape[0], size[1] / semantic.shape[1]
            instance_offsets = np.stack(
                [resize_bilinear(offsets[0], size) * scale_y, resize_bilinear(offsets[1], size) * scale_x]
            )
        if RequestedOutput.depth in want:
            model_depth = outputs[INVERSE_DEPTH][0]  # float32 [h, w], 1/m
            # Bilinear blending would give sky pixels a finite depth; sky stays exactly 0.
            sky = resize_nearest(model_depth, size) == 0
            inverse_depth = np.where(sky, np.float32(0.0), resize_bilinear(model_depth, size))
        return Prediction(
            image=image,
            semantic=resize_nearest(semantic, size),
            semantic_confidence=confidence,
            instance_map=instance_map,
            instances=instances,
            instance_offsets=instance_offsets,
            inverse_depth=inverse_depth,
            batch_size=batch_size,
            clock=clock,
            map_size=map_size,
        )


async def _all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """The results in order; the first failure cancels the rest (so no image is run for nobody)."""
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
