"""The one parser of labeled-topic messages (tweetpulse.labeled): whatever the bytes, a tweet or a
refusal with a reason, never an exception. Hypothesis feeds it contract-valid records, near-valid
ones (edge dates, huge numbers, any Unicode, sizes at the bounds, deep nesting) and byte-level
mutations of valid ones; seeded (derandomize) so a run is reproducible and bounded in time.

The readers around it (retraining and `train --data kafka:`) are tested against the real broker in
test_retraining_trust.py and test_training_data.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import deep, encode, fuzz, models, mutations, near_valid, nested
from tweetpulse.contracts import MAX_TEXT_CHARS, MAX_TIME, MIN_TIME, LabeledTweet
from tweetpulse.labeled import MAX_DETAIL_CHARS, REASONS, Refusal, parse_labeled

NOW = datetime(2099, 12, 31, 23, 0, tzinfo=UTC)  # valid dates after 23:05 (NOW + SKEW) are future-dated
SKEW = timedelta(seconds=300)  # parse_labeled's default
FUZZ = fuzz()

# -- what is specific to the labeled parser ----------------------------------------------------------
# The records are tests/strategies.py's, as for every contract: valid and near-valid records (edge
# dates, huge numbers, any Unicode, sizes at the bounds), deep nesting and byte-level mutations.

CONTRACT = "labeled-tweet"


def dated(record: dict[str, Any], expected: LabeledTweet, timestamp_ms: int) -> datetime:
    """The date the parser gives a contract-valid record: its own, else its Kafka timestamp."""
    return expected.labeled_at if "labeled_at" in record else datetime.fromtimestamp(timestamp_ms / 1000, UTC)


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
@given(record=near_valid(CONTRACT), ascii_only=st.booleans(), timestamp_ms=st.integers(-(2**63), 2**63 - 1))
def test_any_labeled_record_is_a_tweet_or_a_refusal_with_a_reason_never_an_exception(
    record: dict[str, Any], ascii_only: bool, timestamp_ms: int
) -> None:
    result = check(encode(record, ascii_only), timestamp_ms)
    try:
        expected = LabeledTweet.model_validate(record)
    except ValueError:
        return
    if isinstance(result, Refusal) and result.reason == "future-dated":  # only what is after NOW + skew
        assert dated(record, expected, timestamp_ms) > NOW + SKEW
    elif isinstance(result, Refusal):  # else a contract-valid record is only refused for a bad Kafka date
        assert (
            "labeled_at" not in record and result.reason == "invalid" and "Kafka timestamp" in result.detail
        )
    elif "labeled_at" in record:
        assert result == expected


@FUZZ
@given(tweet=models(CONTRACT))
def test_a_contract_valid_tweet_is_read_back_as_itself(tweet: LabeledTweet) -> None:
    result = check(tweet.to_bytes())
    if tweet.labeled_at > NOW + SKEW:
        assert isinstance(result, Refusal) and result.reason == "future-dated"
    else:
        assert result == tweet


@FUZZ
@given(value=deep(CONTRACT))
def test_deep_nesting_anywhere_is_refused_or_read_never_a_recursion_error(value: bytes) -> None:
    result = check(value)
    if value.count(b"[") + value.count(b"{") > 300:
        assert isinstance(result, Refusal) and result.reason == "unreadable"


@FUZZ
@given(value=mutations(CONTRACT))
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
