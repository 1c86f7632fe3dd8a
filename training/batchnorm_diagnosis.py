"""`scene-batchnorm`: whether a checkpoint's BatchNorm running statistics fit its test activations.

docs/study.md reports runs whose test scores collapse with the running statistics and
recover with each batch's own (`training.evaluate.BatchStatistics`). This measures, from
the checkpoint alone, where and how far they miss:

- each layer's smallest running variances: eval mode divides a channel by
  √(running var + eps), so a channel that was nearly constant in training magnifies
  whatever it does at test time;
- each channel's z = (batch mean − running mean) / √(running var + eps) on every test
  batch, the shift eval mode adds to the normalised activation before the affine
  weight; a channel is flagged when some batch has |z| above the limit (10). Each layer
  sees the output of the layers before it in eval mode, so a flagged layer shifts the
  inputs of those after it: the first flagged layer in model order is where to look;
- the test scores (`training.evaluate.evaluate`) with the running statistics (eval
  mode, dropout off: what a user gets), with BatchNorm's eps raised (a floor under the
  small variances), with each batch's own statistics, and with dropout on (the running
  statistics were gathered with dropout on, and in `SceneModel` ASPP's Dropout(0.5)
  feeds each head's convolution and BatchNorm: their input's variance differs between
  training and test).

    scene-batchnorm --checkpoint runs/study/uncertainty/seed5/last.pt --out bn.json
"""

from __future__ import annotations

import argparse
import json
import sys
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from training.checkpoint import CheckpointError, model_from_checkpoint
from training.data.procedural import SPLITS, ProceduralScenes
from training.dataset import SceneSource
from training.evaluate import BatchStatistics, evaluate

Z_LIMIT = 10.0
RAISED_EPS = (1e-3, 1e-2)
SMALLEST = 3
SCORES = {
    "semantic_miou": "mIoU %",
    "instance_mean_error_px": "instance px",
    "inverse_depth_mean_error": "inverse depth 1/m",
}
# Per layer, one (mean, variance) per test batch, each ``[C]``, of the layer's input.
Moments = dict[str, list[tuple[Tensor, Tensor]]]


def batchnorm_layers(model: nn.Module) -> dict[str, _BatchNorm]:
    """The model's BatchNorm layers that keep running statistics, by name, in model order."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, _BatchNorm) and module.running_var is not None
    }


def evaluate_with_moments(
    model: nn.Module, scenes: SceneSource, *, batch_size: int
) -> tuple[dict[str, Any], Moments]:
    """`evaluate`'s metrics of ``model`` in eval mode, and each BatchNorm input's batch moments."""
    layers = batchnorm_layers(model)
    moments: Moments = {name: [] for name in layers}

    def recorder(name: str) -> Any:
        def record(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            x = inputs[0].detach().float()
            dims = [d for d in range(x.dim()) if d != 1]  # all but the channels
            moments[name].append((x.mean(dims), x.var(dims, unbiased=False)))

        return record

    handles = [layer.register_forward_pre_hook(recorder(name)) for name, layer in layers.items()]
    try:
        metrics = evaluate(model, scenes, batch_size=batch_size)
    finally:
        for handle in handles:
            handle.remove()
    return metrics, moments


def layer_report(
    name: str, layer: _BatchNorm, moments: list[tuple[Tensor, Tensor]], limit: float
) -> dict[str, Any]:
    """One layer: its smallest running variances, its largest |z| and the channels over ``limit``.

    Each channel's z is taken from the batch where its |z| is largest, with that batch's
    mean and variance beside it.
    """
    assert layer.running_mean is not None and layer.running_var is not None
    running_mean, running_var = layer.running_mean.float(), layer.running_var.float()
    means = torch.stack([mean for mean, _ in moments])  # [batches, C]
    variances = torch.stack([variance for _, variance in moments])
    z = (means - running_mean) / (running_var + layer.eps).sqrt()
    worst = z.abs().argmax(0)  # [C]: the batch where each channel is furthest out
    channels = torch.arange(z.shape[1])
    z_worst = z[worst, channels]
    flagged = [int(c) for c in torch.argsort(z_worst.abs(), descending=True) if z_worst[c].abs() > limit]
    return {
        "layer": name,
        "channels": int(z.shape[1]),
        "eps": layer.eps,
        "smallest_running_variances": [
            {"channel": int(c), "running_var": float(running_var[c])}
            for c in torch.argsort(running_var)[:SMALLEST]
        ],
        "max_abs_z": float(z_worst.abs().max()),
        "flagged": [
            {
                "channel": c,
                "z": float(z_worst[c]),
                "running_mean": float(running_mean[c]),
                "running_var": float(running_var[c]),
                "batch_mean": float(means[worst[c], c]),
                "batch_var": float(variances[worst[c], c]),
            }
            for c in flagged
        ],
    }


def with_eps(model: nn.Module, eps: float) -> nn.Module:
    """A copy of ``model`` whose BatchNorm layers all divide by √(running var + ``eps``)."""
    copy = deepcopy(model)
    for layer in batchnorm_layers(copy).values():
        layer.eps = eps
    return copy


class DropoutOn(nn.Module):
    """A copy of ``model`` whose dropout stays on in eval mode (BatchNorm on running statistics)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = deepcopy(model)
        self.eval()

    def train(self, mode: bool = True) -> DropoutOn:
        super().train(mode)
        for module in self.model.modules():
            if isinstance(module, _DropoutNd):
                module.train(True)
        return self

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        outputs: dict[str, Tensor] = self.model(images)
        return outputs


def scores_by_mode(
    model: nn.Module,
    scenes: SceneSource,
    running: dict[str, Any],
    *,
    batch_size: int,
    eps_values: tuple[float, ...],
) -> dict[str, dict[str, float]]:
    """The scores of ``running`` (the model's own) beside those of each variant of the model."""
    variants: dict[str, nn.Module] = {f"eps {eps:g}": with_eps(model, eps) for eps in eps_values}
    variants |= {"batch statistics": BatchStatistics(model), "dropout on": DropoutOn(model)}
    scores = {"running statistics": {key: float(running[key]) for key in SCORES}}
    for mode, variant in variants.items():
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the dropout masks, the same on every call
            metrics = evaluate(variant, scenes, batch_size=batch_size)
        scores[mode] = {key: float(metrics[key]) for key in SCORES}
    return scores


def diagnose(
    model: nn.Module,
    scenes: SceneSource,
    *,
    batch_size: int = 16,
    eps_values: tuple[float, ...] = RAISED_EPS,
    limit: float = Z_LIMIT,
) -> dict[str, Any]:
    """The whole report for ``model`` on ``scenes`` (JSON-ready); see the module's docstring."""
    running, moments = evaluate_with_moments(model, scenes, batch_size=batch_size)
    layers = [
        layer_report(name, layer, moments[name], limit) for name, layer in batchnorm_layers(model).items()
    ]
    return {
        "scenes": len(scenes),
        "batch_size": batch_size,
        "z_limit": limit,
        "flagged_channels": sum(len(layer["flagged"]) for layer in layers),
        "first_flagged_layer": next((layer["layer"] for layer in layers if layer["flagged"]), None),
        "layers": layers,
        "scores": scores_by_mode(model, scenes, running, batch_size=batch_size, eps_values=eps_values),
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as tables: layers, flagged channels, scores by mode."""
    limit = report["z_limit"]
    lines = [
        f"BatchNorm layers: z = (batch mean - running mean) / sqrt(running var + eps), worst of "
        f"{report['scenes']} scenes in batches of {report['batch_size']}; flagged: |z| > {limit:g}",
        f"{'layer':<44} {'channels':>8}  {'smallest running var (channel)':<42} {'max |z|':>8} flagged",
    ]
    for layer in report["layers"]:
        smallest = ", ".join(
            f"{v['running_var']:.1e} ({v['channel']})" for v in layer["smallest_running_variances"]
        )
        lines.append(
            f"{layer['layer']:<44} {layer['channels']:>8}  {smallest:<42} "
            f"{layer['max_abs_z']:>8.2f} {len(layer['flagged']):>7}"
        )
    first = report["first_flagged_layer"]
    lines.append(f"\n{report['flagged_channels']} channels flagged; first flagged layer: {first}")
    for layer in report["layers"]:
        for c in layer["flagged"]:
            lines.append(
                f"  {layer['layer']}[{c['channel']}]: z {c['z']:+.1f}, running mean {c['running_mean']:.4g} "
                f"var {c['running_var']:.3g}, batch mean {c['batch_mean']:.4g} var {c['batch_var']:.3g}"
            )
    lines.append("\n" + f"{'mode':<20}" + "".join(f"{label:>20}" for label in SCORES.values()))
    for mode, scores in report["scores"].items():
        lines.append(f"{mode:<20}" + "".join(f"{scores[key]:>20.4g}" for key in SCORES))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scene-batchnorm",
        description="Check a scene-train checkpoint's BatchNorm running statistics against test batches: "
        "smallest running variances per layer, channels whose batch means lie more than --z-limit running "
        "standard deviations from the running means, and the test scores with running statistics, raised "
        "eps, batch statistics and dropout on. Prints tables and writes JSON.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint from scene-train")
    parser.add_argument("--out", type=Path, required=True, help="JSON report to write")
    parser.add_argument("--count", type=int, default=200, help="procedural test scenes (default 200)")
    parser.add_argument("--seed", type=int, default=1000, help="procedural seed (default 1000)")
    parser.add_argument("--split", choices=SPLITS, default="test", help="procedural split (default test)")
    parser.add_argument("--batch-size", type=int, default=16, help="scenes per batch (default 16)")
    parser.add_argument(
        "--eps", type=float, nargs="+", default=list(RAISED_EPS), help="raised BatchNorm eps to score with"
    )
    parser.add_argument("--z-limit", type=float, default=Z_LIMIT, help="flag |z| above this (default 10)")
    args = parser.parse_args(argv)
    if args.count <= 0 or args.batch_size <= 0 or args.z_limit <= 0 or min(args.eps) <= 0:
        print(
            "scene-batchnorm: error: --count, --batch-size, --z-limit and --eps must be positive",
            file=sys.stderr,
        )
        return 2
    try:
        model, state = model_from_checkpoint(args.checkpoint)
    except CheckpointError as error:
        print(f"scene-batchnorm: error: {error}", file=sys.stderr)
        return 2
    data = state["config"].data
    scenes = ProceduralScenes(
        split=args.split, seed=args.seed, count=args.count, height=data.height, width=data.width
    )
    report = diagnose(
        model, scenes, batch_size=args.batch_size, eps_values=tuple(args.eps), limit=args.z_limit
    )
    report = {
        "checkpoint": str(args.checkpoint),
        "step": state["step"],
        "split": args.split,
        "seed": args.seed,
    } | report
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(format_report(report))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
