"""The one reader and parser of labeled-topic messages (contract :class:`LabeledTweet`).

Both consumers of labeled data use them, and :class:`NewestLabels`, so one rule decides what is
used: retraining (``tweetpulse.retraining.data``, the recency window of ``tweets.labeled``) and
``tweetpulse train --data kafka:TOPIC`` (``tweetpulse.training.data``, a whole topic).

Every message is untrusted input. Whatever its bytes, :func:`parse_labeled` returns a tweet or a
:class:`Refusal` naming one of :data:`REASONS`, never raises: a record nested 100k deep, a byte that
is not UTF-8 or any unexpected exception is one refused message, counted and logged, not a failed
read. Parsing is pydantic's (Rust) JSON parser, whose depth limit refuses deep nesting.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from pydantic import ValidationError

from tweetpulse.contracts import MAX_TIME, MIN_TIME, LabeledTweet, describe_validation_error
from tweetpulse.offsets import drop_reached, watermarks

if TYPE_CHECKING:
    from tweetpulse.settings import Settings

log = logging.getLogger(__name__)

# unreadable: not a UTF-8 JSON object (or parsing failed unexpectedly); unsourced: no valid `source`
# (never defaulted: an unsourced label is not human feedback); invalid: fails the contract;
# future-dated: labeled after the reader's clock plus the allowed skew.
REASONS = ("unreadable", "unsourced", "invalid", "future-dated")
MAX_DETAIL_CHARS = 300  # a refusal's detail is logged: bounded whatever the message holds
EXAMPLES_LOGGED = 3  # refusals logged one by one per reason, not one line per message of a flood


@dataclass(frozen=True)
class Refusal:
    """A labeled message that is not used: ``reason`` is one of :data:`REASONS` (a counter key)."""

    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def parse_labeled(
    value: bytes | None, timestamp_ms: int = 0, now: datetime | None = None, skew_s: float = 300.0
) -> LabeledTweet | Refusal:
    """One labeled message as a tweet, or the reason it is refused; never raises.

    A message without ``labeled_at`` is dated by its Kafka timestamp (`timestamp_ms`, when > 0).
    """
    try:
        return _parse(value, timestamp_ms, now or datetime.now(UTC), skew_s)
    except Exception as exc:  # whatever a record triggers, it is refused, never a crash
        return Refusal("unreadable", _bounded(f"{type(exc).__name__}: {_safe_str(exc)}"))


def _parse(value: bytes | None, timestamp_ms: int, now: datetime, skew_s: float) -> LabeledTweet | Refusal:
    if value is None:
        return Refusal("unreadable", "no value")
    try:  # decoded first, as LabeledTweet.from_bytes does, to say so when it is not UTF-8
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        return Refusal("unreadable", _bounded(f"not UTF-8: {exc}"))
    try:  # from_bytes' parse, keeping pydantic's structured errors to name the reason
        label = LabeledTweet.model_validate_json(text)
    except ValidationError as exc:
        return _refusal(exc)
    if "labeled_at" not in label.model_fields_set and timestamp_ms > 0:
        dated = _kafka_time(timestamp_ms)
        if isinstance(dated, Refusal):
            return dated
        label = label.model_copy(update={"labeled_at": dated})
    latest = now + timedelta(seconds=skew_s)
    if label.labeled_at > latest:
        return Refusal(
            "future-dated", f"labeled_at {label.labeled_at.isoformat()} is after {latest.isoformat()}"
        )
    return label


def _refusal(exc: ValidationError) -> Refusal:
    errors = exc.errors(include_url=False)
    if any(err["type"] in ("json_invalid", "model_type") for err in errors):
        return Refusal("unreadable", _bounded(describe_validation_error(exc)))  # not a JSON object
    for err in errors:
        if err["loc"][:1] == ("source",):
            named = "no source" if err["type"] == "missing" else f"source {err['input']!r}"
            return Refusal("unsourced", _bounded(f"{named}: not one of ['human', 'weak']"))
    return Refusal("invalid", _bounded(describe_validation_error(exc)))


def _kafka_time(timestamp_ms: int) -> datetime | Refusal:
    """The Kafka timestamp as a date, within the contracts' bounds (a producer sets it freely)."""
    if not MIN_TIME.timestamp() * 1000 <= timestamp_ms < MAX_TIME.timestamp() * 1000:
        return Refusal(
            "invalid", f"no labeled_at, and Kafka timestamp {timestamp_ms} ms is outside [2000, 2100)"
        )
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC)


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)[:MAX_DETAIL_CHARS]
    except Exception:  # an exception whose text cannot be built still has a type
        return "(no description)"


@dataclass
class LabeledRead:
    labels: list[LabeledTweet]  # the best `cap`: human first, newest first
    messages: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    outside_window: int = 0
    over_cap: int = 0


class NewestLabels:
    """The labels a read keeps, the one selection rule: those labeled at or after `since` (None: all),
    at most `cap` of them (None: all), preferring human ones, then newer ones (a heap: memory stays
    bounded)."""

    def __init__(self, cap: int | None, since: datetime | None = None) -> None:
        self.cap = cap
        self.since = since
        self.heap: list[tuple[bool, float, int, LabeledTweet]] = []
        self.order = itertools.count()  # tie-breaker: LabeledTweets do not compare
        self.dropped = 0
        self.outside_window = 0

    def add(self, label: LabeledTweet) -> None:
        if self.since is not None and label.labeled_at < self.since:
            self.outside_window += 1
            return
        item = (label.source == "human", label.labeled_at.timestamp(), next(self.order), label)
        if self.cap is None or len(self.heap) < self.cap:
            heapq.heappush(self.heap, item)
            return
        self.dropped += 1
        if self.heap and item[:3] > self.heap[0][:3]:
            heapq.heapreplace(self.heap, item)

    def best(self) -> list[LabeledTweet]:
        """The kept labels, human first, newest first."""
        return [item[-1] for item in sorted(self.heap, reverse=True)]


def read_labeled(
    settings: Settings,
    topic: str,
    since: datetime | None = None,
    cap: int | None = None,
    now: datetime | None = None,
    timeout: float = 30.0,
) -> LabeledRead:
    """The valid labels of `topic` (from `since`, else from the beginning), up to its end offsets
    when the read starts; at most `cap` are held (human first, then newest).

    Each partition is sought to the first message at or after `since` (``offsets_for_times``) and is
    done at its end offset, at end-of-partition, or once the consumer's position reaches the end: the
    last message of a committed transaction sits before its commit marker, so the offset of the last
    message read never reaches the end offset. Only committed transactions are read. Raises
    ValueError for a missing topic and TimeoutError when reading makes no progress for `timeout`.
    """
    now = now or datetime.now(UTC)
    consumer = Consumer(
        settings.kafka.confluent_config(
            **{
                "group.id": f"tweetpulse-labeled-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",  # aborted or open transactions are never used
            }
        )
    )
    read = LabeledRead([])
    kept = NewestLabels(cap, since)
    skew_s = settings.retrain.label_clock_skew_s
    try:
        ends = _seek(consumer, topic, since, timeout)
        _consume_to_ends(consumer, topic, ends, timeout, lambda msg: _take(msg, read, kept, now, skew_s))
    finally:
        consumer.close()
    read.labels, read.over_cap, read.outside_window = kept.best(), kept.dropped, kept.outside_window
    if read.refused:
        log.warning(
            "labeled messages refused",
            extra={"topic": topic, "refused": dict(read.refused), "messages": read.messages},
        )
    return read


def _seek(consumer: Any, topic: str, since: datetime | None, timeout: float) -> dict[int, int]:
    """Assign every partition from the first message at or after `since` (None: its first message);
    returns partition -> end offset."""
    marks = {p: (low, high) for p, (low, high) in watermarks(consumer, topic, timeout).items() if high > low}
    if not marks:
        return {}
    starts = {p: low for p, (low, _) in marks.items()}
    if since is not None:
        since_ms = int(since.timestamp() * 1000)
        found = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in marks], timeout=30)
        for tp in found:
            if tp.error is not None:  # never skip a partition silently
                raise KafkaException(tp.error)
        # offset -1: nothing in the window; the low watermark wins over an offset already deleted
        starts = {tp.partition: max(tp.offset, marks[tp.partition][0]) for tp in found if tp.offset >= 0}
    ends = {p: marks[p][1] for p, start in starts.items() if start < marks[p][1]}
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in ends])
    return ends


def _consume_to_ends(
    consumer: Any, topic: str, ends: dict[int, int], timeout: float, handle: Callable[[Any], None]
) -> None:
    """Feed every message before `ends` to `handle`; raises TimeoutError if reading stalls."""
    remaining = dict(ends)
    deadline = time.monotonic() + timeout
    while remaining:
        messages = consumer.consume(num_messages=1000, timeout=0.5)
        if messages:
            deadline = time.monotonic() + timeout
        elif time.monotonic() > deadline:
            raise TimeoutError(f"labeled topic {topic}: no progress for {timeout}s before ends {remaining}")
        for msg in messages:
            partition = msg.partition()
            if partition not in remaining:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    del remaining[partition]
                continue
            if msg.offset() < remaining[partition]:
                handle(msg)
            if msg.offset() + 1 >= remaining[partition]:
                del remaining[partition]
        drop_reached(consumer, topic, remaining)


def _take(msg: Any, read: LabeledRead, kept: NewestLabels, now: datetime, skew_s: float) -> None:
    read.messages += 1
    parsed = parse_labeled(msg.value(), msg.timestamp()[1], now, skew_s)
    if isinstance(parsed, Refusal):
        read.refused[parsed.reason] += 1
        if read.refused[parsed.reason] <= EXAMPLES_LOGGED:
            log.warning(
                "labeled message refused",
                extra={"partition": msg.partition(), "offset": msg.offset(), "reason": str(parsed)},
            )
    else:
        kept.add(parsed)
