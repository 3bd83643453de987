"""Logging, configured once per process: readable on a terminal, JSON lines when asked.

``SENSORSTREAM_LOG_FORMAT=json`` switches to one JSON object per line (for log shippers). Extra
fields passed as ``extra={"batch": {...}}`` appear as keys in JSON and as ``k=v`` pairs in text.
Spark's and Kafka's own logs go to their files under ``data/``, not here.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += "  " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record, not at set-up: a test
    runner that swaps and closes stderr must not leave a handler pointing at a closed file."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


_configured = False


def setup_logging(level: str = "INFO", fmt: str = "text", log_file: Path | None = None) -> None:
    """Idempotent: the first call wins, later calls only adjust the level."""
    global _configured
    root = logging.getLogger()
    root.setLevel(level)
    if _configured:
        return
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root.handlers[:] = [handler]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        rotating = logging.handlers.RotatingFileHandler(log_file, maxBytes=20_000_000, backupCount=3)
        rotating.setFormatter(JsonFormatter())
        root.addHandler(rotating)
    # Chatty libraries: their INFO is our noise.
    for name in ("py4j", "httpx", "urllib3", "streamlit", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _configured = True
