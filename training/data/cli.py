"""`scene-data`: render procedural street scenes to disk, or preview a few."""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from training.data.disk import prepare_output, write_manifest, write_scene
from training.data.procedural import SPLITS, ProceduralScenes
from training.data.sample import DataConfigError, SceneSample
from training.data.visualize import colorize_instances, colorize_inverse_depth, colorize_semantic

_HEADER = 14


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "render":
            return _render(args)
        return _preview(args)
    except DataConfigError as error:
        print(f"scene-data: error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scene-data",
        description="Procedural street scenes with exact semantic, instance and depth ground truth.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, count: int) -> None:
        p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
        p.add_argument("--split", choices=SPLITS, default="train", help="split (default train)")
        p.add_argument("--count", type=int, default=count, help=f"number of scenes (default {count})")
        p.add_argument("--height", type=int, default=128, help="image height in pixels (default 128)")
        p.add_argument("--width", type=int, default=256, help="image width in pixels (default 256)")
        p.add_argument("--first", type=int, default=0, help="index of the first scene (default 0)")

    render = sub.add_parser(
        "render",
        help="write scenes and their ground truth to a directory",
        description="Write COUNT scenes (RGB PNG, 8-bit semantic PNG, 16-bit instance PNG, "
        "float32 depth .npy in metres) and manifest.json to --out. "
        "Scene i of a split and seed is identical across machines.",
    )
    render.add_argument("--out", type=Path, required=True, help="output directory")
    common(render, 100)
    render.add_argument("--workers", type=int, default=1, help="render processes (default 1)")

    preview = sub.add_parser(
        "preview",
        help="write a picture of a few scenes: image / semantic / instances / depth",
        description="Write a PNG grid, one scene per row: image, semantic colours, instances, inverse depth.",
    )
    preview.add_argument("--out", type=Path, required=True, help="output PNG file")
    common(preview, 4)
    return parser


def _dataset(args: argparse.Namespace) -> ProceduralScenes:
    if args.count <= 0:
        raise DataConfigError(f"--count: must be positive, got {args.count}")
    if args.first < 0:
        raise DataConfigError(f"--first: must be >= 0, got {args.first}")
    return ProceduralScenes(
        split=args.split,
        seed=args.seed,
        count=args.first + args.count,
        height=args.height,
        width=args.width,
    )


def _render(args: argparse.Namespace) -> int:
    scenes = _dataset(args)
    if args.workers <= 0:
        raise DataConfigError(f"--workers: must be positive, got {args.workers}")
    root: Path = args.out
    prepare_output(root)
    indices = range(args.first, args.first + args.count)
    records = []
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) if args.workers > 1 else _Inline() as pool:
        jobs = pool.map(_render_one, [(scenes, root, i) for i in indices], chunksize=8)
        for record in tqdm(jobs, total=args.count, desc="rendering", unit="scene", file=sys.stderr):
            records.append(record)
    settings = {"split": args.split, "seed": args.seed, "height": args.height, "width": args.width}
    manifest = write_manifest(root, settings | {"first": args.first, "count": args.count}, records)
    elapsed = time.perf_counter() - start
    print(f"wrote {args.count} scenes to {root} in {elapsed:.1f} s; manifest: {manifest}")
    return 0


def _render_one(job: tuple[ProceduralScenes, Path, int]) -> dict[str, str]:
    scenes, root, index = job
    sample = scenes[index]
    return {"name": sample.name, **write_scene(root, index, sample)}


class _Inline:
    """The slice of `ProcessPoolExecutor` that `_render` uses, run in this process."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn, items, chunksize: int = 1):  # type: ignore[no-untyped-def]
        return map(fn, items)


def _preview(args: argparse.Namespace) -> int:
    scenes = _dataset(args)
    samples = [scenes[i] for i in range(args.first, args.first + args.count)]
    picture = preview_grid(samples)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.out)
    print(f"wrote {args.out} ({picture.width}x{picture.height})")
    return 0


def preview_grid(samples: list[SceneSample]) -> Image.Image:
    """One row per sample: image, semantic colours, instances, inverse depth; titled columns."""
    rows = []
    for s in samples:
        inverse, _ = s.inverse_depth()
        panels = [s.image, colorize_semantic(s.semantic), colorize_instances(s.instance)]
        panels.append(colorize_inverse_depth(inverse))
        gap = np.full((s.height, 2, 3), 255, dtype=np.uint8)
        rows.append(np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1))
        rows.append(np.full((2, rows[-1].shape[1], 3), 255, dtype=np.uint8))
    body = np.concatenate(rows[:-1], axis=0)
    canvas = Image.new("RGB", (body.shape[1], body.shape[0] + _HEADER), "white")
    canvas.paste(Image.fromarray(body), (0, _HEADER))
    draw = ImageDraw.Draw(canvas)
    panel_width = samples[0].width + 2
    for i, title in enumerate(("image", "semantic", "instances", "inverse depth")):
        draw.text((i * panel_width + 4, 1), title, fill="black")
    return canvas


if __name__ == "__main__":
    sys.exit(main())
