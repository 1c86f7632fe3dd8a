"""/predict's bodies as a client reads them (service/responses.py): the .npz of raw arrays,
chosen by the Accept header, holding what was asked for."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest

from service.api.routes.predict import wants_npz
from training.data.classes import train_id

pytestmark = pytest.mark.anyio

CAR = train_id("car")


async def test_npz_response_has_raw_arrays(client: httpx.AsyncClient, scene_png: bytes) -> None:
    response = await client.post(
        "/predict",
        content=scene_png,
        headers={"Content-Type": "image/png", "Accept": "application/x-npz"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-npz"
    assert "inference;dur=" in response.headers["server-timing"]
    with np.load(io.BytesIO(response.content), allow_pickle=False) as arrays:
        assert arrays["semantic"].shape == (60, 100) and arrays["semantic"].dtype == np.uint8
        assert arrays["semantic_confidence"].dtype == np.float32
        assert arrays["instance_map"].shape == (60, 100) and arrays["instance_map"].dtype == np.uint16
        assert arrays["instance_offsets"].shape == (2, 60, 100)
        assert arrays["inverse_depth"].shape == (60, 100) and arrays["inverse_depth"].dtype == np.float32
        assert arrays["inverse_depth"][5, 50] == 0.0
        # Red car pixels: inverse depth = red / 255 = 1 per metre.
        assert arrays["inverse_depth"][30, 50] == pytest.approx(1.0)
        assert arrays["semantic"][30, 50] == CAR
        assert arrays["instance_bboxes"].shape == (len(arrays["instance_ids"]), 4)
        assert arrays["instance_class_ids"].tolist() == [CAR]


async def test_npz_honours_outputs(client: httpx.AsyncClient, scene_png: bytes) -> None:
    response = await client.post(
        "/predict",
        params={"outputs": "semantic"},
        content=scene_png,
        headers={"Content-Type": "image/png", "Accept": "application/x-npz"},
    )
    with np.load(io.BytesIO(response.content), allow_pickle=False) as arrays:
        assert set(arrays.files) == {"semantic", "semantic_confidence"}


@pytest.mark.parametrize(
    ("accept", "npz"),
    [
        ("application/x-npz", True),
        ("application/json;q=0.5, application/x-npz", True),
        ("Application/X-NPZ; q=0.8", True),
        ("application/x-npz;q=0", False),
        ("application/json", False),
        (None, False),
    ],
)
def test_accept_header_picks_npz_only_when_wanted(accept: str | None, npz: bool) -> None:
    assert wants_npz(accept) is npz
