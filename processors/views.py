"""The worker's web views (health, status, counts, Prometheus metrics) and its consumer-lag gauge."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tweetpulse.processors import metrics
from tweetpulse.processors.models import ServedModel
from tweetpulse.processors.watchdog import Watchdog

log = logging.getLogger(__name__)


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
        """The windows this worker's count agent holds: a row per window, tag and label."""
        rows = []
        for (_, (start, end)), totals in sorted(self.counts.table.data.items()):
            window = {
                "window_start": datetime.fromtimestamp(start, UTC).isoformat(),
                "window_end": datetime.fromtimestamp(round(end), UTC).isoformat(),
            }
            for tag, labels in sorted(totals.get("tags", {}).items()):
                rows += [
                    {"tag": tag, "label": label, **window, "count": n} for label, n in sorted(labels.items())
                ]
        return self.app.web.json({"worker": self.worker_name, "counts": rows})

    async def _metrics(self, request: Any) -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return self.app.web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])
