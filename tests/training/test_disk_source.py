"""Training from scenes rendered once to disk (``data.source=disk``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.config import ConfigError, DataConfig, load_config
from training.data.cli import main as scene_data
from training.data.procedural import ProceduralScenes
from training.data.sample import DataConfigError
from training.dataset import build_scenes
from training.train import main as scene_train

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def disk_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    for split, count in (("train", 6), ("val", 2)):
        args = ["render", "--out", str(root / split), "--split", split, "--count", str(count)]
        assert scene_data([*args, "--seed", "3", "--height", "32", "--width", "64"]) == 0
    return root


def test_disk_source_reads_back_the_rendered_scenes_of_each_split(disk_root: Path) -> None:
    config = DataConfig(source="disk", disk_root=str(disk_root), height=32, width=64, seed=3)
    for split, count in (("train", 6), ("val", 2)):
        scenes = build_scenes(config, split)
        assert len(scenes) == count
        rendered = ProceduralScenes(split=split, seed=3, count=count, height=32, width=64)
        for index in (0, count - 1):
            np.testing.assert_array_equal(scenes[index].image, rendered[index].image)
            np.testing.assert_array_equal(scenes[index].depth, rendered[index].depth)


def test_disk_scenes_of_another_size_are_refused(disk_root: Path) -> None:
    config = DataConfig(source="disk", disk_root=str(disk_root), height=128, width=256)
    with pytest.raises(DataConfigError, match=r"32x64 scenes, the training size is 128x256"):
        build_scenes(config, "train")


def test_disk_source_needs_its_folder() -> None:
    with pytest.raises(ConfigError, match=r"data\.disk_root: required"):
        load_config(None, ["data.source=disk"])


def test_scene_train_trains_from_a_disk_folder(disk_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code = scene_train(
        [
            "--config",
            str(REPO / "configs" / "smoke.yaml"),
            f"run_dir={run_dir}",
            "data.source=disk",
            f"data.disk_root={disk_root}",
            "data.height=32",  # the rendered scenes' size
            "data.width=64",
            "steps=2",
        ]
    )
    assert code == 0
    assert "semantic_miou" in json.loads((run_dir / "metrics.json").read_text())


def test_scene_train_names_a_missing_disk_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--config", str(REPO / "configs" / "smoke.yaml"), f"run_dir={tmp_path / 'run'}"]
    code = scene_train([*args, "data.source=disk", f"data.disk_root={tmp_path / 'nowhere'}"])
    assert code == 2
    assert "manifest.json not found" in capsys.readouterr().err
