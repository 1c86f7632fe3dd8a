"""Every service module imports where torch is not installed (the serving image has none)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import service

BLOCK_TORCH = (
    "import sys\n"
    "class Blocker:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'torchvision'):\n"
    "            raise ImportError('torch is not installed here')\n"
    "sys.meta_path.insert(0, Blocker())\n"
)


def test_all_service_modules_import_without_torch() -> None:
    modules = sorted(info.name for info in pkgutil.walk_packages(service.__path__, "service."))
    assert {"service.main", "service.cli", "service.api.routes.predict"} <= set(modules)
    code = BLOCK_TORCH + "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "assert 'torch' not in sys.modules\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
