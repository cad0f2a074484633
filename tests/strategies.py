"""Hypothesis strategies for every message contract: records as any producer could write them.

Each contract gets three kinds of record, as bytes: contract-valid ones with values at the edges
(any Unicode, sizes at the bounds, datetimes naive, with any offset, at the ends of the admitted
range), near-valid ones (one field replaced by a hostile value: years 1 and 9999, NaN, huge numbers,
wrong types, deep nesting, lone surrogates) and byte-level mutations of valid records. Consumers are
run on `records(...)` and must return an outcome for every one of them without raising.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import hypothesis
from hypothesis import strategies as st

from tweetpulse.contracts import (
    LABELS,
    MAX_AGGREGATE_TAG_CHARS,
    MAX_RULE_TAGS,
    MAX_TAG_CHARS,
    MAX_TEXT_CHARS,
)

IDENT_CHARS = "abcXYZ019_.:-"
ids = st.text(IDENT_CHARS, min_size=1, max_size=64)
labels = st.sampled_from(LABELS)
# Any code point, surrogates and controls included: the contracts refuse what they must.
any_text = st.text(st.characters(codec=None), min_size=0, max_size=300)
texts = st.one_of(
    st.text(min_size=1, max_size=300),
    st.just("x" * MAX_TEXT_CHARS),
    st.just("漢" * MAX_TEXT_CHARS),
    any_text,
)
offsets = st.one_of(
    st.none(),
    st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m))),
)
EDGE_TIMES = [
    datetime(1, 1, 1),
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=23, minutes=59))),
    datetime(9999, 12, 31, 23, 59, 59),
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-23, minutes=-59))),
    datetime(2000, 1, 1),
    datetime(2000, 1, 1, tzinfo=timezone(timedelta(hours=5))),
    datetime(2099, 12, 31, 23, 59, 59, 999999),
    datetime(2099, 12, 31, 23, tzinfo=timezone(timedelta(hours=-2))),
    datetime(1970, 1, 1, tzinfo=UTC),
]


def _iso(moment: datetime, tz: Any) -> str:
    return moment.replace(tzinfo=tz).isoformat() if tz is not None else moment.isoformat()


# Valid records mostly carry admitted instants (naive or with any offset, up to the range's ends);
# the rest of the datetime line is in the near-valid values.
datetimes = st.one_of(
    st.builds(_iso, st.datetimes(datetime(2000, 1, 2), datetime(2099, 12, 30)), offsets),
    st.integers(946_771_200, 4_102_358_400),  # epoch seconds, as pydantic reads numbers
    st.sampled_from([m.isoformat() for m in EDGE_TIMES]),
)
any_datetimes = st.one_of(
    st.builds(_iso, st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31)), offsets),
    st.integers(-(10**12), 10**12),
)
counts = st.one_of(st.integers(0, 10), st.integers(0, 10**12), st.just(10**12))
tags = st.lists(st.text(min_size=1, max_size=MAX_TAG_CHARS), max_size=MAX_RULE_TAGS)
agg_tags = st.text(min_size=1, max_size=MAX_AGGREGATE_TAG_CHARS)
probabilities = st.floats(0, 1).map(lambda p: {"negative": 1 - p, "positive": p})

HOSTILE_VALUES: list[Any] = [
    None,
    True,
    -1,
    2**63,
    10**400,
    1e308,
    "NaN",
    "\ud800",
    "\x00",
    "",
    "x" * 70_000,
    [],
    {},
    [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]],
    *[m.isoformat() for m in EDGE_TIMES],
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59+14:00",
    "2024-01-01T00:00:00",
    "2024-02-30T00:00:00",
]
hostile_values = st.one_of(
    st.sampled_from(HOSTILE_VALUES), any_datetimes, any_text, st.integers(), st.floats()
)


def _raw_tweet() -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {"id": ids, "text": texts, "source": st.sampled_from(["twitter", "replay", "synthetic"])},
        optional={
            "schema_version": st.just(1),
            "created_at": datetimes,
            "ingested_at": datetimes,
            "author_id": ids,
            "lang": st.sampled_from(["en", "pt-BR", "und"]),
            "rule_tags": tags,
            "label": labels,
        },
    )


def _result() -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {
            "id": ids,
            "text": texts,
            "label": labels,
            "probabilities": probabilities,
            "model_version": ids,
            "ingested_at": datetimes,
            "classified_at": datetimes,
        },
        optional={
            "schema_version": st.just(1),
            "rule_tags": tags,
            "source": st.sampled_from(["twitter", "replay", "synthetic"]),
            "true_label": labels,
            "inference_ms": st.floats(0, 1e9),
        },
    )


def _label_counts() -> st.SearchStrategy[dict]:
    per_label = st.dictionaries(labels, counts)
    return st.fixed_dictionaries(
        {
            "window_start": datetimes,
            "window_end": datetimes,
            "tweets": per_label,
            "tags": st.dictionaries(agg_tags, per_label, max_size=20),
        },
        optional={"schema_version": st.just(1), "updated_at": datetimes},
    )


def _labeled() -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {"id": ids, "text": texts, "label": labels, "source": st.sampled_from(["human", "weak"])},
        optional={"schema_version": st.just(1), "labeled_at": datetimes, "cue": st.text(max_size=64)},
    )


def _announcement() -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {"version": ids, "registry_root": st.text(max_size=200)},
        optional={"schema_version": st.just(1), "announced_at": datetimes},
    )


VALID: dict[str, st.SearchStrategy[dict]] = {
    "raw-tweet": _raw_tweet(),
    "sentiment-result": _result(),
    "label-counts": _label_counts(),
    "labeled-tweet": _labeled(),
    "model-announcement": _announcement(),
}


def encode(record: Any) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def _near_valid(draw: st.DrawFn, contract: str) -> bytes:
    record = draw(VALID[contract])
    field = draw(st.sampled_from([*record, "extra"]))
    record[field] = draw(hostile_values)
    return encode(record)


@st.composite
def _mutated(draw: st.DrawFn, contract: str) -> bytes:
    data = bytearray(encode(draw(VALID[contract])))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "nest"]))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        elif op == "nest":
            depth = draw(st.sampled_from([17, 200, 5_000]))
            data[at:at] = b"[" * depth + b"]" * depth
    return bytes(data)


def records(contract: str) -> st.SearchStrategy[bytes]:
    """Bytes a producer could put on a topic whose contract is `contract`."""
    valid = VALID[contract].map(encode)
    return st.one_of(valid, valid, _near_valid(contract), _mutated(contract), st.binary(max_size=64))


def sample(strategy: st.SearchStrategy[Any], n: int, seed: int = 20261206) -> list[Any]:
    """`n` examples of `strategy`, the same ones on every run (for live tests that send a generated
    sample through real processes, where one Hypothesis example per process start would be too slow)."""
    drawn: list[Any] = []

    @hypothesis.seed(seed)
    @hypothesis.settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()
    return drawn
