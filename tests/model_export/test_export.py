import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

import model_export.cli as cli
from model_export.export import verification_images, verify
from scene_contract.card import ModelCard
from scene_contract.model import INPUT_NAME, MAX_IR_VERSION, METADATA_KEY, OUTPUT_NAMES, SAMPLES_DIR
from training.checkpoint import load_checkpoint, model_from_checkpoint, weighting_from_checkpoint
from training.data.procedural import ProceduralScenes


@pytest.fixture(scope="module")
def checkpoint(smoke_run: Path) -> Path:
    """The session's smoke run (tests/conftest.py), trained at 32x64."""
    return smoke_run / "last.pt"


# The name the exporter gives the semantic head's last bias in the graph.
SEMANTIC_BIAS = "model.semantic_head.3.bias"


@pytest.fixture(scope="module")
def exported(smoke_export: Path) -> Path:
    """The session's export of the smoke run with every variant (tests/conftest.py)."""
    return smoke_export


@pytest.fixture
def reuse_the_trace(exported: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Makes the CLI's tracing step (most of an export's CPU time) copy the trace of the same
    checkpoint that ``exported`` made, rather than trace it again; returns that trace.

    Tracing is deterministic, and what these tests check comes after it: reading the
    checkpoint, storing weights, writing the card, verifying against the loaded model.
    """
    trace = exported.with_name("trace.onnx")

    def copy_the_trace(model: torch.nn.Module, path: Path, height: int, width: int) -> None:
        assert (height, width) == (32, 64)  # the size the trace was made at
        shutil.copyfile(trace, path)

    monkeypatch.setattr(cli, "export_fp32", copy_the_trace)
    return trace


def test_exported_model_passes_the_checker_and_loads_in_onnxruntime(exported: Path) -> None:
    model = onnx.load(str(exported))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version <= MAX_IR_VERSION
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES)


def test_model_card_round_trips_through_the_metadata(exported: Path, checkpoint: Path) -> None:
    # The three lines the docs show a user.
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    card = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    parsed = ModelCard.from_json(json.dumps(card))

    weighting = weighting_from_checkpoint(load_checkpoint(checkpoint))
    assert (parsed.name, parsed.version, parsed.precision) == ("smoke", "7", "fp32")
    assert (parsed.input.height, parsed.input.width) == (32, 64)  # the checkpoint's training size
    assert len(parsed.classes) == 19 and parsed.thing_ids == (11, 12, 13, 14, 15, 16, 17, 18)
    assert parsed.classes[13].name == "car" and parsed.classes[13].color == (0, 0, 142)
    for task, log_variance in weighting.log_variance().items():
        # The checkpoint's s itself, not one recomputed from a rounded σ.
        assert parsed.task_uncertainty[task].log_variance == log_variance
        assert card["task_uncertainty"][task]["sigma"] == pytest.approx(weighting.sigma()[task])
        assert parsed.task_uncertainty[task].learned is True
    assert parsed.input.resize == "bilinear"  # how the service must resize, as training did
    assert parsed.weighting == "uncertainty"
    assert "semantic_miou" in parsed.metrics
    assert len(card["training"]["config_sha256"]) == 64
    on_disk = json.loads(exported.with_suffix(".card.json").read_text())
    assert on_disk == card
    plain = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert json.loads(plain[METADATA_KEY]) == card


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 32, 64), (3, 96, 160)])
def test_dynamic_batch_and_size_match_pytorch(
    exported: Path, checkpoint: Path, batch: int, height: int, width: int
) -> None:
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    semantic, confidence, offsets, inverse_depth = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
    assert semantic.dtype == np.uint8 and semantic.shape == (batch, height, width)
    assert confidence.shape == (batch, height, width) and np.all((confidence > 0) & (confidence <= 1))
    assert offsets.shape == (batch, 2, height, width) and inverse_depth.shape == (batch, 1, height, width)
    model, _ = model_from_checkpoint(checkpoint)
    with torch.no_grad():
        reference = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    np.testing.assert_allclose(offsets, reference["instance_offsets"].numpy(), atol=1e-4)
    np.testing.assert_array_equal(semantic, reference["semantic_logits"].argmax(1).numpy())
    # The graph computes it on a channel-last layout; it must still be the winning class's probability.
    probability = torch.softmax(reference["semantic_logits"], dim=1).amax(dim=1).numpy()
    np.testing.assert_allclose(confidence, probability, atol=1e-5)


@pytest.mark.parametrize("variant", ["fp16", "int8"])
def test_reduced_precision_variants_load_run_and_say_what_they_are(exported: Path, variant: str) -> None:
    path = exported.with_suffix(f".{variant}.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert ModelCard.from_json(session.get_modelmeta().custom_metadata_map[METADATA_KEY]).precision == variant
    assert session.get_inputs()[0].type == "tensor(uint8)"
    outputs = session.run(None, {INPUT_NAME: np.zeros((2, 64, 128, 3), dtype=np.uint8)})
    assert [o.dtype for o in outputs] == [np.uint8, np.float32, np.float32, np.float32]
    assert path.stat().st_size < exported.stat().st_size


def test_export_writes_unseen_sample_scenes_for_the_demo(exported: Path) -> None:
    samples = sorted((exported.parent / SAMPLES_DIR).glob("*.png"))
    assert [p.name for p in samples] == [f"{i:03d}.png" for i in range(8)]
    images = [np.asarray(Image.open(p)) for p in samples]
    assert all(image.shape == (32, 64, 3) for image in images)  # the model's input size
    assert len({image.tobytes() for image in images}) == 8  # eight different scenes
    test_scene = ProceduralScenes(split="test", seed=0, count=8, height=32, width=64)[5]
    np.testing.assert_array_equal(images[5], test_scene.image)  # from the split never trained on


def test_fp16_weights_halve_the_file_and_keep_float32_compute(
    exported: Path, checkpoint: Path, tmp_path: Path, reuse_the_trace: Path
) -> None:
    out = tmp_path / "compact.onnx"
    assert cli.main(["--checkpoint", str(checkpoint), "--out", str(out), "--fp16-weights"]) == 0
    model = onnx.load(str(out))
    assert {t.data_type for t in model.graph.initializer} >= {onnx.TensorProto.FLOAT16}
    assert out.stat().st_size < 0.6 * exported.stat().st_size
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    card = ModelCard.from_json(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    assert card.precision == "fp32-fp16weights"
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 128, 3), dtype=np.uint8)
    full = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    compact_outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
    full_outputs = full.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
    assert compact_outputs[2].dtype == np.float32
    assert (compact_outputs[0] == full_outputs[0]).mean() > 0.99
    np.testing.assert_allclose(compact_outputs[3], full_outputs[3], atol=1e-2)


def test_verification_catches_a_mismatched_model(exported: Path, checkpoint: Path) -> None:
    model, _ = model_from_checkpoint(checkpoint)
    images = verification_images(64, 128, scenes=2)
    assert verify(exported, model, images, "fp32").passed
    with torch.no_grad():
        model.depth_head[3].bias += 0.01  # a change far smaller than any bug would make
    report = verify(exported, model, images, "fp32")
    assert not report.passed
    assert any("inverse_depth" in failure for failure in report.failures)


@pytest.mark.parametrize(("shift_px", "passes"), [(0.02, True), (0.2, False)])
def test_offsets_are_judged_in_pixels_per_ten(
    exported: Path, checkpoint: Path, shift_px: float, passes: bool
) -> None:
    # float16-stored weights move offsets of tens of pixels by hundredths of a pixel;
    # the tolerance (a mean 0.05 px) lets that through and still catches a real shift.
    model, _ = model_from_checkpoint(checkpoint)
    with torch.no_grad():
        model.instance_head[3].bias += shift_px
    report = verify(exported, model, verification_images(64, 128, scenes=2), "fp32-fp16weights")
    assert report.passed == passes
    assert passes or any("instance_offsets" in failure for failure in report.failures)


def test_export_that_fails_verification_leaves_no_model_behind(
    checkpoint: Path,
    tmp_path: Path,
    reuse_the_trace: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def export_a_different_model(model: torch.nn.Module, path: Path, height: int, width: int) -> None:
        other = onnx.load(str(reuse_the_trace))
        bias = next(tensor for tensor in other.graph.initializer if tensor.name == SEMANTIC_BIAS)
        values = onnx.numpy_helper.to_array(bias).copy()
        values[5] += 50.0  # every pixel becomes class 5
        bias.CopyFrom(onnx.numpy_helper.from_array(values, SEMANTIC_BIAS))
        onnx.save(other, str(path))

    monkeypatch.setattr(cli, "export_fp32", export_a_different_model)
    out = tmp_path / "model.onnx"
    assert cli.main(["--checkpoint", str(checkpoint), "--out", str(out)]) == 1
    assert "verification FAILED" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_missing_truncated_and_foreign_checkpoints_give_one_clear_error(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:4096])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    # The right format, but weights of another shape than its config's model.
    mangled = tmp_path / "mangled.pt"
    state = torch.load(checkpoint, weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name] = torch.zeros(3, 1)
    torch.save(state, mangled)
    for path, message in (
        (tmp_path / "nope.pt", "not found"),
        (truncated, "cannot be read"),
        (foreign, "not a scene-mtl checkpoint"),
        (mangled, "do not fit"),
    ):
        assert cli.main(["--checkpoint", str(path), "--out", str(tmp_path / "m.onnx")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("scene-export: error:") and message in err and "Traceback" not in err


def test_a_checkpoint_reads_where_its_backbone_file_is_missing(
    checkpoint: Path, tmp_path: Path, reuse_the_trace: Path
) -> None:
    # Trained from a local weights file (model.backbone_weights), then copied elsewhere.
    state = torch.load(checkpoint, weights_only=True)
    state["config"]["model"]["backbone_weights"] = str(tmp_path / "gone" / "resnet101.pth")
    moved = tmp_path / "moved.pt"
    torch.save(state, moved)
    out = tmp_path / "m.onnx"
    assert cli.main(["--checkpoint", str(moved), "--out", str(out)]) == 0
    assert out.is_file()
