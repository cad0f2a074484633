"""Structured logging: one JSON object per line (or plain text), with secrets scrubbed."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
REDACTED = "***"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS)
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        text = f"{base} {extras}".rstrip()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def secret_forms(secrets: Iterable[str]) -> list[str]:
    """Each secret as it can appear in a line: as is, JSON-escaped (the JSON formatter escapes quotes,
    backslashes, control and non-ASCII characters), escaped twice (a JSON string logged as JSON),
    repr-escaped (a dict or list logged with %s; tweepy's DEBUG dump of request headers), URL-encoded,
    and those JSON-escaped. Longest first, so no form is left half-replaced by a shorter one."""
    forms: set[str] = set()
    for secret in filter(None, secrets):
        for form in {secret, repr(secret)[1:-1], quote(secret, safe="")}:
            once = {json.dumps(form)[1:-1], json.dumps(form, ensure_ascii=False)[1:-1]}
            forms |= {form, *once, *(json.dumps(f)[1:-1] for f in once)}
    return sorted(forms, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every form of every secret replaced by ***."""
    return _scrub(text, secret_forms(secrets))


def _scrub(text: str, forms: list[str]) -> str:
    for form in forms:
        text = text.replace(form, REDACTED)
    return text


class RedactingHandler(logging.StreamHandler):
    """Replaces every known secret value, in each of its forms, in the formatted line, whatever put it
    there (our code, a library's DEBUG dump of request headers, an exception message)."""

    def __init__(self, stream: Any = None, secrets: Iterable[str] = ()) -> None:
        super().__init__(stream or sys.stderr)
        self.secrets = secret_forms(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return _scrub(super().format(record), self.secrets)


def configure_logging(level: str = "INFO", fmt: str = "json", secrets: Iterable[str] = ()) -> None:
    """Install one redacting handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, RedactingHandler):
            root.removeHandler(handler)
    handler = RedactingHandler(secrets=secrets)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("aiokafka", "faust", "mode", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
