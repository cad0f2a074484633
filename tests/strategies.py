"""Hypothesis strategies for every message contract: records as any producer could write them.

The one home of the generic strategies; tests of one reader add only what is specific to it (the
readers of ``tweets.sentiment`` in tests/poison.py). Each contract gets, as bytes (`records`):

- contract-valid records (`VALID`) with values at the edges: any Unicode, sizes at the bounds,
  instants naive or with any offset up to ±23:59, at the ends of the admitted range, epoch numbers;
- near-valid ones (`near_valid`): up to three fields replaced by edge values of their kind (sizes at
  each bound ±1, numbers like 10**40, NaN and infinities, near-miss enum values, years 1 and 9999,
  wrong types, lone surrogates, empty strings) and up to two fields removed;
- deep nesting (`deep`): a field, an extra field or the whole record nested up to 100k deep;
- byte-level mutations (`mutations`) of valid records: bits flipped, bytes inserted or deleted,
  nesting inserted, the record cut short;
- random bytes.

`models` draws contract-valid instances (for round trips). Consumers are run on `records(...)` and
must return an outcome for every one of them without raising.
"""

from __future__ import annotations

import json
import os
import string
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from typing import Any

import hypothesis
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from tweetpulse.contracts import (
    CONTRACTS,
    LABELS,
    MAX_AGGREGATE_TAG_CHARS,
    MAX_ERROR_CHARS,
    MAX_RULE_TAGS,
    MAX_TAG_CHARS,
    MAX_TEXT_CHARS,
)

# -- strings and numbers -------------------------------------------------------------------------------

IDENTIFIER_CHARS = string.ascii_letters + string.digits + "_.:-"  # the contracts' IDENTIFIER
ids = st.text(IDENTIFIER_CHARS, min_size=1, max_size=64)
labels = st.sampled_from(LABELS)
# Any code point, surrogates and controls included: the contracts refuse what they must.
any_text = st.text(st.characters(codec=None), max_size=300)
printable_texts = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=300)
# Every string bound of the contracts (ids, lang, tags, aggregate tags, errors, texts, registry root)
# exactly, one below and one above; in characters of one to four UTF-8 bytes, blank and invisible.
STRING_BOUNDS = (0, 16, MAX_TAG_CHARS, MAX_AGGREGATE_TAG_CHARS, MAX_ERROR_CHARS, MAX_TEXT_CHARS, 4_096)
STRING_SIZES = sorted({max(0, n + d) for n in STRING_BOUNDS for d in (-1, 0, 1)})
texts_at_bounds = st.builds(
    lambda size, char: char * size,
    st.sampled_from(STRING_SIZES),
    st.sampled_from(["x", "é", "漢", "😀", " ", "\u200b"]),
)
texts = st.one_of(
    printable_texts,
    st.text(min_size=1, max_size=300),
    st.sampled_from(["x", "漢", "😀"]).map(lambda char: char * MAX_TEXT_CHARS),
    any_text,
)
NUMBERS: list[Any] = [
    0,
    -1,
    1.0,
    -0.0,
    5e-324,
    1e308,
    10**12,
    10**12 + 1,
    2**63,
    -(2**63) - 1,
    10**40,
    10**400,
    float("nan"),
    float("inf"),
    float("-inf"),
]
numbers = st.one_of(st.sampled_from(NUMBERS), st.integers(-(10**40), 10**40), st.floats())

# -- instants ------------------------------------------------------------------------------------------

MAX_OFFSET = timedelta(hours=23, minutes=59)  # the largest whole-minute UTC offset
minute_offsets = st.one_of(
    st.sampled_from([MAX_OFFSET, -MAX_OFFSET, timedelta(0)]),
    st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timedelta(minutes=m)),
)
# Any offset Python holds, seconds and microseconds too (an ISO string cannot carry those).
offsets = minute_offsets | st.timedeltas(-MAX_OFFSET, MAX_OFFSET)


def _zones(of: st.SearchStrategy[timedelta]) -> st.SearchStrategy[timezone | None]:
    return st.one_of(st.none(), st.just(UTC), of.map(timezone))


zones = _zones(offsets)  # naive, UTC or any offset: for datetime objects
iso_zones = _zones(minute_offsets)  # those an ISO 8601 string carries
# Admitted instants, as objects, in any zone (the range's ends are in EDGE_TIMES and `datetimes`).
valid_times = st.datetimes(datetime(2000, 1, 2), datetime(2099, 12, 30), timezones=zones)
EDGE_TIMES = [
    datetime(1, 1, 1),
    datetime(1, 1, 1, tzinfo=timezone(MAX_OFFSET)),
    datetime(9999, 12, 31, 23, 59, 59),
    datetime(9999, 12, 31, 23, 59, 59, 999999),
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(-MAX_OFFSET)),
    datetime(2000, 1, 1),
    datetime(2000, 1, 1, tzinfo=timezone(timedelta(hours=5))),
    datetime(2000, 1, 1, tzinfo=timezone(timedelta(minutes=1))),
    datetime(1999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-1))),  # 2000 in UTC: valid
    datetime(2099, 12, 31, 23, 59, 59, 999999),
    datetime(2099, 12, 31, 23, tzinfo=timezone(timedelta(hours=-2))),
    datetime(2099, 12, 31, 23, 59, 59, tzinfo=timezone(-MAX_OFFSET)),  # 2100 in UTC: not
    datetime(1970, 1, 1, tzinfo=UTC),
]
EDGE_TIME_TEXTS = [  # naive, impossible (Feb 30), a date alone, seconds in the offset, Z, empty
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59+14:00",
    "2024-01-01T00:00:00",
    "2024-02-30T00:00:00",
    "2020-01-01",
    "2030-01-01T00:00:00+05:30:15",
    "2030-01-01T00:00:00Z",
    "",
]
# Valid records mostly carry admitted instants (naive or with any offset, up to the range's ends);
# the rest of the datetime line is in `edge_times`.
datetimes = st.one_of(
    st.datetimes(datetime(2000, 1, 2), datetime(2099, 12, 30), timezones=iso_zones).map(datetime.isoformat),
    st.integers(946_771_200, 4_102_358_400),  # epoch seconds, as pydantic reads numbers
    st.sampled_from([m.isoformat() for m in EDGE_TIMES]),
)
edge_times: st.SearchStrategy[Any] = st.one_of(
    st.datetimes(timezones=zones).map(datetime.isoformat),  # year 1 to 9999, naive or any offset
    st.sampled_from([*(m.isoformat() for m in EDGE_TIMES), *EDGE_TIME_TEXTS]),
    st.integers(-(10**12), 10**12),
    st.integers(-(10**30), 10**30),
    st.floats(),  # NaN and infinities too (json.dumps writes them)
)

# -- any value -----------------------------------------------------------------------------------------

HOSTILE_VALUES: list[Any] = [
    None,
    True,
    -1,
    2**63,
    10**40,
    10**400,
    1e308,
    float("nan"),
    float("inf"),
    "NaN",
    "\ud800",
    "\x00",
    "",
    "x" * 70_000,
    [],
    {},
    [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]],
    *[m.isoformat() for m in EDGE_TIMES],
    *EDGE_TIME_TEXTS,
]
hostile_values = st.one_of(
    st.sampled_from(HOSTILE_VALUES), edge_times, any_text, texts_at_bounds, numbers, st.integers()
)


def near_miss(values: tuple[str, ...], *others: Any) -> st.SearchStrategy[Any]:
    """Values an enum field of `values` does not admit: other cases, padded, wrapped, other types."""
    misses = [
        *others,
        "",
        None,
        0,
        1,
        True,
        *(miss for v in values for miss in (v.capitalize(), v.upper(), f" {v}", [v], {v: True})),
    ]
    return st.sampled_from(misses)


def nested(depth: int, opener: str) -> bytes:
    """A JSON value nested `depth` deep, as bytes (json.dumps would recurse)."""
    closer = {"[": "]", '{"a":': "}"}[opener]
    return (opener * depth + "1" + closer * depth).encode()


NEST_DEPTHS = [1, 17, 199, 200, 201, 1_000, 5_000, 100_000]
# Records stay under a producer's default message.max.bytes (1 MB), for live tests that send them:
# `deep` ones are at most 600 kB (100k levels of '{"a":'), `mutations` at most MAX_RECORD_BYTES.
MAX_RECORD_BYTES = 512 * 1024
depths = st.sampled_from(NEST_DEPTHS) | st.integers(1, 400)

# -- the contracts -------------------------------------------------------------------------------------

SOURCES = ("twitter", "replay", "synthetic")
LABEL_SOURCES = ("human", "weak")
tags = st.lists(st.text(min_size=1, max_size=MAX_TAG_CHARS), max_size=MAX_RULE_TAGS)
agg_tags = st.text(min_size=1, max_size=MAX_AGGREGATE_TAG_CHARS)
counts = st.one_of(st.integers(0, 10), st.integers(0, 10**12), st.just(10**12))
probabilities = st.floats(0, 1).map(lambda p: {"negative": 1 - p, "positive": p})

VALID: dict[str, st.SearchStrategy[dict]] = {
    "raw-tweet": st.fixed_dictionaries(
        {"id": ids, "text": texts, "source": st.sampled_from(SOURCES)},
        optional={
            "schema_version": st.just(1),
            "created_at": datetimes,
            "ingested_at": datetimes,
            "author_id": ids,
            "lang": st.sampled_from(["en", "pt-BR", "und"]),
            "rule_tags": tags,
            "label": labels,
        },
    ),
    "sentiment-result": st.fixed_dictionaries(
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
            "source": st.sampled_from(SOURCES),
            "true_label": labels,
            "inference_ms": st.floats(0, 1e9),
        },
    ),
    "label-counts": st.fixed_dictionaries(
        {
            "window_start": datetimes,
            "window_end": datetimes,
            "tweets": st.dictionaries(labels, counts),
            "tags": st.dictionaries(agg_tags, st.dictionaries(labels, counts), max_size=20),
        },
        optional={"schema_version": st.just(1), "updated_at": datetimes},
    ),
    "labeled-tweet": st.fixed_dictionaries(
        {"id": ids, "text": texts, "label": labels, "source": st.sampled_from(LABEL_SOURCES)},
        optional={"schema_version": st.just(1), "labeled_at": datetimes, "cue": st.text(max_size=64)},
    ),
    "model-announcement": st.fixed_dictionaries(
        {"version": ids, "registry_root": st.text(max_size=200)},
        optional={"schema_version": st.just(1), "announced_at": datetimes},
    ),
}
# One valid record of each contract with every field, free of brackets and braces in its strings:
# the base that `deep` nests into (a test can count the nesting from the bytes).
EXAMPLES: dict[str, dict[str, Any]] = {
    "raw-tweet": {
        "schema_version": 1,
        "id": "d1",
        "text": "deep",
        "source": "replay",
        "created_at": "2030-01-01T00:00:00+00:00",
        "ingested_at": "2030-01-01T00:00:01+00:00",
        "author_id": "a1",
        "lang": "en",
        "rule_tags": ["t"],
        "label": "positive",
    },
    "sentiment-result": {
        "schema_version": 1,
        "id": "d1",
        "text": "deep",
        "label": "positive",
        "probabilities": {"negative": 0.25, "positive": 0.75},
        "model_version": "v0001",
        "rule_tags": ["t"],
        "source": "replay",
        "true_label": "negative",
        "ingested_at": "2030-01-01T00:00:00+00:00",
        "classified_at": "2030-01-01T00:00:01+00:00",
        "inference_ms": 1.5,
    },
    "label-counts": {
        "schema_version": 1,
        "window_start": "2030-01-01T00:00:00+00:00",
        "window_end": "2030-01-01T00:01:00+00:00",
        "tweets": {"positive": 1},
        "tags": {"#a": {"positive": 1}},
        "updated_at": "2030-01-01T00:01:00+00:00",
    },
    "labeled-tweet": {
        "schema_version": 1,
        "id": "d",
        "text": "deep",
        "label": "positive",
        "source": "human",
        "labeled_at": "2030-01-01T00:00:00+00:00",
        "cue": ":)",
    },
    "model-announcement": {
        "schema_version": 1,
        "version": "v0001",
        "registry_root": "/r",
        "announced_at": "2030-01-01T00:00:00+00:00",
    },
}
for _contract, _example in EXAMPLES.items():  # they stay valid as the contracts change
    CONTRACTS[_contract].model_validate(_example)
TIME_FIELDS = {
    contract: sorted(name for name in example if name.endswith("_at") or name.startswith("window_"))
    for contract, example in EXAMPLES.items()
}

# Edge values of each field, by kind (`near_valid` also puts any hostile value in any field).
_strings = st.one_of(any_text, texts_at_bounds, numbers, st.none())
_times = edge_times | st.none()
_versions = numbers | st.sampled_from(["1", None, True, 2])
_label_keys = labels | st.sampled_from(["", "Positive", "neutral", "1"]) | any_text
_count_edges = numbers | st.sampled_from([10**12, 10**12 + 1, -1, 1.5, True, "1", None])
_per_label = st.dictionaries(_label_keys, _count_edges, max_size=3) | st.sampled_from(HOSTILE_VALUES)
_tag_lists = st.one_of(
    st.lists(_strings, max_size=3),
    st.sampled_from([MAX_RULE_TAGS, MAX_RULE_TAGS + 1]).map(lambda n: [f"t{i}" for i in range(n)]),
)
_probabilities = st.one_of(
    st.fixed_dictionaries({"negative": numbers, "positive": numbers}),
    st.dictionaries(_label_keys, numbers, max_size=3),
)
_COMMON = {"schema_version": _versions}
_TWEET = {"id": _strings, "text": _strings, "rule_tags": _tag_lists, "label": near_miss(LABELS, "neutral")}
EDGES: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "raw-tweet": {
        **_COMMON,
        **_TWEET,
        "source": near_miss(SOURCES, "api"),
        "created_at": _times,
        "ingested_at": _times,
        "author_id": _strings,
        "lang": _strings,
    },
    "sentiment-result": {
        **_COMMON,
        **_TWEET,
        "source": near_miss(SOURCES, "api"),
        "true_label": near_miss(LABELS, "neutral"),
        "probabilities": _probabilities,
        "model_version": _strings,
        "ingested_at": _times,
        "classified_at": _times,
        "inference_ms": numbers,
    },
    "label-counts": {
        **_COMMON,
        "window_start": _times,
        "window_end": _times,
        "updated_at": _times,
        "tweets": _per_label,
        "tags": st.dictionaries(agg_tags | texts_at_bounds | any_text, _per_label, max_size=3),
    },
    "labeled-tweet": {
        **_COMMON,
        "id": _strings,
        "text": _strings,
        "label": near_miss(LABELS, "neutral"),
        "source": near_miss(LABEL_SOURCES, "admin"),
        "labeled_at": _times,
        "cue": _strings,
    },
    "model-announcement": {
        **_COMMON,
        "version": _strings,
        "registry_root": _strings,
        "announced_at": _times,
    },
}


@st.composite
def near_valid(draw: st.DrawFn, contract: str) -> dict[str, Any]:
    """A record of `contract`, often with up to three fields (or an extra one) replaced by edge values
    and up to two removed; sometimes still contract-valid."""
    record = draw(VALID[contract])
    edges = EDGES[contract]
    for name in draw(st.lists(st.sampled_from([*sorted(edges), "extra"]), max_size=3, unique=True)):
        record[name] = draw(edges.get(name, hostile_values) | hostile_values)
    for name in draw(st.lists(st.sampled_from(sorted(record)), max_size=2, unique=True)):
        del record[name]
    return record


@st.composite
def _with_datetimes(draw: st.DrawFn, contract: str) -> dict[str, Any]:
    record = draw(VALID[contract])
    for name in TIME_FIELDS[contract]:
        if name not in record or draw(st.booleans()):
            record[name] = draw(valid_times)
    return record


def _validated(contract: str, record: dict[str, Any]) -> BaseModel | None:
    try:
        return CONTRACTS[contract].model_validate(record)
    except ValidationError:
        return None  # e.g. a text of whitespace only


def models(contract: str) -> st.SearchStrategy[BaseModel]:
    """A contract-valid instance of `contract`; its instants are datetimes in any zone or as read
    from valid records (the range's ends included)."""
    return (
        _with_datetimes(contract).map(partial(_validated, contract)).filter(lambda model: model is not None)
    )


def encode(record: Any, ascii_only: bool = False) -> bytes:
    """JSON bytes; lone surrogates (unless `ascii_only`) become bytes that are not UTF-8."""
    return json.dumps(record, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def encoded(records: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """`records` as JSON bytes, with non-ASCII characters written as they are or escaped."""
    return st.builds(encode, records, st.booleans())


@st.composite
def deep(draw: st.DrawFn, contract: str) -> bytes:
    """A valid record with a value nested up to 100k deep (in place of a field or in an extra one),
    or the nesting alone."""
    value = nested(draw(depths), draw(st.sampled_from(["[", '{"a":'])))
    where = draw(st.sampled_from([*EXAMPLES[contract], "extra", "alone"]))
    if where == "alone":
        return value
    record = {name: v for name, v in EXAMPLES[contract].items() if name != where}
    head = encode(record)[:-1] + (b", " if record else b"")
    return head + encode(where) + b": " + value + b"}"


@st.composite
def mutations(draw: st.DrawFn, contract: str) -> bytes:
    """A valid record's bytes with bits flipped, bytes inserted or deleted, nesting inserted, or cut."""
    base = st.one_of(encoded(VALID[contract]), models(contract).map(lambda model: model.to_bytes()))
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "nest", "cut"]))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        elif op == "nest":
            depth = draw(st.sampled_from([17, 200, 201, 5_000, 100_000]))
            if len(data) + 2 * depth <= MAX_RECORD_BYTES:
                data[at:at] = b"[" * depth + b"]" * depth
        elif op == "cut":
            del data[at:]
    return bytes(data)


def records(contract: str) -> st.SearchStrategy[bytes]:
    """Bytes a producer could put on a topic whose contract is `contract`."""
    valid = encoded(VALID[contract])
    return st.one_of(
        valid,
        valid,
        encoded(near_valid(contract)),
        deep(contract),
        mutations(contract),
        st.binary(max_size=300),
    )


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


def fuzz(examples: int = 300) -> hypothesis.settings:
    """Every fuzz test's settings: seeded (the same examples each run), no deadline (a shared 2-core
    host), `examples` a test, times TWEETPULSE_FUZZ_SCALE (default 1) for a longer hunt."""
    return hypothesis.settings(
        max_examples=int(examples * float(os.environ.get("TWEETPULSE_FUZZ_SCALE", "1"))),
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
