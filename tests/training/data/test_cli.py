import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.classes import NUM_CLASSES
from training.data.cli import main
from training.data.disk import DiskScenes
from training.data.procedural import ProceduralScenes
from training.data.sample import DataConfigError


def test_render_writes_lossless_scenes_and_a_manifest(tmp_path: Path) -> None:
    out = tmp_path / "scenes"
    assert (
        main(
            [
                "render",
                "--out",
                str(out),
                "--count",
                "3",
                "--seed",
                "4",
                "--height",
                "32",
                "--width",
                "64",
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["classes"]) == NUM_CLASSES
    assert manifest["settings"] == {
        "split": "train",
        "seed": 4,
        "height": 32,
        "width": 64,
        "first": 0,
        "count": 3,
    }
    assert [scene["name"] for scene in manifest["scenes"]] == [
        "train/000000",
        "train/000001",
        "train/000002",
    ]

    on_disk = DiskScenes(out)
    rendered = ProceduralScenes(seed=4, count=3, height=32, width=64)
    assert len(on_disk) == 3
    for i in range(3):
        a, b = on_disk[i], rendered[i]
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.semantic, b.semantic)
        np.testing.assert_array_equal(a.instance, b.instance)
        np.testing.assert_array_equal(a.depth, b.depth)
        assert a.name == b.name
    with Image.open(out / manifest["scenes"][0]["instance"]) as im:
        assert im.mode.startswith("I;16") or im.mode == "I"


def test_render_with_worker_processes_matches_a_single_process(tmp_path: Path) -> None:
    args = ["--count", "4", "--height", "24", "--width", "48", "--first", "10"]
    assert main(["render", "--out", str(tmp_path / "one"), *args]) == 0
    assert main(["render", "--out", str(tmp_path / "two"), "--workers", "2", *args]) == 0
    one, two = DiskScenes(tmp_path / "one"), DiskScenes(tmp_path / "two")
    assert [one[i].name for i in range(4)] == [f"train/{i:06d}" for i in range(10, 14)]
    for i in range(4):
        np.testing.assert_array_equal(one[i].image, two[i].image)


def test_preview_writes_a_grid_of_four_panels_per_scene(tmp_path: Path) -> None:
    out = tmp_path / "preview.png"
    assert (
        main(
            [
                "preview",
                "--out",
                str(out),
                "--seed",
                "1",
                "--count",
                "3",
                "--height",
                "32",
                "--width",
                "64",
            ]
        )
        == 0
    )
    with Image.open(out) as im:
        # 4 panels of 64 px with 2 px gaps; 3 rows of 32 px with 2 px gaps, under a title strip.
        assert im.size == (4 * 64 + 3 * 2, 3 * 32 + 2 * 2 + 14)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["render", "--count", "0"], "--count"),
        (["render", "--height", "-1"], "height"),
        (["render", "--workers", "0"], "--workers"),
        (["preview", "--width", "0"], "width"),
    ],
)
def test_bad_settings_stop_with_one_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main([args[0], "--out", str(tmp_path / "x.png"), *args[1:]])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("scene-data: error:") and message in err
    assert "Traceback" not in err


def test_render_refuses_a_file_as_output_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["render", "--out", str(blocker), "--count", "1"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_reading_a_directory_that_is_not_a_render_output_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataConfigError, match=str(tmp_path)):
        DiskScenes(tmp_path)


def test_console_script_help_describes_both_commands() -> None:
    script = Path(sys.executable).parent / "scene-data"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "render" in result.stdout and "preview" in result.stdout
    result = subprocess.run([str(script), "render", "--help"], capture_output=True, text=True, check=True)
    assert "--out" in result.stdout and "--seed" in result.stdout
