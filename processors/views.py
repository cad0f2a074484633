"""The worker's web views (health, status, counts, Prometheus metrics) and its consumer-lag gauge."""

from __future__ import annotations

import heapq
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tweetpulse.contracts import LABELS, MAX_AGGREGATE_TAG_CHARS, MAX_TIME, MIN_TIME
from tweetpulse.processors import metrics
from tweetpulse.processors.models import ServedModel
from tweetpulse.processors.watchdog import Watchdog

log = logging.getLogger(__name__)

# /tweetpulse/counts/ returns at most this many rows, whatever the table holds (up to agg_max_tags x
# labels rows per window): under 5 MB, a row's JSON is under 1 KB (a tag has at most 65 characters).
COUNTS_MAX_ROWS = 5_000
_MIN_S, _MAX_S = MIN_TIME.timestamp(), MAX_TIME.timestamp()


@dataclass
class WorkerViews:
    """``/livez``, ``/readyz``, ``/metrics``, ``/tweetpulse/status/`` and ``/tweetpulse/counts/``."""

    app: Any  # the Faust app
    raw_topic: str
    model: ServedModel
    watchdog: Watchdog
    processed_offsets: dict[Any, int]  # tp -> next offset to classify (the batcher's)
    counts: Any  # the windowed label-counts table
    worker_name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")  # at start

    def register(self) -> None:
        page = self.app.page
        page("/livez")(self._live)
        page("/readyz")(self._ready)
        page("/metrics")(self._metrics)
        page("/tweetpulse/status/")(self._status)
        page("/tweetpulse/counts/")(self._counts)

    def raw_partitions(self, tps: set[Any]) -> list[int]:
        return sorted(tp.partition for tp in tps if tp.topic == self.raw_topic)

    def status(self) -> dict[str, Any]:
        app = self.app
        assigned = app.consumer.assignment()
        return {
            "worker": self.worker_name,
            "app_id": app.conf.id,
            "model_version": self.model.classifier.version,
            "provider": self.model.classifier.provider,
            "assigned_partitions": self.raw_partitions(assigned),
            "rebalancing": bool(app.rebalancing),
            "processed_offsets": {  # of the partitions it holds now
                f"{tp.topic}:{tp.partition}": o for tp, o in self.processed_offsets.items() if tp in assigned
            },
        }

    def readiness(self) -> str | None:
        """None when ready (a model is loaded and the group assignment finished), else why not.

        A worker the group gave no partition (more workers than partitions) is ready: a spare."""
        if not self.watchdog.ready:
            return "waiting for the consumer group to assign partitions"
        if self.app.rebalancing:
            return "rebalancing"
        return None

    async def update_lag(self) -> None:
        """Consumer lag per assigned raw partition; a failure here must never crash the worker."""
        try:
            self.watchdog.measured_lag(await self._measure_lag())
        except Exception:
            log.warning("could not measure consumer lag", exc_info=True)

    async def _measure_lag(self) -> int:
        consumer = self.app.consumer
        total = 0
        for tp in consumer.assignment():
            if tp.topic != self.raw_topic:
                continue
            position = self.processed_offsets.get(tp)
            if position is None:
                position = await consumer.position(tp)
            highwater = consumer.highwater(tp)  # None until the first fetch after an assignment
            if position is not None and highwater is not None:
                lag = max(highwater - position, 0)
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
                total += lag
        return total

    async def _status(self, request: Any) -> Any:
        return self.app.web.json(self.status())

    async def _live(self, request: Any) -> Any:
        return self._health(self.watchdog.liveness())

    async def _ready(self, request: Any) -> Any:
        return self._health(self.readiness())

    def _health(self, problem: str | None) -> Any:
        body = {"ok": problem is None, "model_version": self.model.classifier.version}
        if problem is not None:
            body["problem"] = problem
        return self.app.web.json(body, status=200 if problem is None else 503)

    async def _counts(self, request: Any) -> Any:
        """The windows this worker's count agent holds: a row per window, tag and label, at most
        :data:`COUNTS_MAX_ROWS`, newest windows and busiest tags first."""
        rows, truncated = count_rows(self.counts.table.data.items(), COUNTS_MAX_ROWS)
        return self.app.web.json({"worker": self.worker_name, "counts": rows, "truncated": truncated})

    async def _metrics(self, request: Any) -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return self.app.web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


def count_rows(windows: Iterable[tuple[Any, Any]], max_rows: int) -> tuple[list[dict[str, Any]], bool]:
    """Rows of the windowed table's items ``((key, (start, end)), totals)``, newest windows and busiest
    tags first, at most `max_rows`; and whether rows were left out. What is not a window's counts (the
    table is read back from a topic anyone can write to) is left out too."""
    rows: list[dict[str, Any]] = []
    held = [(span, totals["tags"]) for key, totals in windows if (span := _span(key)) and _has_tags(totals)]
    for (start, end), tags in sorted(held, key=lambda window: window[0], reverse=True):
        window = {
            "window_start": datetime.fromtimestamp(start, UTC).isoformat(),
            "window_end": datetime.fromtimestamp(round(end), UTC).isoformat(),
        }
        for tag, labels in heapq.nlargest(max_rows - len(rows) + 1, _tag_counts(tags), key=_busiest):
            rows += [{"tag": tag, "label": label, **window, "count": n} for label, n in labels]
            if len(rows) > max_rows:
                return rows[:max_rows], True
    return rows, False


def _span(key: Any) -> tuple[float, float] | None:
    """A windowed table key's (start, end), or None for what is not a window's key."""
    match key:
        case (_, (int() | float() as start, int() | float() as end)) if _MIN_S <= start <= end < _MAX_S:
            return start, end
    return None


def _has_tags(totals: Any) -> bool:
    return isinstance(totals, dict) and isinstance(totals.get("tags"), dict)


def _tag_counts(tags: dict[Any, Any]) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    for tag, labels in tags.items():
        if isinstance(tag, str) and len(tag) <= MAX_AGGREGATE_TAG_CHARS and isinstance(labels, dict):
            counts = sorted((label, n) for label, n in labels.items() if label in LABELS and type(n) is int)
            if counts:
                yield tag, counts


def _busiest(tag_counts: tuple[str, list[tuple[str, int]]]) -> tuple[int, str]:
    tag, counts = tag_counts
    return sum(n for _, n in counts), tag
