"""Fixtures shared by every test package: the system tools some tests drive, and one
small training run that the training and export tests read.

The tests never install anything. `make system-deps` (which `make test` and CI run
first) installs the Debian packages; a test whose tool is missing fails with a
message naming that step, or skips with it when ``SCENE_ALLOW_MISSING_TOOLS=1``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

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


REPO = Path(__file__).resolve().parents[1]
# Training at 32x64 (and validating on 2 scenes rather than 4) costs about a third of
# configs/smoke.yaml and runs the same model, losses and bookkeeping, so the tests that
# train use it.
SMALL_TRAINING = ("data.height=32", "data.width=64", "data.val_count=2")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of a finished configs/smoke.yaml run at 32x64 that keeps its
    checkpoints (6 steps: step_0000003.pt, step_0000006.pt and last.pt), trained once per
    session; tests only read it."""
    from training.train import main

    run_dir = tmp_path_factory.mktemp("smoke")
    config = str(REPO / "configs" / "smoke.yaml")
    assert main(["--config", config, f"run_dir={run_dir}", *SMALL_TRAINING, "keep_checkpoints=true"]) == 0
    return run_dir
