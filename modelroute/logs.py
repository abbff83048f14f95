"""Structured logs: one line per event, `key=value` fields after the message, so a log
names the resource it is about and stays greppable (and machine-parsable)."""

from __future__ import annotations

import argparse
import logging
import sys

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
LEVELS = ("debug", "info", "warning", "error")  # what `--log-level` accepts


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        fields = " ".join(f"{k}={v}" for k, v in sorted(extras.items()) if f"{k}=" not in base)
        return f"{base} {fields}" if fields else base


def add_log_level_option(parser: argparse.ArgumentParser) -> None:
    """`--log-level` with its choices, so a typo is a usage error, not a traceback."""
    parser.add_argument("--log-level", choices=LEVELS, default="info", type=str.lower,
                        help="how much the control plane logs (default info)")


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
