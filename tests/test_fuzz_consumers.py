"""Property-based fuzzing of every worker function that consumes a topic's records.

Each test runs one consumer, in-process, on generated records (tests/strategies.py: contract-valid
with edge values, near-valid, byte mutations, random bytes) and checks that it returns an outcome,
never raises, and that what it writes is valid for every later reader. Seeded and bounded:
300 examples a test (times TWEETPULSE_FUZZ_SCALE).
"""

from __future__ import annotations

import asyncio
import time
import zlib
from dataclasses import dataclass
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import HOSTILE_VALUES, VALID, encode, fuzz, records
from tweetpulse.contracts import (
    ContractError,
    DeadLetter,
    LabelCounts,
    LabeledTweet,
    ModelAnnouncement,
    SentimentResult,
    aggregate_tags,
)
from tweetpulse.processors.aggregates import (
    WINDOW_KEYS,
    WINDOW_TOTALS,
    PendingCounts,
    count_event,
    next_total,
    totals_of,
)
from tweetpulse.processors.batching import parse_batch
from tweetpulse.processors.classifier import Prediction
from tweetpulse.processors.models import _is_announcement
from tweetpulse.processors.outputs import Outputs, Topics
from tweetpulse.processors.views import count_rows
from tweetpulse.retraining.weak_labels import WeakLabeler
from tweetpulse.settings import ProcessorSettings

FUZZ = fuzz()
WINDOW_S = 60


@dataclass
class _Message:
    """The fields of a Faust message the worker reads."""

    value: bytes | None
    topic: str = "tweets.raw"
    partition: int = 0
    offset: int = 0
    key: bytes | None = b"k"


@dataclass
class _Event:
    message: _Message


OUTPUTS = Outputs(Topics("sentiment", "dlq", "labeled", "count-events"), 8 * 1024, WeakLabeler(1.0))
CONF = ProcessorSettings()


def _classified(batch: Any) -> None:
    """What the send stage does with a parsed batch: results, their metrics, weak labels, label counts
    and the count event; every record it writes must be valid for the topic's readers."""
    (msg, tweet), predictions = batch.good[0], [Prediction("positive", {"negative": 0.1, "positive": 0.9})]
    (result,) = OUTPUTS.results(batch.good, predictions, "v0001", 0.01)
    SentimentResult.from_bytes(OUTPUTS.result(msg, result).value)
    OUTPUTS.observe([result], [])
    for labeled in OUTPUTS.weak_labels([tweet]):
        LabeledTweet.from_bytes(labeled.value)

    async def count() -> list[LabelCounts]:
        pending = PendingCounts(WINDOW_S, 1.0, CONF.agg_max_tags)
        pending.add([(aggregate_tags(tweet.rule_tags, tweet.text), result.label)], time.time())
        increments, _ = pending.take()
        return increments

    for increment in asyncio.run(count()):
        event = OUTPUTS.count_event(increment)
        assert count_event(event.value, event.timestamp, WINDOW_S) == increment  # the count agent takes it


@FUZZ
@given(records("raw-tweet"))
def test_every_raw_record_gets_one_result_or_one_dead_letter_that_its_readers_accept(value: bytes) -> None:
    msg = _Message(value)
    batch = parse_batch([_Event(msg)], CONF, OUTPUTS)
    assert len(batch.good) + len(batch.letters) == 1
    if batch.good:
        _classified(batch)
    else:
        (_, letter) = batch.letters[0]
        DeadLetter.from_bytes(OUTPUTS.dead_letter(msg, letter).value)
        OUTPUTS.observe([], [letter])


def _aligned(record: dict) -> bytes:
    """A count event as workers write it: its window starts on a window boundary."""
    start = 1_700_000_040 + WINDOW_S * (zlib.crc32(str(record["window_start"]).encode()) % 10_000)
    return encode({**record, "window_start": start, "window_end": start + WINDOW_S})


count_events = st.one_of(records("label-counts"), VALID["label-counts"].map(_aligned))


@st.composite
def _timestamps(draw: st.DrawFn, value: bytes) -> float:
    """A Kafka timestamp: mostly one in the window the record names (so the event is counted)."""
    try:
        start = LabelCounts.from_bytes(value).window_start.timestamp()
    except ContractError:
        start = 1_700_000_000.0
    if draw(st.booleans()):
        return start - start % WINDOW_S + draw(st.floats(0, WINDOW_S - 1))
    return draw(st.floats(-1e12, 1e13, allow_nan=False))


# What the table holds for a window: what the count agent wrote, or whatever its changelog held,
# read back through the table's codec.
stored_totals = st.one_of(
    st.just({}),
    VALID["label-counts"].map(lambda r: {"tweets": r["tweets"], "tags": r["tags"]}),
    st.sampled_from(HOSTILE_VALUES),
    st.dictionaries(st.sampled_from(["tweets", "tags", "window_start"]), st.sampled_from(HOSTILE_VALUES)),
    records("label-counts"),
).map(lambda value: WINDOW_TOTALS.loads(value if isinstance(value, bytes) else encode(value)))


@FUZZ
@given(st.data())
def test_the_count_agent_counts_or_skips_every_record_and_a_total_it_stores_stays_readable(
    data: st.DataObject,
) -> None:
    value = data.draw(count_events)
    increment = count_event(value, data.draw(_timestamps(value)), WINDOW_S)
    if increment is None:
        return
    try:
        window = next_total(data.draw(stored_totals), increment, WINDOW_S, CONF.agg_max_tags)
    except ContractError:
        return  # skipped and counted by the agent
    assert LabelCounts.from_bytes(window.to_bytes()) == window  # tweets.sentiment.agg readers take it
    try:  # the total as stored is read back on the next event (or its changelog on recovery)
        next_total(totals_of(window), increment, WINDOW_S, CONF.agg_max_tags)
    except ContractError as exc:
        assert "bound" in str(exc) or "less than or equal" in str(exc)  # only a sum past the bound


@FUZZ
@given(records("model-announcement"))
def test_the_model_watch_takes_exactly_the_records_of_its_contract_and_ignores_the_rest(value: bytes) -> None:
    try:
        ModelAnnouncement.from_bytes(value)
    except ContractError:
        assert _is_announcement(value) is False
    else:
        assert _is_announcement(value) is True


@FUZZ
@given(records("label-counts"), st.one_of(records("label-counts"), st.binary(max_size=100)))
def test_the_counts_table_reads_back_any_changelog_record_as_a_window_or_none(
    value: bytes, key: bytes
) -> None:
    totals, window = WINDOW_TOTALS.loads(value), WINDOW_KEYS.loads(key)
    assert totals is None or set(totals) == {"tweets", "tags"}
    assert window is None or isinstance(window[0], str)
    assert count_rows([(window and (window[0], tuple(window[1])), totals)], 10) is not None


def test_a_sum_past_the_count_bound_is_refused_not_stored() -> None:
    start = 1_700_000_040.0
    increment = LabelCounts.from_dict(
        {
            "window_start": start,
            "window_end": start + WINDOW_S,
            "tweets": {"positive": 10**12},
            "tags": {"#a": {"positive": 10**12}},
        }
    )
    total = next_total({}, increment, WINDOW_S, 10)
    try:
        next_total(totals_of(total), increment, WINDOW_S, 10)
    except ContractError as exc:
        assert "tweets.positive" in str(exc)
    else:
        raise AssertionError("a count past 10**12 was stored")


def test_a_timezone_less_ingested_at_is_taken_as_utc_and_its_latency_is_measured() -> None:
    value = (
        b'{"schema_version": 1, "id": "n1", "text": "hi", "source": "replay",'
        b' "ingested_at": "2024-01-01T00:00:00"}'
    )
    batch = parse_batch([_Event(_Message(value))], CONF, OUTPUTS)
    (_, tweet) = batch.good[0]
    assert tweet.ingested_at.isoformat() == "2024-01-01T00:00:00+00:00"
    _classified(batch)
