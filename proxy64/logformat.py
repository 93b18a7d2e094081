"""--log-format json: one JSON object per line, for log shippers.

Every log record becomes {"time", "level", "logger", "message"}; the per-connection line
adds the same fields as its text form (front_end, client, destination, dialed, reached,
egress, bytes_up, bytes_down, duration in seconds, outcome), which the recorder passes as
the record's `connection` attribute. Lines that proxy64 prints itself (the start-up line,
the readiness report) go through json_line so that every line on stderr parses. Pure:
formatting only, no handler and no I/O.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

LOGGER = "proxy64"


def timestamp(seconds: float) -> str:
    """RFC 3339 UTC with milliseconds: 2026-12-07T11:16:20.123Z."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{int(seconds % 1 * 1000):03d}Z"


def json_line(message: str, *, level: str = "info", logger: str = LOGGER, **fields: Any) -> str:
    """One JSON object (no newline): the common keys, then the given fields."""
    data: dict[str, Any] = {
        "time": timestamp(time.time()),
        "level": level,
        "logger": logger,
        "message": message,
    }
    data.update(fields)
    return json.dumps(data, ensure_ascii=False, default=str)


class JsonFormatter(logging.Formatter):
    """A logging.Formatter writing json_line's object; exceptions go in "exception"."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        connection = getattr(record, "connection", None)
        if isinstance(connection, dict):
            data.update(connection)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)
