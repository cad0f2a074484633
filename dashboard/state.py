"""The dashboard's in-memory aggregates: bounded, expiring, and safe to share between threads.

Results are bucketed by their ``classified_at`` time (clamped to now, so a skewed clock cannot
create buckets in the future). Everything older than the window is dropped on every update, and
every collection has a fixed bound, so memory stays flat however long the dashboard runs.
"""

from __future__ import annotations

import math
import os
import stat
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tweetpulse.contracts import LABELS, ModelAnnouncement, SentimentResult, aggregate_tags

OTHER_TAGS = "other"  # where tags go once TAGS_TRACKED_PER_SHOWN * max_tags distinct tags are tracked
TAGS_TRACKED_PER_SHOWN = 50
THROUGHPUT_SECONDS = 120  # the throughput sparkline's span
LATENCY_WINDOW_S = 300  # latency percentiles cover results classified in the last five minutes
LATENCY_SAMPLES = 10_000
MAX_TEXT_CHARS = 500  # of a tweet kept for the latest-tweets table
MAX_STATUS_CHARS = 300  # of a training job's status line


def tag_of(result: SentimentResult) -> str:
    """The tag a result is charted under: the first of its aggregate tags (tweetpulse.contracts)."""
    return aggregate_tags(result.rule_tags, result.text)[0]


def status_line(path: Path | None) -> str | None:
    """The first line of a training job's status file, printable characters only and capped; None when
    there is none. Whatever the file holds (binary, huge, a FIFO, gone) it never blocks or raises."""
    if path is None:
        return None
    try:
        # O_NONBLOCK: a FIFO does not wait for a writer; O_NOCTTY: a tty does not become ours
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        raw = os.read(fd, MAX_STATUS_CHARS * 4)
    except OSError:
        return None
    finally:
        os.close(fd)
    first = raw.decode("utf-8", errors="replace").splitlines()[:1]
    text = "".join(c for c in (first[0] if first else "") if c.isprintable()).strip()
    return text[:MAX_STATUS_CHARS] or None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 1]) of `values`, or None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


class DashboardState:
    """Everything the page shows, updated by the Kafka threads and read by the web server."""

    def __init__(
        self,
        window_minutes: int = 60,
        latest_tweets: int = 50,
        max_tags: int = 12,
        clock: Callable[[], float] = time.time,
        training_status_file: Path | None = None,
    ) -> None:
        self.window_minutes = window_minutes
        self.training_status_file = training_status_file
        self.max_tags = max_tags
        self._clock = clock
        self._lock = threading.Lock()
        self._minutes: dict[int, Counter[str]] = {}  # minute start (epoch s) -> label counts
        self._tag_minutes: dict[str, dict[int, Counter[str]]] = {}
        self._seconds: dict[int, int] = {}  # second (epoch s) -> results classified in it
        self._latencies: deque[tuple[float, float]] = deque(maxlen=LATENCY_SAMPLES)
        self._latest: deque[dict[str, Any]] = deque(maxlen=latest_tweets)
        self._totals: Counter[str] = Counter()
        self._malformed = 0
        self._model_seen: tuple[float, str] | None = None  # (classified_at, version) of the newest result
        self._announcement: ModelAnnouncement | None = None
        self._lag: dict[str, Any] | None = None
        self._started_at = clock()
        self._sequence = 0  # bumps on every change, so clients can tell a fresh snapshot
        self._expired_at = -1  # the second of the last expiry pass: once a second is enough

    # -- updates -------------------------------------------------------------------------------------

    def add(self, result: SentimentResult) -> None:
        # Everything derived from the result is computed before the first change, so a value that
        # raises leaves the state as it was (the feed skips it and carries on).
        now = self._clock()
        at = min(result.classified_at.timestamp(), now)
        latency_ms = (result.classified_at - result.ingested_at).total_seconds() * 1000
        tag = tag_of(result)
        row = self._latest_row(result, tag, latency_ms)
        with self._lock:
            self._sequence += 1
            self._totals[result.label] += 1
            if self._model_seen is None or at >= self._model_seen[0]:
                self._model_seen = (at, result.model_version)
            self._latest.appendleft(row)
            self._expire(now)
            if at < self._first_minute(now):
                return  # counted in the totals, but older than every chart
            minute = int(at // 60) * 60
            self._minutes.setdefault(minute, Counter())[result.label] += 1
            self._tag_counts(tag).setdefault(minute, Counter())[result.label] += 1
            if at >= now - THROUGHPUT_SECONDS - 1:
                self._seconds[int(at)] = self._seconds.get(int(at), 0) + 1
            self._latencies.append((at, latency_ms))

    def add_malformed(self) -> None:
        with self._lock:
            self._sequence += 1
            self._malformed += 1

    def set_announcement(self, announcement: ModelAnnouncement) -> None:
        with self._lock:
            self._sequence += 1
            self._announcement = announcement

    def set_lag(self, lag: dict[str, Any]) -> None:
        with self._lock:
            self._sequence += 1
            self._lag = lag

    # -- reading -------------------------------------------------------------------------------------

    @property
    def tracked_tags(self) -> int:
        """Distinct tags with counts in the window (at most TAGS_TRACKED_PER_SHOWN * max_tags + 1)."""
        with self._lock:
            return len(self._tag_minutes)

    @property
    def total(self) -> int:
        """Results counted since start (cheap; no snapshot)."""
        with self._lock:
            return sum(self._totals.values())

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready picture of the current state (what /api/snapshot and /events send)."""
        now = self._clock()
        training = status_line(self.training_status_file)  # file I/O: not under the lock
        with self._lock:
            self._expire(now)
            axis = self._minute_axis(now)
            window = Counter[str]()
            for counts in self._minutes.values():
                window.update(counts)
            return {
                "sequence": self._sequence,
                "now": _iso(now),
                "started_at": _iso(self._started_at),
                "window_minutes": self.window_minutes,
                "totals": self._totals_view(self._totals),
                "window": self._totals_view(window),
                "minutes": [{"t": m, **self._label_counts(self._minutes.get(m))} for m in axis],
                "tags": self._tags_view(axis),
                "throughput": self._throughput_view(now),
                "latency_ms": self._latency_view(),
                "latest": sorted(self._latest, key=lambda row: row["classified_at"], reverse=True),
                "model": {**self._model_view(), "training": training},
                "lag": self._lag,
                "malformed": self._malformed,
            }

    # -- internals (called with the lock held) -------------------------------------------------------

    def _first_minute(self, now: float) -> int:
        return int(now // 60) * 60 - (self.window_minutes - 1) * 60

    def _minute_axis(self, now: float) -> list[int]:
        first = self._first_minute(now)
        return [first + 60 * i for i in range(self.window_minutes)]

    def _expire(self, now: float) -> None:
        if int(now) == self._expired_at:
            return
        self._expired_at = int(now)
        first = self._first_minute(now)
        for minute in [m for m in self._minutes if m < first]:
            del self._minutes[minute]
        for tag, minutes in list(self._tag_minutes.items()):
            for minute in [m for m in minutes if m < first]:
                del minutes[minute]
            if not minutes:
                del self._tag_minutes[tag]
        oldest_second = int(now) - THROUGHPUT_SECONDS - 1
        for second in [s for s in self._seconds if s < oldest_second]:
            del self._seconds[second]
        while self._latencies and self._latencies[0][0] < now - LATENCY_WINDOW_S:
            self._latencies.popleft()

    def _tag_counts(self, tag: str) -> dict[int, Counter[str]]:
        if tag not in self._tag_minutes and len(self._tag_minutes) >= self.max_tags * TAGS_TRACKED_PER_SHOWN:
            tag = OTHER_TAGS
        return self._tag_minutes.setdefault(tag, {})

    @staticmethod
    def _label_counts(counts: Counter[str] | None) -> dict[str, int]:
        return {label: (counts or {}).get(label, 0) for label in LABELS}

    @staticmethod
    def _totals_view(counts: Counter[str]) -> dict[str, Any]:
        total = sum(counts.values())
        share = counts["positive"] / total if total else None
        return {"count": total, **{label: counts[label] for label in LABELS}, "positive_share": share}

    def _tags_view(self, axis: list[int]) -> list[dict[str, Any]]:
        totals = {}
        for tag, minutes in self._tag_minutes.items():
            counts = Counter[str]()
            for bucket in minutes.values():
                counts.update(bucket)
            totals[tag] = counts
        shown = sorted(totals, key=lambda tag: (-totals[tag].total(), tag))[: self.max_tags]
        return [
            {
                "tag": tag,
                **self._totals_view(totals[tag]),
                "minutes": [self._label_counts(self._tag_minutes[tag].get(m)) for m in axis],
            }
            for tag in shown
        ]

    def _throughput_view(self, now: float) -> dict[str, Any]:
        last_full = int(now) - 1  # the current second is still filling
        series = [self._seconds.get(s, 0) for s in range(last_full - THROUGHPUT_SECONDS + 1, last_full + 1)]
        return {
            "per_s_10s": sum(series[-10:]) / 10,
            "per_s_60s": sum(series[-60:]) / 60,
            "per_second": series,
        }

    def _latency_view(self) -> dict[str, Any]:
        values = [ms for _, ms in self._latencies]
        return {
            "p50": percentile(values, 0.50),
            "p95": percentile(values, 0.95),
            "samples": len(values),
            "window_s": LATENCY_WINDOW_S,
        }

    def _model_view(self) -> dict[str, Any]:
        announced = self._announcement
        seen = self._model_seen[1] if self._model_seen else None
        return {
            "version": seen or (announced.version if announced else None),
            "seen_in_results": seen,
            "announced": announced.version if announced else None,
            "announced_at": announced.announced_at.isoformat(timespec="seconds") if announced else None,
        }

    @staticmethod
    def _latest_row(result: SentimentResult, tag: str, latency_ms: float) -> dict[str, Any]:
        return {
            "id": result.id,
            "text": result.text[:MAX_TEXT_CHARS],
            "label": result.label,
            "confidence": result.probabilities[result.label],
            "tag": tag,
            "model_version": result.model_version,
            "classified_at": result.classified_at.astimezone(UTC).isoformat(timespec="milliseconds"),
            "latency_ms": latency_ms,
        }
