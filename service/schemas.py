"""Response bodies, declared as pydantic models so /openapi.json documents them."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, create_model

from scene_contract.card import TaskUncertainty, TaskUncertaintyJSON
from scene_contract.vocabulary import DEPTH_OUTPUT, INSTANCES_OUTPUT, SEMANTIC_OUTPUT


class RequestedOutput(StrEnum):
    """What a /predict client can ask for with ``outputs=``."""

    semantic = SEMANTIC_OUTPUT
    instances = INSTANCES_OUTPUT
    depth = DEPTH_OUTPUT


class Resolution(StrEnum):
    """The size of the maps /predict returns.

    ``auto``: the uploaded image's size (after EXIF rotation) when that fits the output
    budget, else the largest size with the same aspect ratio that does; ``original``:
    the image's size, refused when over the budget; ``model``: the model's input size.
    """

    auto = "auto"
    original = "original"
    model = "model"


class ErrorDetail(BaseModel):
    code: str = Field(
        description="Machine-readable reason, e.g. 'corrupt_image'.", examples=["corrupt_image"]
    )
    message: str = Field(description="What went wrong, for people.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelInfo(BaseModel):
    name: str
    version: str
    execution_provider: str = Field(description="ONNX Runtime provider in use, e.g. 'CUDAExecutionProvider'.")


# A task's uncertainty is the model card's own object, answered as the card spells it
# (`TaskUncertainty.to_dict`). pydantic reads a standard-library TypedDict only on
# Python 3.12 and later, so the answer's schema is a model built from its annotations.
_UNCERTAINTY_FIELDS: dict[str, Any] = {
    key: (kind, ...) for key, kind in get_type_hints(TaskUncertaintyJSON).items()
}
_TaskUncertaintyAnswer: type[BaseModel] = create_model("TaskUncertainty", **_UNCERTAINTY_FIELDS)


def _answer(uncertainty: TaskUncertainty) -> BaseModel:
    return _TaskUncertaintyAnswer(**uncertainty.to_dict())


CardTaskUncertainty = Annotated[TaskUncertainty, PlainSerializer(_answer, return_type=_TaskUncertaintyAnswer)]


class ClassPresence(BaseModel):
    train_id: int
    name: str
    pixel_fraction: float = Field(ge=0, le=1, description="Share of the returned map's pixels.")
    mean_confidence: float = Field(ge=0, le=1, description="Mean softmax probability over those pixels.")


class SemanticResult(BaseModel):
    png: str = Field(description="Base64 8-bit grayscale PNG of train ids (255 = ignore).")
    classes: list[ClassPresence] = Field(description="Classes present, most pixels first.")


class InstanceItem(BaseModel):
    id: int = Field(description="The instance's value in the instance PNG (1..K; 0 = no instance).")
    class_name: str = Field(serialization_alias="class", description="Class name, e.g. 'car'.")
    class_id: int = Field(description="Train id of the class.")
    pixel_count: int = Field(description="Pixels of the instance in the returned map.")
    bbox: tuple[int, int, int, int] = Field(
        description="(x0, y0, x1, y1): pixel edges in the returned map; x1 and y1 are exclusive."
    )
    centroid: tuple[float, float] = Field(
        description="(x, y): mean of the instance's pixel centres (a pixel's centre is at +0.5)."
    )


class InstancesResult(BaseModel):
    items: list[InstanceItem]
    png: str = Field(description="Base64 16-bit grayscale PNG of instance ids (0 = none).")


class DepthResult(BaseModel):
    png: str = Field(
        description="Base64 16-bit grayscale PNG of depth: metres = value × scale_to_metres, "
        "except sky_value (sky, infinitely far) and invalid_value (no valid prediction)."
    )
    scale_to_metres: float = Field(description="Metres per PNG unit.")
    min_m: float | None = Field(description="Nearest depth in the map, metres (None if all sky).")
    max_m: float | None = Field(
        description="Farthest finite depth in the map, metres, at most what the PNG can express "
        "(1023.97 m; see beyond_range). None if all sky."
    )
    sky_value: int = Field(description="PNG value of sky.")
    invalid_value: int = Field(description="PNG value of pixels without a valid prediction.")
    beyond_range: bool = Field(
        default=False,
        description="Some pixels are farther than the PNG can express: they read as max_m, meaning "
        "'this far or farther'.",
    )


class OverlayResult(BaseModel):
    """Pictures for people, at the returned maps' size; not meant to be parsed."""

    png: str = Field(
        description="Base64 RGB PNG: the image with classes and instance outlines drawn over it."
    )
    instances_png: str | None = Field(
        default=None,
        description="Base64 RGB PNG: the image with one colour per instance (when instances are asked for).",
    )
    depth_png: str | None = Field(
        default=None,
        description="Base64 RGB PNG: depth as colours, near bright, far dark (when depth is asked for).",
    )


class MapSize(BaseModel):
    """Which size the maps came back at, and why."""

    requested: Resolution = Field(description="The resolution the request asked for.")
    returned: Literal["original", "scaled", "model"] = Field(
        description="'original': the image's own size; 'scaled': smaller, aspect ratio kept, to fit "
        "the output budget; 'model': the model's input size."
    )
    image_width: int = Field(description="Width of the uploaded image (after EXIF rotation).")
    image_height: int = Field(description="Height of the uploaded image (after EXIF rotation).")
    reason: str = Field(description="Why this size, for people.")


class Timings(BaseModel):
    """Milliseconds spent in each stage, keyed as `scene_contract.vocabulary.TIMING_KEYS`
    says; ``total`` also covers reading the body."""

    decode: float
    preprocess: float
    queue: float
    inference: float
    postprocess: float
    encode: float
    total: float


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: ModelInfo
    task_uncertainty: Mapping[str, CardTaskUncertainty] = Field(
        description="Each task's homoscedastic uncertainty from the model card, keyed by task: σ, "
        "s = log σ² (the quantity training optimised) and learned (false when σ restates a "
        "fixed loss weight, σ = sqrt(c / w); null if the card does not say)."
    )
    width: int = Field(description="Width of the returned maps in pixels.")
    height: int = Field(description="Height of the returned maps in pixels.")
    resolution: MapSize
    batch_size: int = Field(description="Images in the ONNX Runtime run this one was part of.")
    semantic: SemanticResult | None = None
    instances: InstancesResult | None = None
    depth: DepthResult | None = None
    overlay: OverlayResult | None = None
    timings_ms: Timings


class Status(BaseModel):
    status: str


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2Error(BaseModel):
    """The open inference protocol's error body (every error under /v2)."""

    error: str


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str] = Field(description="Protocol extensions served, e.g. 'binary_tensor_data'.")


class V2Tensor(BaseModel):
    name: str
    datatype: str = Field(examples=["UINT8", "FP32"])
    shape: list[int] = Field(description="-1 marks a dynamic axis.")


class V2ModelMetadata(BaseModel):
    """KServe open inference protocol (v2) model metadata."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[V2Tensor]
    outputs: list[V2Tensor]


ModelCardJSON = dict[str, Any]
