"""What each Dockerfile's build context holds, and whether every COPY and ADD finds its source.

No Docker engine runs here, so the context is computed the way BuildKit computes it:
the files of a fresh clone (``git ls-files``), filtered by the Dockerfile's own
``<Dockerfile>.dockerignore`` when there is one, else by the context root's
``.dockerignore``. Both the ignore rules and the Dockerfile are read with
``e2b-dockerfile-utils``, a port of moby/patternmatcher and of BuildKit's Dockerfile
parser: a pattern that matches a directory excludes everything under it unless a
later ``!`` pattern takes a path back (the last match wins, parents first).

Not docker-py's ``exclude_paths``: it checks a parent directory only at the pattern's
own depth, so after ``**/cache`` and ``!x/y/cache/keep`` it sends ``x/y/cache/other``,
which Docker leaves out. Not pathspec: that is gitignore's matching, where a pattern
without a slash matches at any depth and a file cannot be taken back out of an
excluded directory.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from e2b_dockerfile_utils import PatternMatcher, parse_dockerfile_ast

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
# Each image and the context it is built from: the repository root (docker/compose.yaml's
# `context: ..`, and `docker build -f docker/Dockerfile.train .` in the README).
IMAGES = {"serving": DOCKER / "Dockerfile", "training": DOCKER / "Dockerfile.train"}


@dataclass(frozen=True)
class Copy:
    """One COPY or ADD that reads the build context: its line and its sources."""

    line: int
    instruction: str
    sources: tuple[str, ...]


def tracked_files(root: Path) -> list[str]:
    """The files a fresh clone of the repository has, slash-separated and relative to it."""
    result = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True, timeout=60)
    return [name for name in result.stdout.decode().split("\0") if name]


def ignore_rules(dockerfile: Path, context: Path) -> list[str]:
    """The ignore file BuildKit applies: ``<Dockerfile>.dockerignore`` first, else the root's."""
    for candidate in (dockerfile.with_name(dockerfile.name + ".dockerignore"), context / ".dockerignore"):
        if candidate.is_file():
            return candidate.read_text().splitlines()
    return []


def context_files(files: list[str], rules: list[str]) -> set[str]:
    """The files of ``files`` that the rules send to the builder, and the directories holding them."""
    matcher = PatternMatcher(rules)
    sent = {name for name in files if not matcher.matches(name)}
    folders = {str(parent) for name in sent for parent in Path(name).parents if str(parent) != "."}
    return sent | folders


def context_copies(dockerfile: Path) -> list[Copy]:
    """Every COPY and ADD whose sources come from the build context (no ``--from``, no
    URL, no heredoc), with the sources as written."""
    copies = []
    for instruction in parse_dockerfile_ast(dockerfile.read_text()).instructions:
        if instruction.name not in ("COPY", "ADD"):
            continue
        if any(flag.startswith("--from=") for flag in instruction.flags) or instruction.heredocs:
            continue
        sources = tuple(
            source
            for source in instruction.args[:-1]
            if not source.startswith(("http://", "https://", "git@"))
        )
        copies.append(Copy(instruction.start_line, instruction.original, sources))
    return copies


def missing_sources(dockerfile: Path, context: set[str]) -> list[str]:
    """``"line N: SOURCE"`` for each context source that nothing in ``context`` matches."""
    missing = []
    for copy in context_copies(dockerfile):
        for source in copy.sources:
            assert "$" not in source, f"line {copy.line}: {source!r} needs build arguments to resolve"
            pattern = source.strip("/").removeprefix("./") or "."
            if pattern == ".":
                found = bool(context)
            else:
                # A source names a file, a folder (everything under it) or a Go filepath.Match
                # wildcard; a one-rule matcher answers all three.
                matcher = PatternMatcher([pattern])
                found = any(matcher.matches(path) for path in context)
            if not found:
                missing.append(f"line {copy.line}: {source}")
    return missing


@pytest.fixture(scope="module")
def files() -> list[str]:
    return tracked_files(ROOT)


def test_compose_builds_the_serving_image_from_the_repository_root() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    build = compose["x-scene-mtl"]["build"]
    assert (DOCKER / build["context"]).resolve() == ROOT
    assert ROOT / build["dockerfile"] == IMAGES["serving"]


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_every_copy_finds_its_source_in_the_build_context(image: str, files: list[str]) -> None:
    dockerfile = IMAGES[image]
    context = context_files(files, ignore_rules(dockerfile, ROOT))
    assert context_copies(dockerfile), f"{dockerfile.name} copies nothing from its context"
    missing = missing_sources(dockerfile, context)
    assert not missing, (
        f"{dockerfile.relative_to(ROOT)} copies what .dockerignore keeps out of the build context: "
        f"{', '.join(missing)}"
    )


def test_the_serving_context_holds_the_model_and_the_service_but_no_caches(files: list[str]) -> None:
    context = context_files(files, ignore_rules(IMAGES["serving"], ROOT))
    for needed in (
        "models/default/model.onnx",
        "scene_contract/model.py",
        "service/cli.py",
        "pyproject.toml",
    ):
        assert needed in context
    assert not any("__pycache__" in path or path.startswith((".venv", "runs/", ".git/")) for path in context)
    assert not any(path.startswith(("tests/", "docs/", "bench/")) for path in context)


def test_the_check_fails_when_a_copied_folder_is_left_out(files: list[str]) -> None:
    """The breach this check was written for: a .dockerignore that sends only the folders
    it names and lacks one that a COPY needs (scene_contract/, added after the file)."""
    rules = [rule for rule in ignore_rules(IMAGES["serving"], ROOT) if rule.strip() != "!scene_contract/"]
    for dockerfile in IMAGES.values():
        missing = missing_sources(dockerfile, context_files(files, rules))
        assert any(entry.endswith(": scene_contract") for entry in missing), missing


@pytest.mark.parametrize(
    ("rules", "path", "sent"),
    [
        # A folder taken back after "**" brings all of its files.
        (["**", "!service/"], "service/api/deps.py", True),
        (["**", "!service/"], "training/train.py", False),
        # "**/name" matches at any depth, and what it matches hides everything below.
        (["**/__pycache__"], "service/api/__pycache__/deps.cpython-311.pyc", False),
        # A parent matched anywhere above a file excludes it, unless a later rule names the file.
        (["**/cache", "!x/y/cache/keep"], "x/y/cache/other", False),
        (["**/cache", "!x/y/cache/keep"], "x/y/cache/keep", True),
        # Patterns are anchored at the context root, unlike .gitignore's.
        (["build"], "service/build", True),
    ],
)
def test_rules_are_matched_as_docker_matches_them(rules: list[str], path: str, sent: bool) -> None:
    assert (path in context_files([path], rules)) is sent
