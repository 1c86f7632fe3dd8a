"""bench/export_variants keeps working, and its CamVid score is right on labels known by hand."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import export_variants
from training.data.camvid import CAMVID_VOID, CamVidScenes, camvid_to_train_id
from training.data.procedural import ProceduralScenes


class FixedLabels:
    """Stands in for an ONNX session: answers every image with the same train-id labels."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def run(self, names: list[str], feeds: dict[str, Any]) -> list[np.ndarray]:
        return [self.labels[None]]


def test_camvid_score_is_100_for_the_truth_and_the_road_share_for_all_road(camvid_root: Path) -> None:
    truth_size = CamVidScenes(camvid_root, split="val").camvid_labels(0).shape
    frames = CamVidScenes(camvid_root, split="val", height=truth_size[0], width=truth_size[1])
    truth = frames.camvid_labels(0)
    perfect = camvid_to_train_id()[truth]
    assert export_variants.score_camvid(FixedLabels(perfect), frames)["camvid_miou"] == pytest.approx(100.0)

    road_id = camvid_to_train_id()[3]
    valid = truth != CAMVID_VOID
    road_iou = (truth[valid] == 3).sum() / valid.sum() * 100
    all_road = np.full(truth_size, road_id, dtype=np.uint8)
    # Every one of the 11 classes is in the frame, and only road is ever predicted (right).
    assert export_variants.score_camvid(FixedLabels(all_road), frames)["camvid_miou"] == pytest.approx(
        road_iou / 11
    )


def test_every_variant_is_timed_and_scored(smoke_export: Path, camvid_root: Path) -> None:
    files = {variant: smoke_export.with_name(name) for variant, name in export_variants.VARIANTS.items()}
    scenes = ProceduralScenes(split="test", seed=4242, count=2, height=32, width=64)
    camvid = CamVidScenes(camvid_root, split="val", height=32, width=64)
    results = export_variants.measure(files, scenes[0].image[None], scenes, camvid, threads=[1], runs=1)
    assert set(results) == {"fp32", "fp16", "int8"}
    for row in results.values():
        assert row["speed"][1]["wall_ms"] > 0 and row["speed"][1]["cpu_ms"] > 0
        assert 0 <= row["semantic_miou"] <= 100 and 0 <= row["camvid_miou"] <= 100
        assert row["frames"] == 1 and np.isfinite(row["inverse_depth_mean_error"])
    assert results["int8"]["size_mib"] < results["fp32"]["size_mib"]
    table = export_variants.table(results, [1])
    assert "| fp32 |" in table and "1.00x" in table and "CamVid mIoU %" in table
