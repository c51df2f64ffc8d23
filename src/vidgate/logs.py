"""Logging for vidgate's processes (`vidgate serve`, `vidgate worker`): one line per record on stderr.

`json` (the default, VIDGATE_LOG_FORMAT) writes one JSON object per line, for log shippers:

    {"time": "2026-11-30T12:00:00.123Z", "level": "INFO", "logger": "vidgate.api.access", "message": "...",
     "request_id": "3fa4...-VGT", "method": "POST", "path": "/api/v1/video/retrieve", "status": 200, ...}

`text` writes `time level logger: message` with the same ids appended, for a person at a terminal.

Inside an API request every line carries `request_id` (the `cf-ray` header of its response; set by
`api/observe.py`); inside a worker's job every line carries `job_id` (set by the worker around the job). Both are
context variables, so they follow the work into `asyncio` tasks and `asyncio.to_thread` calls it starts, and never
leak into another request: uvicorn runs each request in a task of its own, with its own copy of the context.
Fields passed with `extra={...}` become keys of the JSON object.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Literal

import orjson

LogFormat = Literal["json", "text"]

request_id_var: ContextVar[str | None] = ContextVar("vidgate_request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("vidgate_job_id", default=None)

# What every LogRecord has; anything else on a record came from `extra=` and is written as a field of its own.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# Libraries that log each HTTP call they make at INFO (webhook deliveries, media fetches, upstream polls): the
# lines vidgate writes about the same work say more, and one per poll would drown the rest. Alembic describes
# its migration context each time a process opens the database (vidgate.migrate says what it changes).
_CHATTY = ("httpx", "httpcore", "alembic")


_second: tuple[int, str] = (-1, "")


def _iso(created: float) -> str:
    """UTC with milliseconds. The formatted second is kept: a busy server logs many lines in each one."""
    global _second
    whole = int(created)
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int((created - whole) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ms), level, logger, message, the request and job ids in effect,
    any `extra` fields, and `exc_info` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": _iso(record.created), "level": record.levelname, "logger": record.name,
                               "message": record.getMessage()}
        # Read here, not in a filter: formatting happens in the thread and context that logged the record.
        request_id, job_id = request_id_var.get(), job_id_var.get()
        if request_id is not None:
            out["request_id"] = request_id
        if job_id is not None:
            out["job_id"] = job_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        # default=str: an `extra` value that JSON has no type for (a Path, an exception) is written as its text
        # rather than losing the whole line.
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [f"{name}={value}" for name, value in (("request_id", request_id_var.get()),
                                                        ("job_id", job_id_var.get())) if value is not None]
        if not ids:
            return line
        head, newline, rest = line.partition("\n")  # after the message, before a traceback
        return f"{head} [{' '.join(ids)}]{newline}{rest}"


class _VidgateHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler setup_logging installed, so calling it again replaces it instead of adding a second."""


def setup_logging(log_format: str = "json", level: int = logging.INFO) -> None:
    """Send every logger's records (vidgate's, uvicorn's, the libraries') to stderr in `log_format`."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _VidgateHandler)]:
        root.removeHandler(handler)
    handler = _VidgateHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    # Neither format writes the thread or process names: not gathering them makes every record cheaper (the
    # logging HOWTO's "Optimization"), which counts for the access log's line per request.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Every line logged inside (and in the tasks and threads started inside) carries `job_id`."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)
