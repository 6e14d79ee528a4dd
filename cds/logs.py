"""Log records as one JSON object per line (or plain text), tagged with the request id, free of client data.

Only fields named here reach the output: a record's arbitrary `extra` values and exception messages (which
can quote a request's content) are left out, so a token or a patient's name cannot slip into the logs.
"""

from __future__ import annotations

import logging
import re
import traceback
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import g, has_request_context

from cds.config import Settings

# The request-scoped fields a record may carry (set via `extra=`), besides the request id.
REQUEST_FIELDS = ("service", "status", "latency_ms")

# hookInstance is a UUID by the spec; anything else is not worth a log line and may be client data.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def bind_request_id(value: object) -> None:
    """Tag the current request's log records with `value` (the hookInstance) when it looks like an id."""
    if isinstance(value, str) and _REQUEST_ID.fullmatch(value):
        g.request_id = value


def current_request_id() -> str | None:
    return g.get("request_id") if has_request_context() else None


def _exception_summary(exc_info: Any) -> str:
    """The exception's type and stack, without its message: messages can quote client input."""
    exc_type, _, tb = exc_info
    return "".join(traceback.format_tb(tb)) + exc_type.__qualname__


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = current_request_id()
        return f"{text} [request {request_id}]" if request_id else text

    def formatException(self, ei: Any) -> str:
        return _exception_summary(ei)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = current_request_id()
        if request_id:
            entry["request_id"] = request_id
        for name in REQUEST_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info and record.exc_info[0]:
            entry["exception"] = _exception_summary(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def logging_config(settings: Settings) -> dict[str, Any]:
    """A logging.config.dictConfig for the service and gunicorn's own messages, all to stderr."""
    formatter = JsonFormatter if settings.log_format == "json" else TextFormatter
    level = settings.log_level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"cds": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "cds", "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["stderr"]},
        # Gunicorn's messages share the root handler and format. Its access lines are muted: they carry the
        # raw URI (query strings included), and the app logs every request itself (cds.access).
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
            # Alembic announces each of its autogenerate plugins at INFO whenever migrations load; the store's
            # own messages say what the migrations did.
            "alembic.runtime.plugins": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }


# Start-up messages are said once per service, not once per worker: under gunicorn only the first worker says
# them (a worker that replaces another later says nothing again); without gunicorn, the app does.
_quiet_at_start_up = False


def quiet_after_first_worker(server: Any, worker: Any) -> None:
    """Gunicorn's post_fork hook, in each new worker: worker ages count up from 1 as gunicorn spawns them."""
    global _quiet_at_start_up
    _quiet_at_start_up = worker.age > 1


def say_at_start_up(logger: logging.Logger, level: int, message: str, *args: Any) -> None:
    """Log a start-up message, unless another worker of this service says it."""
    if not _quiet_at_start_up:
        logger.log(level, message, *args)
