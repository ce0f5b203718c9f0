"""Logging set-up: one logger per subsystem under `kata_numa`, stable upper-case fields.

Fields passed as `extra={"SANDBOX_ID": ..., "PID": ...}` are appended as `KEY=value` so that
they survive into journald (stderr of the unit) and can be matched by scripts.
"""

from __future__ import annotations

import logging
import sys

FIELDS = ("SANDBOX_ID", "PID", "TID", "BDF", "HOST_NUMA", "GUEST_NUMA")


class FieldFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = [f"{key}={getattr(record, key)}" for key in FIELDS if hasattr(record, key)]
        missing = [e for e in extras if e not in text]
        return f"{text} [{' '.join(missing)}]" if missing else text


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FieldFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("kata_numa")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
