"""Fixtures shared by every test package: the system tools some tests drive, one small
training run and its export that the training, export and bench tests read, and a tiny
CamVid tree in the SegNet layout, written by the tests themselves.

The tests never install anything. `make system-deps` (which `make test` and CI run
first) installs the Debian packages; a test whose tool is missing fails with a
message naming that step, or skips with it when ``SCENE_ALLOW_MISSING_TOOLS=1``
(which `make test` sets outside CI), and the run ends with a list of what was
skipped for want of which tool and the command that installs them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

# Set to 1 to skip, rather than fail, the tests whose system tool is missing.
ALLOW_MISSING_ENV = "SCENE_ALLOW_MISSING_TOOLS"
INSTALL_COMMAND = "sudo make system-deps"
# Skip reasons start with this, so the summary can tell them from other skips.
_MISSING_MARK = "missing Debian tool: "


def debian_tool(binary: str, package: str) -> str:
    """The path of ``binary`` (from Debian ``package``); fails or skips the test when it is missing."""
    path = shutil.which(binary)
    if path is not None:
        return path
    if os.environ.get(ALLOW_MISSING_ENV) == "1":
        pytest.skip(f"{_MISSING_MARK}{binary} (Debian package {package}); `{INSTALL_COMMAND}` installs it")
    pytest.fail(
        f"{binary} (Debian package {package}) is missing: run `make system-deps` "
        f"(or set {ALLOW_MISSING_ENV}=1 to skip the tests that need it)"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """At the end of a run, the tests skipped for want of a Debian tool, by tool, and the fix."""
    by_tool: dict[str, list[str]] = {}
    for report in terminalreporter.stats.get("skipped", []):
        if isinstance(report.longrepr, tuple) and report.longrepr[2].startswith("Skipped: " + _MISSING_MARK):
            tool = report.longrepr[2].removeprefix("Skipped: " + _MISSING_MARK).split(";")[0]
            by_tool.setdefault(tool, []).append(report.nodeid)
    if not by_tool:
        return

    def tests(count: int) -> str:
        return f"{count} test{'' if count == 1 else 's'}"

    count = sum(len(nodeids) for nodeids in by_tool.values())
    terminalreporter.section(f"{tests(count)} skipped: Debian tools missing", sep="=", yellow=True)
    for tool, nodeids in sorted(by_tool.items()):
        terminalreporter.write_line(f"{tool}: {tests(len(nodeids))}")
        for nodeid in nodeids:
            terminalreporter.write_line(f"    {nodeid}")
    terminalreporter.write_line(f"To run them, install the tools (Debian or Ubuntu): {INSTALL_COMMAND}")


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


@pytest.fixture(scope="session")
def smoke_export(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``model.onnx`` of the smoke run exported by ``scene-export`` with every variant
    (``model.fp16.onnx``, ``model.int8.onnx``, the card, samples), once per session; a
    copy of the bare trace it made (before the card and the variants) is kept as
    ``trace.onnx`` beside it. Tests only read it."""
    import model_export.cli as cli

    out = tmp_path_factory.mktemp("export") / "model.onnx"
    real_export = cli.export_fp32

    def keep_the_trace(model: object, path: Path, height: int, width: int) -> None:
        real_export(model, path, height, width)  # type: ignore[arg-type]
        shutil.copyfile(path, out.with_name("trace.onnx"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "export_fp32", keep_the_trace)
        code = cli.main(
            [
                "--checkpoint",
                str(smoke_run / "last.pt"),
                "--out",
                str(out),
                "--fp16",
                "--int8",
                "--calibration-count",
                "8",
                "--name",
                "smoke",
                "--version",
                "7",
            ]
        )
    assert code == 0
    return out


# A tiny CamVid tree: the tests never read the real CamVid frames.
CAMVID_HEIGHT, CAMVID_WIDTH = 36, 48
CAMVID_FRAMES = {"train": ("0001TP_000010", "0001TP_000040", "0006R0_000100"), "val": ("0016E5_000200",)}


def camvid_labels(seed: int) -> np.ndarray:
    """Horizontal bands of CamVid classes (sky on top, road below), with void, a car and a pedestrian."""
    labels = np.full((CAMVID_HEIGHT, CAMVID_WIDTH), 3, dtype=np.uint8)  # road
    labels[:8] = 0  # sky
    labels[8:18] = 1  # building
    labels[18:22, :10] = 4  # pavement
    labels[18:22, 10:20] = 5  # tree
    labels[18:22, 20:24] = 2  # pole
    labels[18:22, 24:28] = 6  # sign/symbol
    labels[18:22, 28:34] = 7  # fence
    labels[22:30, 4 + seed : 16 + seed] = 8  # car
    labels[22:32, 30:33] = 9  # pedestrian
    labels[22:30, 38:42] = 10  # bicyclist
    labels[32:, 44:] = 11  # void
    return labels


def write_camvid(root: Path) -> Path:
    """Write the tree: images coloured by class (so a model could learn it), labels, list files."""
    colours = np.random.default_rng(0).integers(0, 256, size=(12, 3), dtype=np.uint8)
    for split, stems in CAMVID_FRAMES.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        lines = []
        for seed, stem in enumerate(stems):
            labels = camvid_labels(seed)
            Image.fromarray(colours[labels]).save(root / split / f"{stem}.png")
            Image.fromarray(labels).save(root / f"{split}annot" / f"{stem}.png")
            # The SegNet tutorial's lists carry absolute paths from its author's machine.
            lines.append(f"/SegNet/CamVid/{split}/{stem}.png /SegNet/CamVid/{split}annot/{stem}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def camvid_root(tmp_path: Path) -> Path:
    return write_camvid(tmp_path / "camvid")


@pytest.fixture
def camvid_frame_labels() -> Callable[[int], np.ndarray]:
    """The CamVid labels of the fixture's frame ``i`` of its split, at full size."""
    return camvid_labels


# Names and shapes (no values) of the tensors in the published ESPNetv2 s=2.0 Cityscapes file.
ESPNETV2_LAYOUT = Path(__file__).parent / "training" / "fixtures" / "espnetv2_s2_city_layout.json"


@pytest.fixture(scope="session")
def espnetv2_layout() -> dict[str, list[int]]:
    layout: dict[str, list[int]] = json.loads(ESPNETV2_LAYOUT.read_text())
    return layout


@pytest.fixture(scope="session")
def fake_espnetv2(espnetv2_layout: dict[str, list[int]]) -> Callable[[int], dict[str, Any]]:
    """``make(seed)``: a state dict with the published file's names and shapes and random
    values that keep activations finite, for the loader and the recipe without the file."""
    import torch

    def make(seed: int) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(seed)
        tensors = {}
        for name, shape in espnetv2_layout.items():
            noise = torch.randn(shape, generator=generator)
            if len(shape) == 4:  # convolutions: scaled by fan-in
                noise /= (shape[1] * shape[2] * shape[3]) ** 0.5
            elif name.endswith("running_var"):
                noise = noise.abs() + 0.5
            tensors[name] = noise
        return tensors

    return make
