"""The deployment tests serve the same tiny model as the service tests, so they share
its fixtures (tests/service/conftest.py) rather than building another."""

from tests.service.conftest import (
    anyio_backend,
    make_settings,
    model_path,
    scene,
    scene_png,
    serve,
    settings,
)

__all__ = ["anyio_backend", "make_settings", "model_path", "scene", "scene_png", "serve", "settings"]
