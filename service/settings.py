"""The service's one configuration class, read from ``SCENE_*`` environment variables.

Settings are built in `get_settings` (cached) rather than at import, so importing the
package has no side effects and tests build their own `Settings` and hand them to
`service.main.create_app`.

List-valued settings accept JSON or a comma-separated string::

    SCENE_MODEL_PATH=models/default/model.onnx
    SCENE_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider
    SCENE_API_TOKEN=secret          # then /predict needs "Authorization: Bearer secret"
    SCENE_CORS_ORIGINS=https://example.org
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service import optics

DEFAULT_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

LogLevel = Literal["critical", "error", "warning", "info", "debug"]
InstanceMethod = Literal["peaks", "optics"]
CudnnSearch = Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"]
LogFormat = Literal["text", "json"]


class Settings(BaseSettings):
    """Everything an operator can tune; every field is also ``SCENE_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="SCENE_", extra="ignore", frozen=True)

    model_path: Path = Field(
        default=Path("models/default/model.onnx"),
        description="ONNX model exported by scene-export, with its model card in the metadata.",
    )
    providers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_PROVIDERS),
        description="ONNX Runtime execution providers in order of preference; unavailable ones are skipped.",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        description="ONNX Runtime threads per run (0: on the CPU the cores split between the streams; "
        "on a GPU ORT chooses).",
    )
    max_body_bytes: int = Field(default=20 * 2**20, gt=0, description="Largest accepted request body.")
    max_pixels: int = Field(
        default=16_777_216,
        gt=0,
        description="Largest accepted image (width × height); guards decompression bombs.",
    )
    max_width: int = Field(default=8192, gt=0, description="Widest accepted image, in pixels (as stored).")
    max_height: int = Field(default=8192, gt=0, description="Tallest accepted image, in pixels (as stored).")
    max_aspect_ratio: float = Field(
        default=10.0, ge=1.0, description="Largest accepted long side / short side of an image."
    )
    max_output_pixels: int = Field(
        default=2_097_152,
        gt=0,
        description="Largest maps /predict returns (width × height), scaled down to it by default; "
        "bounds response size and memory.",
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest the whole request body may take to arrive; beyond it → 408."
    )
    body_min_rate: int = Field(
        default=10_240,
        ge=0,
        description="Slowest accepted upload, bytes per second on average after a 5 s grace; 0 turns it off.",
    )
    cpu_concurrency: int = Field(
        default=0,
        ge=0,
        description="Requests decoded or postprocessed at once (0: one per CPU core); bounds memory.",
    )
    batch_window_ms: float = Field(
        default=3.0,
        ge=0,
        description="Longest the batcher holds a batch open for requests already being decoded.",
    )
    max_batch_size: int = Field(
        default=0,
        ge=0,
        description="Most images in one ONNX Runtime run (0: 8 on a GPU; 1 on a CPU, where it does not pay).",
    )
    inference_streams: int = Field(
        default=0,
        ge=0,
        description="ONNX Runtime runs at once (0: 1 on a GPU; one per core on the CPU, one thread each).",
    )
    queue_size: int = Field(default=64, ge=1, description="Images waiting for the batcher; beyond it → 503.")
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest a request may take, from decoding to the encoded answer."
    )
    shutdown_timeout_s: int = Field(
        default=30,
        gt=0,
        description="On SIGTERM, longest scene-serve waits for requests in flight before cancelling them.",
    )
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes (scene-serve only).")
    host: str = Field(default="127.0.0.1", description="Interface to listen on (0.0.0.0: every one).")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port to listen on.")
    log_level: LogLevel = Field(default="info", description="Least severe log messages written.")
    api_token: SecretStr | None = Field(
        default=None,
        description="When set, /predict and the model endpoints need 'Authorization: Bearer <token>'.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed to call the API from a browser."
    )
    instance_method: InstanceMethod = Field(
        default="peaks", description="How instance offsets are grouped into instances."
    )
    # The open inference protocol, GPU provider options and life behind proxies (docs/serving.md).
    model_name: str | None = Field(
        default=None,
        min_length=1,
        description="Name the model is served under in /v2/models/{name}; default: the model card's name.",
    )
    cuda_device_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        description="GPUs the workers share: worker i runs on the (i mod N)-th; empty: all the driver sees.",
    )
    cuda_mem_limit_bytes: int = Field(
        default=0, ge=0, description="Most GPU memory ORT's CUDA arena may take per worker; 0: no limit."
    )
    cudnn_conv_algo_search: CudnnSearch = Field(
        default="EXHAUSTIVE", description="How cuDNN picks convolution algorithms at the first run."
    )
    trt_engine_cache_dir: Path | None = Field(
        default=None,
        description="Where TensorRT keeps its built engines across starts; unset: rebuilt each start.",
    )
    trt_fp16: bool = Field(default=False, description="Let TensorRT build fp16 engines from the fp32 model.")
    keep_alive_timeout_s: int = Field(
        default=75,
        ge=1,
        description="Idle seconds a keep-alive connection stays open; keep it above your load balancer's.",
    )
    log_format: LogFormat = Field(default="text", description="'text' or 'json' (one object per line).")

    @field_validator("providers", "cors_origins", "cuda_device_ids", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        """Accept ``'["a", "b"]'`` or ``'a,b'`` from the environment."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("instance_method")
    @classmethod
    def _optics_installed(cls, value: InstanceMethod) -> InstanceMethod:
        """Refuse ``optics`` at start when scikit-learn is missing, rather than on every request."""
        if value == "optics" and not optics.installed():
            raise ValueError(optics.MISSING)
        return value

    @field_validator("providers")
    @classmethod
    def _at_least_one_provider(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one execution provider")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings from the environment, built once on first use."""
    return Settings()
