"""Published ESPNetv2 weights into this project's modules: a strict key map and a checksum.

The published Cityscapes state dict names its tensors after the reference code's
modules (``base_net.level3.0.proj_1x1.conv.weight``); `training.espnetv2` names them
after what they are (``encoder.stage3.0.reduce.0.weight``). `map_published_key`
translates one name; `load_published` requires every published tensor to land on
exactly one of ours, with the same shape, and every one of ours to be filled, apart
from the few listed in `DROPPED` with the reason. Nothing is guessed and nothing is
skipped silently: a file from another network fails with the keys that do not fit.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from training.espnetv2 import PUBLISHED_CLASSES


class PretrainedWeightsError(ValueError):
    """The weight file is missing, altered, or does not fit the network; the message says which."""


# Module prefixes, reference → ours (applied first, in order, to the start of a key).
_PREFIXES: tuple[tuple[str, str], ...] = (
    (r"^base_net\.level1\.", "encoder.stem."),
    (r"^base_net\.level([234])_0\.eesp\.", r"encoder.down\1.eesp."),
    (r"^base_net\.level([234])_0\.inp_reinf\.", r"encoder.down\1.image_projection."),
    (r"^base_net\.level([234])_0\.act\.", r"encoder.down\1.activation."),
    (r"^base_net\.level([34])\.(\d+)\.", r"encoder.stage\1.\2."),
    (r"^bu_dec_l1\.", "decoder.pyramid16."),
    (r"^bu_dec_l2\.", "decoder.pyramid8."),
    (r"^bu_dec_l3\.", "decoder.pyramid4."),
    (r"^bu_dec_l4\.", "decoder.pyramid2."),
    (r"^merge_enc_dec_l2\.", "decoder.skip8."),
    (r"^merge_enc_dec_l3\.", "decoder.skip4."),
    (r"^merge_enc_dec_l4\.", "decoder.skip2."),
    (r"^bu_br_l2\.", "decoder.norm8."),
    (r"^bu_br_l3\.", "decoder.norm4."),
    (r"^bu_br_l4\.", "decoder.norm2."),
)
# Layer names inside a module, reference → ours (then applied anywhere in the key, in order).
_PARTS: tuple[tuple[str, str], ...] = (
    (r"\.proj_1x1\.", ".reduce."),
    (r"\.spp_dw\.(\d+)\.conv\.", r".branches.\1."),
    (r"\.conv_1x1_exp\.", ".expand."),
    (r"\.br_after_cat\.bn\.", ".merge_norm.0."),
    (r"\.br_after_cat\.act\.", ".merge_norm.1."),
    (r"\.module_act\.", ".activation."),
    (r"\.stages\.", ".scales."),
    (r"\.projection_layer\.cbr\.", ".project."),
    (r"\.merge_layer\.0\.br\.", ".merge_norm."),
    (r"\.merge_layer\.2\.cbr\.", ".fuse."),
    (r"\.merge_layer\.3\.", ".out."),
    (r"\.br\.br\.", ".out_norm."),
    (r"\.wt_layer\.1\.", ".gate."),
    (r"\.expansion_layer\.cbr\.", ".expand."),
    # conv → batch norm → PReLU blocks are numbered sequences here.
    (r"\.conv\.", ".0."),
    (r"\.bn\.", ".1."),
    (r"\.act\.", ".2."),
)
# Published tensors with no counterpart, and why.
DROPPED: dict[str, str] = {
    r"^base_net\.level[234]_0\.eesp\.module_act\.weight$": (
        "a strided EESP unit's own activation, never applied: the strided unit activates "
        "after adding the image projection"
    ),
}
# Tensors of the final layer, whose channel axis holds the published classes.
_CLASSIFIER_KEYS = ("decoder.pyramid2.out.weight", "decoder.pyramid2.out.bias")


def map_published_key(key: str) -> str | None:
    """Our name for published tensor ``key``; ``None`` for a key in `DROPPED`.

    Raises:
        PretrainedWeightsError: the key belongs to no known module.
    """
    if any(re.search(pattern, key) for pattern in DROPPED):
        return None
    for pattern, replacement in _PREFIXES:
        mapped, count = re.subn(pattern, replacement, key)
        if count:
            break
    else:
        raise PretrainedWeightsError(f"published tensor {key!r} belongs to no ESPNetv2 module")
    for pattern, replacement in _PARTS:
        mapped = re.sub(pattern, replacement, mapped)
    return mapped


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_published(path: str | Path, sha256: str | None) -> dict[str, Tensor]:
    """The published state dict at ``path``, after checking its sha256 when one is given."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"model.backbone_weights: {path} not found")
    if sha256 is not None:
        found = sha256_of(path)
        if found != sha256.lower():
            raise PretrainedWeightsError(
                f"model.backbone_weights: {path} has sha256 {found}, expected {sha256} "
                "(model.backbone_sha256): not the file this configuration was written for"
            )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise PretrainedWeightsError(f"model.backbone_weights: {path} does not hold a state dict")
    return state


def remap(published: dict[str, Tensor], classes: int) -> dict[str, Tensor]:
    """Published tensors under our names; the classifier cut to its first ``classes`` channels.

    The published classifier's channels are the 19 Cityscapes train ids in order, then an
    untrained background channel, so the first 19 are exactly this project's class table.
    """
    ours: dict[str, Tensor] = {}
    for key, tensor in published.items():
        name = map_published_key(key)
        if name is None:
            continue
        if name in ours:
            raise PretrainedWeightsError(f"published tensors map onto {name!r} twice")
        if name in _CLASSIFIER_KEYS:
            if tensor.shape[0] != PUBLISHED_CLASSES or classes > PUBLISHED_CLASSES:
                raise PretrainedWeightsError(
                    f"{key}: {tensor.shape[0]} output channels; expected {PUBLISHED_CLASSES} "
                    f"to keep the first {classes}"
                )
            tensor = tensor[:classes]
        ours[name] = tensor
    return ours


def load_published(module: nn.Module, published: dict[str, Tensor], classes: int) -> None:
    """Fill ``module`` (an `ESPNetv2Segmentation` layout) from ``published``, strictly.

    Raises:
        PretrainedWeightsError: naming the tensors missing on either side or whose shapes differ.
    """
    ours = remap(published, classes)
    own = module.state_dict()
    missing = sorted(set(own) - set(ours))
    unexpected = sorted(set(ours) - set(own))
    if missing or unexpected:
        raise PretrainedWeightsError(
            f"the weights do not fit ESPNetv2: {len(missing)} tensors missing "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}), {len(unexpected)} unknown "
            f"({', '.join(unexpected[:4])}{', ...' if len(unexpected) > 4 else ''})"
        )
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in ours.items() if v.shape != own[k].shape
    ]
    if wrong:
        raise PretrainedWeightsError(
            f"the weights do not fit ESPNetv2 (wrong shapes): {'; '.join(wrong[:4])}"
        )
    module.load_state_dict(ours, strict=True)
