"""The three-head scene models: one shared encoder, one decoder per task.

Two families, chosen by ``model.backbone`` (`build_model`):

- `SceneModel`: as in Kendall, Gal & Cipolla (2018), appendix A: a DeepLabV3 encoder
  (a backbone with dilated convolutions and atrous spatial pyramid pooling) shared by
  three decoders, each a 3x3 convolution to 256 channels, batch norm, ReLU and a 1x1
  convolution to the task's outputs, upsampled bilinearly to the input size.
- `ESPNetv2SceneModel` (``backbone: espnetv2``): the ESPNetv2 encoder shared by three
  pyramid-pooling decoders with skips from the encoder's finer levels; the semantic
  one is the published Cityscapes decoder (down to stride 2), the instance and depth
  ones stop at stride 4.
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
from training.espnetv2 import ESPNetv2Encoder, ESPNetv2Segmentation, SegmentationDecoder, resize_bilinear

# ImageNet statistics: the convention of torchvision backbones, so local weight files trained that way fit.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelConfig:
    """The model's shape; stored in every checkpoint so it can be rebuilt from it alone.

    Attributes:
        backbone: one of `BACKBONES`, or ``espnetv2``.
        num_classes: semantic output channels.
        aspp_rates: dilation rates of ASPP's three 3x3 branches (paper: 12, 24, 36
            at output stride 8).
        aspp_channels: width of each ASPP branch and of its output (paper: 256).
        decoder_channels: width of each task decoder's hidden layer (paper: 256).
        backbone_weights: optional local file of backbone weights (a state dict);
            nothing is ever downloaded. For ``espnetv2``, the published Cityscapes
            segmentation weights (encoder and decoder, `training.pretrained`).
        backbone_sha256: the sha256 the ``backbone_weights`` file must have (``null``:
            not checked).
        width: ESPNetv2's width multiplier s (1.0 or 2.0; ``espnetv2`` only).
        instance_stride, depth_stride: the stride at which ESPNetv2's instance and
            depth decoders stop (4 or 8; ``espnetv2`` only), upsampled from there to the
            input size.
        offset_scale: pixels per unit of the instance decoder's raw output (the model
            multiplies by it). With zero-initialised output layers and L1 losses, a
            network needs about ``offset_scale``² fewer steps to reach offsets of tens
            of pixels; 1.0 is the raw-pixel output of the earlier models.
        aspp_dropout: the dropout rate at the end of ASPP's projection, just before
            each task decoder's BatchNorm (torchvision's ASPP: 0.5). The running
            statistics of those BatchNorms are gathered with it on and used with it
            off, a train/test shift; 0.0 removes it (issue 28's ablation).
        aspp_rates, aspp_channels, aspp_dropout, decoder_channels: `SceneModel` only.
    """

    backbone: str = "mobilenet_v3_large"
    num_classes: int = NUM_CLASSES
    aspp_rates: list[int] = field(default_factory=lambda: [12, 24, 36])
    aspp_channels: int = 256
    aspp_dropout: float = 0.5
    decoder_channels: int = 256
    backbone_weights: str | None = None
    backbone_sha256: str | None = None
    width: float = 2.0
    instance_stride: int = 4
    depth_stride: int = 4
    offset_scale: float = 1.0


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
ESPNETV2 = "espnetv2"
# Every valid ``model.backbone``: the DeepLab backbones, then ESPNetv2 with its own decoders.
BACKBONE_NAMES: tuple[str, ...] = (*BACKBONES, ESPNETV2)


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
    # Works at any input size whose sides are multiples of `output_stride`.
    fixed_input_size = False

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
        # torchvision ends the projection with Dropout(0.5); the rate is a setting.
        dropout = self.aspp.project[-1]
        if not isinstance(dropout, nn.Dropout):
            raise RuntimeError(f"torchvision's ASPP projection no longer ends in Dropout: {dropout}")
        dropout.p = config.aspp_dropout
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
            "instance_offsets": decode(self.instance_head) * self.config.offset_scale,
            "inverse_depth": decode(self.depth_head),
        }


class ESPNetv2SceneModel(nn.Module):
    """Semantic, instance and depth prediction from one ESPNetv2 encoder.

    The same contract as `SceneModel`: ``float32 [N, 3, H, W]`` RGB in [0, 1] in;
    ``semantic_logits`` ``[N, C, H, W]``, ``instance_offsets`` ``[N, 2, H, W]`` (pixels,
    (dy, dx) to the instance's centroid) and ``inverse_depth`` ``[N, 1, H, W]`` (1/m) out.

    The semantic decoder predicts at stride 2, the instance and depth decoders at
    ``instance_stride`` and ``depth_stride`` (4 or 8: the published decoder's stride-2
    block costs as much as the encoder; offsets and depth are smoother than classes),
    each upsampled to the
    input size; the instance decoder's output is in units of ``offset_scale`` pixels. With
    ``backbone_weights`` the encoder and the semantic decoder start as the published
    Cityscapes network (its first 19 output channels are this project's class table);
    the instance and depth decoders start as copies of its blocks down to their stride, with
    a new output layer, zero at first, so the shared features meet no random gradients
    early on.

    Resampling sizes are computed from the input shape when traced, so an exported
    graph is valid at its traced size only (``fixed_input_size``; `training.espnetv2`).
    """

    mean: Tensor
    std: Tensor
    output_stride = 16
    fixed_input_size = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ESPNetv2Encoder(config.width)
        channels = self.encoder.channels
        self.semantic_decoder = SegmentationDecoder(channels, config.num_classes)
        self.instance_decoder = SegmentationDecoder(channels, 2, finest_stride=config.instance_stride)
        self.depth_decoder = SegmentationDecoder(channels, 1, finest_stride=config.depth_stride)
        if config.backbone_weights:
            self._start_from_published(Path(config.backbone_weights), config.backbone_sha256)
        for decoder in (self.instance_decoder, self.depth_decoder):
            nn.init.zeros_(decoder.classifier.weight)
            assert decoder.classifier.bias is not None
            nn.init.zeros_(decoder.classifier.bias)
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)

    def _start_from_published(self, path: Path, sha256: str | None) -> None:
        from training.pretrained import load_published, read_published

        published = ESPNetv2Segmentation(self.config.width, self.config.num_classes)
        load_published(published, read_published(path, sha256), self.config.num_classes)
        self.encoder.load_state_dict(published.encoder.state_dict())
        self.semantic_decoder.load_state_dict(published.decoder.state_dict())
        for decoder in (self.instance_decoder, self.depth_decoder):
            own = decoder.state_dict()
            # Every block down to the decoder's stride but the new output layer.
            last = decoder.classifier
            skip = {name for name, module in decoder.named_modules() if module is last}
            shared = {
                k: v
                for k, v in published.decoder.state_dict().items()
                if k in own and k.rsplit(".", 1)[0] not in skip and own[k].shape == v.shape
            }
            decoder.load_state_dict(shared, strict=False)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        size = (int(images.shape[-2]), int(images.shape[-1]))
        features = self.encoder((images - self.mean) / self.std)
        return {
            "semantic_logits": resize_bilinear(self.semantic_decoder(features), size),
            "instance_offsets": resize_bilinear(self.instance_decoder(features), size)
            * self.config.offset_scale,
            "inverse_depth": resize_bilinear(self.depth_decoder(features), size),
        }


SceneNetwork = SceneModel | ESPNetv2SceneModel


def semantic_output_layer(model: SceneNetwork) -> nn.Conv2d:
    """The biased 1x1 convolution whose outputs are the semantic logits (before upsampling)."""
    if isinstance(model, ESPNetv2SceneModel):
        layer: nn.Module = model.semantic_decoder.classifier
    else:
        layer = model.semantic_head[-1]
    assert isinstance(layer, nn.Conv2d)
    return layer


def build_model(config: ModelConfig) -> SceneNetwork:
    """The network ``config`` describes (`SceneModel` or `ESPNetv2SceneModel`)."""
    if config.backbone == ESPNETV2:
        return ESPNetv2SceneModel(config)
    return SceneModel(config)


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
