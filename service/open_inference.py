"""The open inference protocol's infer call (KServe v2, Triton's HTTP API): bodies in, bodies out.

Pure functions of bytes and arrays, so each rule is testable without a server; the
route (`service.api.routes.inference`) reads the body and runs the pipeline.

A request body is JSON, or with the binary tensor data extension a JSON header of
``Inference-Header-Content-Length`` bytes followed by the inputs' raw bytes, input after
input, each input's share given by its ``parameters.binary_data_size``. The model takes
one input, ``image``, either

- ``UINT8 [N, H, W, 3]``: RGB at the model's input size (the card's), run as it is; or
- ``BYTES [N]`` (or ``[N, 1]``): N encoded PNG, JPEG or WebP images, each decoded,
  checked against the image limits and resized as ``/predict`` does. BYTES elements
  travel as the protocol says: in binary, each a 4-byte little-endian length and the
  bytes; in JSON, as strings, which suits text rather than images.

The response holds the model's outputs by name with the batch axis first (``semantic``
UINT8 [N, H, W], ``semantic_confidence`` FP32 [N, H, W], ``instance_offsets`` FP32
[N, 2, H, W], ``inverse_depth`` FP32 [N, 1, H, W], at the model's input size): all of
them, or those the request names. An output is sent in binary when it asks for
``binary_data`` (or the request for ``binary_data_output``), else as a JSON list in
row-major order. Anything else is refused with `InvalidInferenceRequestError`, whose
message names the tensor and what was expected.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.errors import InvalidInferenceRequestError

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_MEDIA_TYPE = "application/octet-stream"
JSON_MEDIA_TYPE = "application/json"
# Triton's name for the binary tensor data extension, as /v2 lists it.
EXTENSIONS = ("binary_tensor_data",)

_UNSUPPORTED_PARAMETERS = ("shared_memory_region", "classification")


@dataclass(frozen=True)
class RequestedOutput:
    """One output the response carries, and whether as binary data."""

    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A parsed infer request.

    Attributes:
        id: the client's request id, echoed in the response (None when it sent none).
        images: ``uint8 [N, H, W, 3]`` when the image came as a UINT8 tensor, else None.
        encoded: the N encoded images when it came as BYTES, else None.
        outputs: what to return, in order.
    """

    id: str | None
    images: npt.NDArray[np.uint8] | None
    encoded: list[bytes] | None
    outputs: tuple[RequestedOutput, ...]

    @property
    def batch_size(self) -> int:
        return (
            len(self.encoded)
            if self.encoded is not None
            else len(self.images if self.images is not None else ())
        )


def parse_request(
    body: bytes,
    header_length: str | None,
    *,
    input_name: str,
    input_size: tuple[int, int],
    output_names: tuple[str, ...],
) -> InferRequest:
    """An `InferRequest` for a model whose one input is ``input_name`` at ``input_size`` (H, W).

    ``header_length`` is the ``Inference-Header-Content-Length`` header (None without it).
    Raises `InvalidInferenceRequestError` saying what does not fit.
    """
    header, binary = _split(body, header_length)
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(tensor, dict) for tensor in inputs):
        raise InvalidInferenceRequestError("the request needs 'inputs', a list of tensors")
    names = [tensor.get("name") for tensor in inputs]
    if names != [input_name]:
        raise InvalidInferenceRequestError(
            f"the model takes one input, {input_name!r}; the request has {names}"
        )
    slices = _binary_slices(inputs, binary)
    [tensor] = inputs
    datatype, shape = tensor.get("datatype"), _shape(tensor)
    height, width = input_size
    if datatype == "UINT8":
        if len(shape) != 4 or shape[1:] != [height, width, 3] or shape[0] < 1:
            raise InvalidInferenceRequestError(
                f"{input_name!r} as UINT8 must have shape [N, {height}, {width}, 3] (RGB at the model's "
                f"input size); got {shape}. Send other sizes as encoded images (BYTES)"
            )
        images = _numeric(tensor, shape, slices[0], np.dtype("u1"))
        encoded = None
    elif datatype == "BYTES":
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
            raise InvalidInferenceRequestError(
                f"{input_name!r} as BYTES must have shape [N] or [N, 1], one encoded image each; got {shape}"
            )
        images, encoded = None, _bytes_elements(tensor, shape, slices[0])
    else:
        raise InvalidInferenceRequestError(
            f"{input_name!r} must be UINT8 [N, {height}, {width}, 3] or BYTES [N] (encoded images); "
            f"got datatype {datatype!r}"
        )
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInferenceRequestError("'id' must be a string")
    return InferRequest(request_id, images, encoded, _requested_outputs(header, output_names))


def encode_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: dict[str, npt.NDArray[Any]],
    requested: tuple[RequestedOutput, ...],
    datatypes: dict[str, str],
) -> tuple[bytes, str, dict[str, str]]:
    """``(body, media type, headers)`` of the response holding ``requested`` of ``outputs``."""
    described: list[dict[str, Any]] = []
    binaries: list[bytes] = []
    for output in requested:
        values = outputs[output.name]
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": datatypes[output.name],
            "shape": list(values.shape),
        }
        if output.binary:
            data = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            binaries.append(data)
        else:
            entry["data"] = values.reshape(-1).tolist()
        described.append(entry)
    response: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "outputs": described,
    }
    if request_id is not None:
        response["id"] = request_id
    header = json.dumps(response, separators=(",", ":")).encode()
    if not binaries:
        return header, JSON_MEDIA_TYPE, {}
    return header + b"".join(binaries), BINARY_MEDIA_TYPE, {HEADER_LENGTH: str(len(header))}


def _split(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the binary data after it."""
    if header_length is None:
        size = len(body)
    else:
        if not header_length.strip().isdigit() or not 0 < int(header_length) <= len(body):
            raise InvalidInferenceRequestError(
                f"{HEADER_LENGTH} is {header_length!r}; it must be the JSON header's size in bytes, "
                f"at most the body's {len(body)}"
            )
        size = int(header_length)
    try:
        header = json.loads(body[:size])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        where = f"the first {size} bytes (the {HEADER_LENGTH})" if header_length is not None else "the body"
        raise InvalidInferenceRequestError(f"{where} must be a JSON object: {error}") from None
    if not isinstance(header, dict):
        raise InvalidInferenceRequestError("the request must be a JSON object")
    _refuse_unsupported(header.get("parameters"), "the request")
    return header, body[size:]


def _binary_slices(inputs: list[dict[str, Any]], binary: bytes) -> list[bytes | None]:
    """Each input's share of the binary data (None for one sent as JSON); they must use all of it."""
    slices: list[bytes | None] = []
    offset = 0
    for tensor in inputs:
        parameters = tensor.get("parameters") or {}
        _refuse_unsupported(parameters, f"input {tensor.get('name')!r}")
        size = parameters.get("binary_data_size")
        if size is None:
            slices.append(None)
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise InvalidInferenceRequestError(
                f"input {tensor.get('name')!r} has binary_data_size {size!r}, but "
                f"{len(binary) - offset} bytes of binary data are left after the JSON header"
            )
        slices.append(binary[offset : offset + size])
        offset += size
    if offset != len(binary):
        raise InvalidInferenceRequestError(
            f"{len(binary) - offset} bytes after the JSON header belong to no input's binary_data_size"
        )
    return slices


def _refuse_unsupported(parameters: object, where: str) -> None:
    if parameters is None:
        return
    if not isinstance(parameters, dict):
        raise InvalidInferenceRequestError(f"'parameters' of {where} must be an object")
    for name in _UNSUPPORTED_PARAMETERS:
        if name in parameters:
            raise InvalidInferenceRequestError(
                f"{where} asks for {name!r}, which this server does not support"
            )


def _shape(tensor: dict[str, Any]) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInferenceRequestError(
            f"input {tensor.get('name')!r} needs 'shape', a list of sizes; got {shape!r}"
        )
    return shape


def _numeric(
    tensor: dict[str, Any], shape: list[int], raw: bytes | None, dtype: np.dtype[Any]
) -> npt.NDArray[Any]:
    """A numeric tensor of ``shape`` from its binary share or its JSON ``data``."""
    count = math.prod(shape)
    name = tensor.get("name")
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise InvalidInferenceRequestError(
                f"input {name!r} of shape {shape} needs {count * dtype.itemsize} bytes; "
                f"binary_data_size is {len(raw)}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    try:
        values = np.asarray(tensor.get("data"))
    except ValueError:
        values = np.asarray(None)  # ragged lists: refused below
    if values.dtype.kind not in "iu" or values.size != count:
        raise InvalidInferenceRequestError(
            f"input {name!r} needs 'data': {count} integers for shape {shape} (flat or nested, row-major), "
            "or binary data"
        )
    info = np.iinfo(dtype)
    if values.size and (values.min() < info.min or values.max() > info.max):
        raise InvalidInferenceRequestError(f"input {name!r} has values outside {info.min}..{info.max}")
    return values.astype(dtype).reshape(shape)


def _bytes_elements(tensor: dict[str, Any], shape: list[int], raw: bytes | None) -> list[bytes]:
    """The elements of a BYTES tensor: length-prefixed in binary, strings in JSON."""
    count = math.prod(shape)
    name = tensor.get("name")
    elements: list[bytes] = []
    if raw is not None:
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise InvalidInferenceRequestError(
                    f"input {name!r}: a BYTES element's 4-byte length is cut off"
                )
            (size,) = struct.unpack_from("<I", raw, offset)
            if offset + 4 + size > len(raw):
                raise InvalidInferenceRequestError(
                    f"input {name!r}: a BYTES element is longer than the data left"
                )
            elements.append(raw[offset + 4 : offset + 4 + size])
            offset += 4 + size
    else:
        data = tensor.get("data")
        flat = (
            [item for row in data for item in (row if isinstance(row, list) else [row])]
            if isinstance(data, list)
            else None
        )
        if flat is None or not all(isinstance(item, str) for item in flat):
            raise InvalidInferenceRequestError(
                f"input {name!r} needs 'data': a list of strings, or binary data"
            )
        elements = [item.encode() for item in flat]
    if len(elements) != count:
        raise InvalidInferenceRequestError(
            f"input {name!r} has {len(elements)} elements; its shape {shape} says {count}"
        )
    return elements


def _requested_outputs(header: dict[str, Any], output_names: tuple[str, ...]) -> tuple[RequestedOutput, ...]:
    parameters = header.get("parameters") or {}
    binary_default = parameters.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise InvalidInferenceRequestError("'binary_data_output' must be true or false")
    asked = header.get("outputs")
    if asked is None:
        return tuple(RequestedOutput(name, binary_default) for name in output_names)
    if not isinstance(asked, list) or not all(isinstance(output, dict) for output in asked):
        raise InvalidInferenceRequestError("'outputs' must be a list of objects with a 'name'")
    requested: list[RequestedOutput] = []
    for output in asked:
        name = output.get("name")
        if name not in output_names:
            raise InvalidInferenceRequestError(
                f"the model has no output {name!r}; it has {list(output_names)}"
            )
        if any(already.name == name for already in requested):
            raise InvalidInferenceRequestError(f"output {name!r} is asked for twice")
        output_parameters = output.get("parameters") or {}
        _refuse_unsupported(output_parameters, f"output {name!r}")
        binary = output_parameters.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise InvalidInferenceRequestError(f"'binary_data' of output {name!r} must be true or false")
        requested.append(RequestedOutput(name, binary))
    return tuple(requested)
