"""The ONNX Runtime session: provider choice, contract checks, warm-up and batched runs.

`ModelRuntime.load` opens the model and checks it against `scene_contract.model`
(fails fast with a message naming what is wrong); `warm_up` runs dummy batches and only
then sets `ready`; `run` is synchronous and is meant to be called from a worker thread
(the micro-batcher's), never on the event loop.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from scene_contract.card import ModelCard, ModelCardError
from scene_contract.model import INPUT_NAME, METADATA_KEY, OUTPUT_NAMES
from service import metrics
from service.gpu import cuda_devices, device_for_worker, worker_index
from service.settings import Settings

logger = logging.getLogger(__name__)

GPU_PROVIDERS = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})

# KServe v2 datatype names for the ORT tensor types the contract uses.
_V2_DATATYPES = {"tensor(uint8)": "UINT8", "tensor(float)": "FP32", "tensor(float16)": "FP16"}
_EXPECTED_TYPES = {
    INPUT_NAME: "tensor(uint8)",
    "semantic": "tensor(uint8)",
    "semantic_confidence": "tensor(float)",
    "instance_offsets": "tensor(float)",
    "inverse_depth": "tensor(float)",
}

Outputs = dict[str, npt.NDArray[Any]]
# What ONNX Runtime's ``providers=`` takes: names, each with its options.
ProviderOptions = list[tuple[str, dict[str, str]]]


class ModelLoadError(RuntimeError):
    """The model file cannot be served; the message says why."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, KServe v2 datatype, shape with -1 for dynamic axes."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def choose_providers(preferred: list[str], available: list[str]) -> list[str]:
    """``preferred`` without the providers this ORT build lacks, order kept.

    ``available`` lists what the build was compiled with; a listed GPU provider can still
    fail to start (no driver, no GPU), in which case ORT falls back to the next one, so
    the provider really in use is read from the session afterwards.
    """
    chosen = [name for name in preferred if name in available]
    if not chosen:
        raise ModelLoadError(
            f"none of the execution providers {preferred} is available; this onnxruntime offers {available}"
        )
    return chosen


def provider_options(providers: list[str], settings: Settings, device_id: int) -> ProviderOptions:
    """``providers`` with the options the settings give each, as ONNX Runtime takes them.

    CUDA: the device, the cuDNN convolution search and the arena's memory limit.
    TensorRT: the device, fp16 engines, and with a cache folder the engine and timing
    caches (engine builds take minutes on large graphs; the cache makes them once per
    model, GPU and TensorRT version). The CPU provider takes none.
    """
    configured: ProviderOptions = []
    for name in providers:
        options: dict[str, str] = {}
        if name == "CUDAExecutionProvider":
            options = {"device_id": str(device_id), "cudnn_conv_algo_search": settings.cudnn_conv_algo_search}
            if settings.cuda_mem_limit_bytes:
                options["gpu_mem_limit"] = str(settings.cuda_mem_limit_bytes)
        elif name == "TensorrtExecutionProvider":
            options = {"device_id": str(device_id), "trt_fp16_enable": str(settings.trt_fp16)}
            if settings.trt_engine_cache_dir is not None:
                cache = str(settings.trt_engine_cache_dir)
                options |= {
                    "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": cache,
                    "trt_timing_cache_enable": "True",
                    "trt_timing_cache_path": cache,
                }
        configured.append((name, options))
    return configured


def batch_plan(settings: Settings, provider: str) -> tuple[int, int]:
    """``(streams, max_batch_size)`` for the provider in use, where the settings leave them at 0.

    On a GPU one stream runs batches of up to 8: the device parallelises inside a run.
    On the CPU a batch of 8 takes as long as 8 single images (docs/benchmarks.md), so
    batching only adds waiting; instead a stream per core runs single images side by
    side, each with one ORT thread (see `ModelRuntime.load`).
    """
    on_gpu = provider in GPU_PROVIDERS
    streams = settings.inference_streams or (1 if on_gpu else os.cpu_count() or 1)
    max_batch_size = settings.max_batch_size or (8 if on_gpu else 1)
    return streams, max_batch_size


def _spec(node: Any, sizes: dict[str, int]) -> TensorSpec:
    """``node``'s spec, its named axes replaced by ``sizes`` where known, -1 otherwise."""
    shape = tuple(dim if isinstance(dim, int) else sizes.get(dim, -1) for dim in node.shape)
    return TensorSpec(node.name, _V2_DATATYPES.get(node.type, node.type), shape)


class ModelRuntime:
    """An ORT session serving one contract-conforming model.

    Attributes:
        card: the parsed model card.
        provider: the execution provider in use (``session.get_providers()[0]``).
        ready: True once `warm_up` has run; the readiness probes report it.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        card: ModelCard,
        *,
        io_binding: bool | None = None,
        lone_session: ort.InferenceSession | None = None,
        name: str | None = None,
    ) -> None:
        self._session = session
        # On a CPU the streams split the cores, one thread each; a run that starts while
        # no other is running gets this session instead, with a thread per core, so a
        # lone request is not held to one core. None: always `session`.
        self._lone_session = lone_session
        self._active_runs = 0
        self._active_lock = threading.Lock()
        self.card = card
        # What clients call the model in the open inference protocol (/v2/models/{name}).
        self.name = name or card.name
        self.provider: str = session.get_providers()[0]
        # On a GPU, IO binding lets ORT copy the batch to the device once and write the
        # outputs straight into host buffers, instead of staging both through session.run.
        self._io_binding = self.provider in GPU_PROVIDERS if io_binding is None else io_binding
        self._ready = threading.Event()
        # The service runs every image at the card's input size, so the input's height and
        # width axes are that size wherever the graph leaves them open; the batch stays -1.
        [image] = session.get_inputs()
        sizes = {
            str(dim): size
            for dim, size in zip(image.shape[1:3], self.input_size, strict=True)
            if not isinstance(dim, int)
        }
        self.inputs = [_spec(node, sizes) for node in session.get_inputs()]
        self.outputs = [_spec(node, sizes) for node in session.get_outputs()]

    @classmethod
    def load(cls, settings: Settings) -> ModelRuntime:
        """Open ``settings.model_path`` with the best available providers and check the contract."""
        providers = choose_providers(settings.providers, ort.get_available_providers())
        device = 0
        if GPU_PROVIDERS.intersection(providers):
            devices, why_none = cuda_devices()
            device = device_for_worker(worker_index(), settings.cuda_device_ids, devices)
            if devices == 0 and any(name not in GPU_PROVIDERS for name in providers):
                skipped = [name for name in providers if name in GPU_PROVIDERS]
                providers = [name for name in providers if name not in GPU_PROVIDERS]
                logger.info("%s; skipping %s, running on %s", why_none, ", ".join(skipped), providers[0])
            elif hasattr(ort, "preload_dlls"):
                # Loads CUDA/cuDNN from the nvidia-* wheels when present; a failure here only
                # means ORT falls back to CPU, which the provider check below reports.
                try:
                    ort.preload_dlls()
                except Exception as error:
                    logger.warning("onnxruntime.preload_dlls() failed: %s", error)
        threads = settings.intra_op_threads
        cpu_only = not GPU_PROVIDERS.intersection(providers)
        if cpu_only and not threads:
            cores = os.cpu_count() or 1
            # Concurrent runs share the cores: split them between the streams rather
            # than let each run start a thread per core.
            threads = max(1, cores // (settings.inference_streams or cores))
        # Idle ORT threads otherwise spin on the CPU, burning the core that decoding and
        # encoding of other requests need.
        configured = provider_options(providers, settings, device)
        session, card = open_model(settings.model_path, configured, threads, allow_spinning=not cpu_only)
        lone_session = None
        cores = os.cpu_count() or 1
        if cpu_only and not settings.intra_op_threads and threads < cores:
            # Spinning threads are what make a second thread pay (13.7 ms a run against
            # 17.5 ms without, 21.4 ms on one thread; bench/ort_threads.py); this session
            # runs only when nothing else does, and its threads stop spinning when the run
            # returns.
            lone_session, _ = open_model(
                settings.model_path, configured, cores, allow_spinning=True, spin_only_in_runs=True
            )
        runtime = cls(session, card, lone_session=lone_session, name=settings.model_name)
        if runtime.provider != providers[0]:
            logger.warning("preferred %s is unavailable here; running on %s", providers[0], runtime.provider)
        logger.info(
            "loaded %s %s (%dx%d) as %r on %s, worker %d, options %s",
            card.name,
            card.version,
            card.input.width,
            card.input.height,
            runtime.name,
            runtime.provider,
            worker_index(),
            # What ORT reports it took, which on a GPU includes the device and the caches.
            session.get_provider_options().get(runtime.provider, {}),
        )
        # One model per process: drop the labels of any model loaded before this one.
        metrics.MODEL_INFO.clear()
        metrics.MODEL_INFO.labels(name=card.name, version=card.version, provider=runtime.provider).set(1)
        for task, uncertainty in card.task_uncertainty.items():
            metrics.TASK_SIGMA.labels(task=task).set(uncertainty.sigma)
        return runtime

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def input_size(self) -> tuple[int, int]:
        """``(height, width)`` every image is resized to: the training resolution in the card."""
        return self.card.input.height, self.card.input.width

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Run zero images at the model's input size, then mark the runtime ready.

        The first runs pay for kernel selection, memory arenas and (TensorRT) engine
        builds; doing them here keeps that cost out of the first requests.
        """
        height, width = self.input_size
        for session in (self._session, self._lone_session):
            if session is None:
                continue
            for batch_size in sorted(set(batch_sizes)):
                self._run(session, np.zeros((batch_size, height, width, 3), dtype=np.uint8))
        self._ready.set()
        logger.info("warm-up done for batch sizes %s; ready", sorted(set(batch_sizes)))

    def run(self, images: npt.NDArray[np.uint8]) -> Outputs:
        """Run the model on ``uint8 [N, H, W, 3]`` RGB; returns the contract's four outputs.

        ``semantic`` uint8 [N, H, W] train ids; ``semantic_confidence`` float32 [N, H, W];
        ``instance_offsets`` float32 [N, 2, H, W] pixels (dy, dx); ``inverse_depth``
        float32 [N, 1, H, W] in 1/m.
        """
        with self._active_lock:
            self._active_runs += 1
            alone = self._active_runs == 1
        try:
            session = self._lone_session if alone and self._lone_session is not None else self._session
            return self._run(session, images)
        finally:
            with self._active_lock:
                self._active_runs -= 1

    @property
    def lone_run_threads(self) -> bool:
        """True when a run that starts alone gets every core (CPU, more than one stream)."""
        return self._lone_session is not None

    def _run(self, session: ort.InferenceSession, images: npt.NDArray[np.uint8]) -> Outputs:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if self._io_binding:
            binding = session.io_binding()
            binding.bind_cpu_input(INPUT_NAME, images)
            for name in OUTPUT_NAMES:
                binding.bind_output(name, "cpu")
            session.run_with_iobinding(binding)
            values = binding.copy_outputs_to_cpu()
        else:
            values = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        return dict(zip(OUTPUT_NAMES, values, strict=True))

    def v2_metadata(self) -> dict[str, Any]:
        """The model in the open inference protocol's "model metadata" shape."""
        return {
            "name": self.name,
            "versions": [self.card.version],
            "platform": "onnxruntime",
            "inputs": [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in self.inputs],
            "outputs": [
                {"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in self.outputs
            ],
        }


def open_model(
    path: Path,
    providers: list[str] | ProviderOptions,
    intra_op_threads: int = 0,
    allow_spinning: bool = True,
    spin_only_in_runs: bool = False,
) -> tuple[ort.InferenceSession, ModelCard]:
    """An ORT session on ``path`` and its model card, checked against the contract.

    Touches no metrics and logs nothing, so ``scene-serve`` can check a model before
    starting workers. Raises `ModelLoadError` saying what is wrong.
    """
    if not path.is_file():
        raise ModelLoadError(f"no model file at {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if spin_only_in_runs:
        # Threads spin between a run's operators but stop the moment the run returns,
        # instead of spinning on after it (on a core the request's encoding needs).
        options.add_session_config_entry("session.force_spinning_stop", "1")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as error:
        raise ModelLoadError(f"onnxruntime cannot load {path}: {error}") from error
    check_contract(session)
    try:
        card = ModelCard.from_json(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY))
    except ModelCardError as error:
        raise ModelLoadError(f"{path}: {error}") from error
    return session, card


def check_contract(session: ort.InferenceSession) -> None:
    """Raise `ModelLoadError` unless the session has the contract's input and outputs."""
    inputs = {node.name: node for node in session.get_inputs()}
    outputs = {node.name: node for node in session.get_outputs()}
    if list(inputs) != [INPUT_NAME]:
        raise ModelLoadError(
            f"the model must have exactly one input named {INPUT_NAME!r}, found {list(inputs)}"
        )
    missing = [name for name in OUTPUT_NAMES if name not in outputs]
    if missing:
        raise ModelLoadError(f"the model lacks the outputs {missing}; it has {list(outputs)}")
    for name, node in (inputs | outputs).items():
        expected = _EXPECTED_TYPES.get(name)
        if expected is not None and node.type != expected:
            raise ModelLoadError(f"{name!r} is {node.type}, the contract says {expected}")
    shape = inputs[INPUT_NAME].shape
    if len(shape) != 4 or (isinstance(shape[3], int) and shape[3] != 3):
        raise ModelLoadError(f"{INPUT_NAME!r} must be [N, H, W, 3], found {inputs[INPUT_NAME].shape}")
