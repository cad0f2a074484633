"""The label counts: tweets per label, in all and per tag, in tumbling windows, at a bounded record cost.

Each classified batch adds to :class:`PendingCounts` in the worker; each commit carries what is
pending as one count event per open window (a :class:`LabelCounts` increment, key = the window's
start, on the internal ``<app_id>-label-count-events`` topic), in the same commit as the tweets it
counts. The ``count-labels`` agent adds each event to its window's running total
(:class:`WindowTotals`) and writes the total to the window's changelog partition and to
``tweets.sentiment.agg``, again in one commit with the count events' offsets. A commit thus costs
three records per open window and worker, whatever the load and however many tags.

Under exactly_once every increment is counted once: a window's last total on
``tweets.sentiment.agg`` (read_committed) is the number of tweets classified in it. Under
at_least_once counts repeat with the tweets they count (a worker that dies has its last interval's
input classified and counted again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from tweetpulse.contracts import ContractError, LabelCounts
from tweetpulse.kafka import consumer_config
from tweetpulse.processors import metrics
from tweetpulse.processors.checkpoint import Output
from tweetpulse.settings import Settings

log = logging.getLogger(__name__)

OTHER_TAG = "(other)"  # what tags past the cap of a window are counted under
# A window's counts travel as one record (count event, changelog, total): its tags stay below Kafka's
# default max.message.bytes (1 MiB) however long or non-ASCII they are. A tag takes its UTF-8 bytes
# plus about TAG_JSON_BYTES of JSON for its counts.
MAX_TAG_BYTES = 900_000
TAG_JSON_BYTES = 48

# A window's counts as the table stores them: {"tweets": {label: n}, "tags": {tag: {label: n}}}.
Totals = dict[str, dict]


def window_start(timestamp: float, window_s: int) -> float:
    """The start (epoch seconds) of the tumbling window `timestamp` falls in: the one rule for both
    the worker's pending counts and the count agent's windows."""
    return timestamp - timestamp % window_s


def _tag_bytes(tag: str) -> int:
    return len(tag.encode()) + TAG_JSON_BYTES


class WindowCounts:
    """One window's counts, in all and per tag. Tags come from untrusted text, so a window counts at
    most `max_tags` of them and :data:`MAX_TAG_BYTES` of their text; a tag with no room left is
    counted under :data:`OTHER_TAG`."""

    def __init__(self, max_tags: int, totals: Mapping[str, dict] | None = None) -> None:
        totals = totals or {}
        self.max_tags = max_tags
        self.tweets: dict[str, int] = dict(totals.get("tweets", {}))
        self.tags: dict[str, dict[str, int]] = {t: dict(c) for t, c in totals.get("tags", {}).items()}
        self.tag_bytes = sum(_tag_bytes(tag) for tag in self.tags)

    def add_tweet(self, label: str, n: int = 1) -> None:
        self.tweets[label] = self.tweets.get(label, 0) + n

    def add_tag(self, tag: str, label: str, n: int = 1) -> None:
        if tag not in self.tags:
            if len(self.tags) >= self.max_tags or self.tag_bytes + _tag_bytes(tag) > MAX_TAG_BYTES:
                tag = OTHER_TAG
            if tag not in self.tags:
                self.tag_bytes += _tag_bytes(tag)
        counts = self.tags.setdefault(tag, {})
        counts[label] = counts.get(label, 0) + n

    def totals(self) -> Totals:
        return {"tweets": self.tweets, "tags": self.tags}


def add_counts(total: Mapping[str, dict], increment: LabelCounts, max_tags: int) -> Totals:
    """A window's running `total` (as the table stores it) plus a count event's `increment`."""
    window = WindowCounts(max_tags, total)
    for label, n in increment.tweets.items():
        window.add_tweet(label, n)
    for tag, counts in increment.tags.items():
        for label, n in counts.items():
            window.add_tag(tag, label, n)
    return window.totals()


def count_event(value: bytes | None, timestamp: float, window_s: int) -> LabelCounts | None:
    """The increment a count event carries, or None for a record that is not one of the window its
    timestamp falls in (anyone can write to a topic: a bad record is skipped, never a crash)."""
    try:
        increment = LabelCounts.from_bytes(value or b"")
    except ContractError:
        return None
    return increment if increment.window_start.timestamp() == window_start(timestamp, window_s) else None


def next_total(stored: object, increment: LabelCounts, window_s: int, max_tags: int) -> LabelCounts:
    """The window's new running total: what is held for it (`stored`: a total's counts, or None for a
    window not held) plus `increment`. :class:`ContractError` when a sum would pass the contract's bound: the count agent
    skips that event."""
    totals = stored if isinstance(stored, Mapping) else {}
    return label_counts(increment.window_start.timestamp(), window_s, add_counts(totals, increment, max_tags))


def totals_of(counts: LabelCounts) -> Totals:
    """A window's counts as the table stores them."""
    return {"tweets": dict(counts.tweets), "tags": {tag: dict(c) for tag, c in counts.tags.items()}}


def label_counts(start: float, window_s: int, totals: Mapping[str, dict]) -> LabelCounts:
    """The record of one window's counts (an increment or a total); :class:`ContractError` when a count
    is past the contract's bound."""
    begin = datetime.fromtimestamp(start, UTC)
    return LabelCounts.from_dict(
        {
            "window_start": begin,
            "window_end": begin + timedelta(seconds=window_s),
            "tweets": totals.get("tweets", {}),
            "tags": totals.get("tags", {}),
        }
    )


class WindowTotals:
    """The running totals of the windows whose count events this worker reads, per count-events
    partition. A new total goes to the changelog (the same partition number) and to the aggregates
    topic in the same commit as the count events it adds, so under exactly_once each increment counts
    once; a partition's totals are read back from its changelog partition when it is assigned or
    rewound (:meth:`restore`, on the consumer thread). Anyone can write to these topics: a record that
    is not a count event, or a changelog record that is not a window's total, is skipped and counted."""

    def __init__(
        self, settings: Settings, events_topic: str, changelog_topic: str, aggregates_topic: str
    ) -> None:
        conf = settings.processor
        self.settings = settings
        self.events_topic = events_topic
        self.changelog_topic = changelog_topic
        self.aggregates_topic = aggregates_topic
        self.window_s, self.expires_s, self.max_tags = (
            conf.agg_window_s,
            conf.agg_expires_s,
            conf.agg_max_tags,
        )
        self.windows: dict[int, dict[float, LabelCounts]] = {}  # partition -> window start -> total

    def add(self, records: list[Any]) -> list[Output]:
        """The outputs of adding these count events (records of the events topic): each changed
        window's total, once, on the changelog and the aggregates topic."""
        changed: dict[tuple[int, float], LabelCounts] = {}
        for record in records:
            total = self._add(record)
            if total is not None:
                changed[(record.partition, total.window_start.timestamp())] = total
        self._expire(time.time())
        outputs = []
        for (partition, _), total in changed.items():
            value = total.to_bytes()
            outputs.append(Output(self.changelog_topic, total.key, value, partition=partition))
            outputs.append(Output(self.aggregates_topic, total.key, value))
        return outputs

    def _add(self, record: Any) -> LabelCounts | None:
        increment = count_event(record.value, record.timestamp, self.window_s)
        try:
            if increment is None:
                raise ContractError("not a count event of the window its timestamp falls in")
            windows = self.windows.setdefault(record.partition, {})
            start = increment.window_start.timestamp()
            stored = windows.get(start)
            total = next_total(
                None if stored is None else totals_of(stored), increment, self.window_s, self.max_tags
            )
        except ContractError as exc:
            metrics.DEAD_LETTERS.labels("bad-count-event").inc()
            log.warning("bad count event skipped", extra={"offset": record.offset, "error": str(exc)[:300]})
            return None
        windows[start] = total
        return total

    def _expire(self, now: float) -> None:
        for windows in self.windows.values():
            for start in [s for s in windows if s + self.window_s + self.expires_s < now]:
                del windows[start]

    def restore(self, tps: list[Any]) -> None:
        """Read the totals of the assigned count-events partitions back from their changelog."""
        partitions = [tp.partition for tp in tps if tp.topic == self.events_topic]
        if partitions:
            restored = read_changelog(self.settings, self.changelog_topic, partitions, self.window_s)
            for partition in partitions:
                self.windows[partition] = restored.get(partition, {})
            self._expire(time.time())

    def all(self) -> list[LabelCounts]:
        return [total for windows in list(self.windows.values()) for total in list(windows.values())]


def read_changelog(
    settings: Settings, topic: str, partitions: list[int], window_s: int, timeout_s: float = 120.0
) -> dict[int, dict[float, LabelCounts]]:
    """The last valid total per window of each changelog partition, read to its end (read_committed:
    an open transaction of a dead worker is waited for, at most its transaction timeout)."""
    consumer = Consumer(
        consumer_config(
            settings,
            **{
                "group.id": f"{topic}-restore",  # never joined: partitions are assigned by hand
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            },
        )
    )
    totals: dict[int, dict[float, LabelCounts]] = {p: {} for p in partitions}
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        open_partitions, deadline = set(partitions), time.monotonic() + timeout_s
        while open_partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"changelog {topic} not read to its end in {timeout_s:g} s")
            for msg in consumer.consume(1000, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        open_partitions.discard(msg.partition())
                    continue
                total = _changelog_total(msg.key(), msg.value(), window_s)
                if total is not None:
                    totals[msg.partition()][total.window_start.timestamp()] = total
    finally:
        consumer.close()
    return totals


def _changelog_total(key: bytes | None, value: bytes | None, window_s: int) -> LabelCounts | None:
    try:
        total = LabelCounts.from_bytes(value or b"")
        start = total.window_start.timestamp()
        span = (total.window_end - total.window_start).total_seconds()
        if total.key == key and start == window_start(start, window_s) and span == window_s:
            return total
    except ContractError:
        pass
    metrics.DEAD_LETTERS.labels("bad-changelog-record").inc()
    return None


class WriteBudget:
    """Bytes per second a writer may send: `spend` waits once the writer is ahead of the rate by more
    than one second's worth, so its output stays within `bytes_per_s` whatever its input does."""

    def __init__(self, bytes_per_s: float) -> None:
        self.bytes_per_s = bytes_per_s
        self._free_at = 0.0  # monotonic time when everything spent so far is paid for

    async def spend(self, n: int) -> None:
        now = time.monotonic()
        self._free_at = max(self._free_at, now) + n / self.bytes_per_s
        ahead = self._free_at - now - 1.0
        if ahead > 0:
            await asyncio.sleep(ahead)


class PendingCounts:
    """Counts of classified tweets not yet committed, per window start (epoch seconds): they go out as
    one count event per window in the commit that holds the tweets they count (checkpoint.py)."""

    def __init__(self, window_s: int, max_tags: int) -> None:
        self.window_s = window_s
        self.max_tags = max_tags
        self._windows: dict[float, WindowCounts] = {}

    def add(self, tweets: Iterable[tuple[list[str], str]], now: float) -> None:
        """Counts each (tags, label) tweet in the window of `now`."""
        window: WindowCounts | None = None
        for tags, label in tweets:
            if window is None:
                start = window_start(now, self.window_s)
                window = self._windows.setdefault(start, WindowCounts(self.max_tags))
            window.add_tweet(label)
            for tag in tags:
                window.add_tag(tag, label)

    def take(self) -> list[LabelCounts]:
        """The pending counts, one increment per window; none are pending after."""
        increments = [label_counts(start, self.window_s, w.totals()) for start, w in self._windows.items()]
        self._windows = {}
        return increments
