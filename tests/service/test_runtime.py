"""The ORT runtime: provider choice, contract checks, warm-up gating, IO binding."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from scene_contract.model import METADATA_KEY
from service import runtime as runtime_module
from service.runtime import ModelLoadError, ModelRuntime, batch_plan, choose_providers
from service.settings import DEFAULT_PROVIDERS, Settings


def test_choose_providers_keeps_preference_order_and_drops_unavailable() -> None:
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(DEFAULT_PROVIDERS, available) == available
    with pytest.raises(ModelLoadError, match="none of the execution providers"):
        choose_providers(["TensorrtExecutionProvider"], ["CPUExecutionProvider"])


def test_default_providers_report_the_provider_really_in_use(make_settings: Callable[..., Settings]) -> None:
    # This ORT build lists the GPU providers; on a machine without a GPU they fail to
    # start and ORT falls back, so the provider must be read from the session.
    runtime = ModelRuntime.load(make_settings(providers=DEFAULT_PROVIDERS))
    assert runtime.provider == runtime._session.get_providers()[0]
    assert runtime.provider in DEFAULT_PROVIDERS


def test_a_cpu_only_host_says_once_and_plainly_which_provider_runs(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # onnxruntime-gpu lists its GPU providers on any host; without a GPU, asking for them
    # used to print screens of CUDA/TensorRT library errors before falling back.
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(DEFAULT_PROVIDERS))
    no_gpu = (0, "no CUDA driver (libcuda.so.1) on this host")
    monkeypatch.setattr(runtime_module, "cuda_devices", lambda: no_gpu)
    with caplog.at_level(logging.INFO, logger="service"):
        runtime = ModelRuntime.load(make_settings(providers=DEFAULT_PROVIDERS))
    assert runtime.provider == "CPUExecutionProvider"
    output = capfd.readouterr()
    assert "ExecutionProvider" not in output.out + output.err
    said = [record for record in caplog.records if "CUDAExecutionProvider" in record.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    message = said[0].getMessage()
    assert "no CUDA driver" in message and "running on CPUExecutionProvider" in message
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_load_reads_the_card_and_is_ready_only_after_warm_up(
    make_settings: Callable[..., Settings], card: dict[str, Any]
) -> None:
    runtime = ModelRuntime.load(make_settings())
    assert runtime.provider == "CPUExecutionProvider"
    assert runtime.card.name == card["name"]
    assert runtime.input_size == (card["input"]["height"], card["input"]["width"])
    assert not runtime.ready
    runtime.warm_up((1, 4))
    assert runtime.ready


def test_run_returns_the_contract_outputs(make_settings: Callable[..., Settings]) -> None:
    runtime = ModelRuntime.load(make_settings())
    height, width = runtime.input_size
    outputs = runtime.run(np.zeros((2, height, width, 3), dtype=np.uint8))
    assert outputs["semantic"].shape == (2, height, width) and outputs["semantic"].dtype == np.uint8
    assert outputs["semantic_confidence"].shape == (2, height, width)
    assert outputs["semantic_confidence"].dtype == np.float32
    assert outputs["instance_offsets"].shape == (2, 2, height, width)
    assert outputs["inverse_depth"].shape == (2, 1, height, width)


def test_io_binding_path_matches_plain_run(make_settings: Callable[..., Settings]) -> None:
    # The GPU path binds inputs and outputs; ORT's CPU provider supports the same calls,
    # so the code is checked here even without a GPU.
    plain = ModelRuntime.load(make_settings())
    bound = ModelRuntime(plain._session, plain.card, io_binding=True)
    height, width = plain.input_size
    images = np.random.default_rng(0).integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    expected, got = plain.run(images), bound.run(images)
    for name, values in expected.items():
        np.testing.assert_array_equal(got[name], values)


def test_v2_metadata_lists_tensors_with_dynamic_axes(
    make_settings: Callable[..., Settings], card: dict[str, Any]
) -> None:
    metadata = ModelRuntime.load(make_settings()).v2_metadata()
    assert metadata["name"] == card["name"] and metadata["versions"] == [card["version"]]
    assert metadata["platform"] == "onnxruntime"
    assert metadata["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in metadata["outputs"]}
    assert outputs == {
        "semantic": ("UINT8", [-1, -1, -1]),
        "semantic_confidence": ("FP32", [-1, -1, -1]),
        "instance_offsets": ("FP32", [-1, 2, -1, -1]),
        "inverse_depth": ("FP32", [-1, 1, -1, -1]),
    }


def test_missing_model_file_is_reported(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no model file"):
        ModelRuntime.load(make_settings(model_path=tmp_path / "absent.onnx"))


def test_model_without_card_is_refused(
    make_settings: Callable[..., Settings], build_model: Callable[..., Path]
) -> None:
    path = build_model()
    model = onnx.load(path)
    del model.metadata_props[:]
    onnx.save(model, path)
    with pytest.raises(ModelLoadError, match=METADATA_KEY):
        ModelRuntime.load(make_settings(model_path=path))


def test_card_with_a_missing_field_is_refused(
    make_settings: Callable[..., Settings], build_model: Callable[..., Path], card: dict[str, Any]
) -> None:
    del card["task_uncertainty"]
    with pytest.raises(ModelLoadError, match="task_uncertainty"):
        ModelRuntime.load(make_settings(model_path=build_model(card)))


def test_model_missing_an_output_is_refused(
    make_settings: Callable[..., Settings], build_model: Callable[..., Path]
) -> None:
    path = build_model()
    model = onnx.load(path)
    kept = [o for o in model.graph.output if o.name != "inverse_depth"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    onnx.save(model, path)
    with pytest.raises(ModelLoadError, match="inverse_depth"):
        ModelRuntime.load(make_settings(model_path=path))


def test_batching_is_for_gpus_and_cpus_run_one_image_per_core() -> None:
    cores = os.cpu_count() or 1
    assert batch_plan(Settings(), "CUDAExecutionProvider") == (1, 8)
    assert batch_plan(Settings(), "CPUExecutionProvider") == (cores, 1)
    chosen = Settings(max_batch_size=4, inference_streams=2)
    assert (
        batch_plan(chosen, "CPUExecutionProvider")
        == batch_plan(chosen, "TensorrtExecutionProvider")
        == (2, 4)
    )


def test_a_lone_run_gets_every_core_and_concurrent_runs_a_core_each(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    runtime = ModelRuntime.load(make_settings(intra_op_threads=0, inference_streams=2))
    assert runtime.lone_run_threads
    used: list[bool] = []
    second_started, first_may_finish = threading.Event(), threading.Event()
    real_run = ModelRuntime._run

    def spy(self: ModelRuntime, session: ort.InferenceSession, images: Any) -> Any:
        used.append(session is self._lone_session)
        if len(used) == 1:
            assert first_may_finish.wait(10)  # hold the first run until the second is in
        else:
            second_started.set()
        return real_run(self, session, images)

    monkeypatch.setattr(ModelRuntime, "_run", spy)
    image = np.zeros((1, 32, 48, 3), dtype=np.uint8)
    first = threading.Thread(target=runtime.run, args=(image,))
    first.start()
    second = threading.Thread(target=runtime.run, args=(image,))
    second.start()
    assert second_started.wait(10)
    first_may_finish.set()
    first.join(10)
    second.join(10)
    runtime.run(image)  # alone again
    assert used == [True, False, True]


def test_explicit_threads_or_one_stream_per_core_keep_a_single_session(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert not ModelRuntime.load(make_settings(intra_op_threads=1, inference_streams=2)).lone_run_threads
    assert not ModelRuntime.load(make_settings(intra_op_threads=0, inference_streams=1)).lone_run_threads
