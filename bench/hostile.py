"""Hostile messages for `tweets.raw`: one of each kind the worker must dead-letter, with its reason.

Shared by the hostile-input test suite and the bench's mixed-traffic throughput figure.
"""

from __future__ import annotations

import json


def _tweet(**fields: object) -> bytes:
    return json.dumps({"id": "h1", "text": "a fine tweet", "source": "replay", **fields}).encode()


# kind -> (value, the reason its dead letter must give)
HOSTILE: dict[str, tuple[bytes | None, str]] = {
    "arrays nested 10k deep": (b'{"text": "x", "a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "too-deep"),
    "objects nested 5k deep": (b'{"a": ' * 5_000 + b"1" + b"}" * 5_000, "too-deep"),
    "a 0.9 MiB value": (_tweet(text="a" * 900 * 1024), "oversized-message"),
    "50k rule tags": (_tweet(rule_tags=["t"] * 50_000), "oversized-message"),
    "33 rule tags": (_tweet(rule_tags=[f"t{i}" for i in range(33)]), "too-many-tags"),
    "a 65-character rule tag": (_tweet(rule_tags=["t" * 65]), "oversized-field"),
    "NaN literal": (_tweet().replace(b"}", b', "created_at": NaN}'), "invalid-datetime"),
    "Infinity literal": (_tweet().replace(b"}", b', "created_at": Infinity}'), "invalid-datetime"),
    "1e999999": (_tweet().replace(b"}", b', "created_at": 1e999999}'), "invalid-datetime"),
    "a 5000-digit integer": (
        _tweet().replace(b"}", b', "created_at": ' + b"9" * 5000 + b"}"),
        "malformed-json",
    ),
    "duplicate keys": (b'{"id": "d1", "text": "nice", "text": "evil", "source": "replay"}', "duplicate-key"),
    "duplicate keys, one escaped": (
        b'{"id": "d2", "text": "nice", "t\\u0065xt": "evil", "source": "replay"}',
        "duplicate-key",
    ),
    "UTF-8 BOM": (b"\xef\xbb\xbf" + _tweet(), "malformed-json"),
    "lone surrogate": (b'{"id": "s1", "text": "\\ud800", "source": "replay"}', "malformed-json"),
    "null byte escaped in text": (_tweet(text="a\x00b"), "control-characters"),
    "raw null byte": (b'{"id": "n1", "text": "a\x00b", "source": "replay"}', "malformed-json"),
    "invalid UTF-8": (b'{"id": "u1", "text": "caf\xe9", "source": "replay"}', "not-utf8"),
    "empty value": (b"", "empty-message"),
    "tombstone": (None, "tombstone"),
    "JSON string": (b'"just a string"', "not-an-object"),
    "JSON number": (b"42", "not-an-object"),
    "JSON array": (b'[{"id": "a1", "text": "x", "source": "replay"}]', "not-an-object"),
    "JSON null": (b"null", "not-an-object"),
    "malformed JSON": (b'{"id": "m1", "text": "unterminated', "malformed-json"),
    "id of the wrong type": (_tweet(id=5), "wrong-type"),
    "id with spaces": (_tweet(id="a b"), "invalid-format"),
    "text of the wrong type": (_tweet(text=["a", "list"]), "wrong-type"),
    "text missing": (b'{"id": "x3", "source": "replay"}', "missing-text"),
    "source missing": (b'{"id": "x3", "text": "hi"}', "missing-source"),
    "unknown source": (_tweet(source="fax"), "invalid-value"),
    "label of the wrong value": (_tweet(label="meh"), "invalid-value"),
    "rule_tags not a list": (_tweet(rule_tags="airlines"), "wrong-type"),
    "created_at garbage": (_tweet(created_at="yesterday"), "invalid-datetime"),
    "a 4,001-character text": (_tweet(text="a" * 4001), "oversized-text"),
    "whitespace-only text": (_tweet(text=" \n\t "), "empty-text"),
    "zero-width-only text": (_tweet(text="\u200b\u200d\ufeff\u2060"), "empty-text"),
    "schema_version 2": (_tweet(schema_version=2), "unsupported-schema-version"),
    "unknown field": (_tweet(extra_field=1), "unknown-field"),
    "a 65-character id": (_tweet(id="i" * 65), "oversized-field"),
    "a 100-character author_id": (_tweet(author_id="1" * 100), "oversized-field"),
    "lang with a space": (_tweet(lang="e n"), "invalid-format"),
    # Found by review and the fuzzer (issue 25): values a contract must refuse so every later use is safe.
    "created_at in year 1 with an offset": (
        _tweet(created_at="0001-01-01T00:00:00+05:00"),
        "invalid-datetime",
    ),
    "ingested_at in year 9999": (_tweet(ingested_at="9999-12-31T23:59:59-05:00"), "invalid-datetime"),
    "ingested_at before 2000": (_tweet(ingested_at="1970-01-01T00:00:00Z"), "invalid-datetime"),
    "17 [ then an open string of escaped quotes (60 KB)": (
        b"[" * 17 + b'"' + b'\\"' * 30_000,
        "too-deep",
    ),
}
