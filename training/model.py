"""The three-head scene model: shared dilated encoder + ASPP, one decoder per task.

Architecture as in Kendall, Gal & Cipolla (2018), appendix A: a DeepLabV3 encoder
(a backbone with dilated convolutions and atrous spatial pyramid pooling) shared
by three decoders, each a 3x3 convolution to 256 channels, batch norm, ReLU and a
1x1 convolution to the task's outputs, upsampled bilinearly to the input size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import mobilenet_v3_large, resnet50, resnet101
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.models.segmentation.deeplabv3 import ASPP

from training.data.classes import NUM_CLASSES

# ImageNet statistics: the convention of torchvision backbones, so local weight files trained that way fit.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelConfig:
    """The model's shape; stored in every checkpoint so it can be rebuilt from it alone.

    Attributes:
        backbone: one of `BACKBONES`.
        num_classes: semantic output channels.
        aspp_rates: dilation rates of ASPP's three 3x3 branches (paper: 12, 24, 36
            at output stride 8).
        aspp_channels: width of each ASPP branch and of its output (paper: 256).
        decoder_channels: width of each task decoder's hidden layer (paper: 256).
        backbone_weights: optional local file of backbone weights (a state dict);
            nothing is ever downloaded.
    """

    backbone: str = "mobilenet_v3_large"
    num_classes: int = NUM_CLASSES
    aspp_rates: list[int] = field(default_factory=lambda: [12, 24, 36])
    aspp_channels: int = 256
    decoder_channels: int = 256
    backbone_weights: str | None = None


def _resnet(builder: Callable[..., nn.Module]) -> Callable[[], tuple[nn.Module, int, int]]:
    def build() -> tuple[nn.Module, int, int]:
        # Dilating the last two stages keeps output stride 8, as in the paper.
        net = builder(weights=None, replace_stride_with_dilation=[False, True, True])
        # Keeps torchvision's module names, so torchvision-style weight files load as they are.
        return create_feature_extractor(net, {"layer4": "out"}), 2048, 8

    return build


def _mobilenet() -> tuple[nn.Module, int, int]:
    # torchvision dilates the last stage, for output stride 16: the CPU-friendly choice.
    features = mobilenet_v3_large(weights=None, dilated=True).features
    return features, 960, 16


BACKBONES: dict[str, Callable[[], tuple[nn.Module, int, int]]] = {
    "mobilenet_v3_large": _mobilenet,
    "resnet50": _resnet(resnet50),
    "resnet101": _resnet(resnet101),
}


class TaskDecoder(nn.Sequential):
    """3x3 conv to ``hidden`` channels + BN + ReLU + 1x1 conv to ``out_channels``."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1),
        )


def to_model_input(images: Tensor) -> Tensor:
    """uint8 RGB ``[..., H, W, 3]`` → float ``[..., 3, H, W]`` in [0, 1], what `SceneModel` takes.

    The one place images become model input: the data loader, the evaluator and the
    exported graph all call it, so they cannot drift apart.
    """
    return images.movedim(-1, -3).float().div(255.0)


class SceneModel(nn.Module):
    """Semantic, instance and depth prediction from one shared encoder.

    ``forward(images)`` takes ``float32 [N, 3, H, W]`` RGB in [0, 1] (normalisation is
    inside the model, so exported graphs carry it) and returns:

    - ``semantic_logits``: ``[N, C, H, W]``;
    - ``instance_offsets``: ``[N, 2, H, W]``, pixels, (dy, dx) from each pixel to its
      instance's centroid;
    - ``inverse_depth``: ``[N, 1, H, W]``, 1/m.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.backbone not in BACKBONES:
            raise ValueError(
                f"model.backbone: unknown backbone {config.backbone!r}; valid: {', '.join(BACKBONES)}"
            )
        self.config = config
        self.backbone, channels, self.output_stride = BACKBONES[config.backbone]()
        if config.backbone_weights:
            load_backbone_weights(self.backbone, Path(config.backbone_weights))
        self.aspp = ASPP(channels, config.aspp_rates, config.aspp_channels)
        width, hidden = config.aspp_channels, config.decoder_channels
        self.semantic_head = TaskDecoder(width, hidden, config.num_classes)
        self.instance_head = TaskDecoder(width, hidden, 2)
        self.depth_head = TaskDecoder(width, hidden, 1)
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        size = images.shape[-2:]
        x = (images - self.mean) / self.std
        features = self.backbone(x)
        if isinstance(features, dict):  # feature extractors return {"out": tensor}
            features = features["out"]
        features = self.aspp(features)

        def decode(head: nn.Module) -> Tensor:
            return F.interpolate(head(features), size=size, mode="bilinear", align_corners=False)

        return {
            "semantic_logits": decode(self.semantic_head),
            "instance_offsets": decode(self.instance_head),
            "inverse_depth": decode(self.depth_head),
        }


def load_backbone_weights(backbone: nn.Module, path: Path) -> None:
    """Load a local state dict into ``backbone``, tolerating a torchvision-style key prefix."""
    if not path.is_file():
        raise FileNotFoundError(f"model.backbone_weights: {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"model.backbone_weights: {path} does not hold a state dict")
    own = backbone.state_dict()
    renamed = {_strip_prefix(k, own): v for k, v in state.items()}
    matched = {k: v for k, v in renamed.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ValueError(f"model.backbone_weights: no tensor in {path} fits the backbone")
    backbone.load_state_dict(matched, strict=False)


def _strip_prefix(key: str, own: dict[str, Tensor]) -> str:
    for prefix in ("backbone.", "features.", "module."):
        if key not in own and key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
