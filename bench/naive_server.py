"""The peer scene-serve is measured against: this ONNX file served the way a user would.

    NAIVE_MODEL=models/default/model.onnx uvicorn bench.naive_server:app --port 8001

(``NAIVE_PROVIDERS=CUDAExecutionProvider`` for a GPU.)

One ``session.run`` per request in Starlette's thread pool, Pillow to decode and
resize to the model's input size, the class map and depth (16-bit, 1/64 m) back as
base64 PNGs at that size. No batching, no instance grouping, no confidence table.
"""

from __future__ import annotations

import base64
import io
import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from PIL import Image

session = ort.InferenceSession(
    os.environ.get("NAIVE_MODEL", "models/default/model.onnx"),
    providers=os.environ.get("NAIVE_PROVIDERS", "CPUExecutionProvider").split(","),
)
card = json.loads(session.get_modelmeta().custom_metadata_map["scene_mtl.model_card"])
size = (card["input"]["width"], card["input"]["height"])
app = FastAPI()


def png_base64(array: np.ndarray[Any, Any]) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def infer(data: bytes) -> dict[str, Any]:
    image = Image.open(io.BytesIO(data)).convert("RGB").resize(size, Image.Resampling.BILINEAR)
    semantic, _, _, inverse_depth = session.run(None, {"image": np.asarray(image)[None]})
    depth = np.divide(
        1.0, inverse_depth[0, 0], out=np.zeros_like(inverse_depth[0, 0]), where=inverse_depth[0, 0] > 0
    )
    return {
        "semantic_png": png_base64(semantic[0]),
        "depth_png": png_base64(np.clip(np.rint(depth * 64), 0, 65535).astype(np.uint16)),
        "provider": session.get_providers()[0],
    }


@app.post("/predict")
async def predict(request: Request) -> dict[str, Any]:
    return await run_in_threadpool(infer, await request.body())
