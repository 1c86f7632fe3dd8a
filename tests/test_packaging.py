"""The service and the class table must work where torch is not installed."""

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

BLOCK_TORCH = (
    "import sys\n"
    "class Blocker:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'torchvision'):\n"
    "            raise ImportError('torch is not installed here')\n"
    "sys.meta_path.insert(0, Blocker())\n"
)


def run_without_torch(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True)


def test_the_blocker_really_blocks_torch() -> None:
    assert run_without_torch("import torch").returncode != 0


def test_service_and_data_import_without_torch() -> None:
    result = run_without_torch(
        "import service, model_export, service.main, service.cli\n"
        "service.main.create_app\n"
        "import training.data.classes, training.data.procedural, training.data.cityscapes\n"
        "import training.data.disk, training.data.visualize\n"
        "from training.data.procedural import ProceduralScenes\n"
        "ProceduralScenes(count=1, height=16, width=32)[0].check()\n"
    )
    assert result.returncode == 0, result.stderr


def test_console_scripts_explain_themselves(capsys: pytest.CaptureFixture[str]) -> None:
    expected = {
        "scene-data": ["render", "preview"],
        "scene-train": ["--config", "key=value", "resume="],
        "scene-eval": ["--checkpoint", "--out", "--count", "--seed"],
        "scene-study": ["--config", "--pilot", "--max-minutes", "--max-runs"],
        "scene-export": ["--checkpoint", "--out", "--fp16", "--int8", "--calibration-count"],
        "scene-serve": ["--model", "--host", "--port", "--workers"],
    }
    bin_dir = Path(sys.executable).parent
    scripts = {ep.name: ep for ep in entry_points(group="console_scripts") if ep.name.startswith("scene-")}
    assert set(expected) <= set(scripts)
    for script, words in expected.items():
        assert os.access(bin_dir / script, os.X_OK), f"{script} is not installed next to {sys.executable}"
        # The function the installed script calls, called here: a process per script would
        # spend seconds importing torch five times over.
        with pytest.raises(SystemExit) as exit_info:
            scripts[script].load()(["--help"])
        assert exit_info.value.code == 0, script
        out = capsys.readouterr().out
        for word in words:
            assert word in out, f"{script} --help lacks {word}"
    # One installed script run as a user runs it (scene-serve's imports are the lightest).
    result = subprocess.run(
        [str(bin_dir / "scene-serve"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--model" in result.stdout
