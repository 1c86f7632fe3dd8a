"""Fixtures shared by every test package: system tools the tests install for themselves."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

import pytest

# CI sets this so that a tool that cannot be installed fails the run instead of skipping.
REQUIRE_TOOLS_ENV = "SCENE_REQUIRE_SYSTEM_TOOLS"


def debian_tool(binary: str, package: str) -> str:
    """The path of ``binary``, installing Debian ``package`` first when it is missing.

    Installing needs root and apt-get. Where that is impossible the test is skipped
    with the reason, unless ``SCENE_REQUIRE_SYSTEM_TOOLS=1`` (CI), where it fails.
    """
    path = shutil.which(binary)
    if path is not None:
        return path
    problem = None
    if shutil.which("apt-get") is None:
        problem = "apt-get is not available"
    elif os.geteuid() != 0:
        problem = "installing it needs root"
    else:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
            if result.returncode != 0:
                problem = f"{' '.join(command)} failed: {result.stderr.strip()[-500:]}"
                break
        path = shutil.which(binary)
        if path is None and problem is None:
            problem = f"package {package} installed no {binary}"
    if path is not None:
        return path
    message = f"{binary} (Debian package {package}) is missing and {problem}"
    if os.environ.get(REQUIRE_TOOLS_ENV) == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def system_tool() -> Callable[[str, str], str]:
    """``system_tool(binary, package)``: see `debian_tool`."""
    return debian_tool
