"""The worker's Faust monitor: no bookkeeping per record, and the two hooks the worker needs.

Faust adds its ``Monitor`` to every app and calls it four times per record (in, stream in, stream
out, out), each time updating counters, timings and ``str(stream)`` lookups that only Faust's own
stats pages read; the worker's metrics are its Prometheus ones (``/metrics``). This monitor keeps
Faust's per-commit, per-send and per-rebalance statistics, drops the per-record ones, and tells the
worker when offsets were committed (liveness) and when a rebalance starts (pending label counts
go out, so that Faust's wait for held events ends).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faust.sensors.monitor import Monitor


class WorkerMonitor(Monitor):
    """Faust's Monitor without per-record statistics; ``on_commit`` runs after each commit that
    moved an offset, ``on_rebalance`` when a rebalance starts (on the consumer's thread)."""

    def __init__(
        self,
        on_commit: Callable[[], None] | None = None,
        on_rebalance: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.on_commit = on_commit
        self.on_rebalance = on_rebalance

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> dict | None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: dict | None = None
    ) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_commit_initiated(self, consumer: Any) -> Any:
        return super().on_commit_initiated(consumer), dict(consumer._committed_offset)

    def on_commit_completed(self, consumer: Any, state: Any) -> None:
        started, offsets = state
        super().on_commit_completed(consumer, started)
        # Faust reports a commit with nothing to commit as completed too: that is no progress.
        if self.on_commit is not None and consumer._committed_offset != offsets:
            self.on_commit()

    def on_rebalance_start(self, app: Any) -> dict:
        if self.on_rebalance is not None:
            self.on_rebalance()
        return super().on_rebalance_start(app)
