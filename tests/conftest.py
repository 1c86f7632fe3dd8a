"""Fixtures shared by every test package: the system tools some tests drive.

The tests never install anything. `make system-deps` (which `make test` and CI run
first) installs the Debian packages; a test whose tool is missing fails with a
message naming that step, or skips with it when ``SCENE_ALLOW_MISSING_TOOLS=1``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import pytest

# Set to 1 to skip, rather than fail, the tests whose system tool is missing.
ALLOW_MISSING_ENV = "SCENE_ALLOW_MISSING_TOOLS"


def debian_tool(binary: str, package: str) -> str:
    """The path of ``binary`` (from Debian ``package``); fails or skips the test when it is missing."""
    path = shutil.which(binary)
    if path is not None:
        return path
    message = (
        f"{binary} (Debian package {package}) is missing: run `make system-deps` "
        f"(or set {ALLOW_MISSING_ENV}=1 to skip the tests that need it)"
    )
    if os.environ.get(ALLOW_MISSING_ENV) == "1":
        pytest.skip(message)
    pytest.fail(message)


@pytest.fixture(scope="session")
def system_tool() -> Callable[[str, str], str]:
    """``system_tool(binary, package)``: see `debian_tool`."""
    return debian_tool
