"""Rendered scenes on disk: the layout `scene-data render` writes, and a dataset reading it back.

Layout under the output directory::

    manifest.json            classes, encodings, settings and the list of scenes
    images/000000.png        RGB, 8-bit
    semantic/000000.png      train ids, 8-bit grey; 255 = ignore
    instance/000000.png      instance ids, 16-bit grey; 0 = none, else train_id * 1000 + k
    depth/000000.npy         float32 [H, W], metres along the optical axis; inf = sky

Every file is lossless, so reading a scene back gives exactly the rendered arrays.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from scene_contract.model import DEPTH_TASK, INSTANCE_TASK, SEMANTIC_TASK, TASKS
from training.data.classes import IGNORE_INDEX, INSTANCE_DIVISOR, class_table_json
from training.data.sample import DataConfigError, SceneSample

FORMAT = "scene-mtl/scenes-v1"
# Each scene is its image and one label file per task, in a folder named for the task.
ENCODINGS = {
    "image": "RGB PNG, 8 bits per channel",
    SEMANTIC_TASK: f"8-bit PNG of train ids; {IGNORE_INDEX} = ignore",
    INSTANCE_TASK: f"16-bit PNG; 0 = no instance, else train_id * {INSTANCE_DIVISOR} + k",
    DEPTH_TASK: "numpy .npy float32 [H, W], metres along the optical axis; inf = sky, nan = no measurement",
}
_FOLDERS = ("images", *TASKS)


def write_scene(root: Path, index: int, sample: SceneSample) -> dict[str, str]:
    """Write one scene's files under ``root``; returns their paths relative to ``root``."""
    stem = f"{index:06d}"
    files = {
        "image": f"images/{stem}.png",
        SEMANTIC_TASK: f"{SEMANTIC_TASK}/{stem}.png",
        INSTANCE_TASK: f"{INSTANCE_TASK}/{stem}.png",
        DEPTH_TASK: f"{DEPTH_TASK}/{stem}.npy",
    }
    Image.fromarray(sample.image, mode="RGB").save(root / files["image"])
    Image.fromarray(sample.semantic, mode="L").save(root / files[SEMANTIC_TASK])
    Image.fromarray(sample.instance.astype(np.uint16)).save(root / files[INSTANCE_TASK])
    np.save(root / files[DEPTH_TASK], sample.depth)
    return files


def prepare_output(root: Path) -> None:
    """Create the layout's folders; refuse a file in the way."""
    if root.exists() and not root.is_dir():
        raise DataConfigError(f"--out: {root} exists and is not a directory")
    for folder in _FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)


def write_manifest(root: Path, settings: dict[str, Any], scenes: Iterable[dict[str, str]]) -> Path:
    """Write ``manifest.json`` atomically, so a reader never sees a half-written one."""
    manifest = {
        "format": FORMAT,
        "settings": settings,
        "classes": class_table_json(),
        "ignore_index": IGNORE_INDEX,
        "encodings": ENCODINGS,
        "scenes": list(scenes),
    }
    path = root / "manifest.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)
    return path


class DiskScenes:
    """Scenes written by `scene-data render`, read back exactly. Picklable for DataLoader workers."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest_path = self.root / "manifest.json"
        if not manifest_path.is_file():
            raise DataConfigError(f"{manifest_path} not found; is {self.root} a `scene-data render` output?")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as error:
            raise DataConfigError(f"{manifest_path} is not valid JSON: {error}") from None
        if manifest.get("format") != FORMAT:
            raise DataConfigError(f"{manifest_path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
        self.scenes: list[dict[str, str]] = manifest["scenes"]
        self.settings: dict[str, Any] = manifest["settings"]

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> SceneSample:
        files = self.scenes[index]
        path = {key: self.root / rel for key, rel in files.items() if key != "name"}
        missing = [str(p) for p in path.values() if not p.is_file()]
        if missing:
            raise DataConfigError(f"scene {index}: missing {', '.join(missing)}")
        # Writable copies: torch warns on (and must not write through) read-only arrays.
        with Image.open(path["image"]) as im:
            image = np.array(im.convert("RGB"), dtype=np.uint8)
        with Image.open(path[SEMANTIC_TASK]) as im:
            semantic = np.array(im, dtype=np.uint8)
        with Image.open(path[INSTANCE_TASK]) as im:
            instance = np.asarray(im).astype(np.int32)
        depth = np.load(path[DEPTH_TASK], allow_pickle=False).astype(np.float32)
        return SceneSample(image, semantic, instance, depth, files.get("name", f"{index:06d}"))
