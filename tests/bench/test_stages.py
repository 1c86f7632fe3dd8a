"""The per-stage CPU cost benchmark keeps working (its figures live in docs/benchmarks.md)."""

import pytest

from bench import peer, stages


def test_stages_smoke_run_reports_every_stage_for_both_images(capsys: pytest.CaptureFixture[str]) -> None:
    stages.main(["--smoke"])
    out = capsys.readouterr().out
    height, width = peer.model_input_size(peer.REPO / "models/default/model.onnx")
    assert f"{width}x{height} PNG" in out and "512x256 JPEG" in out
    for stage in (
        "decode + resize",
        "model (1 thread)",
        "postprocess",
        "encode",
        "JSON text",
        "service stages",
    ):
        assert out.count(stage) == 2, stage
