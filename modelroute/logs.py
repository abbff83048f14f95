"""Structured logs: one line per event, naming the resource it is about.

Two formats, chosen with `--log-format`:
- `text` (default): the message, then `key=value` fields, greppable by a person;
- `json`: one JSON object per line (`time`, `level`, `logger`, `message`, the fields of
  `extra=`, and `exception` with its traceback), for log pipelines (Loki, Elasticsearch,
  Cloud Logging) that index fields instead of parsing text. Values that are not JSON
  (ObjectKeys, paths) are written as their `str`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
LEVELS = ("debug", "info", "warning", "error")  # what `--log-level` accepts
FORMATS = ("text", "json")  # what `--log-format` accepts


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in sorted(_extras(record).items()) if f"{k}=" not in base)
        return f"{base} {fields}" if fields else base


def _plain(value: Any) -> Any:
    """JSON scalars, lists and mappings as they are; anything else (an ObjectKey, which is
    a tuple, a path) as the text the key=value format shows."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list) or (type(value) is tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        for key, value in sorted(_extras(record).items()):
            doc.setdefault(key, _plain(value))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def add_log_level_option(parser: argparse.ArgumentParser) -> None:
    """`--log-level` and `--log-format` with their choices, so a typo is a usage error,
    not a traceback."""
    parser.add_argument("--log-level", choices=LEVELS, default="info", type=str.lower,
                        help="how much the control plane logs (default info)")
    parser.add_argument("--log-format", choices=FORMATS, default="text", type=str.lower,
                        help="text (key=value fields) or json (one object per line) (default text)")


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
