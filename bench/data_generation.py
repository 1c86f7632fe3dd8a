"""How fast procedural scenes render on one core.

    python -m bench.data_generation [--count 1000] [--runs 3]

Times ``count`` scenes of the train split (scene sampling + ray casting +
shading, as a DataLoader worker does), ``runs`` times, and reports the median.
The baseline, timed in the same run on a quarter of the scenes, is the same
renderer with screen-rectangle culling off (every primitive against every
pixel); both produce identical scenes.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from training.data.procedural import ProceduralScenes, scene_rng
from training.data.render import render
from training.data.scene import sample_scene


def time_scenes(dataset: ProceduralScenes, count: int, cull: bool) -> float:
    start = time.perf_counter()
    for i in range(count):
        render(
            sample_scene(scene_rng(dataset.seed, dataset.split, i)), dataset.height, dataset.width, cull=cull
        )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says
    dataset = ProceduralScenes(count=args.count, height=args.height, width=args.width)
    baseline_count = max(1, args.count // 4)
    culled, brute = [], []
    for run in range(args.runs):
        culled.append(time_scenes(dataset, args.count, cull=True) / args.count)
        brute.append(time_scenes(dataset, baseline_count, cull=False) / baseline_count)
        print(f"run {run + 1}: {culled[-1] * 1e3:.1f} ms/scene culled, {brute[-1] * 1e3:.1f} ms brute force")
    per_scene, per_scene_brute = statistics.median(culled), statistics.median(brute)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, one used")
    print(f"resolution {args.height}x{args.width}, {args.count} scenes, median of {args.runs} runs")
    print(f"renderer:          {per_scene * 1e3:.1f} ms/scene -> {per_scene * 1000:.1f} s per 1,000 scenes")
    print(f"baseline (no cull): {per_scene_brute * 1e3:.1f} ms/scene -> {per_scene_brute * 1000:.1f} s/1,000")
    print(f"speed-up from culling: {per_scene_brute / per_scene:.2f}x")


if __name__ == "__main__":
    main()
