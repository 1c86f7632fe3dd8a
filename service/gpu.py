"""Which GPU this worker runs on, and whether this host has a CUDA GPU at all.

onnxruntime-gpu lists its CUDA and TensorRT providers whether or not a GPU is there;
asked for them on a CPU-only host, it prints screens of library errors before it falls
back to the CPU. Asking the CUDA driver first (``cuInit`` and ``cuDeviceGetCount``
through ctypes, the driver's stable C API) lets the runtime skip the GPU providers on
such hosts and say so in one line.

With several uvicorn workers, each takes the lowest free worker slot (`worker_index`)
and runs on GPU ``index mod N`` (`device_for_worker`), so the GPUs a container
reserves are all used rather than every worker landing on GPU 0.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from pathlib import Path
from typing import IO

_DRIVER = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
# A folder scene-serve makes for its workers' slot files (set only with more than one worker).
WORKER_SLOTS_ENV = "SCENE_SERVE_WORKER_SLOTS"
# The open slot files: their locks are held for the process's life.
_held_slots: list[IO[str]] = []


def cuda_devices() -> tuple[int, str]:
    """``(count, why)``: CUDA devices the driver sees, and when there are none, why not."""
    try:
        driver = ctypes.CDLL(_DRIVER)
    except OSError:
        return 0, f"no CUDA driver ({_DRIVER}) on this host"
    status = driver.cuInit(0)
    if status != 0:
        return 0, f"the CUDA driver failed to start (cuInit error {status})"
    count = ctypes.c_int(0)
    status = driver.cuDeviceGetCount(ctypes.byref(count))
    if status != 0 or count.value == 0:
        return 0, "the CUDA driver sees no GPU"
    return count.value, ""


@functools.cache
def worker_index() -> int:
    """This process's worker number, 0 to workers - 1; 0 outside a multi-worker ``scene-serve``.

    Each worker locks the first ``worker-<i>.lock`` in the `WORKER_SLOTS_ENV` folder that
    no other process holds. The lock goes with the process, so a worker that uvicorn
    restarts after a crash takes the freed number back instead of a new one.
    """
    folder = os.environ.get(WORKER_SLOTS_ENV)
    if not folder or sys.platform == "win32":
        return 0
    import fcntl

    index = 0
    while True:
        handle = (Path(folder) / f"worker-{index}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            index += 1
            continue
        _held_slots.append(handle)
        return index


def device_for_worker(worker: int, device_ids: list[int], device_count: int) -> int:
    """The CUDA device ``worker`` runs on: ``device_ids[worker mod len]``, or with no list
    ``worker mod device_count`` over every device the driver sees (0 when it sees none)."""
    if device_ids:
        return device_ids[worker % len(device_ids)]
    return worker % device_count if device_count > 0 else 0
