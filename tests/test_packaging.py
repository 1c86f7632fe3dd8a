"""The service and the class table must work where torch is not installed."""

import subprocess
import sys

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


def test_console_scripts_explain_themselves() -> None:
    from pathlib import Path

    expected = {
        "scene-data": ["render", "preview"],
        "scene-train": ["--config", "key=value", "resume="],
        "scene-eval": ["--checkpoint", "--out", "--count", "--seed"],
        "scene-study": ["--config", "--pilot", "--max-minutes", "--max-runs"],
        "scene-export": ["--checkpoint", "--out", "--fp16", "--int8", "--calibration-count"],
        "scene-serve": ["--model", "--host", "--port", "--workers"],
    }
    bin_dir = Path(sys.executable).parent
    for script, words in expected.items():
        result = subprocess.run(
            [str(bin_dir / script), "--help"], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        for word in words:
            assert word in result.stdout, f"{script} --help lacks {word}"
