"""A tiny ONNX model that honours the export contract, and fixtures to serve it in tests.

The model is built with the ``onnx`` helper API (no torch) and behaves predictably, so
tests can reason about its outputs from the pixels they send:

- ``semantic``: the dominant colour channel picks the class — green → road (0),
  red → car (13, a thing), blue → sky (10); ties go to road, so black is road.
- ``semantic_confidence``: softmax over the three channels (scaled by 1/32), max.
- ``instance_offsets``: every pixel points at the image centre, so each image has at
  most one instance, made of all its car pixels.
- ``inverse_depth``: the red channel / 255, in 1/m; pure blue sky is 0 (infinitely far).
"""

from __future__ import annotations

import functools
import io
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import numpy.typing as npt
import onnx
import pytest
from fastapi import FastAPI
from onnx import TensorProto, helper
from PIL import Image

from scene_contract.card import InputSpec, ModelCard, TaskUncertainty, TrainingInfo
from scene_contract.model import METADATA_KEY, SAMPLES_DIR
from service.main import create_app
from service.metrics import MULTIPROC_ENV
from service.settings import Settings
from training.data.classes import CLASSES, IGNORE_INDEX

MODEL_HEIGHT = 32
MODEL_WIDTH = 48
MODEL_NAME = "tiny-test"
MODEL_VERSION = "0.0.1"
ROAD, SKY, CAR = 0, 10, 13
CPU_ONLY = ["CPUExecutionProvider"]


def model_card(height: int = MODEL_HEIGHT, width: int = MODEL_WIDTH) -> ModelCard:
    """A valid model card for the tiny model (classes from the project's class table)."""
    sigmas = {"semantic": 0.5, "instance": 2.0, "depth": 1.0}
    return ModelCard(
        name=MODEL_NAME,
        version=MODEL_VERSION,
        backbone="none",
        precision="fp32",
        input=InputSpec(height=height, width=width, spatial_multiple=8),
        classes=CLASSES,
        ignore_index=IGNORE_INDEX,
        task_uncertainty={
            task: TaskUncertainty(2 * math.log(sigma), learned=True) for task, sigma in sigmas.items()
        },
        weighting="uncertainty",
        pretrained=None,
        metrics={"miou": 0.5},
        training=TrainingInfo(
            steps=10, data_source="procedural", resolution=(height, width), config_sha256="0" * 64
        ),
        exported_at="2026-12-04T00:00:00+00:00",
        versions={"scene_mtl": "test"},
    )


def build_tiny_model(path: Path, card: ModelCard | str | None = None) -> Path:
    """Write the tiny contract-conforming model (IR 10, opset 17) to ``path``.

    ``card``: its model card, or the metadata's text as is (to plant a broken one).
    """
    f32 = TensorProto.FLOAT

    def const(name: str, values: list[float] | list[int], dtype: int = f32) -> onnx.TensorProto:
        return helper.make_tensor(name, dtype, [len(values)], values)

    nodes = [
        helper.make_node("Cast", ["image"], ["rgb"], to=f32),
        helper.make_node("Transpose", ["rgb"], ["chw"], perm=[0, 3, 1, 2]),  # [N, 3, H, W]
        # Channel order (G, R, B) so ArgMax's first-index tie-break lands on road.
        helper.make_node("Gather", ["chw", "grb_order"], ["grb"], axis=1),
        helper.make_node("ArgMax", ["grb"], ["choice"], axis=1, keepdims=0),  # [N, H, W] int64
        helper.make_node("Gather", ["class_of_choice", "choice"], ["semantic"], axis=0),
        helper.make_node("Mul", ["grb", "one_32nd"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ReduceMax", ["probabilities"], ["semantic_confidence"], axes=[1], keepdims=0),
        helper.make_node("Gather", ["chw", "red_index"], ["red"], axis=1),  # [N, 1, H, W]
        helper.make_node("Mul", ["red", "one_255th"], ["inverse_depth"]),
        # Offsets to the image centre: ((H-1)/2 - y, (W-1)/2 - x) from coordinate grids.
        helper.make_node("Shape", ["red"], ["shape"]),
        helper.make_node("Gather", ["shape", "h_index"], ["h"], axis=0),
        helper.make_node("Gather", ["shape", "w_index"], ["w"], axis=0),
        helper.make_node("Cast", ["h"], ["h_f"], to=f32),
        helper.make_node("Cast", ["w"], ["w_f"], to=f32),
        helper.make_node("Range", ["zero", "h_f", "one"], ["ys"]),
        helper.make_node("Range", ["zero", "w_f", "one"], ["xs"]),
        helper.make_node("Sub", ["h_f", "one"], ["h_minus_1"]),
        helper.make_node("Mul", ["h_minus_1", "half"], ["cy"]),
        helper.make_node("Sub", ["w_f", "one"], ["w_minus_1"]),
        helper.make_node("Mul", ["w_minus_1", "half"], ["cx"]),
        helper.make_node("Sub", ["cy", "ys"], ["dy_column"]),
        helper.make_node("Sub", ["cx", "xs"], ["dx_row"]),
        helper.make_node("Unsqueeze", ["dy_column", "axis_1"], ["dy_h1"]),  # [H, 1]
        helper.make_node("Mul", ["red", "zero"], ["zeros"]),  # [N, 1, H, W]
        helper.make_node("Add", ["zeros", "dy_h1"], ["dy"]),
        helper.make_node("Add", ["zeros", "dx_row"], ["dx"]),
        helper.make_node("Concat", ["dy", "dx"], ["instance_offsets"], axis=1),
    ]
    initializers = [
        const("grb_order", [1, 0, 2], TensorProto.INT64),
        helper.make_tensor("class_of_choice", TensorProto.UINT8, [3], [ROAD, CAR, SKY]),
        helper.make_tensor("one_32nd", f32, [], [1 / 32]),
        helper.make_tensor("one_255th", f32, [], [1 / 255]),
        const("red_index", [0], TensorProto.INT64),
        helper.make_tensor("h_index", TensorProto.INT64, [], [2]),
        helper.make_tensor("w_index", TensorProto.INT64, [], [3]),
        helper.make_tensor("zero", f32, [], [0.0]),
        helper.make_tensor("one", f32, [], [1.0]),
        helper.make_tensor("half", f32, [], [0.5]),
        const("axis_1", [1], TensorProto.INT64),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_scene_mtl",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])],
        [
            helper.make_tensor_value_info("semantic", TensorProto.UINT8, ["N", "H", "W"]),
            helper.make_tensor_value_info("semantic_confidence", f32, ["N", "H", "W"]),
            helper.make_tensor_value_info("instance_offsets", f32, ["N", 2, "H", "W"]),
            helper.make_tensor_value_info("inverse_depth", f32, ["N", 1, "H", "W"]),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    text = card if isinstance(card, str) else (card or model_card()).to_json(indent=None)
    helper.set_model_props(model, {METADATA_KEY: text})
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def _settings(*, model_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model_path": model_path,
        "providers": CPU_ONLY,
        "intra_op_threads": 1,
        "batch_window_ms": 0.0,
        "max_batch_size": 4,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@asynccontextmanager
async def _serve(app: FastAPI, *, ready: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            if ready:
                await _wait_until_ready(client)
            yield client


async def _wait_until_ready(client: httpx.AsyncClient, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (await client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, "the service never became ready"
        await anyio.sleep(0.01)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


SAMPLE_COUNT = 3


def write_samples(model_path: Path, count: int = SAMPLE_COUNT) -> list[Path]:
    """``count`` distinct street-like PNGs at the tiny model's size in ``samples/`` beside it.

    Sample ``k``: blue sky over green road, with a red car that moves right with ``k``.
    """
    folder = model_path.parent / SAMPLES_DIR
    folder.mkdir(exist_ok=True)
    paths = []
    for k in range(count):
        image = np.zeros((MODEL_HEIGHT, MODEL_WIDTH, 3), dtype=np.uint8)
        image[: MODEL_HEIGHT // 3] = (0, 0, 255)
        image[MODEL_HEIGHT // 3 :] = (0, 200, 0)
        image[18:28, 4 + 8 * k : 20 + 8 * k] = (220, 0, 0)
        paths.append(folder / f"{k:03d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a valid card and its demo samples, built once per test session."""
    path = build_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")
    write_samples(path)
    return path


@pytest.fixture
def card() -> ModelCard:
    """The tiny model's card."""
    return model_card()


@pytest.fixture
def build_model(tmp_path: Path) -> Callable[..., Path]:
    """``build_model(card=None, name="model.onnx")``: write a tiny model, return its path."""

    def build(card: ModelCard | str | None = None, name: str = "model.onnx") -> Path:
        return build_tiny_model(tmp_path / name, card)

    return build


@pytest.fixture
def make_settings(model_path: Path) -> Callable[..., Settings]:
    """``make_settings(**overrides)``: test settings — the tiny model, CPU only, one ORT
    thread, no batching window, batches of at most 4 — with ``overrides`` applied."""
    return functools.partial(_settings, model_path=model_path)


@pytest.fixture
def serve() -> Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]:
    """``async with serve(app, ready=True) as client``: run the app's lifespan and talk to it
    in-process; with ``ready`` first wait for the background warm-up to finish."""
    return _serve


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client for a started, warm service with the default test settings."""
    async with _serve(create_app(settings)) as started:
        yield started


@pytest.fixture
def scene() -> npt.NDArray[np.uint8]:
    """``uint8 [60, 100, 3]``: blue sky on top, green road below, a red car in the middle third."""
    height, width = 60, 100
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[: height // 3, :, 2] = 255
    rgb[height // 3 :, :, 1] = 200
    rgb[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = (255, 0, 0)
    return rgb


@pytest.fixture
def scene_png(scene: npt.NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(scene).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _running_server(
    model: Path, log: Path, *args: str, env: dict[str, str] | None = None, timeout_s: float = 30
) -> Iterator[str]:
    """Start ``scene-serve --model MODEL ARGS`` on a free loopback port, wait until ready,
    yield its base URL, and stop it afterwards; the server's output goes to ``log``."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = {key: value for key, value in os.environ.items() if key != MULTIPROC_ENV}
    environment |= {"SCENE_PROVIDERS": "CPUExecutionProvider", "SCENE_INTRA_OP_THREADS": "1"}
    environment |= env or {}
    command = [sys.executable, "-m", "service.cli", "--model", str(model), "--host", "127.0.0.1"]
    with log.open("w") as output:
        server = subprocess.Popen(
            [*command, "--port", str(port), *args], env=environment, stdout=output, stderr=output
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"the server never became ready:\n{log.read_text()}"
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=15)


@pytest.fixture(scope="module")
def server(
    model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    running_server: Callable[..., AbstractContextManager[str]],
) -> Iterator[str]:
    """One real ``scene-serve`` on the tiny model, shared by a module's tests; its base URL."""
    with running_server(model_path, tmp_path_factory.mktemp("server") / "server.log") as base:
        yield base


@pytest.fixture(scope="session")
def running_server() -> Callable[..., AbstractContextManager[str]]:
    """``with running_server(model, log, *args, env=None) as base_url``: a real
    ``scene-serve`` process on a free loopback port, ready, stopped afterwards."""
    return _running_server
