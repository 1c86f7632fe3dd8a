"""The Python client examples in README.md and docs/serving.md run as written against a real
server, with nothing the serve environment lacks."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "serving.md"]
# What `pip install 'scene-mtl[serve]'` brings that an example may import, besides the standard library.
SERVE_IMPORTS = {"numpy", "PIL"}
EXAMPLE_URL = "http://127.0.0.1:8000"


def client_example(document: Path) -> str:
    """The document's one Python block that posts to /predict."""
    blocks = re.findall(r"```python\n(.*?)```", document.read_text(encoding="utf-8"), flags=re.DOTALL)
    [example] = [block for block in blocks if "/predict" in block]
    return example


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_the_client_example_needs_only_the_serve_environment(document: Path) -> None:
    imported = set()
    for node in ast.walk(ast.parse(client_example(document))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - sys.stdlib_module_names <= SERVE_IMPORTS


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_the_client_example_runs_against_a_server(
    document: Path, server: str, scene_png: bytes, tmp_path: Path
) -> None:
    example = client_example(document)
    assert EXAMPLE_URL in example
    (tmp_path / "street.png").write_bytes(scene_png)
    result = subprocess.run(
        [sys.executable, "-c", example.replace(EXAMPLE_URL, server)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "car" in result.stdout  # the scene's one instance


def test_the_open_inference_protocol_example_runs_against_a_server(
    server: str, scene_png: bytes, tmp_path: Path
) -> None:
    blocks = re.findall(
        r"```python\n(.*?)```", (ROOT / "docs" / "serving.md").read_text(encoding="utf-8"), re.DOTALL
    )
    [example] = [block for block in blocks if "tritonclient" in block]
    assert "127.0.0.1:8000" in example and '"scene-mtl-default"' in example
    (tmp_path / "street.png").write_bytes(scene_png)
    # The tiny test model stands in for the bundled one, under its own name.
    script = example.replace("127.0.0.1:8000", server.removeprefix("http://")).replace(
        "scene-mtl-default", "tiny-test"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("(1, ")
