"""One /predict request's data: what the client asked for, the stage clock, the maps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from service import metrics
from service.instances import Instance
from service.metrics import Stage
from service.schemas import MapSize, RequestedOutput, Resolution

RGBImage = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class PredictOptions:
    """What the client asked for (query parameters of /predict)."""

    outputs: frozenset[RequestedOutput] = frozenset(RequestedOutput)
    resolution: Resolution = Resolution.auto
    overlay: bool = False
    overlay_alpha: float = 0.5
    npz: bool = False  # the raw arrays as .npz instead of JSON


@dataclass
class StageClock:
    """Seconds per stage for one request; each stage is also observed in Prometheus."""

    seconds: dict[Stage, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: Stage) -> Iterator[None]:
        started = time.perf_counter()
        yield
        # Only completed stages are observed, so failures do not skew the histograms.
        self.record(name, time.perf_counter() - started)

    def record(self, name: Stage, seconds: float) -> None:
        self.seconds[name] = seconds
        metrics.STAGE_LATENCY.labels(stage=name).observe(seconds)

    def milliseconds(self, name: Stage) -> float:
        return round(self.seconds.get(name, 0.0) * 1000, 3)


@dataclass(frozen=True)
class Prediction:
    """Everything /predict returns, at the returned resolution ``[H, W]``.

    Attributes:
        image: uint8 [H, W, 3] RGB, the picture the maps describe, for the overlay; None
            when no overlay was asked for (the upload is then decoded only as far as the
            model needs).
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
        map_size: why the maps have their size (`service.limits.choose_map_size`).
    """

    image: RGBImage | None
    semantic: npt.NDArray[np.uint8]
    semantic_confidence: npt.NDArray[np.float32] | None
    instance_map: npt.NDArray[np.uint16] | None
    instances: tuple[Instance, ...]
    instance_offsets: npt.NDArray[np.float32] | None
    inverse_depth: npt.NDArray[np.float32] | None
    batch_size: int
    clock: StageClock
    map_size: MapSize

    @property
    def height(self) -> int:
        return int(self.semantic.shape[0])

    @property
    def width(self) -> int:
        return int(self.semantic.shape[1])
