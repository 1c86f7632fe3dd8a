"""Whether this host has a CUDA GPU at all, asked of the driver before ONNX Runtime is.

onnxruntime-gpu lists its CUDA and TensorRT providers whether or not a GPU is there;
asked for them on a CPU-only host, it prints screens of library errors before it falls
back to the CPU. Asking the CUDA driver first (``cuInit`` and ``cuDeviceGetCount``
through ctypes, the driver's stable C API) lets the runtime skip the GPU providers on
such hosts and say so in one line.
"""

from __future__ import annotations

import ctypes
import sys

_DRIVER = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"


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
