"""Where a study's runs live on disk and what marks them finished.

Run ``k`` of arm ``a`` lives in ``<out>/<a>/seed<k>/`` (grid points in
``<out>/<grid>/<point>/seed<k>/``, pilot runs under ``<out>/pilot/``). A folder with
``result.json`` holds a finished run, one with ``failed.json`` a run whose loss went
non-finite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scene_contract.model import TASKS

RESULT = "result.json"
FAILED = "failed.json"
RUN_RECORD = "study_run.json"


class WaitingError(Exception):
    """A run's settings depend on runs that have not finished yet; the message says which."""


def point_label(point: dict[str, float]) -> str:
    """A grid point as a folder name: ``semantic0.5_instance0.05_depth0.45``."""
    return "_".join(f"{task}{point[task]:g}" for task in TASKS if task in point)


def read_result(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULT
    return json.loads(path.read_text()) if path.is_file() else None
