"""/predict's response bodies: JSON with PNGs and tables, or the raw arrays as .npz.

Everything the bodies say about the model (class names and colours, each task's σ)
comes from the model card.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from scene_contract import drawing
from scene_contract.card import ModelCard
from scene_contract.vocabulary import TIMING_KEYS
from service import encoding
from service.metrics import Stage
from service.prediction import Prediction, PredictOptions, StageClock
from service.schemas import (
    ClassPresence,
    DepthResult,
    InstanceItem,
    InstancesResult,
    ModelInfo,
    OverlayResult,
    PredictResponse,
    RequestedOutput,
    SemanticResult,
    Timings,
)

NPZ_MEDIA_TYPE = "application/x-npz"
JSON_MEDIA_TYPE = "application/json"


class ResponseEncoder:
    """Builds the bodies for one model; shared by all requests."""

    def __init__(self, card: ModelCard, provider: str) -> None:
        self.card = card
        self.provider = provider
        self.palette = drawing.palette((c.train_id, c.color) for c in card.classes)

    def encode(self, prediction: Prediction, options: PredictOptions, started: float) -> tuple[bytes, str]:
        """The body and its media type, as ``options`` asked (JSON unless ``options.npz``)."""
        if options.npz:
            return self.npz(prediction), NPZ_MEDIA_TYPE
        # Serialised here, in the worker thread: FastAPI would otherwise re-validate the
        # response and encode it on the event loop.
        body = self.json(prediction, options, started).model_dump_json(by_alias=True)
        return body.encode(), JSON_MEDIA_TYPE

    def json(self, prediction: Prediction, options: PredictOptions, started: float) -> PredictResponse:
        """The JSON body: PNGs as base64, class and instance tables, timings."""
        card = self.card
        clock = prediction.clock
        with clock.stage(Stage.ENCODE):
            semantic = self._semantic(prediction)
            instances = self._instances(prediction) if _wants_instances(prediction, options) else None
            depth = self._depth(prediction)
            overlay = self._overlay(prediction, options) if options.overlay else None
        return PredictResponse(
            model=ModelInfo(name=card.name, version=card.version, execution_provider=self.provider),
            task_uncertainty=card.task_uncertainty,
            width=prediction.width,
            height=prediction.height,
            resolution=prediction.map_size,
            batch_size=prediction.batch_size,
            semantic=semantic,
            instances=instances,
            depth=depth,
            overlay=overlay,
            timings_ms=timings(clock, started),
        )

    def _semantic(self, prediction: Prediction) -> SemanticResult | None:
        if prediction.semantic_confidence is None:
            return None
        return SemanticResult(
            png=encoding.to_base64(encoding.semantic_png(prediction.semantic)),
            classes=classes_present(prediction.semantic, prediction.semantic_confidence, self.card),
        )

    def _instances(self, prediction: Prediction) -> InstancesResult:
        assert prediction.instance_map is not None
        names = self.card.class_names
        return InstancesResult(
            items=[
                InstanceItem(
                    id=item.id,
                    class_name=names.get(item.class_id, f"train id {item.class_id}"),
                    class_id=item.class_id,
                    pixel_count=item.pixel_count,
                    bbox=item.bbox,
                    centroid=item.centroid,
                )
                for item in prediction.instances
            ],
            png=encoding.to_base64(encoding.instance_png(prediction.instance_map)),
        )

    def _depth(self, prediction: Prediction) -> DepthResult | None:
        if prediction.inverse_depth is None:
            return None
        png, scale = encoding.depth_png(prediction.inverse_depth)
        return DepthResult(
            png=encoding.to_base64(png),
            scale_to_metres=scale.scale_to_metres,
            min_m=scale.min_m,
            max_m=scale.max_m,
            sky_value=scale.sky_value,
            invalid_value=scale.invalid_value,
            beyond_range=scale.beyond_range,
        )

    def _overlay(self, prediction: Prediction, options: PredictOptions) -> OverlayResult | None:
        """The image under the semantic colours, and under the instances and depth where asked for."""
        image = prediction.image
        if image is None:
            return None
        alpha = options.overlay_alpha
        overlay = encoding.overlay_png(
            image, prediction.semantic, prediction.instance_map, self.palette, alpha
        )
        instance_map = prediction.instance_map if _wants_instances(prediction, options) else None
        instances_png = None
        if instance_map is not None:
            instances_png = encoding.to_base64(encoding.instances_overlay_png(image, instance_map, alpha))
        depth_png = None
        if prediction.inverse_depth is not None:
            depth_png = encoding.to_base64(encoding.depth_color_png(prediction.inverse_depth))
        return OverlayResult(
            png=encoding.to_base64(overlay), instances_png=instances_png, depth_png=depth_png
        )

    def npz(self, prediction: Prediction) -> bytes:
        """The raw arrays as an uncompressed ``.npz`` (no pickle needed to read it).

        Arrays: ``semantic`` uint8 [H, W] and ``semantic_confidence`` float32 [H, W];
        ``instance_map`` uint16 [H, W], ``instance_offsets`` float32 [2, H, W] (pixels,
        (dy, dx)), ``instance_ids``/``instance_class_ids``/``instance_pixel_counts`` int64
        [K], ``instance_bboxes`` int64 [K, 4] (x0, y0, x1, y1), ``instance_centroids``
        float64 [K, 2] (x, y); ``inverse_depth`` float32 [H, W] (1/m, 0 = sky) — each
        group only when its output was asked for (the prediction holds only those).
        """
        arrays: dict[str, npt.NDArray[Any]] = {}
        with prediction.clock.stage(Stage.ENCODE):
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


def _wants_instances(prediction: Prediction, options: PredictOptions) -> bool:
    """Whether the body carries instances: the prediction grouped them and the request asked."""
    return prediction.instance_map is not None and RequestedOutput.instances in options.outputs


def classes_present(
    semantic: npt.NDArray[np.uint8], confidence: npt.NDArray[np.float32], card: ModelCard
) -> list[ClassPresence]:
    """Classes in ``semantic`` (uint8 [H, W]) with pixel share and mean confidence, largest first."""
    names = card.class_names
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


def timings(clock: StageClock, started: float) -> Timings:
    """Per-stage milliseconds and the total since ``started`` (a ``time.perf_counter()``)."""
    stages = {TIMING_KEYS[stage]: clock.milliseconds(stage) for stage in Stage}
    return Timings(**stages, total=round((time.perf_counter() - started) * 1000, 3))
