"""``scene-calibrate``: per-class offsets on the semantic logits, fitted for mean IoU on labelled frames."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_export.card import build_model_card
from training.calibrate import LabelledPixels, apply_offsets, camvid_tunable, fit_offsets, main
from training.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from training.config import from_dict
from training.data.camvid import CAMVID_CLASSES
from training.data.classes import CLASSES
from training.model import build_model, semantic_output_layer
from training.weighting import build_weighting_from_config


def test_mean_iou_counts_each_model_class_as_the_data_class_it_maps_to() -> None:
    # Three model classes scored as two data classes (model classes 1 and 2 are both data 1).
    pixels = LabelledPixels(
        logits=torch.tensor([[5.0, 0, 0], [0, 5, 0], [0, 0, 5], [5, 0, 0]]).half(),
        labels=torch.tensor([0, 1, 1, 1]),
        to_data=torch.tensor([0, 1, 1]),
        classes=2,
    )
    miou, iou = pixels.mean_iou(torch.zeros(3))
    # data 0: TP 1, FP 1 -> 1/2; data 1: TP 2, FN 1 -> 2/3.
    assert iou.tolist() == pytest.approx([50.0, 200 / 3])
    assert miou == pytest.approx((50.0 + 200 / 3) / 2)


def test_an_overweighted_class_is_pulled_back_by_the_offset_that_undoes_it() -> None:
    """Class 0's logits carry +1 too many, as a class weight would put them: every pixel of
    class 1 is taken by it. Coordinate ascent finds -1 on class 0 and scores 100%."""
    true_zero, true_one = torch.tensor([2.0, 0.0, -9.0]), torch.tensor([0.5, 1.0, -9.0])
    logits = torch.stack([true_zero] * 50 + [true_one] * 50)
    logits[:, 0] += 1.0
    pixels = LabelledPixels(logits.half(), torch.tensor([0] * 50 + [1] * 50), torch.tensor([0, 1, 1]), 2)
    lines: list[str] = []

    offsets, before, after = fit_offsets(pixels, tunable=[0, 1], say=lines.append)

    assert before == pytest.approx(25.0) and after == pytest.approx(100.0)
    assert offsets.tolist() == [-1.0, 0.0, 0.0]  # class 2, not tunable, is left alone
    assert lines[-1].startswith("sweep 2: mIoU 100.00")  # the second sweep changed nothing


def test_offsets_are_added_to_the_semantic_logits_and_nothing_else() -> None:
    model = build_model(from_dict({"model": {"backbone": "espnetv2", "width": 1.0}}).model).eval()
    images = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(0))
    offsets = torch.linspace(-1.0, 1.0, len(CLASSES))
    with torch.no_grad():
        before = model(images)
        apply_offsets(model, offsets)
        after = model(images)
    shift = after["semantic_logits"] - before["semantic_logits"]
    torch.testing.assert_close(shift, offsets.view(1, -1, 1, 1).expand_as(shift), atol=1e-5, rtol=0)
    for name in ("instance_offsets", "inverse_depth"):
        torch.testing.assert_close(after[name], before[name])


def test_only_the_classes_camvid_labels_are_fitted() -> None:
    names = {CLASSES[c].name for c in camvid_tunable()}
    assert len(names) == len(CAMVID_CLASSES)
    assert {"pole", "fence", "rider", "sidewalk"} <= names and not {"wall", "terrain", "truck"} & names


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    config = from_dict(
        {"model": {"backbone": "espnetv2", "width": 1.0}, "data": {"height": 64, "width": 128}}
    )
    torch.manual_seed(0)
    model = build_model(config.model)
    path = tmp_path / "last.pt"
    weighting = build_weighting_from_config(config.loss)
    save_checkpoint(
        path, config=config, step=7, model=model, weighting=weighting, metrics={"semantic_miou": 1.0}
    )
    return path


def test_the_cli_writes_a_calibrated_checkpoint_that_the_card_records(
    checkpoint: Path, camvid_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "calibrated.pt"
    assert main(["--checkpoint", str(checkpoint), "--camvid", str(camvid_root), "--out", str(out)]) == 0
    assert "CamVid train (3 frames): mIoU" in capsys.readouterr().out

    record = load_checkpoint(out)["calibration"]
    assert record["fitted_on"] == "CamVid train (3 frames)"
    assert record["miou_after"] >= record["miou_before"]
    assert set(record["semantic_logit_offsets"]) == {CLASSES[c].name for c in camvid_tunable()}
    model, state = model_from_checkpoint(out)
    original, _ = model_from_checkpoint(checkpoint)
    layers = (semantic_output_layer(m).bias for m in (model, original))
    bias = torch.sub(*layers).detach()  # type: ignore[call-overload]
    offsets = record["semantic_logit_offsets"]
    assert [round(float(bias[c.train_id]), 6) for c in CLASSES] == [offsets.get(c.name, 0.0) for c in CLASSES]
    assert state["step"] == 7
    # Validated again with the offsets, on the config's validation split (procedural here).
    assert state["metrics"]["semantic_miou"] != 1.0 and "semantic_unlabelled_classes" in state["metrics"]

    card = build_model_card(state, model, precision="fp32", name="unit", version="1").training.calibration
    assert card is not None and card.offsets == offsets and card.miou_after == record["miou_after"]


def test_bad_requests_are_refused_with_one_line(
    checkpoint: Path, camvid_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "calibrated.pt"
    assert (
        main(["--checkpoint", str(checkpoint), "--camvid", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    )
    assert "scene-calibrate:" in capsys.readouterr().err and not out.exists()
    assert main(["--checkpoint", str(checkpoint), "--camvid", str(camvid_root), "--out", str(out)]) == 0
    again = tmp_path / "twice.pt"
    assert main(["--checkpoint", str(out), "--camvid", str(camvid_root), "--out", str(again)]) == 2
    assert "is calibrated already" in capsys.readouterr().err and not again.exists()
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(checkpoint), "--camvid", str(camvid_root), "--out", str(checkpoint)])
