"""Property-based fuzzing of every worker function that consumes a topic's records.

Each test runs one consumer, in-process, on generated records (tests/strategies.py: contract-valid
with edge values, near-valid, byte mutations, random bytes) and checks that it returns an outcome,
never raises, and that what it writes is valid for every later reader. The consumers: the classify
agent's parser (tweets.raw), the count agent's running totals (:class:`WindowTotals`, on the
count-events topic), their read-back from the changelog at an assignment (``_changelog_total``), the
counts view on what the totals hold, and the model watch (tweets.models). Seeded and bounded:
300 examples a test (times TWEETPULSE_FUZZ_SCALE).
"""

from __future__ import annotations

import copy
import zlib
from collections import Counter
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from tests.strategies import VALID, encode, fuzz, records
from tweetpulse.contracts import (
    LABELS,
    ContractError,
    DeadLetter,
    LabelCounts,
    LabeledTweet,
    ModelAnnouncement,
    SentimentResult,
    aggregate_tags,
)
from tweetpulse.processors import aggregates
from tweetpulse.processors.aggregates import (
    PendingCounts,
    WindowTotals,
    _changelog_total,
    count_event,
    label_counts,
)
from tweetpulse.processors.batching import parse_batch
from tweetpulse.processors.classifier import Prediction
from tweetpulse.processors.models import _is_announcement
from tweetpulse.processors.outputs import Outputs, Topics
from tweetpulse.processors.source import TP, Record
from tweetpulse.processors.views import count_rows
from tweetpulse.processors.weak_labels import WeakLabeler
from tweetpulse.settings import ProcessorSettings, load_settings

FUZZ = fuzz()
WINDOW_S = 60
MAX_COUNT = 10**12  # the contract's bound on a count
FIRST_START = 1_700_000_040  # the first window of the aligned count events below
ALIGNED_WINDOWS = 10_000


def _record(
    value: bytes | None,
    topic: str = "tweets.raw",
    partition: int = 0,
    offset: int = 0,
    key: bytes | None = b"k",
    timestamp: float = 1_700_000_000.0,
) -> Record:
    """A consumed record, as the worker's consumer thread hands it over."""
    return Record(TP(topic, partition), offset, key, value, timestamp, epoch=1)


OUTPUTS = Outputs(Topics("sentiment", "dlq", "labeled", "count-events"), 8 * 1024, WeakLabeler(1.0))
CONF = ProcessorSettings()


def _classified(batch: Any) -> None:
    """What the send stage does with a parsed batch: results, their metrics, weak labels, label counts
    and the count event; every record it writes must be valid for the topic's readers."""
    (record, tweet), predictions = batch.good[0], [Prediction("positive", {"negative": 0.1, "positive": 0.9})]
    (result,) = OUTPUTS.results(batch.good, predictions, "v0001", 0.01)
    SentimentResult.from_bytes(OUTPUTS.result(record, result).value)
    OUTPUTS.observe([result], [])
    for labeled in OUTPUTS.weak_labels([tweet]):
        LabeledTweet.from_bytes(labeled.value)

    pending = PendingCounts(WINDOW_S, CONF.agg_max_tags)
    pending.add([(aggregate_tags(tweet.rule_tags, tweet.text), result.label)], 1_700_000_000.0)
    (increment,) = pending.take()
    event = OUTPUTS.count_event(increment)
    assert count_event(event.value, event.timestamp, WINDOW_S) == increment  # the count agent takes it


@FUZZ
@given(records("raw-tweet"))
def test_every_raw_record_gets_one_result_or_one_dead_letter_that_its_readers_accept(value: bytes) -> None:
    record = _record(value)
    batch = parse_batch([record], CONF, OUTPUTS)
    assert len(batch.good) + len(batch.letters) == 1
    if batch.good:
        _classified(batch)
    else:
        (_, letter) = batch.letters[0]
        DeadLetter.from_bytes(OUTPUTS.dead_letter_output(record, letter).value)
        OUTPUTS.observe([], [letter])


def _aligned(record: dict) -> bytes:
    """A count event (or a total) as workers write it: its window starts on a window boundary."""
    start = FIRST_START + WINDOW_S * (zlib.crc32(str(record["window_start"]).encode()) % ALIGNED_WINDOWS)
    return encode({**record, "window_start": start, "window_end": start + WINDOW_S})


@st.composite
def count_events(draw: st.DrawFn) -> bytes | None:
    """Mostly what workers write (3 in 4: most of them counted), else anything (most of them skipped)."""
    if draw(st.integers(0, 3)) < 3:
        return draw(VALID["label-counts"].map(_aligned))
    return draw(st.one_of(records("label-counts"), st.none()))


def _parsed(value: bytes | None) -> LabelCounts | None:
    try:
        return LabelCounts.from_bytes(value or b"")
    except ContractError:
        return None


@st.composite
def _timestamps(draw: st.DrawFn, value: bytes | None) -> float:
    """A Kafka timestamp: mostly (3 in 4) one in the window the record names (so it is counted)."""
    parsed = _parsed(value)
    start = parsed.window_start.timestamp() if parsed else 1_700_000_000.0
    if draw(st.integers(0, 3)) < 3:
        return start - start % WINDOW_S + draw(st.floats(0, WINDOW_S - 1))
    return draw(st.floats(-1e12, 1e13, allow_nan=False))


EVENTS, CHANGELOG, AGGREGATES = "count-events", "label-counts-changelog", "tweets.sentiment.agg"
PARTITIONS = 3
# Most of the aligned windows are kept, the oldest tenth has expired, as have most other windows the
# contracts admit (2000 to 2099), bar the future ones.
EXPIRES_S = 604_800
NOW = FIRST_START + WINDOW_S * ALIGNED_WINDOWS // 10 + WINDOW_S + EXPIRES_S
SETTINGS = load_settings(processor={"agg_window_s": WINDOW_S, "agg_expires_s": EXPIRES_S, "agg_max_tags": 8})


def _kept(start: float) -> bool:
    return start + WINDOW_S + EXPIRES_S >= NOW


def _window_totals(restored: dict[int, dict[float, LabelCounts]]) -> WindowTotals:
    """The count agent's totals (the real class), holding what `restore` read back from a changelog."""
    totals = WindowTotals(SETTINGS, EVENTS, CHANGELOG, AGGREGATES)
    totals.windows = copy.deepcopy(restored)
    assert totals.add([]) == []  # adds nothing; drops what has expired
    return totals


@st.composite
def count_event_records(draw: st.DrawFn) -> Record:
    """Anything on the count-events topic: a worker's count event or not, in or out of its window."""
    value = draw(count_events())
    return _record(
        value,
        EVENTS,
        draw(st.integers(0, PARTITIONS - 1)),
        draw(st.integers(0, 2**40)),
        draw(st.one_of(st.none(), st.binary(max_size=40))),
        draw(_timestamps(value)),
    )


@st.composite
def changelog_records(draw: st.DrawFn) -> tuple[bytes | None, bytes | None]:
    """A changelog record (key, value): a worker's window total under its key, or anything else."""
    value = draw(count_events())
    parsed = _parsed(value)
    others = st.one_of(st.sampled_from([None, b""]), st.binary(max_size=40), records("label-counts"))
    if parsed is None:
        return draw(others), value
    near = [parsed.key + b" ", parsed.key.replace(b"+00:00", b"Z"), parsed.window_end.isoformat().encode()]
    key = draw(st.one_of(st.just(parsed.key), st.just(parsed.key), st.sampled_from(near), others))
    return key, value


def _dlq_count(reason: str) -> float:
    return REGISTRY.get_sample_value("tweetpulse_processor_dlq_total", {"reason": reason}) or 0.0


def _counts(total: LabelCounts) -> tuple[Any, ...]:
    """A total's counts and window (not its updated_at)."""
    return total.window_start, total.window_end, total.tweets, total.tags


def _per_label(*counts: dict[str, int]) -> dict[str, int]:
    summed: dict[str, int] = {}
    for per_label in counts:
        for label, n in per_label.items():
            summed[label] = summed.get(label, 0) + n
    return summed


def _tag_sums(total: LabelCounts | None) -> dict[str, int]:
    return _per_label(*(total.tags.values() if total else ()))


@FUZZ
@given(st.data())
def test_a_changelog_record_is_read_back_as_a_total_of_its_own_window_and_key_or_skipped_and_counted(
    data: st.DataObject,
) -> None:
    key, value = data.draw(changelog_records())
    skipped = _dlq_count("bad-changelog-record")
    total = _changelog_total(key, value, WINDOW_S)
    parsed = _parsed(value)
    is_total = (
        parsed is not None
        and parsed.key == key
        and parsed.window_start.timestamp() % WINDOW_S == 0
        and parsed.window_end - parsed.window_start == timedelta(seconds=WINDOW_S)
    )
    assert (total is not None) == is_total
    assert _dlq_count("bad-changelog-record") == skipped + (total is None)
    if total is None:
        return
    assert _counts(total) == _counts(parsed) and total.key == key
    rows, truncated = count_rows([total], 10**6)  # the counts view shows it whole
    assert not truncated and len(rows) == sum(len(labels) for labels in total.tags.values())
    # the count agent adds to it: a restored total, then a count event of its window
    totals = _window_totals({0: {total.window_start.timestamp(): total}})
    event = _record(value, EVENTS, 0, 0, key, total.window_start.timestamp())
    outputs = totals.add([event])
    assert len(outputs) in (0, 2)  # the sum's total, or nothing (past the bound: skipped)
    for output in outputs:
        assert _changelog_total(output.key, output.value, WINDOW_S) is not None


@FUZZ
@given(
    st.lists(changelog_records(), max_size=4),
    st.lists(st.integers(0, PARTITIONS - 1), min_size=4, max_size=4),
    st.lists(count_event_records(), min_size=1, max_size=6),
    st.integers(0, 60),
)
def test_the_count_agent_counts_or_skips_every_record_and_what_it_writes_and_holds_stays_readable(
    changelog: list[tuple[bytes | None, bytes | None]],
    changelog_partitions: list[int],
    events: list[Record],
    max_rows: int,
) -> None:
    # What an assignment restores: the last valid total per window of each changelog partition.
    restored: dict[int, dict[float, LabelCounts]] = {}
    for (key, value), partition in zip(changelog, changelog_partitions, strict=False):
        if (total := _changelog_total(key, value, WINDOW_S)) is not None:
            restored.setdefault(partition, {})[total.window_start.timestamp()] = total

    with mock.patch.object(aggregates, "time", SimpleNamespace(time=lambda: NOW)):
        one_by_one = _window_totals(restored)
        changed: dict[tuple[int, float], LabelCounts] = {}
        for event in events:
            _count_one(one_by_one, event, changed)
        together = _window_totals(restored)
        outputs = together.add(events)  # a fetch: each changed window's total once

    held = {p: {s: _counts(t) for s, t in w.items()} for p, w in one_by_one.windows.items() if w}
    assert {p: {s: _counts(t) for s, t in w.items()} for p, w in together.windows.items() if w} == held
    pairs = list(zip(outputs[::2], outputs[1::2], strict=True))  # (changelog, aggregates) per window
    assert len(pairs) == len(changed)
    for to_changelog, to_aggregates in pairs:
        assert (to_changelog.topic, to_aggregates.topic) == (CHANGELOG, AGGREGATES)
        assert (to_changelog.key, to_changelog.value) == (to_aggregates.key, to_aggregates.value)
        assert to_aggregates.partition is None  # by key, as every producer of the topic
        total = LabelCounts.from_bytes(to_aggregates.value)
        assert to_aggregates.key == total.key
        # the window's last total, on the changelog partition of its count events
        assert _counts(total) == _counts(changed[(to_changelog.partition, total.window_start.timestamp())])

    # The counts view on what the totals hold: bounded, newest windows first, every count a total's.
    rows, truncated = count_rows(together.all(), max_rows)
    every = sum(len(labels) for t in together.all() for labels in t.tags.values())
    assert len(rows) == min(every, max_rows) and truncated == (every > max_rows)
    assert [r["window_start"] for r in rows] == sorted((r["window_start"] for r in rows), reverse=True)
    every_row = Counter(
        (t.window_start.isoformat(), t.window_end.isoformat(), tag, label, n)
        for t in together.all()
        for tag, labels in t.tags.items()
        for label, n in labels.items()
    )
    shown = Counter((r["window_start"], r["window_end"], r["tag"], r["label"], r["count"]) for r in rows)
    assert shown <= every_row and (truncated or shown == every_row)  # each a count a total holds
    assert all(row["label"] in LABELS for row in rows)


def _count_one(totals: WindowTotals, event: Record, changed: dict[tuple[int, float], LabelCounts]) -> None:
    """Adds one count event and checks what it did: counted in its window (the sum of the window's total
    and the event, tags past the cap merged), or skipped, and then nothing changed."""
    before = copy.deepcopy(totals.windows)
    increment = count_event(event.value, event.timestamp, WINDOW_S)
    skipped = _dlq_count("bad-count-event")
    outputs = totals.add([event])
    if not outputs:
        assert _dlq_count("bad-count-event") == skipped + 1
        assert {p: w for p, w in totals.windows.items() if w} == {p: w for p, w in before.items() if w}
        if increment is not None:  # a valid event is skipped only for a sum past the bound
            prior = before.get(event.partition, {}).get(increment.window_start.timestamp())
            sums = [
                *_per_label(prior.tweets if prior else {}, increment.tweets).values(),
                *_per_label(_tag_sums(prior), _tag_sums(increment)).values(),
            ]
            assert max(sums) > MAX_COUNT
        return
    assert increment is not None
    start = increment.window_start.timestamp()
    prior = before.get(event.partition, {}).get(start)
    to_changelog, to_aggregates = outputs
    assert (to_changelog.topic, to_changelog.partition) == (CHANGELOG, event.partition)
    assert (to_aggregates.topic, to_aggregates.key, to_aggregates.value) == (
        AGGREGATES,
        to_changelog.key,
        to_changelog.value,
    )
    total = LabelCounts.from_bytes(to_aggregates.value)  # tweets.sentiment.agg readers take it
    assert total == _changelog_total(to_changelog.key, to_changelog.value, WINDOW_S)  # and a restore
    assert total.window_start == increment.window_start
    assert total.tweets == _per_label(prior.tweets if prior else {}, increment.tweets)
    assert _tag_sums(total) == _per_label(_tag_sums(prior), _tag_sums(increment))  # merged, not lost
    # new tags past the cap go to OTHER_TAG (a restored total may hold more: anyone writes the changelog)
    assert len(total.tags) <= max(len(prior.tags) if prior else 0, SETTINGS.processor.agg_max_tags) + 1
    assert set(prior.tags if prior else ()) <= set(total.tags)  # a counted tag keeps its own key
    assert (start in totals.windows.get(event.partition, {})) == _kept(start)
    if _kept(start):
        assert _counts(totals.windows[event.partition][start]) == _counts(total)
    changed[(event.partition, start)] = total
    for partition, windows in before.items():  # no other window changed
        for other, was in windows.items():
            if (partition, other) != (event.partition, start):
                assert totals.windows[partition][other] == was


@FUZZ
@given(records("model-announcement"))
def test_the_model_watch_takes_exactly_the_records_of_its_contract_and_ignores_the_rest(value: bytes) -> None:
    try:
        ModelAnnouncement.from_bytes(value)
    except ContractError:
        assert _is_announcement(value) is False
    else:
        assert _is_announcement(value) is True


def test_a_sum_past_the_count_bound_is_refused_not_stored() -> None:
    start = float(FIRST_START)
    event = label_counts(
        start, WINDOW_S, {"tweets": {"positive": MAX_COUNT}, "tags": {"#a": {"positive": MAX_COUNT}}}
    ).to_bytes()
    with mock.patch.object(aggregates, "time", SimpleNamespace(time=lambda: start)):
        totals = WindowTotals(SETTINGS, EVENTS, CHANGELOG, AGGREGATES)
        skipped = _dlq_count("bad-count-event")
        first = totals.add([_record(event, EVENTS, 1, 0, None, start)])
        assert totals.add([_record(event, EVENTS, 1, 1, None, start + 1)]) == []  # 2 x 10**12: skipped
    assert _dlq_count("bad-count-event") == skipped + 1
    assert len(first) == 2 and LabelCounts.from_bytes(first[1].value).tweets == {"positive": MAX_COUNT}
    (held,) = totals.all()
    assert held.tweets == {"positive": MAX_COUNT} and held.tags == {"#a": {"positive": MAX_COUNT}}


def test_a_timezone_less_ingested_at_is_taken_as_utc_and_its_latency_is_measured() -> None:
    value = (
        b'{"schema_version": 1, "id": "n1", "text": "hi", "source": "replay",'
        b' "ingested_at": "2024-01-01T00:00:00"}'
    )
    batch = parse_batch([_record(value)], CONF, OUTPUTS)
    (_, tweet) = batch.good[0]
    assert tweet.ingested_at.isoformat() == "2024-01-01T00:00:00+00:00"
    _classified(batch)
