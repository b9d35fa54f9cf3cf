"""Logging set-up: plain text for people, JSON lines (``FAKESCAN_LOG_JSON=1``) for log shippers."""

from __future__ import annotations

import json
import logging
import sys

from fakescan.settings import Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(settings: Settings, level: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    plain = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonFormatter() if settings.log_json else plain)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or settings.log_level).upper())
    logging.captureWarnings(True)  # library warnings (Celery's SecurityWarning ...) as log records, JSON too
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "PIL", "alembic", "kombu", "celery.utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
