"""`scene-export`: a scene-train checkpoint to a verified, self-describing ONNX model."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image

from model_export.card import build_model_card
from model_export.export import (
    ExportError,
    convert_fp16,
    export_fp32,
    finalize,
    quantize_int8,
    store_weights_fp16,
    verification_images,
    verify,
)
from scene_contract.model import SAMPLES_DIR
from training.checkpoint import CheckpointError, model_from_checkpoint
from training.data.procedural import ProceduralScenes
from training.model import SceneNetwork


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scene-export",
        description="Export a scene-train checkpoint to ONNX: uint8 NHWC image in; semantic labels, their "
        "confidence, instance offsets and inverse depth out; the model card (classes, palette, learned task "
        "σ, metrics) in the metadata. Every file is verified against PyTorch with ONNX Runtime before it is "
        "kept; the command fails if any check fails.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint written by scene-train")
    parser.add_argument("--out", type=Path, required=True, help="fp32 model path, e.g. model.onnx")
    parser.add_argument(
        "--fp16-weights",
        action="store_true",
        help="store OUT's weights as float16: half the file, still computed in float32, as fast",
    )
    parser.add_argument("--fp16", action="store_true", help="also write OUT.fp16.onnx (for GPUs)")
    parser.add_argument("--int8", action="store_true", help="also write OUT.int8.onnx (static QDQ, for CPUs)")
    parser.add_argument(
        "--calibration-count", type=int, default=64, help="generated scenes to calibrate int8 on (default 64)"
    )
    parser.add_argument("--name", default="scene-mtl", help="model name in the card (default scene-mtl)")
    parser.add_argument("--version", default="1", help="model version in the card (default 1)")
    parser.add_argument(
        "--verify-scenes", type=int, default=4, help="generated scenes to verify on (default 4)"
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=8,
        help=f"test-split scenes to write to {SAMPLES_DIR}/ next to OUT at the input size, for the "
        "service's demo page (default 8; 0: none)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.calibration_count <= 0 or args.verify_scenes <= 0:
            raise ExportError("--calibration-count and --verify-scenes must be positive")
        if args.samples < 0:
            raise ExportError("--samples must be 0 or more")
        if args.out.suffix != ".onnx":
            raise ExportError(f"--out: {args.out} should end in .onnx")
        model, state = model_from_checkpoint(args.checkpoint)
        return _export(args, model, state)
    except (CheckpointError, ExportError) as error:
        print(f"scene-export: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, CheckpointError) else 1


def _export(args: argparse.Namespace, model: SceneNetwork, state: dict[str, Any]) -> int:
    config = state["config"]
    height, width = config.data.height, config.data.width
    args.out.parent.mkdir(parents=True, exist_ok=True)
    images = verification_images(height, width, scenes=args.verify_scenes)
    main_precision = "fp32-fp16weights" if args.fp16_weights else "fp32"
    variants: list[tuple[str, Path]] = [(main_precision, args.out)]
    if args.fp16:
        variants.append(("fp16", args.out.with_suffix(".fp16.onnx")))
    if args.int8:
        variants.append(("int8", args.out.with_suffix(".int8.onnx")))

    staged = {precision: path.with_name(path.name + ".partial") for precision, path in variants}
    try:
        start = time.perf_counter()
        print(f"exporting {config.model.backbone} at {height}x{width} from step {state['step']} ...")
        traced = staged[main_precision]
        export_fp32(model, traced, height, width)
        print(f"  traced in {time.perf_counter() - start:.1f} s")
        if args.fp16:
            convert_fp16(traced, staged["fp16"])
        if args.int8:
            scenes = ProceduralScenes(
                split="train", seed=97, count=args.calibration_count, height=height, width=width
            )
            print(f"  calibrating int8 on {args.calibration_count} generated scenes ...")
            quantize_int8(traced, staged["int8"], [scenes[i].image for i in range(len(scenes))])
        if args.fp16_weights:
            # Last: the fp16 and int8 variants start from the full float32 weights.
            store_weights_fp16(traced, traced)
        failed = False
        for precision, path in variants:
            card = build_model_card(state, model, precision=precision, name=args.name, version=args.version)
            finalize(staged[precision], card)
            report = verify(staged[precision], model, images, precision)
            print(f"  verified {report.summary()}")
            if not report.passed:
                failed = True
                print(
                    f"scene-export: {precision} verification FAILED: {'; '.join(report.failures)}",
                    file=sys.stderr,
                )
                continue
            os.replace(staged[precision], path)
            if precision == main_precision:
                card_path = path.with_suffix(".card.json")
                card_path.write_text(card.to_json())
            size = path.stat().st_size / 2**20
            print(f"wrote {path} ({size:.1f} MiB)")
        if not failed and args.samples:
            written = write_samples(args.out.parent / SAMPLES_DIR, height, width, args.samples)
            print(f"wrote {len(written)} sample images to {args.out.parent / SAMPLES_DIR}")
        return 1 if failed else 0
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)


def write_samples(folder: Path, height: int, width: int, count: int) -> list[Path]:
    """Procedural test-split scenes 0..count-1 at ``height`` x ``width`` as ``folder/NNN.png``.

    Test scenes are never trained on. Old samples in ``folder`` are replaced.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    scenes = ProceduralScenes(split="test", seed=0, count=count, height=height, width=width)
    paths = []
    for index in range(count):
        path = folder / f"{index:03d}.png"
        Image.fromarray(scenes[index].image).save(path, optimize=True)
        paths.append(path)
    return paths


if __name__ == "__main__":
    sys.exit(main())
