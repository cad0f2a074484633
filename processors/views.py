"""The worker's web views (health, status, counts, Prometheus metrics) and its consumer-lag gauge."""

from __future__ import annotations

import heapq
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tweetpulse.contracts import LabelCounts
from tweetpulse.processors import metrics
from tweetpulse.processors.aggregates import WindowTotals
from tweetpulse.processors.models import ServedModel
from tweetpulse.processors.source import Source
from tweetpulse.processors.watchdog import Watchdog

log = logging.getLogger(__name__)

# /tweetpulse/counts/ returns at most this many rows, whatever the table holds (up to agg_max_tags x
# labels rows per window): under 5 MB, a row's JSON is under 1 KB (a tag has at most 65 characters).
COUNTS_MAX_ROWS = 5_000


@dataclass
class WorkerViews:
    """``/livez``, ``/readyz``, ``/metrics``, ``/tweetpulse/status/`` and ``/tweetpulse/counts/``."""

    app: Any  # the Faust app (its web server)
    raw_topic: str
    model: ServedModel
    watchdog: Watchdog
    processed_offsets: dict[Any, int]  # tp -> next offset to classify (the batcher's)
    source: Source
    totals: WindowTotals
    worker_name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")  # at start

    def register(self) -> None:
        page = self.app.page
        page("/livez")(self._live)
        page("/readyz")(self._ready)
        page("/metrics")(self._metrics)
        page("/tweetpulse/status/")(self._status)
        page("/tweetpulse/counts/")(self._counts)

    def raw_partitions(self, tps: Iterable[Any]) -> list[int]:
        return sorted(tp.partition for tp in tps if tp.topic == self.raw_topic)

    def status(self) -> dict[str, Any]:
        assigned = self.source.assignment()
        return {
            "worker": self.worker_name,
            "app_id": self.app.conf.id,
            "model_version": self.model.classifier.version,
            "provider": self.model.classifier.provider,
            "assigned_partitions": self.raw_partitions(assigned),
            "rebalancing": self.source.rebalancing,
            "processed_offsets": {  # of the partitions it holds now
                f"{tp.topic}:{tp.partition}": o for tp, o in self.processed_offsets.items() if tp in assigned
            },
        }

    def readiness(self) -> str | None:
        """None when ready (a model is loaded and the group assignment finished), else why not.

        A worker the group gave no partition (more workers than partitions) is ready: a spare."""
        if not self.watchdog.ready:
            return "waiting for the consumer group to assign partitions"
        if self.source.rebalancing:
            return "rebalancing"
        return None

    async def update_lag(self) -> None:
        """Consumer lag per assigned raw partition; a failure here must never crash the worker."""
        try:
            self.watchdog.measured_lag(await self._measure_lag())
        except Exception:
            log.warning("could not measure consumer lag", exc_info=True)

    async def _measure_lag(self) -> int:
        total = 0
        for tp in self.source.assignment():
            if tp.topic != self.raw_topic:
                continue
            position = self.processed_offsets.get(tp)
            highwater = self.source.highwater(tp)  # None until the first fetch after an assignment
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
        rows, truncated = count_rows(self.totals.all(), COUNTS_MAX_ROWS)
        return self.app.web.json({"worker": self.worker_name, "counts": rows, "truncated": truncated})

    async def _metrics(self, request: Any) -> Any:
        return self.app.web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


def count_rows(windows: Iterable[LabelCounts], max_rows: int) -> tuple[list[dict[str, Any]], bool]:
    """Rows of the windows' totals, newest windows and busiest tags first, at most `max_rows`; and
    whether rows were left out."""
    rows: list[dict[str, Any]] = []
    for total in sorted(windows, key=lambda w: w.window_start, reverse=True):
        window = {"window_start": total.window_start.isoformat(), "window_end": total.window_end.isoformat()}
        counted = ((tag, labels) for tag, labels in total.tags.items() if labels)  # a row each
        for tag, labels in heapq.nlargest(max_rows - len(rows) + 1, counted, key=_busiest):
            rows += [
                {"tag": tag, "label": label, **window, "count": n} for label, n in sorted(labels.items())
            ]
            if len(rows) > max_rows:
                return rows[:max_rows], True
    return rows, False


def _busiest(tag_counts: tuple[str, dict[str, int]]) -> tuple[int, str]:
    tag, counts = tag_counts
    return sum(counts.values()), tag
