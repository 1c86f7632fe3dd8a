"""Checkpoint to ONNX: the graph, its model card, fp16 and int8 variants, and verification.

The exported graph takes ``uint8 [N, H, W, 3]`` RGB images and does the rest inside:
conversion to float, normalisation, the network, and the argmax over classes, so a
GPU never copies C x H x W logits back and no client repeats the preprocessing.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import torch
from torch import Tensor, nn

from scene_contract.card import ModelCard
from scene_contract.model import (
    INPUT_NAME,
    INSTANCE_OFFSETS,
    INVERSE_DEPTH,
    MAX_IR_VERSION,
    METADATA_KEY,
    OUTPUT_NAMES,
    SEMANTIC_CONFIDENCE,
)
from training.data.procedural import ProceduralScenes
from training.model import SceneNetwork, to_model_input

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """Export or verification failed; the message says which check and by how much."""


class InferenceGraph(nn.Module):
    """The model as served: ``uint8 [N, H, W, 3]`` in, the four contract outputs out."""

    def __init__(self, model: SceneNetwork) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x = to_model_input(image)
        out = self.model(x)
        # Classes on the last axis, [N, H, W, C]: ONNX Runtime's softmax and reductions
        # over the class axis of [N, C, H, W] stride through memory and took half the
        # model's CPU time at 128x256; along the last axis they are vectorised. Same
        # values, so the same labels and confidences (docs/benchmarks.md).
        logits = out["semantic_logits"].permute(0, 2, 3, 1)
        confidence, label = torch.softmax(logits, dim=-1).max(dim=-1)
        return label.to(torch.uint8), confidence, out["instance_offsets"], out["inverse_depth"]


def export_fp32(
    model: SceneNetwork,
    path: Path,
    height: int,
    width: int,
    graph_type: type[InferenceGraph] = InferenceGraph,
) -> None:
    """Trace ``model``, wrapped in ``graph_type``, to ONNX at ``path`` with a dynamic batch.

    Height and width are dynamic too, unless the model computes sizes from its input
    shape in Python (``fixed_input_size``, e.g. ESPNetv2's pyramid pooling): then the
    graph is traced, and valid, at ``height`` x ``width`` only, as its card says.
    """
    graph = graph_type(model).eval()
    example = torch.zeros(2, height, width, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=1024)
    image_dims: dict[int, Any] = {0: batch}
    if not model.fixed_input_size:
        image_dims[1] = torch.export.Dim("height", min=32, max=8192)
        image_dims[2] = torch.export.Dim("width", min=32, max=8192)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"image": image_dims},
            opset_version=18,
            verbose=False,
        )
    assert program is not None
    program.save(str(path))


def finalize(path: Path, card: ModelCard) -> None:
    """Write the model card into the metadata, cap the IR version, and check the file."""
    model = onnx.load(str(path))
    # onnxruntime refuses IR versions newer than it knows; opset 18 needs no more than IR 8.
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, card.to_json(indent=None)
    model.producer_name, model.doc_string = (
        "scene-mtl",
        f"{card.name} {card.version} ({card.precision})",
    )
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def convert_fp16(source: Path, target: Path) -> None:
    """A float16 copy for GPUs; the uint8 input and float32 outputs keep their types."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.save(half, str(target))


def store_weights_fp16(source: Path, target: Path, min_elements: int = 1024) -> int:
    """Store the large float32 initializers of ``source`` as float16, each behind a Cast.

    The graph still computes in float32; only the stored weights are rounded (relative
    error <= 2**-11), which halves the file. ONNX Runtime folds the Casts into float32
    constants when it loads the model, so it runs as fast as the float32 file. Small
    tensors (biases, scalars) and any value float16 cannot hold stay float32. Returns
    the number of initializers converted.
    """
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    initializers, casts = [], []
    for tensor in graph.initializer:
        values = numpy_helper.to_array(tensor) if tensor.data_type == TensorProto.FLOAT else None
        if values is None or values.size < min_elements or np.abs(values).max() > np.finfo(np.float16).max:
            initializers.append(tensor)
            continue
        half = numpy_helper.from_array(values.astype(np.float16), f"{tensor.name}__fp16")
        initializers.append(half)
        casts.append(helper.make_node("Cast", [half.name], [tensor.name], to=TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    nodes = [*casts, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(target))
    return len(casts)


class _SceneCalibration:
    """Generated scenes fed to the int8 calibrator, one image at a time."""

    def __init__(self, images: list[npt.NDArray[np.uint8]]) -> None:
        self._items: Iterator[npt.NDArray[np.uint8]] = iter(images)

    def get_next(self) -> dict[str, npt.NDArray[np.uint8]] | None:
        image = next(self._items, None)
        return None if image is None else {INPUT_NAME: image[None]}

    def rewind(self) -> None:  # the calibrator may ask; one pass is all it needs
        pass


def quantize_int8(source: Path, target: Path, calibration: list[npt.NDArray[np.uint8]]) -> None:
    """Static QDQ int8 quantisation for CPUs (per-channel weights), calibrated on ``calibration``.

    Only convolutions are quantised: the float tail (softmax, argmax, resizes) stays
    exact, which is where int8 would cost the most accuracy for the least speed.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_name(target.stem + ".prep.onnx")
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            _SceneCalibration(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        prepared.unlink(missing_ok=True)
        for extra in target.parent.glob(target.stem + ".prep*"):
            extra.unlink(missing_ok=True)


@dataclass(frozen=True)
class Tolerance:
    """How close a variant must stay to PyTorch: per float output max and mean |Δ| (in units
    of `OUTPUT_SCALE`), and label agreement."""

    max_abs: float | None
    mean_abs: float | None
    label_agreement: float


# What one unit of each float output's tolerance is: a probability and an inverse depth
# (1/m) are at most about 1; offsets are tens of pixels, so their tolerance is per 10 px
# (a mean 0.05 px for float16-stored weights: far below any offset error that matters).
OUTPUT_SCALE = {SEMANTIC_CONFIDENCE: 1.0, INSTANCE_OFFSETS: 10.0, INVERSE_DEPTH: 1.0}

TOLERANCES = {
    "fp32": Tolerance(max_abs=1e-4, mean_abs=None, label_agreement=0.999),
    # Reduced precision is judged on averages: single pixels near a class boundary may flip.
    "fp16": Tolerance(max_abs=None, mean_abs=0.05, label_agreement=0.99),
    # float32 arithmetic on weights rounded to float16: close to fp32, not bit-close.
    "fp32-fp16weights": Tolerance(max_abs=None, mean_abs=5e-3, label_agreement=0.995),
    "int8": Tolerance(max_abs=None, mean_abs=None, label_agreement=0.80),
}


@dataclass
class Verification:
    precision: str
    inputs: int
    label_agreement: float
    max_abs: dict[str, float]
    mean_abs: dict[str, float]
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        errors = ", ".join(f"{k} max {self.max_abs[k]:.2e} mean {self.mean_abs[k]:.2e}" for k in self.max_abs)
        return f"{self.precision}: labels agree on {100 * self.label_agreement:.3f}% of pixels; {errors}"


def verification_images(height: int, width: int, scenes: int = 4, seed: int = 0) -> npt.NDArray[np.uint8]:
    """Random noise images and generated test scenes, ``uint8 [N, H, W, 3]``."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, size=(2, height, width, 3), dtype=np.uint8)
    generated = ProceduralScenes(split="test", seed=seed + 7919, count=scenes, height=height, width=width)
    return np.concatenate([noise, np.stack([generated[i].image for i in range(scenes)])])


def verify(
    path: Path, model: SceneNetwork, images: npt.NDArray[np.uint8], precision: str, batch_size: int = 2
) -> Verification:
    """Run ``path`` in ONNX Runtime on the CPU and PyTorch on ``images``; compare every output."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph = InferenceGraph(model).eval()
    agree = total = 0
    max_abs = dict.fromkeys(OUTPUT_NAMES[1:], 0.0)
    abs_sum = dict.fromkeys(OUTPUT_NAMES[1:], 0.0)
    count = dict.fromkeys(OUTPUT_NAMES[1:], 0)
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        onnx_outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        with torch.no_grad():
            torch_outputs = [t.numpy() for t in graph(torch.from_numpy(batch))]
        agree += int((onnx_outputs[0] == torch_outputs[0]).sum())
        total += onnx_outputs[0].size
        for name, got, want in zip(OUTPUT_NAMES[1:], onnx_outputs[1:], torch_outputs[1:], strict=True):
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            max_abs[name] = max(max_abs[name], float(diff.max()))
            abs_sum[name] += float(diff.sum())
            count[name] += diff.size
    mean_abs = {k: abs_sum[k] / count[k] for k in abs_sum}
    tolerance = TOLERANCES[precision]
    failures = []
    if agree / total < tolerance.label_agreement:
        failures.append(
            f"semantic labels agree on {100 * agree / total:.3f}% < {100 * tolerance.label_agreement}%"
        )
    for name in max_abs:
        scale = OUTPUT_SCALE[name]
        if tolerance.max_abs is not None and max_abs[name] > tolerance.max_abs * scale:
            failures.append(f"{name}: max |difference| {max_abs[name]:.3e} > {tolerance.max_abs * scale:.0e}")
        if tolerance.mean_abs is not None and mean_abs[name] > tolerance.mean_abs * scale:
            failures.append(
                f"{name}: mean |difference| {mean_abs[name]:.3e} > {tolerance.mean_abs * scale:.0e}"
            )
    return Verification(precision, len(images), agree / total, max_abs, mean_abs, failures)
