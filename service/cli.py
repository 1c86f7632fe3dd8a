"""``scene-serve``: run the service with uvicorn.

    scene-serve --model models/default/model.onnx [--host 127.0.0.1] [--port 8000]
                [--workers 1] [--log-level info]

Options left out fall back to the ``SCENE_*`` environment variables (see
`service.settings`). The chosen values are written back to the environment because
uvicorn's workers build their settings from it. ``--help`` lists every setting with
its default and meaning, read from the settings model (`describe_settings`), which
docs/serving.md's table is checked against.

With ``--workers`` above 1, each worker is a process with its own metrics; unless
``PROMETHEUS_MULTIPROC_DIR`` is already set, a fresh temporary directory is made for
prometheus_client's multiprocess mode (and removed on exit), so /metrics reports the
sum over all workers whichever worker answers the scrape. A folder of worker slots is
made the same way, from which each worker takes its number, and so its GPU
(`service.gpu.worker_index`). The model is checked once before the workers start, so a
model that cannot be served ends the start with status 3, as a single worker's failed
start does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic import ValidationError

from service.gpu import WORKER_SLOTS_ENV
from service.logs import log_config
from service.metrics import MULTIPROC_ENV
from service.runtime import ModelLoadError, open_model
from service.settings import Settings, get_settings

# uvicorn's exit status when the app fails to start (a single worker exits with it).
STARTUP_FAILURE = 3


def default_text(value: object) -> str:
    """A setting's default as its environment variable would spell it ("unset" for none)."""
    if value is None:
        return "unset"
    if isinstance(value, list):
        return ",".join(str(item) for item in value) or "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def describe_settings() -> list[tuple[str, str, str]]:
    """``(environment variable, default, meaning)`` for every field of `Settings`, in its order.

    Read from the model itself (names, defaults, descriptions, a Literal's choices), so
    ``--help`` and the docs check cannot drift from the code.
    """
    prefix = Settings.model_config.get("env_prefix", "")
    rows = []
    for name, field in Settings.model_fields.items():
        meaning = field.description or ""
        if get_origin(field.annotation) is Literal:
            meaning += " One of: " + ", ".join(str(choice) for choice in get_args(field.annotation)) + "."
        default = field.get_default(call_default_factory=True)
        rows.append((f"{prefix}{name}".upper(), default_text(default), meaning))
    return rows


def settings_help() -> str:
    """The settings part of ``--help``: every variable, its default and its meaning."""
    lines = ["settings (SCENE_* environment variables; the options above override their own):"]
    for variable, default, meaning in describe_settings():
        lines.append(f"  {variable} (default: {default})")
        lines += textwrap.wrap(meaning, width=88, initial_indent="      ", subsequent_indent="      ")
    lines.append("Lists take JSON or commas. Reference: docs/serving.md#settings")
    return "\n".join(lines)


def build_parser(defaults: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scene-serve",
        description="Serve a scene-mtl ONNX model over HTTP.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", type=Path, default=defaults.model_path, help="ONNX model file (default: %(default)s)"
    )
    parser.add_argument("--host", default=defaults.host, help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=defaults.port, help="TCP port (default: %(default)s)")
    parser.add_argument(
        "--workers",
        type=int,
        default=defaults.workers,
        help="uvicorn worker processes (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default=defaults.log_level,
        choices=["critical", "error", "warning", "info", "debug"],
        help="(default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        defaults = Settings()
    except ValidationError as error:
        print(f"scene-serve: invalid SCENE_* environment: {error}", file=sys.stderr)
        return 2
    args = build_parser(defaults).parse_args(argv)
    model = Path(args.model).resolve()
    if not model.is_file():
        print(f"scene-serve: no model file at {model}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("scene-serve: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1:
        # uvicorn's supervisor exits 0 when its workers fail to start; checking the model
        # here (on the CPU, as the workers' first step does) stops a bad one with the
        # message and exit status a single worker gives.
        try:
            open_model(model, ["CPUExecutionProvider"])
        except ModelLoadError as error:
            print(f"scene-serve: {error}", file=sys.stderr)
            return STARTUP_FAILURE
    os.environ["SCENE_MODEL_PATH"] = str(model)
    os.environ["SCENE_HOST"] = args.host
    os.environ["SCENE_PORT"] = str(args.port)
    os.environ["SCENE_LOG_LEVEL"] = args.log_level
    get_settings.cache_clear()

    own_dirs: list[str] = []
    if args.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        own_dirs.append(tempfile.mkdtemp(prefix="scene-prometheus-"))
        os.environ[MULTIPROC_ENV] = own_dirs[-1]
    if args.workers > 1:
        # Each worker locks a numbered slot here: worker i runs on GPU i mod N (service.gpu).
        own_dirs.append(tempfile.mkdtemp(prefix="scene-serve-workers-"))
        os.environ[WORKER_SLOTS_ENV] = own_dirs[-1]

    import uvicorn

    try:
        uvicorn.run(
            "service.main:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            log_config=log_config(args.log_level, defaults.log_format),
            timeout_graceful_shutdown=defaults.shutdown_timeout_s,
            # Above the idle timeout of the proxy in front, so the proxy, not uvicorn, closes
            # idle connections; else a request sent as uvicorn closes one fails with a 502.
            timeout_keep_alive=defaults.keep_alive_timeout_s,
        )
    finally:
        for folder in own_dirs:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
