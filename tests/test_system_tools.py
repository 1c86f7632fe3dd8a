"""A missing system tool is reported with the step that installs it, never installed by a test."""

from __future__ import annotations

from collections.abc import Callable

import pytest

MISSING = ("no-such-tool-for-scene-mtl", "no-such-package")


def test_a_missing_tool_fails_naming_make_system_deps(
    system_tool: Callable[[str, str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCENE_ALLOW_MISSING_TOOLS", raising=False)
    with pytest.raises(pytest.fail.Exception, match=r"no-such-package\) is missing: run `make system-deps`"):
        system_tool(*MISSING)


def test_a_missing_tool_skips_only_when_asked(
    system_tool: Callable[[str, str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCENE_ALLOW_MISSING_TOOLS", "1")
    with pytest.raises(pytest.skip.Exception, match="make system-deps"):
        system_tool(*MISSING)


def test_a_present_tool_is_found(system_tool: Callable[[str, str], str]) -> None:
    assert system_tool("sh", "dash").endswith("/sh")
