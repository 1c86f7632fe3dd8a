"""The bench smoke runs serve the service tests' tiny model (tests/service/conftest.py)."""

from tests.service.conftest import model_path

__all__ = ["model_path"]
