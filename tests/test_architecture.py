"""The one-way house (docs/architecture.md): who may import whom, checked two ways.

Statically, import-linter reads every import statement (those inside functions too)
against the contracts in pyproject.toml. Dynamically, every service module is imported
in a fresh interpreter where torch, training, the exporter and scikit-learn (the optional
``optics`` extra) cannot be found, as in the serving image.
"""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import service

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"

# scikit-learn too: it is the optional `optics` extra, which the serving image leaves out.
BLOCKED = ("torch", "torchvision", "training", "model_export", "bench", "sklearn")
BLOCKER = (
    "import sys\n"
    "class Blocker:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    f"        if name.split('.')[0] in {BLOCKED!r}:\n"
    "            raise ImportError(name + ' is not installed here')\n"
    "sys.meta_path.insert(0, Blocker())\n"
)


def lint_imports(root: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120, env=env
    )


def test_the_project_keeps_its_import_contracts() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


def test_a_service_module_importing_training_breaks_the_contract(tmp_path: Path) -> None:
    """The check is not vacuous: the same contracts on a tree with one breach fail, naming it."""
    for package in ("scene_contract", "training", "model_export", "service", "bench"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "training" / "classes.py").write_text("NAMES = ('road',)\n")
    (tmp_path / "service" / "drawing.py").write_text(
        textwrap.dedent(
            """
            def names():
                from training.classes import NAMES  # inside a function still counts
                return NAMES
            """
        )
    )
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    result = lint_imports(tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode != 0
    assert "service.drawing -> training.classes" in result.stdout


@pytest.mark.parametrize("package", ["service", "scene_contract"])
def test_every_module_imports_without_torch_or_training(package: str) -> None:
    if package == "service":
        modules = sorted(info.name for info in pkgutil.walk_packages(service.__path__, "service."))
        assert {"service.main", "service.cli", "service.api.routes.demo", "service.encoding"} <= set(modules)
    else:
        modules = ["scene_contract", "scene_contract.model", "scene_contract.drawing"]
    code = BLOCKER + "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += f"assert not [m for m in sys.modules if m.split('.')[0] in {BLOCKED!r}]\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
