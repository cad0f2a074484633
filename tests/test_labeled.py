"""The one parser of labeled-topic messages (tweetpulse.labeled): whatever the bytes, a tweet or a
refusal with a reason, never an exception. Hypothesis feeds it contract-valid records, near-valid
ones (edge dates, huge numbers, any Unicode, sizes at the bounds, deep nesting) and byte-level
mutations of valid ones; seeded (derandomize) so a run is reproducible and bounded in time.

The readers around it (retraining and `train --data kafka:`) are tested against the real broker in
test_retraining_trust.py and test_training_data.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from tweetpulse.contracts import MAX_TEXT_CHARS, MAX_TIME, MIN_TIME, LabeledTweet
from tweetpulse.labeled import MAX_DETAIL_CHARS, REASONS, Refusal, parse_labeled

NOW = datetime(2099, 12, 31, 23, 0, tzinfo=UTC)  # no contract-valid date is future-dated from here
FUZZ = settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- strategies ---------------------------------------------------------------------------------------

any_text = st.text(st.characters(exclude_categories=()), max_size=80)  # surrogates, controls, all planes
offsets = st.sampled_from(
    [timedelta(hours=23, minutes=59), -timedelta(hours=23, minutes=59)]
) | st.timedeltas(-timedelta(hours=23, minutes=59), timedelta(hours=23, minutes=59))
zones = st.none() | st.just(UTC) | offsets.map(timezone)
valid_times = st.datetimes(datetime(2000, 1, 2), datetime(2099, 12, 30), timezones=zones)
edge_times: st.SearchStrategy[Any] = st.one_of(
    st.datetimes(timezones=zones).map(datetime.isoformat),  # year 1 to 9999, naive or any offset
    st.sampled_from(
        [
            "0001-01-01T00:00:00",
            "0001-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59.999999",
            "9999-12-31T23:59:59-23:59",
            "1999-12-31T23:59:59-01:00",  # 2000 in UTC: valid
            "2099-12-31T23:59:59-23:59",  # 2100 in UTC: not
            "2000-01-01T00:00:00+00:01",
            "2020-02-30T00:00:00",
            "2020-01-01",
            "",
        ]
    ),
    st.integers(-(10**30), 10**30),
    st.floats(),  # NaN and infinities too (json.dumps writes them)
)
numbers = st.integers(-(10**40), 10**40) | st.floats() | st.sampled_from([0, -1, 1.0, 2**63, -(2**63) - 1])
bounded_sizes = st.sampled_from([0, 1, 63, 64, 65, MAX_TEXT_CHARS - 1, MAX_TEXT_CHARS, MAX_TEXT_CHARS + 1])
texts_at_bounds = st.tuples(bounded_sizes, st.sampled_from(["x", "é", "😀", " ", "\u200b"])).map(
    lambda size_char: size_char[1] * size_char[0]
)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """A labeled record, usually contract-valid, often with a few fields replaced by edge values."""
    record: dict[str, Any] = {
        "id": draw(st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)),
        "text": draw(st.text(min_size=1, max_size=300)),
        "label": draw(st.sampled_from(["negative", "positive"])),
        "source": draw(st.sampled_from(["human", "weak"])),
    }
    if draw(st.booleans()):
        record["labeled_at"] = draw(valid_times).isoformat()
    if draw(st.booleans()):
        record["cue"] = draw(st.text(max_size=64))
    edges = {
        "id": any_text | texts_at_bounds | numbers | st.none(),
        "text": any_text | texts_at_bounds | numbers | st.none(),
        "label": st.sampled_from(["neutral", "Positive", "", None, 1, ["positive"]]),
        "source": st.sampled_from(["admin", "", None, "Human", 0, {"human": True}]),
        "labeled_at": edge_times | st.none(),
        "cue": any_text | texts_at_bounds | numbers,
        "schema_version": numbers | st.sampled_from(["1", None, True]),
        "extra": any_text | numbers,
    }
    for name in draw(st.lists(st.sampled_from(sorted(edges)), max_size=3, unique=True)):
        record[name] = draw(edges[name])
    for name in draw(st.lists(st.sampled_from(sorted(record)), max_size=2, unique=True)):
        del record[name]
    return record


def encode(record: dict[str, Any], ascii_only: bool) -> bytes:
    """JSON bytes; lone surrogates (ensure_ascii=False) become bytes that are not UTF-8."""
    return json.dumps(record, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def nested(depth: int, opener: str) -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return (opener * depth + "1" + closer * depth).encode()


@st.composite
def deep_records(draw: st.DrawFn) -> bytes:
    """A valid record with a nested value (an extra field, or a field's value), or nesting alone."""
    depth = draw(st.sampled_from([1, 199, 200, 201, 1_000, 100_000]) | st.integers(1, 400))
    deep = nested(depth, draw(st.sampled_from(["[", '{"a":'])))
    where = draw(st.sampled_from(["extra", "text", "labeled_at", "alone"]))
    if where == "alone":
        return deep
    record = {"id": "d", "text": "deep", "label": "positive", "source": "human"}
    record.pop(where, None)
    head = json.dumps(record).encode()[:-1]
    return head + b', "' + where.encode() + b'": ' + deep + b"}"


@st.composite
def valid_tweets(draw: st.DrawFn) -> LabeledTweet:
    """A contract-valid tweet: any printable Unicode text, any valid date in any offset, any cue."""
    fields = {
        "id": draw(st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)),
        "text": draw(st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=300)),
        "label": draw(st.sampled_from(["negative", "positive"])),
        "source": draw(st.sampled_from(["human", "weak"])),
        "labeled_at": draw(valid_times),
        "cue": draw(st.none() | st.text(max_size=64)),
    }
    try:
        return LabeledTweet.model_validate(fields)
    except ValueError:
        reject()  # e.g. a text of whitespace only


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid record's bytes with bits flipped, bytes inserted or deleted, or cut short."""
    data = bytearray(draw(valid_tweets()).to_bytes())
    ops = st.tuples(
        st.sampled_from(["flip", "insert", "delete", "cut"]), st.integers(0, 10**6), st.integers(0, 255)
    )
    for op, where, byte in draw(st.lists(ops, min_size=1, max_size=4)):
        i = where % (len(data) + 1)
        if op == "insert":
            data.insert(i, byte)
        elif data and op == "flip":
            data[i % len(data)] ^= 1 << (byte % 8)
        elif data and op == "delete":
            del data[i % len(data)]
        elif op == "cut":
            del data[i:]
    return bytes(data)


def check(value: bytes | None, timestamp_ms: int = 0) -> LabeledTweet | Refusal:
    """The parser's promise, for any input: a valid, re-readable tweet or a bounded refusal."""
    result = parse_labeled(value, timestamp_ms, NOW)
    if isinstance(result, Refusal):
        assert result.reason in REASONS
        assert isinstance(result.detail, str) and 0 < len(result.detail) <= MAX_DETAIL_CHARS
        return result
    assert isinstance(result, LabeledTweet)
    assert result.labeled_at.tzinfo == UTC and MIN_TIME <= result.labeled_at < MAX_TIME
    assert LabeledTweet.from_bytes(result.to_bytes()) == result  # what is used can be written again
    return result


# -- the fuzz tests -----------------------------------------------------------------------------------


@FUZZ
@given(record=records(), ascii_only=st.booleans(), timestamp_ms=st.integers(-(2**63), 2**63 - 1))
def test_any_labeled_record_is_a_tweet_or_a_refusal_with_a_reason_never_an_exception(
    record: dict[str, Any], ascii_only: bool, timestamp_ms: int
) -> None:
    result = check(encode(record, ascii_only), timestamp_ms)
    try:
        expected = LabeledTweet.model_validate(record)
    except ValueError:
        return
    if isinstance(result, Refusal):  # a contract-valid record is only refused for a bad Kafka date
        assert (
            "labeled_at" not in record and result.reason == "invalid" and "Kafka timestamp" in result.detail
        )
    elif "labeled_at" in record:
        assert result == expected


@FUZZ
@given(tweet=valid_tweets())
def test_a_contract_valid_tweet_is_read_back_as_itself(tweet: LabeledTweet) -> None:
    assert check(tweet.to_bytes()) == tweet


@FUZZ
@given(value=deep_records())
def test_deep_nesting_anywhere_is_refused_or_read_never_a_recursion_error(value: bytes) -> None:
    result = check(value)
    if value.count(b"[") + value.count(b"{") > 300:
        assert isinstance(result, Refusal) and result.reason == "unreadable"


@FUZZ
@given(value=mutated())
def test_byte_level_mutations_of_a_valid_record_never_raise(value: bytes) -> None:
    check(value)


@FUZZ
@given(value=st.binary(max_size=300) | st.none())
def test_arbitrary_bytes_never_raise(value: bytes | None) -> None:
    check(value)


# -- the rules, by example ----------------------------------------------------------------------------


def raw(**fields: Any) -> bytes:
    return json.dumps({"id": "r1", "text": "fine", "label": "negative", **fields}).encode()


def test_each_refusal_names_its_reason() -> None:
    deep = (
        b'{"id": "d", "text": "t", "label": "positive", "source": "human", "x": '
        + nested(100_000, "[")
        + b"}"
    )
    cases = {
        deep: "unreadable",
        b"\xff\xfe not utf-8": "unreadable",
        b"[1, 2]": "unreadable",
        b"": "unreadable",
        None: "unreadable",
        raw(): "unsourced",
        raw(source="admin"): "unsourced",
        raw(source=None, text=""): "unsourced",  # the source is named before other problems
        raw(source="human", label="neutral"): "invalid",
        raw(source="human", text="x" * (MAX_TEXT_CHARS + 1)): "invalid",
        raw(source="human", labeled_at="9999-12-31T23:59:59-23:59"): "invalid",
        raw(source="human", labeled_at="2099-12-31T23:59:00"): "future-dated",
    }
    now = datetime(2030, 1, 1, tzinfo=UTC)
    got = {value: getattr(parse_labeled(value, 0, now), "reason", "accepted") for value in cases}
    assert got == cases
    assert "recursion limit" in str(parse_labeled(deep))


def test_a_naive_date_is_utc_and_a_missing_one_is_the_kafka_timestamp() -> None:
    naive = parse_labeled(raw(source="human", labeled_at="2030-01-01T10:00:00"), 0, NOW)
    assert isinstance(naive, LabeledTweet) and naive.labeled_at == datetime(2030, 1, 1, 10, tzinfo=UTC)
    kafka_ms = int(datetime(2031, 5, 1, tzinfo=UTC).timestamp() * 1000)
    dated = parse_labeled(raw(source="weak"), kafka_ms, NOW)
    assert isinstance(dated, LabeledTweet) and dated.labeled_at == datetime(2031, 5, 1, tzinfo=UTC)
    for bad_ms in (1, 2**63 - 1, int(MAX_TIME.timestamp() * 1000)):
        refused = parse_labeled(raw(source="weak"), bad_ms, NOW)
        assert isinstance(refused, Refusal) and refused.reason == "invalid", bad_ms


@pytest.mark.parametrize("error", [RecursionError("maximum recursion depth"), MemoryError(), KeyError("x")])
def test_any_exception_while_parsing_is_a_refusal(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def explode(cls: type, data: Any) -> LabeledTweet:
        raise error

    monkeypatch.setattr(LabeledTweet, "model_validate_json", classmethod(explode))
    refused = parse_labeled(raw(source="human"))
    assert isinstance(refused, Refusal) and refused.reason == "unreadable"
    assert refused.detail.startswith(type(error).__name__)
