"""Logging set-up: one line per event, as JSON or as text.

Structured fields go in `extra=` (e.g. `{"event": "fill", "digest": ...}`) and
come out as JSON keys, or as key=value pairs in text. Libraries that could log
request headers (botocore signs with the secret key) are held at WARNING so no
credential ever reaches a log line, whatever --log-level says.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from aiohttp.http_exceptions import HttpProcessingError

from .requestlog import RequestIdFilter

__all__ = ["configure", "error_fields"]

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_QUIET = ("botocore", "aiobotocore", "urllib3", "s3transfer", "asyncio")


def error_fields(exc: BaseException) -> dict[str, str]:
    """The fields a warning about `exc` carries: its words and its class."""
    return {"error": str(exc) or type(exc).__name__, "error_class": type(exc).__name__}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None}


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """Formats a log record as one JSON object per line, with its structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """Formats a log record as one text line, structured fields as key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        text = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        text = f"{text} {fields}" if fields else text
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class ClientErrorFilter(logging.Filter):
    """aiohttp logs a malformed request (a header too long, a broken request line)
    as an ERROR with a traceback; it is the client's fault: one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "refused a malformed request: %s", (exc.message,)
            record.exc_info = record.exc_text = None
        return True


def configure(level: str = "info", fmt: str = "text", stream: TextIO = sys.stderr) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrorFilter) for f in server_log.filters):
        server_log.addFilter(ClientErrorFilter())
