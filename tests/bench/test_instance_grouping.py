"""The instance-grouping benchmark keeps working (its figures live in docs/benchmarks.md)."""

from pathlib import Path

import onnx
import pytest

from bench import instance_grouping


def test_instance_grouping_smoke_run_reports_time_and_quality(capsys: pytest.CaptureFixture[str]) -> None:
    instance_grouping.main(["--count", "2", "--runs", "1", "--pool", "3", "--methods", "peaks"])
    out = capsys.readouterr().out
    assert "ms/image" in out and "the most crowded of the first 3 scenes" in out
    assert "recall" in out


@pytest.mark.parametrize(
    ("dims", "expected"), [(["batch", 320, 640, 3], (320, 640)), (["n", "h", "w", 3], None)]
)
def test_scenes_are_rendered_at_the_size_a_fixed_size_graph_takes(
    tmp_path: Path, dims: list[str | int], expected: tuple[int, int] | None
) -> None:
    image = onnx.helper.make_tensor_value_info("image", onnx.TensorProto.UINT8, dims)
    out = onnx.helper.make_tensor_value_info("out", onnx.TensorProto.UINT8, dims)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["image"], ["out"])], "g", [image], [out]
    )
    onnx.save(onnx.helper.make_model(graph), tmp_path / "model.onnx")
    assert instance_grouping.model_input_size(tmp_path / "model.onnx") == expected
