"""ESPNetv2: the network written from the paper, the published weights' key map, and the loader.

The tests marked as needing the published weights read them from
``SCENE_ESPNETV2_WEIGHTS`` (default: ``../shared/pretrained/espnetv2/`` next to the
repository) and CamVid from ``SCENE_CAMVID_ROOT`` (default ``../shared/camvid``); they
skip, saying so, where those files are absent. Everything else runs on the committed
layout of the published file (tensor names and shapes, no values).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from training.espnetv2 import (
    ESPNetv2Segmentation,
    adaptive_average_pool,
    branch_dilations,
    channel_shuffle,
)
from training.model import ESPNetv2SceneModel, ModelConfig
from training.pretrained import (
    DROPPED,
    PretrainedWeightsError,
    load_published,
    map_published_key,
    read_published,
)

REPO = Path(__file__).resolve().parents[2]
PUBLISHED_SHA256 = "a72d59699801c7ce8e8b89a53af9097eaaa60dc12180ecde86fd700ba1222fe8"
WEIGHTS = Path(
    os.environ.get(
        "SCENE_ESPNETV2_WEIGHTS", REPO.parent / "shared/pretrained/espnetv2/espnetv2_s_2.0_city_1024x512.pth"
    )
)
CAMVID = Path(os.environ.get("SCENE_CAMVID_ROOT", REPO.parent / "shared/camvid"))


def needs_weights() -> Path:
    if not WEIGHTS.is_file():
        pytest.skip(f"published ESPNetv2 weights not at {WEIGHTS} (set SCENE_ESPNETV2_WEIGHTS)")
    return WEIGHTS


@pytest.mark.parametrize(
    ("limit", "dilations"), [(13, [1, 2, 3, 4]), (9, [1, 2, 3, 4]), (7, [1, 1, 2, 3]), (5, [1, 1, 1, 2])]
)
def test_eesp_branches_fall_back_to_3x3_beyond_the_receptive_limit(limit: int, dilations: list[int]) -> None:
    assert branch_dilations(4, limit) == dilations


@pytest.mark.parametrize(
    ("size", "out"),
    [
        ((24, 48), (12, 24)),  # exact divisor: plain pooling
        ((36, 60), (24, 40)),  # 1.5x: equal bins of 2, pooled then gathered
        ((24, 48), (5, 5)),  # uneven bins: the averaging matrix
        ((7, 9), (5, 5)),
        ((10, 20), (10, 20)),  # nothing to do
    ],
)
def test_adaptive_average_pool_matches_torch(size: tuple[int, int], out: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size)
    torch.testing.assert_close(adaptive_average_pool(x, out), F.adaptive_avg_pool2d(x, out))


def test_channel_shuffle_interleaves_the_groups() -> None:
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]


def test_every_published_tensor_maps_onto_exactly_one_of_ours_with_its_shape(
    espnetv2_layout: dict[str, list[int]],
) -> None:
    layout = espnetv2_layout
    own = ESPNetv2Segmentation(2.0, classes=20).state_dict()
    mapped = {map_published_key(name): shape for name, shape in layout.items()}
    dropped = [name for name in layout if map_published_key(name) is None]
    assert len(dropped) == 3 and all(any(re.search(p, n) for p in DROPPED) for n in dropped)
    mapped.pop(None)
    assert len(mapped) == len(layout) - len(dropped), "two published tensors share a name of ours"
    assert set(mapped) == set(own)
    assert {name: list(own[name].shape) for name in own} == mapped


@pytest.mark.parametrize(
    ("published", "ours"),
    [
        ("base_net.level1.conv.weight", "encoder.stem.0.weight"),
        ("base_net.level2_0.inp_reinf.1.bn.running_var", "encoder.down2.image_projection.1.1.running_var"),
        ("base_net.level4.6.spp_dw.3.conv.weight", "encoder.stage4.6.branches.3.weight"),
        ("base_net.level3.0.br_after_cat.act.weight", "encoder.stage3.0.merge_norm.1.weight"),
        ("bu_dec_l1.merge_layer.2.cbr.0.weight", "decoder.pyramid16.fuse.0.weight"),
        ("bu_dec_l4.merge_layer.3.bias", "decoder.pyramid2.out.bias"),
        ("merge_enc_dec_l4.wt_layer.1.weight", "decoder.skip2.gate.weight"),
        ("bu_br_l3.1.weight", "decoder.norm4.1.weight"),
        ("base_net.level3_0.eesp.module_act.weight", None),
    ],
)
def test_key_map_examples(published: str, ours: str | None) -> None:
    assert map_published_key(published) == ours


def test_an_unknown_tensor_is_refused_by_name() -> None:
    with pytest.raises(PretrainedWeightsError, match=r"base_net\.level5_0"):
        map_published_key("base_net.level5_0.eesp.proj_1x1.conv.weight")


def test_loading_is_strict(fake_espnetv2: Callable[[int], dict[str, torch.Tensor]]) -> None:
    published = fake_espnetv2(0)
    network = ESPNetv2Segmentation(2.0, classes=19)
    load_published(network, published, classes=19)
    # The classifier keeps the 19 train ids and drops the untrained background channel.
    torch.testing.assert_close(
        network.decoder.pyramid2.out.weight, published["bu_dec_l4.merge_layer.3.weight"][:19]
    )
    torch.testing.assert_close(
        network.encoder.stage4[3].reduce[0].weight, published["base_net.level4.3.proj_1x1.conv.weight"]
    )
    missing = dict(published)
    del missing["base_net.level3.1.conv_1x1_exp.bn.running_mean"]
    with pytest.raises(
        PretrainedWeightsError, match=r"1 tensors missing \(encoder.stage3.1.expand.1.running_mean"
    ):
        load_published(ESPNetv2Segmentation(2.0, 19), missing, classes=19)
    reshaped = dict(published)
    reshaped["base_net.level1.conv.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(PretrainedWeightsError, match=r"wrong shapes.*encoder\.stem\.0\.weight"):
        load_published(ESPNetv2Segmentation(2.0, 19), reshaped, classes=19)
    with pytest.raises(PretrainedWeightsError, match="do not fit"):
        load_published(ESPNetv2Segmentation(1.0, 19), published, classes=19)


def test_a_file_with_another_checksum_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    torch.save({"a": torch.zeros(1)}, path)
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(PretrainedWeightsError, match=f"has sha256 {actual}, expected {PUBLISHED_SHA256}"):
        read_published(path, PUBLISHED_SHA256)
    assert set(read_published(path, actual)) == {"a"}
    with pytest.raises(PretrainedWeightsError, match="not found"):
        read_published(tmp_path / "missing.pth", None)


@pytest.mark.parametrize("instance_stride", [4, 8])
def test_scene_model_starts_from_the_published_network(
    tmp_path: Path, fake_espnetv2: Callable[[int], dict[str, torch.Tensor]], instance_stride: int
) -> None:
    path = tmp_path / "published.pth"
    torch.save(fake_espnetv2(3), path)
    config = ModelConfig(backbone="espnetv2", backbone_weights=str(path), instance_stride=instance_stride)
    model = ESPNetv2SceneModel(config).eval()
    reference = ESPNetv2Segmentation(2.0, 19)
    load_published(reference, fake_espnetv2(3), classes=19)
    reference.eval()
    images = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        out = model(images)
        expected = reference((images - model.mean) / model.std)
    torch.testing.assert_close(out["semantic_logits"], expected)
    # The new heads start at zero, on top of copies of the published blocks.
    assert out["instance_offsets"].abs().max() == 0 and out["inverse_depth"].abs().max() == 0
    # Every block above the new output layer is the published one.
    torch.testing.assert_close(
        model.depth_decoder.pyramid8.fuse[0].weight, model.semantic_decoder.pyramid8.fuse[0].weight
    )
    torch.testing.assert_close(
        model.instance_decoder.skip8.gate.weight, model.semantic_decoder.skip8.gate.weight
    )
    assert model.instance_decoder.classifier.out_channels == 2
    assert hasattr(model.instance_decoder, "pyramid4") == (instance_stride == 4)
    assert hasattr(model.depth_decoder, "pyramid4")
    assert out["instance_offsets"].shape == (1, 2, 64, 128) and out["inverse_depth"].shape == (1, 1, 64, 128)


def test_published_weights_give_the_recorded_output() -> None:
    """The loaded network's logits on a fixed input, against figures recorded when the loader
    reproduced the published CamVid score (docs/training.md)."""
    path = needs_weights()
    network = ESPNetv2Segmentation(2.0, 19)
    load_published(network, read_published(path, PUBLISHED_SHA256), classes=19)
    network.eval()
    ramp = torch.linspace(-2, 2, 3 * 64 * 128).view(1, 3, 64, 128)
    with torch.no_grad():
        logits = network(ramp)
    assert logits.shape == (1, 19, 64, 128)
    assert logits.mean(dim=(0, 2, 3)).tolist() == pytest.approx(RECORDED_CLASS_MEANS, abs=2e-3)


def test_published_weights_reproduce_the_published_camvid_score() -> None:
    """59.2% CamVid val mIoU at 512x256, as published, before any training here."""
    path = needs_weights()
    if not (CAMVID / "val.txt").is_file():
        pytest.skip(f"CamVid not at {CAMVID} (set SCENE_CAMVID_ROOT)")
    from training.data.camvid import CamVidScenes
    from training.evaluate import evaluate_camvid

    model = ESPNetv2SceneModel(
        ModelConfig(backbone="espnetv2", backbone_weights=str(path), backbone_sha256=PUBLISHED_SHA256)
    )
    scores = evaluate_camvid(model, CamVidScenes(CAMVID, "val", height=256, width=512), batch_size=4)
    assert scores["camvid_miou"] == pytest.approx(59.2, abs=1.0)


# Mean logit of each class over the ramp image, recorded from the published file.
RECORDED_CLASS_MEANS = [
    5.9021,
    5.5262,
    3.0205,
    2.4605,
    -0.1099,
    2.532,
    -1.8537,
    -0.2062,
    -8.0391,
    -1.7428,
    2.9577,
    0.7089,
    -5.2924,
    -1.4497,
    -0.5458,
    3.5636,
    10.5985,
    -10.376,
    -6.6256,
]
