"""The API's words and their mapping to the model's: one output per task, one JSON timing
key per stage, resize filters Pillow knows (used alike on both sides of the contract),
and the service speaking exactly these."""

from __future__ import annotations

import numpy as np
from PIL import Image

from scene_contract.model import RESIZE_FILTERS, TASKS
from scene_contract.vocabulary import OUTPUT_OF_TASK, OUTPUTS, STAGES, TIMING_KEYS
from service.api.routes.predict import _OUTPUTS_PATTERN
from service.metrics import Stage
from service.schemas import PredictResponse, RequestedOutput, Timings


def test_every_task_has_one_output_in_task_order() -> None:
    assert tuple(OUTPUT_OF_TASK) == TASKS
    assert OUTPUTS == ("semantic", "instances", "depth")


def test_the_service_asks_for_and_answers_with_the_contracts_outputs() -> None:
    assert tuple(RequestedOutput) == OUTPUTS
    assert set(OUTPUTS) <= set(PredictResponse.model_fields)
    assert _OUTPUTS_PATTERN == r"^(semantic|instances|depth)(,(semantic|instances|depth))*$"


def test_stages_keep_their_public_names() -> None:
    """Labels, Server-Timing entries and JSON keys are public: renaming one breaks dashboards."""
    assert tuple(Stage) == STAGES
    assert STAGES == ("decode", "preprocess", "queue_wait", "inference", "postprocess", "encode")
    assert [TIMING_KEYS[stage] for stage in STAGES] == [
        "decode",
        "preprocess",
        "queue",
        "inference",
        "postprocess",
        "encode",
    ]
    assert list(Timings.model_fields) == [*TIMING_KEYS.values(), "total"]


def test_every_resize_filter_is_a_pillow_filter() -> None:
    for name in RESIZE_FILTERS:
        assert Image.Resampling[name.upper()].name.lower() == name


def test_an_upload_reaches_the_model_as_a_training_frame_did() -> None:
    # One resize per side, both from the card's filter: the service must hand the model
    # exactly the pixels training made from the same image, or scores do not carry over.
    from service.imaging import preprocess
    from training.data.sample import RESIZE, resize_image

    image = np.random.default_rng(0).integers(0, 256, size=(45, 70, 3), dtype=np.uint8)
    assert RESIZE in RESIZE_FILTERS
    for height, width in ((32, 64), (90, 50)):
        np.testing.assert_array_equal(
            preprocess(image, (height, width), RESIZE), resize_image(image, height, width)
        )
