"""A missing system tool is reported with the step that installs it, never installed by a test."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

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
    with pytest.raises(pytest.skip.Exception, match="sudo make system-deps"):
        system_tool(*MISSING)


def test_a_present_tool_is_found(system_tool: Callable[[str, str], str]) -> None:
    assert system_tool("sh", "dash").endswith("/sh")


REPO = Path(__file__).resolve().parents[1]
# One test that needs a Debian tool (promtool) and one that needs none.
NEEDS_PROMTOOL = "tests/deploy/test_deploy.py::test_prometheus_config_passes_promtool"
NEEDS_NOTHING = "tests/test_system_tools.py::test_a_present_tool_is_found"


def make_test_without_the_tools(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`make test` on two tests with a PATH that has none of the Debian tools and no apt-get.

    The PATH holds only what the Makefile itself runs, so installing is impossible even for root.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "make", "id", "find"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "SCENE_ALLOW_MISSING_TOOLS")}
    environment |= {"PATH": str(bin_dir), **env}
    # -o: the virtual environment is taken as installed (it is: this test runs in it).
    command = ["make", "--no-print-directory", "-o", ".venv/.installed-all", "test"]
    command += [f"PYTEST_ARGS=-p no:cacheprovider -q {NEEDS_PROMTOOL} {NEEDS_NOTHING}"]
    return subprocess.run(
        command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300, check=False
    )


def test_make_test_without_the_tools_skips_what_needs_them_and_says_how_to_install(tmp_path: Path) -> None:
    result = make_test_without_the_tools(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Debian packages missing: chromium prometheus docker-compose hey" in output
    assert "1 passed, 1 skipped" in output
    summary = output.split("1 test skipped: Debian tools missing", 1)[1]
    assert "promtool (Debian package prometheus): 1 test" in summary
    assert NEEDS_PROMTOOL in summary
    assert "To run them, install the tools (Debian or Ubuntu): sudo make system-deps" in summary


def test_make_test_in_ci_fails_naming_the_step_when_the_tools_are_missing(tmp_path: Path) -> None:
    result = make_test_without_the_tools(tmp_path, CI="true")
    assert result.returncode != 0
    assert "installing them needs root and apt-get); run `sudo make system-deps`" in result.stderr
    assert "passed" not in result.stdout  # it stopped before any test ran
