"""A model whose graph is valid at one size (ESPNetv2): traced there, said so in its card,
equal to PyTorch there, refused elsewhere by ONNX Runtime, and served through the resize."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

import model_export.cli as cli
from model_export.export import verification_images, verify
from scene_contract.card import ModelCard
from scene_contract.model import INPUT_NAME, METADATA_KEY
from training.checkpoint import model_from_checkpoint

HEIGHT, WIDTH = 64, 128


@pytest.fixture(scope="module")
def espnet_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``model.onnx`` of a two-step, randomly initialised ESPNetv2 (s = 1.0) run at 64x128."""
    from training.train import main

    run_dir = tmp_path_factory.mktemp("espnet")
    overrides = [
        "model.backbone=espnetv2",
        "model.width=1.0",
        f"data.height={HEIGHT}",
        f"data.width={WIDTH}",
        "data.train_count=4",
        "data.val_count=2",
        "data.workers=0",
        "steps=2",
        "batch_size=2",
        "eval_every=0",
        "checkpoint_every=0",
        "device=cpu",
        f"run_dir={run_dir}",
    ]
    assert main(["--config", "configs/smoke.yaml", *overrides]) == 0
    out = run_dir / "model.onnx"
    code = cli.main(
        [
            "--checkpoint",
            str(run_dir / "last.pt"),
            "--out",
            str(out),
            "--samples",
            "0",
            "--verify-scenes",
            "2",
        ]
    )
    assert code == 0
    return out


def test_the_card_says_the_graph_has_one_size(espnet_export: Path) -> None:
    session = ort.InferenceSession(str(espnet_export), providers=["CPUExecutionProvider"])
    card = ModelCard.from_json(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    assert card.input.fixed_size and (card.input.height, card.input.width) == (HEIGHT, WIDTH)
    assert card.backbone == "espnetv2" and card.pretrained is None  # random start, none claimed
    (image,) = session.get_inputs()
    assert image.name == INPUT_NAME and image.shape[1:] == [HEIGHT, WIDTH, 3]


def test_onnx_matches_pytorch_at_the_served_size(espnet_export: Path) -> None:
    model, _ = model_from_checkpoint(espnet_export.parent / "last.pt")
    report = verify(espnet_export, model, verification_images(HEIGHT, WIDTH, scenes=2), "fp32")
    assert report.passed, report.failures


def test_another_size_is_refused_rather_than_mis_pooled(espnet_export: Path) -> None:
    session = ort.InferenceSession(str(espnet_export), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match=r"(?i)dimension|shape"):
        session.run(None, {INPUT_NAME: np.zeros((1, HEIGHT * 2, WIDTH, 3), np.uint8)})


def test_the_service_resizes_any_upload_to_the_graph_size(espnet_export: Path) -> None:
    from fastapi.testclient import TestClient

    from service.main import create_app
    from service.settings import Settings

    photo = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(
        photo, "PNG"
    )
    with TestClient(create_app(Settings(model_path=espnet_export))) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:  # warm-up runs in the background
            assert time.monotonic() < deadline, "the service never became ready"
            time.sleep(0.2)
        response = client.post("/predict", content=photo.getvalue(), headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (120, 90)
