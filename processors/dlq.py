"""Parsing raw tweets, and dead letters for the ones that do not follow the contract.

Every byte on ``tweets.raw`` is untrusted: :func:`parse_raw` either returns a valid tweet or raises
:class:`BadMessageError` with a countable reason, whatever the input (any exception while parsing or
validating becomes a reason, never escapes). The work is bounded before parsing: a size limit, then a
nesting-depth limit; one parse (pydantic's Rust JSON parser) validates the contract, and the reason is
taken from the validation error's ``type`` and field.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import numpy as np
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from tweetpulse.contracts import MAX_ERROR_CHARS, DeadLetter, RawTweet, describe_validation_error

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
DEFAULT_MAX_DEPTH = 16  # a valid tweet nests 2 deep (the object, its rule_tags)
DEFAULT_DLQ_VALUE_BYTES = 8 * 1024
DLQ_KEY_BYTES = 1024

_DEPTH_STEP = np.zeros(256, dtype=np.int64)
_DEPTH_STEP[list(b"[{")] = 1
_DEPTH_STEP[list(b"]}")] = -1
_FIELD_NAMES = tuple(f'"{name}"'.encode() for name in RawTweet.model_fields)

# Reasons by (field, pydantic error type), then by error type alone; anything else is invalid-fields.
_FIELD_REASONS = {
    ("text", "missing"): "missing-text",
    ("id", "missing"): "missing-id",
    ("source", "missing"): "missing-source",
    ("text", "string_too_short"): "empty-text",
    ("text", "blank_text"): "empty-text",
    ("text", "string_too_long"): "oversized-text",
    ("schema_version", "literal_error"): "unsupported-schema-version",
    ("rule_tags", "too_long"): "too-many-tags",
}
_TYPE_REASONS = {
    "json_invalid": "malformed-json",
    "model_type": "not-an-object",
    "model_attributes_type": "not-an-object",
    "extra_forbidden": "unknown-field",
    "control_characters": "control-characters",
    "string_too_long": "oversized-field",
    "too_long": "oversized-field",
    "string_pattern_mismatch": "invalid-format",
    "literal_error": "invalid-value",
}


class BadMessageError(ValueError):
    """A raw message that cannot be classified; ``reason`` is a short, countable category."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error[:MAX_ERROR_CHARS]


def parse_raw(
    value: bytes | None, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> RawTweet:
    """The tweet in `value`, or :class:`BadMessageError` saying why there is none."""
    try:
        return _parse(value, max_bytes, max_depth)
    except BadMessageError:
        raise
    except Exception as exc:  # a parser bug or an input nobody foresaw: still one outcome, never a crash
        raise BadMessageError("unparseable", f"{type(exc).__name__}: {exc}") from None


def _parse(value: bytes | None, max_bytes: int, max_depth: int) -> RawTweet:
    if value is None:
        raise BadMessageError("tombstone", "message has no value (a tombstone)")
    if not value:
        raise BadMessageError("empty-message", "message value is empty")
    if len(value) > max_bytes:
        raise BadMessageError("oversized-message", f"message is {len(value)} bytes, the limit is {max_bytes}")
    depth = nesting_depth(value, max_depth)
    if depth > max_depth:
        raise BadMessageError("too-deep", f"JSON nests {depth} levels deep, the limit is {max_depth}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadMessageError("not-utf8", f"message is not UTF-8: {exc}") from None
    try:
        tweet = RawTweet.model_validate_json(text)
    except ValidationError as exc:
        raise BadMessageError(reason_for(exc.errors()[0]), describe_validation_error(exc)) from None
    duplicate = _duplicate_key(value)
    if duplicate:  # parsers disagree on which value wins: refuse rather than pick one
        raise BadMessageError("duplicate-key", f"key {duplicate!r} appears more than once")
    return tweet


def reason_for(error: ErrorDetails) -> str:
    """The countable reason of a validation error: from its type and the field it is about."""
    kind, loc = error["type"], error["loc"]
    field = str(loc[0]) if loc else ""
    if kind.endswith("_type") and field:
        return _FIELD_REASONS.get((field, kind), "wrong-type")
    if kind.startswith(("datetime", "date_", "time_", "timezone")):
        return "invalid-datetime"
    return _FIELD_REASONS.get((field, kind)) or _TYPE_REASONS.get(kind, "invalid-fields")


def nesting_depth(value: bytes, limit: int) -> int:
    """How deep the JSON arrays and objects in `value` nest (strings do not count); exact up to `limit`.

    Linear in the worst case, vectorized, with no regex: escaped backslashes go first (in pairs,
    left to right, as a parser reads them), then escaped quotes; a byte is then inside a string when
    an odd number of quotes precede it.
    """
    if value.count(b"[") + value.count(b"{") <= limit:  # the fast path for every ordinary tweet
        return min(limit, value.count(b"[") + value.count(b"{"))
    unescaped = np.frombuffer(value.replace(b"\\\\", b"").replace(b'\\"', b""), dtype=np.uint8)
    outside = (np.cumsum(unescaped == ord('"')) & 1) == 0
    return int(np.cumsum(_DEPTH_STEP[unescaped] * outside).max(initial=0))


def _duplicate_key(value: bytes) -> str | None:
    """A key that appears twice in one object. A quoted field name can appear in raw JSON only as a
    whole string token, so the exact check runs only when a name repeats or a key may be escaped."""
    if b"\\u" not in value and all(value.count(name) < 2 for name in _FIELD_NAMES):
        return None
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            found.append(next(k for k in keys if keys.count(k) > 1))
        return dict(items)

    json.loads(value, object_pairs_hook=pairs)
    return found[0] if found else None


def dead_letter(
    bad: BadMessageError,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    max_value_bytes: int = DEFAULT_DLQ_VALUE_BYTES,
) -> DeadLetter:
    """The DLQ record for one bad message: its first `max_value_bytes` bytes, size and SHA-256, so that
    the dead letter of even a huge message always fits on the topic."""
    original = value or b""
    kept_key = key[:DLQ_KEY_BYTES] if key is not None else None
    return DeadLetter(
        error=bad.error,
        reason=bad.reason,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        original_key_b64=base64.b64encode(kept_key).decode() if kept_key is not None else None,
        original_value_b64=base64.b64encode(original[:max_value_bytes]).decode(),
        original_size=len(original),
        original_sha256=hashlib.sha256(original).hexdigest(),
        truncated=len(original) > max_value_bytes or (key is not None and len(key) > DLQ_KEY_BYTES),
    )


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The DLQ record's Kafka key: the original key, or its SHA-256 when it is too long to keep."""
    if key is None or len(key) <= DLQ_KEY_BYTES:
        return key
    return hashlib.sha256(key).hexdigest().encode()
