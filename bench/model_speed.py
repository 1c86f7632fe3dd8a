"""The model alone on the CPU: the class softmax over the channel axis (before) or the last axis (after).

    python -m bench.model_speed --checkpoint runs/x/last.pt [--runs 5] [--threads 2] [--profile-runs 20]
    python -m bench.model_speed --config configs/default.yaml   # a freshly built model of that config
    python -m bench.model_speed --checkpoint runs/x/last.pt --onnx runs/x/model.onnx   # reuse its export
    python -m bench.model_speed --smoke     # a tiny freshly built model, to check the script works

Exports the model twice with the same weights: as shipped (`InferenceGraph`: the
logits moved to [N, H, W, C], softmax, max and argmax along the last axis) and as it
was (`SoftmaxConfidenceGraph`: the same over the class axis of [N, C, H, W]). Both
run in ONNX Runtime on the CPU provider with every graph optimisation, batch 1 at the
training resolution: median of ``runs`` repetitions of 20 runs after warm-up, the two
files taking turns, wall time and the process's CPU time per image (the latter holds
on a machine shared with other work). On generated test scenes and noise it checks
that the labels are identical and reports the largest confidence difference; with
``--profile-runs`` it adds ONNX Runtime's profile: the share of kernel time of each
operator type. ``--onnx`` takes the checkpoint's existing export (scene-export's
``model.onnx``) as the shipped graph rather than tracing it again.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch
from torch import Tensor

from model_export.export import InferenceGraph, export_fp32, verification_images
from scene_contract.model import INPUT_NAME, OUTPUT_NAMES
from training.checkpoint import model_from_checkpoint
from training.config import load_config
from training.model import SceneNetwork, build_model, to_model_input

REPO = Path(__file__).resolve().parents[1]


class SoftmaxConfidenceGraph(InferenceGraph):
    """The graph before the change: softmax, max and argmax over axis 1 of [N, C, H, W] (the baseline)."""

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x = to_model_input(image)
        out = self.model(x)
        confidence, label = torch.softmax(out["semantic_logits"], dim=1).max(dim=1)
        return label.to(torch.uint8), confidence, out["instance_offsets"], out["inverse_depth"]


def session(path: Path, threads: int, profile: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = str(path.with_suffix(""))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def kernel_shares(path: Path, image: npt.NDArray[np.uint8], threads: int, runs: int) -> dict[str, float]:
    """Fraction of kernel time per operator type over ``runs`` profiled runs, largest first."""
    profiled = session(path, threads, profile=True)
    for _ in range(runs):
        profiled.run(None, {INPUT_NAME: image})
    written = Path(profiled.end_profiling())
    # The trace is read here and nowhere else: leave nothing beside the model (which
    # may be the bundled one, under version control).
    trace = json.loads(written.read_text())
    written.unlink()
    totals: collections.Counter[str] = collections.Counter()
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
    whole = sum(totals.values())
    return {op: dur / whole for op, dur in totals.most_common()}


def export_graphs(
    graphs: dict[Path, type[InferenceGraph]], model: SceneNetwork, height: int, width: int
) -> None:
    """Export ``model`` wrapped in each graph type to its path. Tracing is single-threaded
    Python: two or more trace side by side in processes of their own (spawned: forking a
    process that has run torch can hang)."""
    if len(graphs) == 1:
        [(path, graph)] = graphs.items()
        export_fp32(model, path, height, width, graph)
        return
    with ProcessPoolExecutor(len(graphs), mp_context=multiprocessing.get_context("spawn")) as pool:
        for done in [pool.submit(export_fp32, model, path, height, width, g) for path, g in graphs.items()]:
            done.result()


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source_group = parser.add_mutually_exclusive_group()
    source_group.add_argument("--checkpoint", type=Path, help="scene-train checkpoint")
    source_group.add_argument(
        "--config", type=Path, help="a training config: its model, freshly built (seed 0)"
    )
    parser.add_argument(
        "--onnx",
        type=Path,
        help="the --checkpoint's scene-export file, used as the last-axis graph instead of tracing it again",
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads")
    parser.add_argument("--profile-runs", type=int, default=20, help="0: no ORT profile")
    parser.add_argument(
        "--smoke", action="store_true", help="few runs; without --checkpoint, a fresh smoke-config model"
    )
    args = parser.parse_args(argv)
    if args.onnx is not None and args.checkpoint is None:
        parser.error("--onnx needs the --checkpoint it was exported from")
    return parser, args


def load_model(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[SceneNetwork, int, int, str]:
    """The model the arguments name, its input height and width, and a line saying where it came from."""
    if args.checkpoint is not None:
        model, state = model_from_checkpoint(args.checkpoint)
        height, width = state["config"].data.height, state["config"].data.width
        return model, height, width, f"{args.checkpoint} (step {state['step']})"
    if args.smoke or args.config is not None:
        config_path = args.config or REPO / "configs/smoke.yaml"
        config = load_config(config_path)
        torch.manual_seed(0)
        model = build_model(config.model).eval()
        return model, config.data.height, config.data.width, f"freshly built model of {config_path}"
    parser.error("give --checkpoint, --config or --smoke")


def time_sessions(
    sessions: dict[str, ort.InferenceSession], image: npt.NDArray[np.uint8], runs: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per session, ``runs`` wall and CPU milliseconds per image, each the mean of 20 calls."""
    timings: dict[str, list[float]] = {name: [] for name in sessions}
    cpu_times: dict[str, list[float]] = {name: [] for name in sessions}
    for s in sessions.values():
        for _ in range(3):
            s.run(None, {INPUT_NAME: image})
    for _ in range(runs):
        for name, s in sessions.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(20):
                s.run(None, {INPUT_NAME: image})
            timings[name].append((time.perf_counter() - started) / 20 * 1000)
            cpu_times[name].append((time.process_time() - cpu_started) / 20 * 1000)
    return timings, cpu_times


def print_speeds(
    timings: dict[str, list[float]], cpu_times: dict[str, list[float]], shares: dict[str, dict[str, float]]
) -> None:
    """Each graph's median wall and CPU time, its speed-up over the class-axis graph, its top kernels."""
    medians = {name: statistics.median(values) for name, values in timings.items()}
    cpu = {name: statistics.median(values) for name, values in cpu_times.items()}
    baseline = "class axis (before)"
    for name, ms in medians.items():
        runs = " / ".join(f"{v:.2f}" for v in timings[name])
        print(
            f"{name:>24}: {ms:6.2f} ms/image wall, {medians[baseline] / ms:.2f}x; "
            f"{cpu[name]:6.2f} ms CPU, {cpu[baseline] / cpu[name]:.2f}x  (wall runs {runs})"
        )
        if name in shares:
            top = ", ".join(f"{op} {100 * share:.0f}%" for op, share in list(shares[name].items())[:5])
            print(f"{'':>24}  kernel time: {top}")


def main(argv: list[str] | None = None) -> None:
    parser, args = parse_args(argv)
    model, height, width, source = load_model(parser, args)
    if args.smoke:
        args.runs, args.profile_runs = 1, 2
    images = verification_images(height, width, scenes=4 if args.smoke else 30)

    with tempfile.TemporaryDirectory() as tmp:
        paths = {
            "class axis (before)": Path(tmp) / "before.onnx",
            "last axis (after)": args.onnx or Path(tmp) / "after.onnx",
        }
        graphs = {"class axis (before)": SoftmaxConfidenceGraph, "last axis (after)": InferenceGraph}
        if args.onnx is not None:
            del graphs["last axis (after)"]
        export_graphs({paths[name]: graph for name, graph in graphs.items()}, model, height, width)
        sessions = {name: session(path, args.threads) for name, path in paths.items()}
        outputs = {
            name: [s.run(list(OUTPUT_NAMES), {INPUT_NAME: images[i : i + 1]}) for i in range(len(images))]
            for name, s in sessions.items()
        }
        before, after = outputs.values()
        labels_differ = sum(int((b[0] != a[0]).sum()) for b, a in zip(before, after, strict=True))
        confidence_diff = max(float(np.abs(b[1] - a[1]).max()) for b, a in zip(before, after, strict=True))

        image = images[-1:]
        timings, cpu_times = time_sessions(sessions, image, args.runs)
        shares = (
            {
                name: kernel_shares(path, image, args.threads, args.profile_runs)
                for name, path in paths.items()
            }
            if args.profile_runs
            else {}
        )

    print(f"{source}, batch 1 at {height}x{width}, onnxruntime {ort.__version__}, {args.threads} threads")
    print(
        f"labels differing: {labels_differ} of {sum(b[0].size for b in before)} pixels; "
        f"largest confidence difference {confidence_diff:.2e}"
    )
    print_speeds(timings, cpu_times, shares)


if __name__ == "__main__":
    main()
