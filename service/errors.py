"""Errors the service answers with, all as ``{"error": {"code": ..., "message": ...}}``.

=============================  ======  ================================================
code                           status  when
=============================  ======  ================================================
``unauthorized``               401     ``api_token`` is set and the bearer token is
                                       missing or wrong (health, readiness, metrics and
                                       docs never ask for one)
``not_found``                  404     unknown path or model name
``method_not_allowed``         405     e.g. GET /predict
``empty_body``                 400     no bytes, or an empty ``image`` field
``corrupt_image``              400     not a decodable PNG/JPEG/WebP, or truncated
``malformed_body``             400     multipart data that cannot be parsed
``body_too_large``             413     body over ``max_body_bytes`` (by Content-Length,
                                       or counted while streaming)
``too_many_pixels``            413     image over ``max_pixels`` (decompression bomb guard)
``image_too_wide``             413     image wider than ``max_width``
``image_too_tall``             413     image taller than ``max_height``
``output_too_large``           413     ``resolution=original`` maps would be over
                                       ``max_output_pixels`` (ask for ``auto`` or
                                       ``model``, or send a smaller image)
``body_timeout``               408     the body did not arrive within
                                       ``body_timeout_s``, or came slower than
                                       ``body_min_rate``
``aspect_ratio_too_large``     422     long side / short side over ``max_aspect_ratio``
``unsupported_media_type``     415     not multipart/form-data, image/png, image/jpeg
                                       or image/webp; or a real image in another format
``validation_error``           422     bad query parameter, or no ``image`` field
``invalid_inference_request``  400     a /v2 infer request with a wrong shape,
                                       datatype, tensor name or binary layout
``not_ready``                  503     the model is still loading or warming up
``unhealthy``                  503     liveness: warm-up failed, a restart may help
``queue_full``                 503     the batcher's queue is full; has ``Retry-After``
``shutting_down``              503     the server stopped while the request waited
``timeout``                    504     the request took longer than
                                       ``request_timeout_s``
``inference_failed``           500     ONNX Runtime raised on the request's batch
``internal_error``             500     a bug; the message is generic, the log has it
``client_disconnected``        499     the client went away before its answer (nobody
                                       receives this; it is logged in one line and
                                       counted, never as a server error)
=============================  ======  ================================================

Every error increments ``scene_errors_total{reason=<code>}``. Under ``/v2`` (the open
inference protocol) the body is the protocol's own ``{"error": "<message>"}``, with the
same status and the same count.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service import metrics

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error with its HTTP status, machine-readable code and extra response headers."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class UnauthorizedError(ServiceError):
    status_code = 401
    code = "unauthorized"


class NotFoundError(ServiceError):
    status_code = 404
    code = "not_found"


class EmptyBodyError(ServiceError):
    status_code = 400
    code = "empty_body"


class CorruptImageError(ServiceError):
    status_code = 400
    code = "corrupt_image"


class MalformedBodyError(ServiceError):
    status_code = 400
    code = "malformed_body"


class BodyTooLargeError(ServiceError):
    status_code = 413
    code = "body_too_large"


class TooManyPixelsError(ServiceError):
    status_code = 413
    code = "too_many_pixels"


class ImageTooWideError(ServiceError):
    status_code = 413
    code = "image_too_wide"


class ImageTooTallError(ServiceError):
    status_code = 413
    code = "image_too_tall"


class OutputTooLargeError(ServiceError):
    status_code = 413
    code = "output_too_large"


class AspectRatioError(ServiceError):
    status_code = 422
    code = "aspect_ratio_too_large"


class BodyTimeoutError(ServiceError):
    """The body came too slowly; the connection is closed so a stalled sender frees its slot."""

    status_code = 408
    code = "body_timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class ClientDisconnectedError(ServiceError):
    """The client closed the connection; 499 is nginx's status for that (no one reads it)."""

    status_code = 499
    code = "client_disconnected"


class UnsupportedMediaTypeError(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class InvalidRequestError(ServiceError):
    status_code = 422
    code = "validation_error"


class NotReadyError(ServiceError):
    status_code = 503
    code = "not_ready"


class UnhealthyError(ServiceError):
    status_code = 503
    code = "unhealthy"


class QueueFullError(ServiceError):
    status_code = 503
    code = "queue_full"


class ShuttingDownError(ServiceError):
    status_code = 503
    code = "shutting_down"


class InferenceFailedError(ServiceError):
    status_code = 500
    code = "inference_failed"


class InferenceTimeoutError(ServiceError):
    status_code = 504
    code = "timeout"


class InvalidInferenceRequestError(ServiceError):
    """An open inference protocol request that does not fit the protocol or the model."""

    status_code = 400
    code = "invalid_inference_request"


V2_PREFIX = "/v2"


def error_response(
    status_code: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    path: str = "",
) -> JSONResponse:
    """The error shape for ``path`` (the protocol's under /v2), counted in ``scene_errors_total``."""
    metrics.ERRORS.labels(reason=code).inc()
    v2 = path == V2_PREFIX or path.startswith(V2_PREFIX + "/")
    body: dict[str, object] = {"error": message if v2 else {"code": code, "message": message}}
    return JSONResponse(body, status_code=status_code, headers=dict(headers or {}))


_HTTP_CODES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


async def _service_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ServiceError)
    if isinstance(error, ClientDisconnectedError):
        logger.info("client disconnected: %s %s (%s)", request.method, request.url.path, error.message)
    return error_response(error.status_code, error.code, error.message, error.headers, path=request.url.path)


async def _client_disconnect(request: Request, _: Exception) -> JSONResponse:
    # Starlette raises ClientDisconnect when the peer goes away mid-body (its multipart
    # parser included): the client's network, not a fault of ours.
    return await _service_error(request, ClientDisconnectedError("while the body was being sent"))


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = _HTTP_CODES.get(error.status_code, "http_error")
    return error_response(error.status_code, code, str(error.detail), error.headers, path=request.url.path)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()
    )
    return error_response(422, "validation_error", problems or "invalid request", path=request.url.path)


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    # The message stays generic so internals (paths, shapes) never reach clients.
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return error_response(
        500, "internal_error", "internal server error; see the server log", path=request.url.path
    )


def install_error_handlers(app: FastAPI) -> None:
    """Make every error, FastAPI's own included, answer in the one JSON shape."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
