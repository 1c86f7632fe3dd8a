import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.checkpoint import CheckpointError, load_checkpoint
from training.data.classes import CLASSES
from training.evaluate import main as eval_main


@pytest.fixture
def checkpoint(smoke_run: Path) -> Path:
    """The session's smoke run (tests/conftest.py), trained at 32x64."""
    return smoke_run / "last.pt"


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
    # The median (the best constant under the L1 metric), not the mean.
    measured = []
    for i in range(len(train)):
        inverse, valid = train[i].inverse_depth()
        measured.append(inverse[valid])
    assert base["median_inverse_depth"] == pytest.approx(float(np.median(np.concatenate(measured))), rel=1e-6)
    # Zero offsets: the error is the mean distance of instance pixels from their centroid.
    assert base["instance_mean_error_px"] > 1


def test_scene_eval_writes_metrics_and_a_prediction_grid(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    args = ["--checkpoint", str(checkpoint), "--count", "3", "--seed", "5", "--out", str(out)]
    assert eval_main([*args, "--baseline-scenes", "8"]) == 0
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
        "height": 32,  # the checkpoint's training size
        "width": 64,
    }
    assert set(report["sigma"]) == {"semantic", "instance", "depth"}
    assert report["baselines"]["majority_class"] in {c.name for c in CLASSES}
    assert report["baselines"]["semantic_miou"] < 40
    with Image.open(out.with_suffix(".png")) as grid:
        assert grid.width == 7 * 64 + 6 * 2  # image + three truth/prediction pairs


def test_scene_eval_scores_the_procedural_scenes_its_arguments_name(checkpoint: Path, tmp_path: Path) -> None:
    # Scores are compared across checkpoints and runs only if --split, --seed and --count
    # alone decide the scenes, whatever data the checkpoint was trained on.
    from training.data.procedural import ProceduralScenes
    from training.evaluate import _open_inputs, _parser

    argv = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "eval.json")]
    args = _parser().parse_args([*argv, "--split", "val", "--seed", "7", "--count", "5"])
    assert _open_inputs(args).scenes == ProceduralScenes(split="val", seed=7, count=5, height=32, width=64)
    args = _parser().parse_args(argv)
    assert _open_inputs(args).scenes == ProceduralScenes(
        split="test", seed=1000, count=500, height=32, width=64
    )


def test_evaluation_is_repeatable(checkpoint: Path, tmp_path: Path) -> None:
    reports = []
    for name in ("a.json", "b.json"):
        args = ["--checkpoint", str(checkpoint), "--count", "2", "--out", str(tmp_path / name)]
        assert eval_main([*args, "--baseline-scenes", "0"]) == 0  # the model's figures, not the baselines
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


class _ColourModel(torch.nn.Module):
    """Predicts each pixel's class from its colour, with the fixture's colour table."""

    def __init__(self, lookup: dict[tuple[int, int, int], int]) -> None:
        super().__init__()
        self.lookup = lookup

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        n, _, h, w = images.shape
        pixels = (images * 255).round().to(torch.int64).permute(0, 2, 3, 1).reshape(-1, 3).tolist()
        classes = torch.tensor([self.lookup.get(tuple(p), 0) for p in pixels]).view(n, h, w)
        logits = torch.nn.functional.one_hot(classes, 19).permute(0, 3, 1, 2).float() * 10
        return {
            "semantic_logits": logits,
            "instance_offsets": torch.zeros(n, 2, h, w),
            "inverse_depth": torch.zeros(n, 1, h, w),
        }


def test_camvid_scores_are_in_camvid_classes_at_full_resolution(camvid_root: Path) -> None:
    from training.data.camvid import CAMVID_CLASSES, CamVidScenes
    from training.evaluate import evaluate_camvid

    # At the frame's own size, a model that reads the class off the colour is perfect.
    scenes = CamVidScenes(camvid_root, "train", height=36, width=48)
    lookup = {}
    for i in range(len(scenes)):
        sample = scenes[i]
        for colour, label in zip(sample.image.reshape(-1, 3).tolist(), sample.semantic.ravel(), strict=True):
            if label != 255:
                lookup[tuple(colour)] = int(label)
    perfect = evaluate_camvid(_ColourModel(lookup), scenes, batch_size=2)
    assert perfect["camvid_miou"] == pytest.approx(100.0)
    assert set(perfect["camvid_iou_per_class"]) == set(CAMVID_CLASSES)

    # Every pixel "truck" counts as CamVid's car: car IoU = car pixels / labelled pixels.
    scores = evaluate_camvid(_TruckModel(), scenes)
    labels = np.concatenate([scenes.camvid_labels(i).ravel() for i in range(len(scenes))])
    labelled = labels[labels != 11]
    assert scores["camvid_iou_per_class"]["car"] == pytest.approx(100 * np.mean(labelled == 8), abs=0.01)
    assert scores["camvid_iou_per_class"]["road"] == 0.0
    assert scores["camvid_miou"] == pytest.approx(scores["camvid_iou_per_class"]["car"] / 11, abs=0.01)
    # Every car pixel is found (recall 100%) and a car prediction is right as often as a
    # labelled pixel is car; a class never predicted has recall 0 and no precision.
    assert scores["camvid_recall_per_class"]["car"] == 100.0
    assert scores["camvid_precision_per_class"]["car"] == pytest.approx(
        100 * np.mean(labelled == 8), abs=0.01
    )
    assert scores["camvid_recall_per_class"]["road"] == 0.0
    assert scores["camvid_precision_per_class"]["road"] is None
    confusion = np.array(scores["camvid_confusion"])
    assert confusion.shape == (11, 11) and confusion.sum() == labelled.size
    assert (confusion[:, 8] == np.bincount(labelled, minlength=11)).all()  # every row went to car


class _TruckModel(torch.nn.Module):
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        n, _, h, w = images.shape
        logits = torch.zeros(n, 19, h, w)
        logits[:, 14] = 1.0  # truck
        return {"semantic_logits": logits}


def test_scene_eval_reports_camvid_beside_procedural_metrics(
    checkpoint: Path, camvid_root: Path, tmp_path: Path
) -> None:
    out, grid = tmp_path / "eval.json", tmp_path / "camvid.png"
    args = ["--checkpoint", str(checkpoint), "--count", "2", "--out", str(out), "--baseline-scenes", "0"]
    assert eval_main([*args, "--camvid", str(camvid_root), "--camvid-grid", str(grid)]) == 0
    report = json.loads(out.read_text())
    assert isinstance(report["semantic_miou"], float)  # the procedural test metrics
    camvid = report["camvid"]
    assert camvid["split"] == "val" and camvid["frames"] == 1
    assert 0 <= camvid["camvid_miou"] <= 100
    assert len(camvid["camvid_iou_per_class"]) == 11
    with Image.open(grid) as picture:
        assert picture.width == 3 * 64 + 2 * 2  # classes, instance offsets, depth; no CamVid pixels


def test_scene_eval_scores_camvid_at_other_input_sizes(
    checkpoint: Path, camvid_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval.json"
    args = ["--checkpoint", str(checkpoint), "--count", "2", "--out", str(out), "--baseline-scenes", "0"]
    height, width = _trained_size(checkpoint)
    sizes = [f"{width}x{height}", "96x48"]
    assert eval_main([*args, "--camvid", str(camvid_root), "--camvid-sizes", *sizes]) == 0
    camvid = json.loads(out.read_text())["camvid"]
    assert list(camvid["at_sizes"]) == sizes
    # At the trained size it is the reported score itself; another size is scored too.
    assert camvid["at_sizes"][sizes[0]]["camvid_miou"] == pytest.approx(camvid["camvid_miou"])
    assert len(camvid["at_sizes"]["96x48"]["camvid_iou_per_class"]) == 11


@pytest.mark.parametrize(
    ("size", "message"),
    [("800", "expected WIDTHxHEIGHT"), ("wide", "expected WIDTHxHEIGHT"), ("800x0", "must be positive")],
)
def test_scene_eval_refuses_a_malformed_camvid_size(
    checkpoint: Path,
    camvid_root: Path,
    tmp_path: Path,
    size: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "e.json"), "--camvid", str(camvid_root)]
    with pytest.raises(SystemExit) as exit_info:
        eval_main([*args, "--camvid-sizes", size])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--camvid-sizes" in error and message in error


def test_scene_eval_camvid_sizes_need_camvid(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "e.json"), "--camvid-sizes", "96x48"]
    assert eval_main(args) == 2
    assert "--camvid-sizes need --camvid ROOT" in capsys.readouterr().err


def _trained_size(path: Path) -> tuple[int, int]:
    from training.checkpoint import load_checkpoint

    data = load_checkpoint(path)["config"].data
    return data.height, data.width


def test_batch_statistics_copy_normalises_each_batch_and_leaves_the_model_alone() -> None:
    from training.evaluate import BatchStatistics

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = torch.nn.BatchNorm2d(1)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"out": self.norm(x)}

    model = Net().eval()
    model.norm.running_mean.fill_(100.0)  # running statistics that fit nothing
    x = torch.arange(8.0).view(2, 1, 2, 2)
    checked = BatchStatistics(model)
    checked.eval()  # as evaluate() does: the norms must still use the batch's statistics
    with torch.no_grad():
        normalised = checked(x)["out"]
        far_off = model(x)["out"]
    assert abs(float(normalised.mean())) < 1e-5 and float(far_off.mean()) < -50
    assert float(model.norm.running_mean) == 100.0 and float(checked.model.norm.running_mean) == 100.0
    assert not model.norm.training


def test_scene_eval_batchnorm_check_reports_both_scores(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    args = ["--checkpoint", str(checkpoint), "--count", "4", "--baseline-scenes", "0", "--out", str(out)]
    assert eval_main([*args, "--batchnorm-check"]) == 0
    check = json.loads(out.read_text())["batchnorm_check"]
    assert check["running_statistics"]["semantic_miou"] == json.loads(out.read_text())["semantic_miou"]
    assert set(check["batch_statistics"]) == set(check["running_statistics"])
