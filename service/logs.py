"""Log lines that name their request: the request id, and an optional JSON format.

`RequestIdMiddleware` (service.api.middleware) sets `REQUEST_ID` for the whole of a
request; `RequestIdFilter` copies it onto every log record as ``request_id`` ("-"
outside a request), so the access line, the service's own lines and a 500's traceback
all carry the id the response's ``X-Request-ID`` header gives the client.
`log_config` is uvicorn's logging set-up with both, in text or as one JSON object per
line (``SCENE_LOG_FORMAT=json``) for log collectors.
"""

from __future__ import annotations

import copy
import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: ContextVar[str] = ContextVar("scene_request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record that passes through the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request_id, message (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def log_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """uvicorn's logging set-up plus the service's own loggers at ``level``, every line with
    its request id, as text or JSON."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["service"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    config["filters"] = {"request_id": {"()": RequestIdFilter}}
    for handler in config["handlers"].values():
        handler["filters"] = ["request_id"]
    if log_format == "json":
        for formatter in config["formatters"].values():
            formatter.clear()
            formatter["()"] = JsonFormatter
    else:
        config["formatters"]["default"]["fmt"] = "%(levelprefix)s [%(request_id)s] %(message)s"
        config["formatters"]["access"]["fmt"] = (
            '%(levelprefix)s [%(request_id)s] %(client_addr)s - "%(request_line)s" %(status_code)s'
        )
    return config
