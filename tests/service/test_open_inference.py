"""The open inference protocol (KServe v2 / Triton HTTP), spoken by Triton's own client.

A real ``scene-serve`` process on the tiny model, served under the name the Kubernetes
manifests give it, and ``tritonclient.http`` (from PyPI) as the client: what a KServe
transformer, an InferenceGraph or perf_analyzer would send. The expected outputs come
from ONNX Runtime run directly on the same pixels.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from scene_contract.model import DEFAULT_RESIZE
from service.imaging import decode_upload, preprocess
from tests.service.conftest import MODEL_HEIGHT, MODEL_VERSION, MODEL_WIDTH

SERVED_NAME = "scene-mtl"
OUTPUTS = ("semantic", "semantic_confidence", "instance_offsets", "inverse_depth")


@pytest.fixture(scope="module")
def server(
    model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    running_server: Callable[..., AbstractContextManager[str]],
) -> Iterator[str]:
    log = tmp_path_factory.mktemp("v2") / "server.log"
    with running_server(model_path, log, env={"SCENE_MODEL_NAME": SERVED_NAME}) as base:
        yield base


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(url=server.removeprefix("http://"))
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def reference(model_path: Path) -> Callable[[npt.NDArray[np.uint8]], dict[str, npt.NDArray[Any]]]:
    """The model's outputs for ``uint8 [N, H, W, 3]``, from ONNX Runtime directly."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])

    def run(images: npt.NDArray[np.uint8]) -> dict[str, npt.NDArray[Any]]:
        return dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"image": images}), strict=True))

    return run


def street(count: int) -> npt.NDArray[np.uint8]:
    """``uint8 [count, H, W, 3]`` at the model's size: sky, road, and a car that moves with k."""
    images = np.zeros((count, MODEL_HEIGHT, MODEL_WIDTH, 3), dtype=np.uint8)
    images[:, : MODEL_HEIGHT // 3] = (0, 0, 255)
    images[:, MODEL_HEIGHT // 3 :] = (0, 200, 0)
    for k in range(count):
        images[k, 18:28, 4 + 8 * k : 20 + 8 * k] = (220, 0, 0)
    return images


def tensor_input(images: npt.NDArray[Any], datatype: str = "UINT8", binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("image", list(images.shape), datatype)
    tensor.set_data_from_numpy(images, binary_data=binary)
    return tensor


def assert_outputs_equal(got: dict[str, npt.NDArray[Any]], expected: dict[str, npt.NDArray[Any]]) -> None:
    for name, values in got.items():
        assert values.shape == expected[name].shape and values.dtype == expected[name].dtype, name
        np.testing.assert_allclose(values, expected[name], rtol=1e-6, atol=1e-6, err_msg=name)


def test_health_and_metadata_in_the_protocols_shapes(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    server = client.get_server_metadata()
    assert server["name"] == "scene-mtl" and "binary_tensor_data" in server["extensions"]
    # Served under the InferenceService's name, not the card's ("tiny-test").
    assert client.is_model_ready(SERVED_NAME) and client.is_model_ready(SERVED_NAME, MODEL_VERSION)
    assert not client.is_model_ready("tiny-test")
    metadata = client.get_model_metadata(SERVED_NAME)
    assert metadata["name"] == SERVED_NAME and metadata["versions"] == [MODEL_VERSION]
    assert metadata["inputs"] == [
        {"name": "image", "datatype": "UINT8", "shape": [-1, MODEL_HEIGHT, MODEL_WIDTH, 3]}
    ]
    assert [output["name"] for output in metadata["outputs"]] == list(OUTPUTS)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_on_a_uint8_tensor_returns_the_models_outputs(
    client: triton.InferenceServerClient,
    reference: Callable[[npt.NDArray[np.uint8]], dict[str, npt.NDArray[Any]]],
    binary: bool,
) -> None:
    images = street(2)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in OUTPUTS]
    result = client.infer(
        SERVED_NAME, [tensor_input(images, binary=binary)], outputs=outputs, request_id="r-7"
    )
    assert result.get_response()["id"] == "r-7"
    assert result.get_response()["model_name"] == SERVED_NAME
    assert_outputs_equal({name: result.as_numpy(name) for name in OUTPUTS}, reference(images))


def test_infer_on_encoded_images_decodes_and_resizes_them_as_predict_does(
    client: triton.InferenceServerClient,
    reference: Callable[[npt.NDArray[np.uint8]], dict[str, npt.NDArray[Any]]],
    scene_png: bytes,
) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(Image.open(io.BytesIO(scene_png)))[::-1].copy()).save(buffer, format="JPEG")
    encoded = np.array([scene_png, buffer.getvalue()], dtype=np.object_)
    result = client.infer(SERVED_NAME, [tensor_input(encoded, "BYTES")], model_version=MODEL_VERSION)
    size = (MODEL_HEIGHT, MODEL_WIDTH)
    expected_inputs = np.stack(
        [preprocess(decode_upload(data, 2**24, size)[0], size, DEFAULT_RESIZE) for data in encoded]
    )
    assert_outputs_equal({name: result.as_numpy(name) for name in OUTPUTS}, reference(expected_inputs))
    # The tiny model's classes: sky above, road below, the car in the middle.
    semantic = result.as_numpy("semantic")
    assert semantic.shape == (2, MODEL_HEIGHT, MODEL_WIDTH)
    assert (
        (semantic[0, 0] == 10).all()
        and (semantic[0, -1] == 0).all()
        and semantic[0, MODEL_HEIGHT // 2].max() == 13
    )


def test_only_the_outputs_asked_for_come_back(client: triton.InferenceServerClient) -> None:
    asked = [
        triton.InferRequestedOutput("semantic"),
        triton.InferRequestedOutput("inverse_depth", binary_data=False),
    ]
    result = client.infer(SERVED_NAME, [tensor_input(street(1))], outputs=asked)
    assert [output["name"] for output in result.get_response()["outputs"]] == ["semantic", "inverse_depth"]
    assert result.as_numpy("semantic_confidence") is None
    assert result.as_numpy("inverse_depth").shape == (1, 1, MODEL_HEIGHT, MODEL_WIDTH)


@pytest.mark.parametrize(
    ("make_input", "model", "status", "says"),
    [
        (lambda: tensor_input(np.zeros((1, 10, 10, 3), np.uint8)), SERVED_NAME, "400", "must have shape"),
        (lambda: tensor_input(street(1).astype(np.float32), "FP32"), SERVED_NAME, "400", "datatype 'FP32'"),
        (
            lambda: tensor_input(np.array([b"not an image"], dtype=np.object_), "BYTES"),
            SERVED_NAME,
            "400",
            "not a PNG, JPEG or WebP",
        ),
        (lambda: tensor_input(street(1)), "tiny-test", "404", "no model named 'tiny-test'"),
    ],
    ids=["wrong-shape", "wrong-datatype", "corrupt-bytes", "unknown-model"],
)
def test_refusals_reach_the_client_in_the_protocols_error_format(
    client: triton.InferenceServerClient,
    make_input: Callable[[], triton.InferInput],
    model: str,
    status: str,
    says: str,
) -> None:
    with pytest.raises(InferenceServerException) as refused:
        client.infer(model, [make_input()])
    assert refused.value.status() == status
    assert says in (refused.value.message() or ""), refused.value.message()


def test_an_unknown_output_is_refused(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="no output 'depth'") as refused:
        client.infer(SERVED_NAME, [tensor_input(street(1))], outputs=[triton.InferRequestedOutput("depth")])
    assert refused.value.status() == "400"


def test_v2_errors_are_a_single_message_string(server: str) -> None:
    for response in (
        httpx.get(f"{server}/v2/models/other"),
        httpx.get(f"{server}/v2/models/{SERVED_NAME}/versions/9/ready"),
        httpx.post(f"{server}/v2/models/{SERVED_NAME}/infer", content=b"{not json"),
        httpx.get(f"{server}/v2/nowhere"),
    ):
        body = response.json()
        assert (
            response.status_code in (400, 404) and list(body) == ["error"] and isinstance(body["error"], str)
        )
    # Outside /v2 the service's own shape stays.
    assert set(httpx.get(f"{server}/nowhere").json()["error"]) == {"code", "message"}


def test_binary_data_that_does_not_add_up_is_refused(server: str) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "UINT8",
                    "shape": [1, MODEL_HEIGHT, MODEL_WIDTH, 3],
                    "parameters": {"binary_data_size": MODEL_HEIGHT * MODEL_WIDTH * 3},
                }
            ]
        }
    ).encode()
    pixels = street(1).tobytes()
    url = f"{server}/v2/models/{SERVED_NAME}/infer"
    for body, length, says in (
        (header + pixels[:-1], len(header), "bytes of binary data are left"),
        (header + pixels + b"extra", len(header), "belong to no input"),
        (header + pixels, len(header) + 10**6, "Inference-Header-Content-Length"),
    ):
        response = httpx.post(url, content=body, headers={"Inference-Header-Content-Length": str(length)})
        assert response.status_code == 400 and says in response.json()["error"], response.text
    ok = httpx.post(
        url, content=header + pixels, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert ok.status_code == 200 and ok.headers["content-type"] == "application/json"
