import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.checkpoint import CheckpointError, load_checkpoint
from training.data.classes import CLASSES
from training.evaluate import main as eval_main
from training.train import main as train_main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    assert train_main(["--config", str(REPO / "configs/smoke.yaml"), f"run_dir={run_dir}", "steps=2"]) == 0
    return run_dir / "last.pt"


def test_trivial_baselines_predict_constants_learned_from_training_scenes(tmp_path: Path) -> None:
    from training.data.procedural import ProceduralScenes
    from training.evaluate import baseline_metrics

    train = ProceduralScenes(split="train", seed=0, count=6, height=32, width=64)
    test = ProceduralScenes(split="test", seed=9, count=4, height=32, width=64)
    base = baseline_metrics(train, test, batch_size=4)
    labels = np.concatenate([train[i].semantic.ravel() for i in range(len(train))])
    counts = np.bincount(labels[labels != 255], minlength=19)
    assert base["majority_class"] == CLASSES[int(counts.argmax())].name
    # One class right of the ten or so present.
    assert 0 < base["semantic_miou"] < 20 and base["pixel_accuracy"] > base["semantic_miou"]
    assert 0 < base["mean_inverse_depth"] < 1
    # Zero offsets: the error is the mean distance of instance pixels from their centroid.
    assert base["instance_mean_error_px"] > 1


def test_scene_eval_writes_metrics_and_a_prediction_grid(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    assert eval_main(["--checkpoint", str(checkpoint), "--count", "3", "--seed", "5", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    for key in (
        "semantic_miou",
        "instance_mean_error_px",
        "inverse_depth_mean_error",
        "pixel_accuracy",
        "depth_abs_rel",
        "depth_delta1",
    ):
        assert isinstance(report[key], float)
    assert report["dataset"] == {
        "source": "procedural",
        "split": "test",
        "seed": 5,
        "count": 3,
        "height": 64,
        "width": 128,
    }
    assert set(report["sigma"]) == {"semantic", "instance", "depth"}
    assert report["baselines"]["majority_class"] in {c.name for c in CLASSES}
    assert report["baselines"]["semantic_miou"] < 40
    with Image.open(out.with_suffix(".png")) as grid:
        assert grid.width == 7 * 128 + 6 * 2  # image + three truth/prediction pairs


def test_evaluation_is_repeatable(checkpoint: Path, tmp_path: Path) -> None:
    reports = []
    for name in ("a.json", "b.json"):
        assert (
            eval_main(["--checkpoint", str(checkpoint), "--count", "2", "--out", str(tmp_path / name)]) == 0
        )
        reports.append(json.loads((tmp_path / name).read_text()))
    assert reports[0]["semantic_miou"] == reports[1]["semantic_miou"]


def test_missing_truncated_and_foreign_checkpoints_give_one_clear_error(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:5000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    for path, message in (
        (tmp_path / "missing.pt", "not found"),
        (truncated, "cannot be read"),
        (foreign, "not a scene-mtl checkpoint"),
    ):
        assert eval_main(["--checkpoint", str(path), "--out", str(tmp_path / "x.json")]) == 2
        err = capsys.readouterr().err
        assert message in err and str(path) in err and "Traceback" not in err


class Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this code ran while loading",))


def test_loading_a_checkpoint_never_runs_pickled_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "scene-mtl/checkpoint-v1", "payload": Payload()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert "this code ran" not in capsys.readouterr().out
