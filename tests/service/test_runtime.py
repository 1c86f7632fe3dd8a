"""The ORT runtime: provider choice, contract checks, warm-up gating, IO binding."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from scene_contract.card import ModelCard
from scene_contract.model import METADATA_KEY
from service import runtime as runtime_module
from service.gpu import WORKER_SLOTS_ENV, device_for_worker
from service.runtime import ModelLoadError, ModelRuntime, batch_plan, choose_providers, provider_options
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
    make_settings: Callable[..., Settings], card: ModelCard
) -> None:
    runtime = ModelRuntime.load(make_settings())
    assert runtime.provider == "CPUExecutionProvider"
    assert runtime.card.name == card.name
    assert runtime.input_size == (card.input.height, card.input.width)
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


def test_v2_metadata_gives_the_tensors_at_the_cards_input_size(
    make_settings: Callable[..., Settings], card: ModelCard
) -> None:
    # The graph leaves batch, height and width open; the service runs every image at the
    # card's size, so that is the shape /v2/models/{name}/infer takes. The batch stays open.
    metadata = ModelRuntime.load(make_settings()).v2_metadata()
    assert metadata["name"] == card.name and metadata["versions"] == [card.version]
    assert metadata["platform"] == "onnxruntime"
    height, width = card.input.height, card.input.width
    assert metadata["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, height, width, 3]}]
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in metadata["outputs"]}
    assert outputs == {
        "semantic": ("UINT8", [-1, height, width]),
        "semantic_confidence": ("FP32", [-1, height, width]),
        "instance_offsets": ("FP32", [-1, 2, height, width]),
        "inverse_depth": ("FP32", [-1, 1, height, width]),
    }


def test_the_served_name_is_a_setting(make_settings: Callable[..., Settings], card: ModelCard) -> None:
    runtime = ModelRuntime.load(make_settings(model_name="scene-mtl"))
    assert runtime.name == runtime.v2_metadata()["name"] == "scene-mtl"
    assert runtime.card.name == card.name


def test_provider_options_carry_the_gpu_settings(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        cuda_mem_limit_bytes=6 * 2**30,
        cudnn_conv_algo_search="HEURISTIC",
        trt_engine_cache_dir=tmp_path / "engines",
        trt_fp16=True,
    )
    configured = dict(provider_options(list(DEFAULT_PROVIDERS), settings, device_id=3))
    assert configured["TensorrtExecutionProvider"] == {
        "device_id": "3",
        "trt_fp16_enable": "True",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(tmp_path / "engines"),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(tmp_path / "engines"),
    }
    assert configured["CUDAExecutionProvider"] == {
        "device_id": "3",
        "cudnn_conv_algo_search": "HEURISTIC",
        "gpu_mem_limit": str(6 * 2**30),
    }
    assert configured["CPUExecutionProvider"] == {}


def test_provider_options_leave_out_what_is_not_set(make_settings: Callable[..., Settings]) -> None:
    configured = dict(provider_options(list(DEFAULT_PROVIDERS), make_settings(), device_id=0))
    # ORT's own defaults: no memory limit, an exhaustive cuDNN search, fp32 engines, no cache.
    assert configured["CUDAExecutionProvider"] == {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE"}
    assert configured["TensorrtExecutionProvider"] == {"device_id": "0", "trt_fp16_enable": "False"}


@pytest.mark.parametrize(
    ("device_ids", "device_count", "expected"),
    [
        ([], 2, [0, 1, 0, 1, 0]),  # every GPU the driver sees, in turn
        ([2, 3], 4, [2, 3, 2, 3, 2]),  # only the GPUs named
        ([], 0, [0, 0, 0, 0, 0]),  # none seen: device 0, which ORT reports failing
    ],
)
def test_worker_i_runs_on_gpu_i_mod_n(device_ids: list[int], device_count: int, expected: list[int]) -> None:
    assert [device_for_worker(worker, device_ids, device_count) for worker in range(5)] == expected


def test_each_worker_process_hands_its_gpu_options_to_onnxruntime(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No GPU here, so the session ORT really makes is a CPU one; what is checked is the
    # providers argument each worker's load hands to ORT.
    handed: list[Any] = []
    real_session = ort.InferenceSession

    def recording_session(path: str, **kwargs: Any) -> ort.InferenceSession:
        handed.append(kwargs["providers"])
        return real_session(path, sess_options=kwargs["sess_options"], providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", recording_session)
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(DEFAULT_PROVIDERS))
    monkeypatch.setattr(runtime_module, "cuda_devices", lambda: (2, ""))
    settings = make_settings(
        providers=["CUDAExecutionProvider", "CPUExecutionProvider"], cuda_mem_limit_bytes=2**30
    )
    devices = []
    for worker in range(3):
        monkeypatch.setattr(runtime_module, "worker_index", lambda worker=worker: worker)
        handed.clear()
        ModelRuntime.load(settings)
        [(name, options), cpu] = handed[0]
        assert name == "CUDAExecutionProvider" and cpu == ("CPUExecutionProvider", {})
        assert options["gpu_mem_limit"] == str(2**30)
        devices.append(options["device_id"])
    assert devices == ["0", "1", "0"]


def test_workers_take_the_lowest_free_slot_and_a_restarted_one_takes_its_slot_back(tmp_path: Path) -> None:
    script = "from service.gpu import worker_index; print(worker_index(), flush=True); input()"
    env = {**os.environ, WORKER_SLOTS_ENV: str(tmp_path)}

    def start() -> tuple[subprocess.Popen[str], int]:
        process = subprocess.Popen(
            [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert process.stdout is not None
        return process, int(process.stdout.readline())

    first, second = start(), start()
    try:
        assert (first[1], second[1]) == (0, 1)
        first[0].kill()  # a worker crashes; uvicorn starts another in its place
        first[0].wait(timeout=10)
        third = start()
        try:
            assert third[1] == 0
        finally:
            third[0].kill()
            third[0].wait(timeout=10)
    finally:
        for process, _ in (first, second):
            process.kill()
            process.wait(timeout=10)


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
    make_settings: Callable[..., Settings], build_model: Callable[..., Path], card: ModelCard
) -> None:
    broken = card.to_dict()
    del broken["task_uncertainty"]
    with pytest.raises(ModelLoadError, match="lacks task_uncertainty"):
        ModelRuntime.load(make_settings(model_path=build_model(json.dumps(broken))))


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
