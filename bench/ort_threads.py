"""What a lone request's model run costs on the CPU under each ORT thread setting.

    python -m bench.ort_threads [--model models/default/model.onnx] [--runs 40] [--smoke]

One 128x256 image (the model's input), ``runs`` runs with a 10 ms pause between them,
as a lone client's requests arrive, for each setting the service could use: one thread
(a stream per core), two threads without spinning, two spinning threads, and two
threads that spin only inside a run (``session.force_spinning_stop``, what
scene-serve's lone-run session uses). Reports the p50 wall time per run and the
process's CPU time per run, pauses included, which is where spinning threads show:
they keep a core busy after the run, the core the request's encoding needs. Each
setting runs in a fresh process so no setting's threads spin into another's figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from scene_contract.model import INPUT_NAME

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {
    "1 thread": (1, False, False),
    "2 threads, no spinning": (2, False, False),
    "2 threads, spinning": (2, True, False),
    "2 threads, spinning inside runs only": (2, True, True),
}


def measure(model: Path, threads: int, spin: bool, stop: bool, runs: int) -> dict[str, float]:
    """p50 wall ms per run and process CPU ms per run (pauses included) for one setting."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if stop:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    height, width = (shape[1], shape[2]) if isinstance(shape[1], int) else (128, 256)
    image = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    for _ in range(5):
        session.run(None, {INPUT_NAME: image})
    walls = []
    cpu_started = time.process_time()
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {INPUT_NAME: image})
        walls.append((time.perf_counter() - started) * 1000)
        time.sleep(0.01)
    return {"wall_ms": statistics.median(walls), "cpu_ms": (time.process_time() - cpu_started) * 1000 / runs}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=REPO / "models/default/model.onnx")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--smoke", action="store_true", help="3 runs per setting")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one setting, print JSON
    args = parser.parse_args(argv)
    runs = 3 if args.smoke else args.runs
    if args.one is not None:
        print(json.dumps(measure(args.model, *SETTINGS[args.one], runs)))
        return {}
    results = {}
    for name in SETTINGS:
        command = [sys.executable, "-m", "bench.ort_threads", "--model", str(args.model), "--runs", str(runs)]
        output = subprocess.run(
            [*command, "--one", name], capture_output=True, text=True, check=True, cwd=REPO
        ).stdout
        results[name] = json.loads(output.strip().splitlines()[-1])
        wall, cpu = results[name]["wall_ms"], results[name]["cpu_ms"]
        print(f"{name:38s} wall p50 {wall:6.1f} ms   CPU per run {cpu:6.1f} ms")
    return results


if __name__ == "__main__":
    main()
