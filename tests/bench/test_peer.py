"""The side-by-side benchmark against a naive server keeps working (figures: docs/benchmarks.md)."""

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench import peer


@pytest.mark.parametrize("generator", ["httpx", "hey"])
def test_peer_smoke_run_reports_both_servers_without_errors(
    generator: str, tmp_path: Path, system_tool: Callable[[str, str], str]
) -> None:
    if generator == "hey":
        system_tool("hey", "hey")  # installed by `make system-deps`
    out = tmp_path / "peer.json"
    # With hey the naive server's model is named explicitly; with httpx it defaults to scene-serve's.
    fp32 = peer.REPO / "models/default/model.onnx"
    naive = fp32
    extra = ["--naive-model", str(fp32)] if generator == "hey" else []
    peer.main(["--smoke", "--load-generator", generator, *extra, "--json", str(out)])
    height, width = peer.model_input_size(fp32)
    report = json.loads(out.read_text())
    assert report["load_generator"] == generator and report["model_only_p50_ms"] > 0
    assert report["models"] == {"scene-serve": str(fp32), "naive": str(naive)}
    figures = report["figures"]
    assert {(f["server"], f["image"], f["clients"]) for f in figures} == {
        (server, image, clients)
        for server in ("scene-serve", "naive")
        for image in (f"{width}x{height} PNG", "512x256 JPEG")
        for clients in (1, 2)
    }
    for figure in figures:
        assert figure["errors"] == 0, figure
        assert figure["throughput_rps"] > 0 and 0 < figure["p50_ms"] <= figure["p99_ms"]
        assert sys.platform != "linux" or figure["cpu_ms_per_request"] > 0
