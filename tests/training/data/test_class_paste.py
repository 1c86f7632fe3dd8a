"""Pasting another frame's thin classes (`ClassPaste`, `data.paste_classes`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.config import ConfigError, load_config
from training.data.augment import ClassPaste
from training.data.classes import INSTANCE_UNKNOWN, train_id
from training.data.sample import DataConfigError, SceneSample
from training.dataset import MixedTaskDataset, build_training_sources

POLE, BUILDING, SKY = train_id("pole"), train_id("building"), train_id("sky")


def _frame(label: int, colour: int, depth: float, shape: tuple[int, int] = (6, 8)) -> SceneSample:
    return SceneSample(
        image=np.full((*shape, 3), colour, np.uint8),
        semantic=np.full(shape, label, np.uint8),
        instance=np.full(shape, INSTANCE_UNKNOWN, np.int32),
        depth=np.full(shape, depth, np.float32),
        name=f"frame{label}",
    )


def test_only_the_donors_pixels_of_the_classes_move_with_their_depth() -> None:
    sample = _frame(BUILDING, 50, 10.0)
    donor = _frame(SKY, 250, np.inf)
    donor.semantic[:, 3] = POLE
    donor.image[:, 3] = 90
    donor.depth[:, 3] = 4.0
    out = ClassPaste((POLE,))(sample, donor)
    pole = np.zeros((6, 8), bool)
    pole[:, 3] = True
    assert (out.semantic[pole] == POLE).all() and (out.semantic[~pole] == BUILDING).all()
    assert (out.image[pole] == 90).all() and (out.image[~pole] == 50).all()
    assert (out.depth[pole] == 4.0).all() and (out.depth[~pole] == 10.0).all()
    # The donor's sky is not pasted, and the sample itself is left as it was.
    assert (sample.semantic == BUILDING).all()


def test_a_donor_of_another_size_is_resized_onto_the_sample() -> None:
    donor = _frame(SKY, 250, np.inf, shape=(12, 16))
    donor.semantic[:, 6:8] = POLE
    out = ClassPaste((POLE,))(_frame(BUILDING, 50, 10.0), donor)
    assert out.semantic.shape == (6, 8)
    assert (out.semantic[:, 3] == POLE).all()
    assert (out.semantic == POLE).sum() == 6


def test_the_donor_is_another_frame_and_the_probability_holds() -> None:
    paste = ClassPaste((POLE,), probability=0.25)
    rng = np.random.default_rng(0)
    draws = [paste.donor(3, 10, rng) for _ in range(4000)]
    taken = [d for d in draws if d is not None]
    assert abs(len(taken) / len(draws) - 0.25) < 0.03
    assert all(index != 3 and 0 <= index < 10 for index, _ in taken)
    assert {index for index, _ in taken} == set(range(10)) - {3}
    assert 0.4 < np.mean([mirrored for _, mirrored in taken]) < 0.6
    assert paste.donor(0, 1, rng) is None


@pytest.mark.parametrize(("classes", "probability"), [((), 0.5), ((POLE,), 0.0), ((POLE,), 1.5)])
def test_bad_paste_settings_are_refused(classes: tuple[int, ...], probability: float) -> None:
    with pytest.raises(DataConfigError):
        ClassPaste(classes, probability)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.paste_classes=[lamp]"], "unknown classes"),
        (["data.mix={}", "data.source=procedural", "loss.class_weighting=none"], "add camvid"),
        (["data.paste_probability=0"], "paste_probability"),
    ],
)
def test_the_config_names_what_is_wrong(overrides: list[str], message: str, camvid_root: Path) -> None:
    base = ["data.paste_classes=[pole]", f"data.camvid_root={camvid_root}"]
    with pytest.raises(ConfigError, match=message):
        load_config("configs/street_stage6.yaml", [*base, *overrides])


def test_training_samples_carry_pasted_poles_and_stay_reproducible(camvid_root: Path) -> None:
    def camvid_items(probability: float) -> list[dict[str, np.ndarray]]:
        config = load_config(
            "configs/street_stage6.yaml",
            [
                f"data.camvid_root={camvid_root}",
                "data.height=24",
                "data.width=32",
                "data.crop=null",
                "data.scale_range=[1.0,1.0]",
                "data.color_jitter=0",
                f"data.paste_probability={probability}",
            ],
        )
        sources = build_training_sources(config.data, config.batch_size)
        dataset = MixedTaskDataset(sources, seed=0)
        k = [source.name for source in sources].index("camvid")
        count = len(sources[k].scenes)
        return [{key: v.numpy() for key, v in dataset[(k, i % count, False, i)].items()} for i in range(8)]

    plain_poles = sum(int((item["semantic"] == POLE).sum()) for item in camvid_items(1e-9))
    pasted, again = camvid_items(1.0), camvid_items(1.0)
    assert sum(int((item["semantic"] == POLE).sum()) for item in pasted) > plain_poles
    for first, second in zip(pasted, again, strict=True):
        np.testing.assert_array_equal(first["semantic"], second["semantic"])
        np.testing.assert_array_equal(first["image"], second["image"])
