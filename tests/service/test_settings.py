"""Settings come from SCENE_* variables, with the documented defaults."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import DEFAULT_PROVIDERS, Settings, get_settings


def test_defaults_are_safe_for_a_single_host() -> None:
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.max_body_bytes == 20 * 2**20
    assert settings.max_batch_size == 0  # chosen per provider: service.runtime.batch_plan
    assert settings.providers == DEFAULT_PROVIDERS
    assert settings.api_token is None
    assert settings.cors_origins == []
    assert settings.instance_method == "peaks"


def test_environment_overrides_with_the_scene_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENE_MODEL_PATH", "/models/x.onnx")
    monkeypatch.setenv("SCENE_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    monkeypatch.setenv("SCENE_CORS_ORIGINS", '["https://a.example", "https://b.example"]')
    monkeypatch.setenv("SCENE_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("SCENE_API_TOKEN", "s3cret")
    settings = Settings()
    assert settings.model_path == Path("/models/x.onnx")
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.max_batch_size == 16
    assert settings.api_token is not None and settings.api_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENE_INSTANCE_METHOD", "kmeans")
    with pytest.raises(ValidationError, match="instance_method"):
        Settings()
    with pytest.raises(ValidationError, match="providers"):
        Settings(providers=[])


def test_optics_without_scikit_learn_is_refused_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """The serving install leaves scikit-learn out: the default still starts, optics says what to install."""
    monkeypatch.setitem(sys.modules, "sklearn", None)  # as if not installed
    assert Settings().instance_method == "peaks"
    with pytest.raises(ValidationError, match=re.escape("pip install 'scene-mtl[optics]'")):
        Settings(instance_method="optics")


def test_get_settings_is_built_once_until_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    try:
        monkeypatch.setenv("SCENE_PORT", "9001")
        first = get_settings()
        monkeypatch.setenv("SCENE_PORT", "9002")
        assert get_settings() is first and first.port == 9001
        get_settings.cache_clear()
        assert get_settings().port == 9002
    finally:
        get_settings.cache_clear()
