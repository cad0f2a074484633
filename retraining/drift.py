"""Drift detection on the classified stream: positive rate and mean confidence per tumbling window.

The processors' aggregate records count labels but carry no confidence, so the detector reads the
results (``tweets.sentiment``) itself. Windows are by ``classified_at``; a window is compared once
the wall clock is a full window past its end, and, while a backlog is read (results older than a
window), only when the consumer has nothing more to read, so results from partitions that are read
in turn all land in their window first. The first ``reference_windows`` windows with
at least ``min_count`` results form the reference. After a drift event, or when the serving model
changes, the reference starts again, so one shift gives one event and a new model is not "drift".

Memory is bounded for a monitor that runs for months: at most ``drift_max_open_windows`` windows are
open (beyond it the oldest is closed, i.e. compared, early), a window tracks at most
``MAX_VERSIONS`` model versions, the monitor keeps the last ``MAX_EVENTS`` events, and results dated
more than a window in the future (which would open windows no clock closes) are skipped and counted.

The monitor is total on its input: :meth:`DriftMonitor.handle` has one outcome for any bytes, and a
window whose comparison raises is dropped and counted, so no result can stop drift detection.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from confluent_kafka import Consumer, Producer

from tweetpulse.contracts import ContractError, DriftEvent, SentimentResult
from tweetpulse.kafka import producer_config
from tweetpulse.offsets import drop_reached, watermarks
from tweetpulse.settings import RetrainSettings, Settings

log = logging.getLogger(__name__)

MAX_VERSIONS = 16  # per window; more means a misbehaving producer, and only the most common counts
MAX_EVENTS = 1_000  # drift events the monitor keeps in memory (all of them are on the topic)
MAX_REASON_CHARS = 300  # of an exception's text in a log line: it may quote part of a value

Outcome = Literal["counted", "late", "future", "malformed", "unusable"]


def short_error(exc: BaseException) -> str:
    if isinstance(exc, ContractError):
        return str(exc)[:MAX_REASON_CHARS]
    return f"{type(exc).__name__}: {exc}"[:MAX_REASON_CHARS]


@dataclass
class Window:
    start: datetime
    count: int = 0
    positives: int = 0
    confidence_sum: float = 0.0
    versions: Counter[str] = field(default_factory=Counter)

    def add(self, result: SentimentResult) -> None:
        self.count += 1
        self.positives += result.label == "positive"
        self.confidence_sum += max(result.probabilities.values())
        if result.model_version not in self.versions and len(self.versions) >= MAX_VERSIONS:
            del self.versions[min(self.versions, key=self.versions.__getitem__)]  # the rarest goes
        self.versions[result.model_version] += 1

    @property
    def positive_rate(self) -> float:
        return self.positives / self.count

    @property
    def mean_confidence(self) -> float:
        return self.confidence_sum / self.count

    @property
    def model_version(self) -> str:
        return self.versions.most_common(1)[0][0]


@dataclass(frozen=True)
class Thresholds:
    window_s: int
    min_count: int
    reference_windows: int
    positive_rate_delta: float
    confidence_delta: float
    max_open_windows: int = 288

    @classmethod
    def from_settings(cls, conf: RetrainSettings) -> Thresholds:
        return cls(
            conf.drift_window_s,
            conf.drift_min_count,
            conf.drift_reference_windows,
            conf.drift_positive_rate_delta,
            conf.drift_confidence_delta,
            conf.drift_max_open_windows,
        )


class DriftDetector:
    """Feed results with :meth:`add`; :meth:`close_stale` compares the finished windows."""

    def __init__(self, thresholds: Thresholds) -> None:
        self.t = thresholds
        self.open: dict[datetime, Window] = {}
        self.reference: list[Window] = []
        self.late = 0  # results for windows already closed (not counted anywhere)
        self.uncompared = 0  # windows whose comparison raised (dropped, logged)
        self.closed_before: datetime | None = None
        self.newest: datetime | None = None  # newest classified_at read

    def window_start(self, when: datetime) -> datetime:
        ts = when.timestamp()
        return datetime.fromtimestamp(ts - ts % self.t.window_s, UTC)

    def add(self, result: SentimentResult) -> list[DriftEvent]:
        """Count `result` in its window; returns the events of windows closed early to stay bounded."""
        start = self.window_start(result.classified_at)
        if self.closed_before is not None and start < self.closed_before:
            self.late += 1
            return []
        self.open.setdefault(start, Window(start)).add(result)
        self.newest = max(self.newest or result.classified_at, result.classified_at)
        if len(self.open) <= self.t.max_open_windows:
            return []
        oldest = min(self.open)
        return self.close_before(oldest + timedelta(seconds=self.t.window_s))

    def close_before(self, cutoff: datetime) -> list[DriftEvent]:
        """Close every window that starts before `cutoff` (oldest first) and compare it."""
        events = []
        for start in sorted(s for s in self.open if s < cutoff):
            try:
                event = self._compare(self.open.pop(start))
            except Exception as exc:  # e.g. a window ending in 2100 makes no valid event: drop it, go on
                self.uncompared += 1
                log.error(
                    "drift window not compared", extra={"window": str(start), "reason": short_error(exc)}
                )
                continue
            if event is not None:
                events.append(event)
        self.closed_before = max(self.closed_before or cutoff, cutoff)
        return events

    def live(self, now: datetime | None = None) -> bool:
        """Whether the newest result read is less than a window old (reading live, not a backlog)."""
        now = now or datetime.now(UTC)
        return self.newest is not None and now - self.newest < timedelta(seconds=self.t.window_s)

    def close_stale(self, now: datetime | None = None) -> list[DriftEvent]:
        """Close the windows that ended at least one full window ago by the wall clock."""
        now = now or datetime.now(UTC)
        return self.close_before(self.window_start(now) - timedelta(seconds=self.t.window_s))

    def _compare(self, window: Window) -> DriftEvent | None:
        if window.count < self.t.min_count:
            return None
        if self.reference and window.model_version != self.reference[-1].model_version:
            log.info("serving model changed; drift reference restarts", extra={"model": window.model_version})
            self.reference = [window]
            return None
        if len(self.reference) < self.t.reference_windows:
            self.reference.append(window)
            return None
        event = self._event(window)
        if event is not None:
            self.reference = [window]  # the new regime is the baseline from now on
        return event

    def _event(self, window: Window) -> DriftEvent | None:
        count = sum(w.count for w in self.reference)
        ref_rate = sum(w.positives for w in self.reference) / count
        ref_conf = sum(w.confidence_sum for w in self.reference) / count
        reasons = []
        rate_delta = window.positive_rate - ref_rate
        if abs(rate_delta) > self.t.positive_rate_delta:
            reasons.append(
                f"positive rate {window.positive_rate:.3f} vs reference {ref_rate:.3f} "
                f"(|delta| {abs(rate_delta):.3f} > {self.t.positive_rate_delta})"
            )
        conf_delta = window.mean_confidence - ref_conf
        if abs(conf_delta) > self.t.confidence_delta:
            reasons.append(
                f"mean confidence {window.mean_confidence:.3f} vs reference {ref_conf:.3f} "
                f"(|delta| {abs(conf_delta):.3f} > {self.t.confidence_delta})"
            )
        if not reasons:
            return None
        return DriftEvent(
            window_start=window.start,
            window_end=window.start + timedelta(seconds=self.t.window_s),
            count=window.count,
            positive_rate=round(window.positive_rate, 6),
            mean_confidence=round(window.mean_confidence, 6),
            reference_count=count,
            reference_positive_rate=round(ref_rate, 6),
            reference_mean_confidence=round(ref_conf, 6),
            reasons=reasons,
            model_version=window.model_version,
        )


class DriftMonitor:
    """Consumes ``tweets.sentiment``, runs a :class:`DriftDetector`, produces events to ``tweets.drift``.

    Malformed results are skipped, counted and logged: the processors wrote them, and the dead-letter
    topic is for the processors' input.
    """

    def __init__(self, settings: Settings, group_id: str | None = None, from_beginning: bool = False) -> None:
        self.settings = settings
        self.detector = DriftDetector(Thresholds.from_settings(settings.retrain))
        self.group_id = group_id or f"tweetpulse-drift-{uuid.uuid4().hex[:8]}"
        self.from_beginning = from_beginning
        self.events: deque[DriftEvent] = deque(maxlen=MAX_EVENTS)
        self.malformed = 0  # results that break the contract, or that the detector could not use
        self.future = 0  # results dated more than a window ahead of the wall clock
        self.pending: list[DriftEvent] = []  # events of windows closed early by handle(), to publish

    def run(self, stop: threading.Event | None = None, until_caught_up: bool = False) -> list[DriftEvent]:
        """Follow the results until `stop` is set, or (`until_caught_up`) to the end offsets of now."""
        topic = self.settings.topics.sentiment
        consumer = Consumer(
            self.settings.kafka.confluent_config(
                **{
                    "group.id": self.group_id,
                    "auto.offset.reset": "earliest" if self.from_beginning else "latest",
                    "enable.auto.commit": True,
                }
            )
        )
        producer = Producer(producer_config(self.settings))
        ends = _end_offsets(consumer, topic) if until_caught_up else None
        consumer.subscribe([topic])
        try:
            while not (stop and stop.is_set()) and not (ends is not None and not ends):
                messages = consumer.consume(num_messages=500, timeout=0.5)
                for msg in messages:
                    if msg.error() is None:
                        self.handle(msg.value(), msg.partition(), msg.offset())
                        _mark_read(ends, msg.partition(), msg.offset())
                if ends:
                    drop_reached(consumer, topic, ends)
                self._publish(producer, self.pending)
                self.pending = []
                if not messages or self.detector.live():
                    self._publish(producer, self.detector.close_stale())
            self._publish(producer, self.detector.close_stale())
        finally:
            consumer.close()
            producer.flush(30)
        return list(self.events)

    def handle(self, value: bytes | None, partition: int = -1, offset: int = -1) -> Outcome:
        """Count one ``tweets.sentiment`` value; events of windows it closes early go to `pending`.
        Any value has an outcome: what cannot be used is counted in `malformed` and logged with the
        reason (never its bytes)."""
        try:
            result = SentimentResult.from_bytes(value or b"")
        except Exception as exc:  # a contract error, or a parser bug: still one outcome
            return self._skipped("malformed", exc, partition, offset)
        # The contract makes every time UTC and bounded, so this arithmetic cannot overflow.
        if result.classified_at - datetime.now(UTC) > timedelta(seconds=self.detector.t.window_s):
            self.future += 1
            return "future"
        late = self.detector.late
        try:
            self.pending += self.detector.add(result)
        except Exception as exc:  # a valid value the detector cannot use (a bug): skipped, not fatal
            return self._skipped("unusable", exc, partition, offset)
        return "late" if self.detector.late > late else "counted"

    def _skipped(self, outcome: Outcome, exc: Exception, partition: int, offset: int) -> Outcome:
        self.malformed += 1
        log.warning(
            "sentiment result skipped by the drift monitor",
            extra={"outcome": outcome, "reason": short_error(exc), "partition": partition, "offset": offset},
        )
        return outcome

    def _publish(self, producer, events: list[DriftEvent]) -> None:
        for event in events:
            producer.produce(self.settings.topics.drift, key=b"drift", value=event.to_bytes())
            log.warning("drift detected", extra={"reasons": event.reasons, "window": str(event.window_start)})
            self.events.append(event)
        if events:
            producer.flush(30)


def _end_offsets(consumer, topic: str) -> dict[int, int]:
    """Partition -> high watermark now, for partitions that hold anything."""
    return {p: high for p, (low, high) in watermarks(consumer, topic).items() if high > low}


def _mark_read(ends: dict[int, int] | None, partition: int, offset: int) -> None:
    if ends is not None and partition in ends and offset + 1 >= ends[partition]:
        del ends[partition]
