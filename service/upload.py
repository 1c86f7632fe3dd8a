"""Reading the image bytes of a /predict request, with the body size enforced while streaming.

Two request shapes are accepted:

- a raw body with ``Content-Type: image/png``, ``image/jpeg`` or ``image/webp``;
- ``multipart/form-data`` with the image in a file field named ``image``.

The body is never read past ``max_body_bytes``: a declared ``Content-Length`` over the
limit is refused before a byte is read, and the bytes are counted as they stream in,
which also catches chunked bodies and lying lengths. (Starlette's own body limit
answers in plain text; this keeps the service's JSON error shape.) A `BodyPace` bounds
how long the body may take, so a stalled or trickling upload is answered 408 and its
bytes are freed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from fastapi import Request
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.errors import (
    BodyTooLargeError,
    EmptyBodyError,
    InvalidRequestError,
    MalformedBodyError,
    UnsupportedMediaTypeError,
)
from service.limits import BodyPace

IMAGE_MEDIA_TYPES: tuple[str, ...] = ("image/png", "image/jpeg", "image/webp")
MULTIPART = "multipart/form-data"
IMAGE_FIELD = "image"
# Parts some clients label generic bytes; the decoder checks the real format anyway.
_GENERIC_PART_TYPES = ("", "application/octet-stream")


def media_type(content_type: str | None) -> str:
    """``"image/png"`` from ``"image/png; charset=binary"``; lower-case, no parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


async def read_image_bytes(request: Request, max_body_bytes: int, pace: BodyPace | None = None) -> bytes:
    """The encoded image sent with ``request``; raises the matching `ServiceError`.

    With ``pace``, each chunk must arrive within its deadlines (`BodyPace`).

    Raises:
        UnsupportedMediaTypeError: (415) the body, or the ``image`` part, is not PNG/JPEG/WebP.
        BodyTooLargeError: (413) more than ``max_body_bytes``, declared or counted.
        BodyTimeoutError: (408) the body came too slowly for ``pace``.
        ClientDisconnect: (Starlette's) the client went away before the body was complete.
        EmptyBodyError: (400) no image bytes.
        MalformedBodyError: (400) multipart data that cannot be parsed.
        InvalidRequestError: (422) a multipart body without an ``image`` file field.
    """
    kind = media_type(request.headers.get("content-type"))
    if kind != MULTIPART and kind not in IMAGE_MEDIA_TYPES:
        raise UnsupportedMediaTypeError(
            f"Content-Type {kind or '(none)'!r} is not accepted; send {', '.join(IMAGE_MEDIA_TYPES)} "
            f"as the body, or {MULTIPART} with an {IMAGE_FIELD!r} file field"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise BodyTooLargeError(f"the body is {int(declared)} bytes; the limit is {max_body_bytes}")
    stream = _limited(request.stream(), max_body_bytes, pace)
    if kind == MULTIPART:
        data = await _image_field(request.headers, stream)
    else:
        data = b"".join([chunk async for chunk in stream])
    if not data:
        raise EmptyBodyError("the request carries no image bytes")
    return data


async def read_body(request: Request, max_body_bytes: int, pace: BodyPace | None = None) -> bytes:
    """The whole body, whatever its type, under the same size limit and pace as an image's.

    Raises:
        BodyTooLargeError: (413) more than ``max_body_bytes``, declared or counted.
        BodyTimeoutError: (408) the body came too slowly for ``pace``.
        ClientDisconnect: (Starlette's) the client went away before the body was complete.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise BodyTooLargeError(f"the body is {int(declared)} bytes; the limit is {max_body_bytes}")
    return b"".join([chunk async for chunk in _limited(request.stream(), max_body_bytes, pace)])


async def _limited(
    stream: AsyncGenerator[bytes, None], max_body_bytes: int, pace: BodyPace | None
) -> AsyncGenerator[bytes, None]:
    total = 0
    while True:
        try:
            async with asyncio.timeout(pace.wait_s() if pace is not None else None):
                chunk = await anext(stream)
        except StopAsyncIteration:
            return
        except TimeoutError:
            assert pace is not None
            raise pace.error() from None
        total += len(chunk)
        if pace is not None:
            pace.add(len(chunk))
        if total > max_body_bytes:
            raise BodyTooLargeError(f"the body is over the limit of {max_body_bytes} bytes")
        yield chunk


async def _image_field(headers: Headers, stream: AsyncGenerator[bytes, None]) -> bytes:
    parser = MultiPartParser(headers, stream, max_files=1, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise MalformedBodyError(f"the multipart body cannot be parsed: {error.message}") from None
    try:
        upload = form.get(IMAGE_FIELD)
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError(f"the multipart body needs a file field named {IMAGE_FIELD!r}")
        part_type = media_type(upload.content_type)
        if part_type not in IMAGE_MEDIA_TYPES and part_type not in _GENERIC_PART_TYPES:
            raise UnsupportedMediaTypeError(
                f"the {IMAGE_FIELD!r} part is {part_type!r}; send one of {', '.join(IMAGE_MEDIA_TYPES)}"
            )
        return await upload.read()
    finally:
        await form.close()
