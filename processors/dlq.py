"""Parsing raw tweets, and dead letters for the ones that do not follow the contract."""

from __future__ import annotations

import base64
import json

from tweetpulse.contracts import MAX_TEXT_CHARS, ContractError, DeadLetter, RawTweet


class BadMessageError(ValueError):
    """A raw message that cannot be classified; ``reason`` is a short, countable category."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error


def parse_raw(value: bytes | None) -> RawTweet:
    """The tweet in `value`, or :class:`BadMessageError` saying why there is none."""
    if value is None:
        raise BadMessageError("empty-message", "message has no value (tombstone)")
    try:
        return RawTweet.from_bytes(value)
    except ContractError as exc:
        raise BadMessageError(_reason(value, str(exc)), str(exc)) from None


def _reason(value: bytes, error: str) -> str:
    try:
        data = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError:
        return "not-utf8"
    except json.JSONDecodeError:
        return "malformed-json"
    if not isinstance(data, dict):
        return "not-an-object"
    text = data.get("text")
    if text is None:
        return "missing-text"
    if not isinstance(text, str):
        return "wrong-type"
    if not text.strip():
        return "empty-text"
    if len(text) > MAX_TEXT_CHARS:
        return "oversized-text"
    return "wrong-type" if "type" in error or "should be a valid" in error else "invalid-fields"


def dead_letter(
    bad: BadMessageError, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
) -> DeadLetter:
    """The DLQ record for one bad message, keeping its original key and value bytes."""
    return DeadLetter(
        error=bad.error,
        reason=bad.reason,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        original_key_b64=base64.b64encode(key).decode() if key is not None else None,
        original_value_b64=base64.b64encode(value or b"").decode(),
    )
