"""How long instance grouping takes per image, and how well it finds the instances.

    python -m bench.instance_grouping [--count 20] [--runs 5] [--model model.onnx]

Groups rendered validation scenes at 128x256 (or at ``--model``'s input size, when its
graph fixes one) whose offsets are exact (built from the
ground truth, as training targets are), with each method of
`service.postprocess.group_instances` at its defaults, ``runs`` times, and reports the
median milliseconds per image; then the most crowded of the first ``pool`` scenes
alone, the worst case the latency budget has to hold for. Quality is the share of
ground-truth instances matched by a found instance at IoU >= 0.5 (recall) and the
share of found instances that match one (precision).

With ``--model``, also times ONNX Runtime CPU inference of that model on the same
images (batch 1, after a warm-up) and prints grouping time / inference time, the
share of the service's latency that grouping adds; and repeats the quality
measurement on the model's own semantic and offset predictions.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from scene_contract.model import INPUT_NAME, INSTANCE_OFFSETS, SEMANTIC
from service.postprocess import METHODS, group_instances
from training.data.classes import THING_TRAIN_IDS
from training.data.procedural import ProceduralScenes
from training.data.sample import SceneSample
from training.targets import instance_offsets

HEIGHT, WIDTH = 128, 256

Maps = tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]  # semantic [H, W], offsets [2, H, W]


@dataclass(frozen=True)
class Quality:
    true_instances: int
    found_instances: int
    matched: int

    @property
    def recall(self) -> float:
        return self.matched / self.true_instances if self.true_instances else 1.0

    @property
    def precision(self) -> float:
        return self.matched / self.found_instances if self.found_instances else 1.0

    def __str__(self) -> str:
        return (
            f"recall {self.recall:6.1%} ({self.matched}/{self.true_instances}), "
            f"precision {self.precision:6.1%} ({self.matched}/{self.found_instances})"
        )


def matched_instances(truth: npt.NDArray[np.integer], found: npt.NDArray[np.integer]) -> Quality:
    """Instances of ``truth`` [H, W] matched by one of ``found`` [H, W] at IoU >= 0.5 (0 = none).

    At IoU above 0.5 a match is unique both ways, so no assignment step is needed.
    """
    true_ids, true_index = np.unique(truth, return_inverse=True)
    found_ids, found_index = np.unique(found, return_inverse=True)
    n_true, n_found = len(true_ids), len(found_ids)
    overlap = np.bincount(true_index.ravel() * n_found + found_index.ravel(), minlength=n_true * n_found)
    intersection = overlap.reshape(n_true, n_found).astype(np.float64)
    union = intersection.sum(axis=1, keepdims=True) + intersection.sum(axis=0, keepdims=True) - intersection
    iou = (intersection / union)[true_ids != 0][:, found_ids != 0]
    matched = int((iou >= 0.5).any(axis=1).sum()) if iou.size else 0
    return Quality(iou.shape[0], iou.shape[1], matched)


def evaluate(
    method: str, samples: Sequence[SceneSample], maps: Sequence[Maps], runs: int
) -> tuple[float, float, Quality]:
    """Median over ``runs`` of the mean ms per image, the slowest image's ms, and the quality."""
    per_image, slowest = [], []
    totals = np.zeros(3, dtype=np.int64)
    for run in range(runs):
        seconds = []
        for sample, (semantic, offsets) in zip(samples, maps, strict=True):
            started = time.perf_counter()
            result = group_instances(semantic, offsets, THING_TRAIN_IDS, method=method)
            seconds.append(time.perf_counter() - started)
            if run == 0:
                quality = matched_instances(sample.instance, result.instance_map)
                totals += (quality.true_instances, quality.found_instances, quality.matched)
        per_image.append(statistics.fmean(seconds) * 1e3)
        slowest.append(max(seconds) * 1e3)
    return statistics.median(per_image), statistics.median(slowest), Quality(*(int(t) for t in totals))


def most_crowded(seed: int, pool: int, size: tuple[int, int]) -> SceneSample:
    """The scene with the most thing pixels among the first ``pool`` validation scenes."""
    scenes = ProceduralScenes(split="val", seed=seed, count=pool, height=size[0], width=size[1])
    samples = (scenes[i] for i in range(pool))
    return max(samples, key=lambda sample: int(np.isin(sample.semantic, THING_TRAIN_IDS).sum()))


def onnx_session(path: Path, threads: int | None) -> Callable[[npt.NDArray[np.uint8]], dict[str, Any]]:
    """A function running the model on one ``uint8 [1, H, W, 3]`` image on the CPU."""
    import onnxruntime  # only for --model; the grouping benchmark needs none of it

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]

    def run(image: npt.NDArray[np.uint8]) -> dict[str, Any]:
        return dict(zip(names, session.run(None, {INPUT_NAME: image}), strict=True))

    return run


def model_input_size(path: Path) -> tuple[int, int] | None:
    """``(height, width)`` when the graph's ``uint8 [N, H, W, 3]`` input fixes them, else None."""
    import onnx  # only for --model

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    height, width = (dims[1].dim_value, dims[2].dim_value) if len(dims) == 4 else (0, 0)
    return (height, width) if height and width else None


def time_model(
    run: Callable[[npt.NDArray[np.uint8]], dict[str, Any]], samples: Sequence[SceneSample], runs: int
) -> float:
    """Median over ``runs`` of the mean ms per image of batch-1 inference."""
    for sample in samples[:3]:
        run(sample.image[np.newaxis])
    per_image = []
    for _ in range(runs):
        started = time.perf_counter()
        for sample in samples:
            run(sample.image[np.newaxis])
        per_image.append((time.perf_counter() - started) / len(samples) * 1e3)
    return statistics.median(per_image)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20, help="rendered validation scenes (default 20)")
    parser.add_argument("--runs", type=int, default=5, help="timed passes over the scenes (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="procedural scene seed (default 0)")
    parser.add_argument(
        "--pool", type=int, default=100, help="scenes searched for the most crowded one (default 100)"
    )
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated (default {','.join(METHODS)})"
    )
    parser.add_argument("--model", type=Path, help="ONNX model to time on the CPU for the ratio")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: its own)")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for method in methods:
        if method not in METHODS:
            parser.error(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")

    size = (model_input_size(args.model) if args.model else None) or (HEIGHT, WIDTH)
    scenes = ProceduralScenes(split="val", seed=args.seed, count=args.count, height=size[0], width=size[1])
    samples = [scenes[i] for i in range(args.count)]
    exact: list[Maps] = [(s.semantic, instance_offsets(s.instance)[0]) for s in samples]
    thing_pixels = [int(np.isin(s.semantic, THING_TRAIN_IDS).sum()) for s in samples]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(
        f"{args.count} rendered val scenes at {size[0]}x{size[1]}: "
        f"{sum(len(np.unique(s.instance[s.instance > 0])) for s in samples)} instances, "
        f"thing pixels per image median {statistics.median(thing_pixels):.0f}, max {max(thing_pixels)}; "
        f"median of {args.runs} runs"
    )
    print("\nexact offsets (ground truth):")
    grouping_ms: dict[str, float] = {}
    for method in methods:
        ms, slowest, quality = evaluate(method, samples, exact, args.runs)
        grouping_ms[method] = ms
        print(f"  {method:7s} {ms:8.2f} ms/image (slowest image {slowest:7.2f} ms)  {quality}")
    crowded = most_crowded(args.seed, args.pool, size)
    crowded_maps = [(crowded.semantic, instance_offsets(crowded.instance)[0])]
    print(
        f"\nthe most crowded of the first {args.pool} scenes ({crowded.name}, "
        f"{int(np.isin(crowded.semantic, THING_TRAIN_IDS).sum())} thing pixels):"
    )
    for method in methods:
        ms, _, quality = evaluate(method, [crowded], crowded_maps, args.runs)
        print(f"  {method:7s} {ms:8.2f} ms  {quality}")

    if args.model is None:
        print("\nno --model given: skipping the comparison with inference time")
        return
    compare_with_model(args.model, args.threads, samples, methods, grouping_ms, args.runs)


def compare_with_model(
    model: Path,
    threads: int | None,
    samples: Sequence[SceneSample],
    methods: Sequence[str],
    grouping_ms: dict[str, float],
    runs: int,
) -> None:
    """Grouping time against ``model``'s inference time, and grouping on its own predictions."""
    run = onnx_session(model, threads)
    model_ms = time_model(run, samples, runs)
    print(f"\nmodel {model}: {model_ms:.2f} ms/image, ONNX Runtime CPU, batch 1")
    for method, ms in grouping_ms.items():
        print(f"  {method:7s} grouping / inference = {ms / model_ms:7.1%}")
    predicted: list[Maps] = []
    for sample in samples:
        outputs = run(sample.image[np.newaxis])
        predicted.append((outputs[SEMANTIC][0], outputs[INSTANCE_OFFSETS][0]))
    # True classes with predicted offsets separate grouping errors from segmentation errors.
    cases = {
        "the model's classes and offsets": predicted,
        "true classes, the model's offsets": [
            (s.semantic, o) for s, (_, o) in zip(samples, predicted, strict=True)
        ],
    }
    for title, maps in cases.items():
        print(f"\n{title}:")
        for method in methods:
            ms, slowest, quality = evaluate(method, samples, maps, runs)
            print(f"  {method:7s} {ms:8.2f} ms/image (slowest image {slowest:7.2f} ms)  {quality}")


if __name__ == "__main__":
    main()
