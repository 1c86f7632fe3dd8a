"""ESPNetv2 (Mehta, Rastegari, Shapiro & Hajishirzi, CVPR 2019): encoder and segmentation decoder.

Written from the paper, with the layer widths of the published Cityscapes weights:

- **EESP unit** (`EESP`): reduce the channels with a grouped 1x1 convolution, split
  into ``branches`` depth-wise 3x3 convolutions at growing dilation rates, add each
  branch to the one before it (hierarchical feature fusion, which removes the gridding
  of dilated convolutions), concatenate, and expand with a grouped 1x1 convolution; a
  residual connection when the shape allows.
- **Strided unit** (`StridedEESP`): a stride-2 EESP beside a 3x3 average pool, their
  outputs concatenated, plus the input image average-pooled to the same resolution
  and projected (input reinforcement).
- **Pyramid-pooling decoder** (`SegmentationDecoder`): at strides 16, 8, 4 and 2 an
  efficient pyramid pooling block (`PyramidPooling`: one depth-wise convolution at
  each of five scales, 2x to 0.1x), with gated skip connections from the encoder.

Every resampling is written so that ONNX can express it at a fixed input size:
adaptive average pooling becomes a plain pooling, a pooling plus a gather, or a
product with an averaging matrix (`adaptive_average_pool`). Sizes are computed from
the input shape in Python, so an exported graph holds them as constants: it is valid
at the size it was traced at and no other, which the model card records
(``input.fixed_size``) and the service follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Channels after the stem and after each strided unit (strides 2, 4, 8, 16), by width
# multiplier s (the paper's Table: s = 1.0 and 2.0 are published for Cityscapes).
WIDTHS: dict[float, tuple[int, int, int, int]] = {
    1.0: (32, 64, 128, 256),
    2.0: (32, 128, 256, 512),
}
BRANCHES = 4
# EESP units after the strided units at strides 8 and 16.
STAGE_DEPTHS = (3, 7)
# Largest effective kernel (receptive field) of an EESP branch, per unit: the strided
# units at strides 4, 8, 16, then the plain units at strides 8 and 16.
RECEPTIVE_LIMITS = {"down2": 13, "down3": 11, "down4": 9, "stage3": 9, "stage4": 7}
PYRAMID_SCALES = (2.0, 1.5, 1.0, 0.5, 0.1)
# Smallest side a pyramid level is pooled to.
PYRAMID_MIN_SIDE = 5
DECODER_BASE = 16
# The published Cityscapes weights have 20 output channels: the 19 train ids, then a
# background channel that was never trained.
PUBLISHED_CLASSES = 20


class ConvBNPReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.PReLU(cout),
        )


class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        )


class BNPReLU(nn.Sequential):
    def __init__(self, channels: int) -> None:
        super().__init__(nn.BatchNorm2d(channels), nn.PReLU(channels))


def branch_dilations(branches: int, receptive_limit: int) -> list[int]:
    """Dilation of each EESP branch's 3x3 kernel, ascending.

    Branch ``i`` would see a ``3 + 2i`` wide window (dilation ``i + 1``); windows wider
    than ``receptive_limit`` fall back to a plain 3x3 (deep, small feature maps gain
    nothing from them).
    """
    sizes = sorted(3 + 2 * i if 3 + 2 * i <= receptive_limit else 3 for i in range(branches))
    return [(size - 1) // 2 for size in sizes]


class EESP(nn.Module):
    """Extremely efficient spatial pyramid unit: ``[N, cin, H, W]`` → ``[N, cout, H/stride, W/stride]``.

    With ``stride=2`` it returns the expanded features before any residual or
    activation: `StridedEESP` adds those.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, receptive_limit: int = 7) -> None:
        super().__init__()
        width = cout // BRANCHES
        if width * BRANCHES != cout:
            raise ValueError(f"EESP: {cout} output channels do not split into {BRANCHES} branches")
        self.stride = stride
        self.reduce = ConvBNPReLU(cin, width, 1, groups=BRANCHES)
        self.branches = nn.ModuleList(
            nn.Conv2d(width, width, 3, stride, padding=d, dilation=d, groups=width, bias=False)
            for d in branch_dilations(BRANCHES, receptive_limit)
        )
        self.merge_norm = BNPReLU(cout)
        self.expand = ConvBN(cout, cout, 1, groups=BRANCHES)
        self.activation = nn.PReLU(cout) if stride == 1 else None

    def forward(self, x: Tensor) -> Tensor:
        reduced = self.reduce(x)
        fused = [self.branches[0](reduced)]
        for branch in self.branches[1:]:
            fused.append(branch(reduced) + fused[-1])
        expanded: Tensor = self.expand(self.merge_norm(torch.cat(fused, dim=1)))
        if self.activation is None:
            return expanded
        if expanded.shape == x.shape:
            expanded = expanded + x
        activated: Tensor = self.activation(expanded)
        return activated


class StridedEESP(nn.Module):
    """Halves the resolution: ``[N, cin, H, W]`` and the image at ``H/2 x W/2`` → ``[N, cout, H/2, W/2]``."""

    def __init__(self, cin: int, cout: int, receptive_limit: int, image_channels: int = 3) -> None:
        super().__init__()
        self.eesp = EESP(cin, cout - cin, stride=2, receptive_limit=receptive_limit)
        self.image_projection = nn.Sequential(
            ConvBNPReLU(image_channels, image_channels, 3), ConvBN(image_channels, cout, 1)
        )
        self.activation = nn.PReLU(cout)

    def forward(self, x: Tensor, image: Tensor) -> Tensor:
        out = torch.cat([halve(x), self.eesp(x)], dim=1)
        activated: Tensor = self.activation(out + self.image_projection(image))
        return activated


def halve(x: Tensor) -> Tensor:
    """3x3 average pooling at stride 2 (zero padding counted): ``H x W`` → ``ceil(H/2) x ceil(W/2)``."""
    return F.avg_pool2d(x, kernel_size=3, stride=2, padding=1)


@dataclass
class EncoderFeatures:
    """Encoder outputs by stride: ``[N, C_s, ceil(H/s), ceil(W/s)]`` for s = 2, 4, 8, 16."""

    stride2: Tensor
    stride4: Tensor
    stride8: Tensor
    stride16: Tensor


class ESPNetv2Encoder(nn.Module):
    """The ESPNetv2 trunk up to stride 16 (the classification levels below it are not used)."""

    def __init__(self, width: float = 2.0) -> None:
        super().__init__()
        if width not in WIDTHS:
            raise ValueError(f"ESPNetv2 width {width} is not one of {sorted(WIDTHS)}")
        c1, c2, c3, c4 = WIDTHS[width]
        self.channels = WIDTHS[width]
        self.stem = ConvBNPReLU(3, c1, 3, stride=2)
        self.down2 = StridedEESP(c1, c2, RECEPTIVE_LIMITS["down2"])
        self.down3 = StridedEESP(c2, c3, RECEPTIVE_LIMITS["down3"])
        self.stage3 = nn.Sequential(
            *(EESP(c3, c3, receptive_limit=RECEPTIVE_LIMITS["stage3"]) for _ in range(STAGE_DEPTHS[0]))
        )
        self.down4 = StridedEESP(c3, c4, RECEPTIVE_LIMITS["down4"])
        self.stage4 = nn.Sequential(
            *(EESP(c4, c4, receptive_limit=RECEPTIVE_LIMITS["stage4"]) for _ in range(STAGE_DEPTHS[1]))
        )

    def forward(self, image: Tensor) -> EncoderFeatures:
        """``image``: normalised ``[N, 3, H, W]``."""
        image2 = halve(image)
        image4 = halve(image2)
        image8 = halve(image4)
        image16 = halve(image8)
        stride2 = self.stem(image)
        stride4 = self.down2(stride2, image4)
        stride8 = self.stage3(self.down3(stride4, image8))
        stride16 = self.stage4(self.down4(stride8, image16))
        return EncoderFeatures(stride2, stride4, stride8, stride16)


def adaptive_average_pool(x: Tensor, size: tuple[int, int]) -> Tensor:
    """`F.adaptive_avg_pool2d` in operations ONNX can express at a fixed input size.

    Each axis is pooled on its own (the bins of adaptive pooling are separable):
    an exact divisor is a plain average pooling; bins of one common length are an
    average pooling at stride 1 followed by a gather of the bins' starts; anything
    else is a product with the ``[out, in]`` averaging matrix. ``x``: ``[N, C, H, W]``.
    """
    return _pool_axis(_pool_axis(x, 2, size[0]), 3, size[1])


def _pool_axis(x: Tensor, dim: int, out: int) -> Tensor:
    length = x.shape[dim]
    if length == out:
        return x
    if length % out == 0:
        k = length // out
        kernel = (k, 1) if dim == 2 else (1, k)
        return F.avg_pool2d(x, kernel_size=kernel, stride=kernel)
    starts = [(i * length) // out for i in range(out)]
    ends = [-((-(i + 1) * length) // out) for i in range(out)]
    spans = {end - start for start, end in zip(starts, ends, strict=True)}
    if len(spans) == 1:
        k = spans.pop()
        kernel = (k, 1) if dim == 2 else (1, k)
        pooled = F.avg_pool2d(x, kernel_size=kernel, stride=1)
        return pooled.index_select(dim, torch.tensor(starts, device=x.device))
    weights = torch.zeros(out, length, dtype=x.dtype, device=x.device)
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        weights[i, start:end] = 1.0 / (end - start)
    if dim == 2:
        return torch.matmul(weights, x)
    return torch.matmul(x, weights.t())


def resize_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resampling with corners aligned, as the published decoder was trained."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave ``groups`` channel groups: ``[a0, a1, .., b0, b1, ..]`` → ``[a0, b0, .., a1, b1, ..]``."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class PyramidPooling(nn.Module):
    """Efficient pyramid pooling: ``[N, cin, H, W]`` → ``[N, cout, H, W]``.

    Projects to ``proj`` channels, runs one depth-wise 3x3 convolution at each scale of
    `PYRAMID_SCALES` (resampled there and back), merges the scales with a grouped
    convolution after a channel shuffle, and expands to ``cout``. The last block of a
    decoder (``normalize_output=False``) ends in a biased 1x1 convolution: the logits.
    """

    def __init__(self, cin: int, proj: int, cout: int, normalize_output: bool = True) -> None:
        super().__init__()
        levels = len(PYRAMID_SCALES)
        self.project = ConvBNPReLU(cin, proj, 1)
        self.scales = nn.ModuleList(
            nn.Conv2d(proj, proj, 3, padding=1, groups=proj, bias=False) for _ in PYRAMID_SCALES
        )
        self.merge_norm = BNPReLU(proj * levels)
        self.fuse = ConvBNPReLU(proj * levels, proj, 3, groups=proj)
        self.out = nn.Conv2d(proj, cout, 1, bias=not normalize_output)
        self.out_norm = BNPReLU(cout) if normalize_output else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.project(x)
        height, width = int(x.shape[2]), int(x.shape[3])
        levels = []
        for scale, conv in zip(PYRAMID_SCALES, self.scales, strict=True):
            size = (
                max(math.ceil(height * scale), PYRAMID_MIN_SIDE),
                max(math.ceil(width * scale), PYRAMID_MIN_SIDE),
            )
            if scale > 1.0:
                level = adaptive_average_pool(conv(resize_bilinear(x, size)), (height, width))
            elif scale < 1.0:
                level = resize_bilinear(conv(adaptive_average_pool(x, size)), (height, width))
            else:
                level = conv(x)
            levels.append(level)
        merged = channel_shuffle(self.merge_norm(torch.cat(levels, dim=1)), len(PYRAMID_SCALES))
        out: Tensor = self.out(self.fuse(merged))
        if self.out_norm is not None:
            out = self.out_norm(out)
        return out


class GatedSkip(nn.Module):
    """Encoder features into the decoder: a grouped 3x3 convolution, scaled per channel by
    a gate computed from the features' global average: ``[N, cin, H, W]`` → ``[N, cout, H, W]``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.gate = nn.Conv2d(cin, cout, 1, bias=False)
        self.expand = ConvBNPReLU(cin, cout, 3, groups=math.gcd(cin, cout))

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.gate(x.mean(dim=(2, 3), keepdim=True)))
        expanded: Tensor = self.expand(x)
        return expanded * gate


class SegmentationDecoder(nn.Module):
    """ESPNetv2's decoder: encoder features → ``[N, out_channels, H/s, W/s]``, s = ``finest_stride``.

    Bottom-up from stride 16: pyramid pooling, then at each finer stride down to
    ``finest_stride``: upsample 2x, add the gated skip from the encoder level at that
    stride, normalise, pyramid pooling. The published decoder goes down to stride 2;
    stopping at stride 4 or 8 skips its most expensive blocks (a pyramid at stride s
    samples up to stride s/2), for outputs smooth enough to upsample.
    """

    def __init__(
        self,
        encoder_channels: tuple[int, int, int, int],
        out_channels: int,
        proj: int = 10,
        finest_stride: int = 2,
    ) -> None:
        super().__init__()
        if finest_stride not in (2, 4, 8):
            raise ValueError(f"finest_stride must be 2, 4 or 8, got {finest_stride}")
        self.finest_stride = finest_stride
        c1, c2, c3, c4 = encoder_channels
        d1, d2, d3 = 4 * DECODER_BASE, 3 * DECODER_BASE, 2 * DECODER_BASE
        self.pyramid16 = PyramidPooling(c4, proj, d1)
        self.skip8, self.norm8 = GatedSkip(c3, d1), BNPReLU(d1)
        if finest_stride == 8:
            self.pyramid8 = PyramidPooling(d1, proj, out_channels, normalize_output=False)
            return
        self.pyramid8 = PyramidPooling(d1, proj, d2)
        self.skip4, self.norm4 = GatedSkip(c2, d2), BNPReLU(d2)
        if finest_stride == 4:
            self.pyramid4 = PyramidPooling(d2, proj, out_channels, normalize_output=False)
            return
        self.pyramid4 = PyramidPooling(d2, proj, d3)
        self.skip2, self.norm2 = GatedSkip(c1, d3), BNPReLU(d3)
        self.pyramid2 = PyramidPooling(d3, proj, out_channels, normalize_output=False)

    @property
    def classifier(self) -> nn.Conv2d:
        """The last layer, whose output channels are the decoder's outputs."""
        last = {2: "pyramid2", 4: "pyramid4", 8: "pyramid8"}[self.finest_stride]
        out: nn.Conv2d = getattr(self, last).out
        return out

    def forward(self, features: EncoderFeatures) -> Tensor:
        x: Tensor = self.pyramid16(features.stride16)
        x = self.pyramid8(self._merge(x, features.stride8, self.skip8, self.norm8))
        if self.finest_stride == 8:
            return x
        x = self.pyramid4(self._merge(x, features.stride4, self.skip4, self.norm4))
        if self.finest_stride == 4:
            return x
        logits: Tensor = self.pyramid2(self._merge(x, features.stride2, self.skip2, self.norm2))
        return logits

    @staticmethod
    def _merge(x: Tensor, skip: Tensor, gated: nn.Module, norm: nn.Module) -> Tensor:
        size = (int(skip.shape[2]), int(skip.shape[3]))
        merged: Tensor = norm(resize_bilinear(x, size) + gated(skip))
        return merged


def pyramid_projection(classes: int) -> int:
    """Channels inside the pyramid blocks, as the published decoder sizes them."""
    return min(classes // 2, DECODER_BASE)


class ESPNetv2Segmentation(nn.Module):
    """The published network: normalised ``[N, 3, H, W]`` → logits ``[N, classes, H, W]``."""

    def __init__(self, width: float = 2.0, classes: int = PUBLISHED_CLASSES) -> None:
        super().__init__()
        self.encoder = ESPNetv2Encoder(width)
        self.decoder = SegmentationDecoder(
            self.encoder.channels, classes, pyramid_projection(PUBLISHED_CLASSES)
        )

    def forward(self, image: Tensor) -> Tensor:
        size = (int(image.shape[2]), int(image.shape[3]))
        return resize_bilinear(self.decoder(self.encoder(image)), size)
