"""The windowed label counts: accumulated in the worker, published as deltas, tags bounded."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

OTHER_TAG = "(other)"  # what tags past the cap of a window are counted under


class WindowTags:
    """The tags counted in each open window, at most `max_tags` per window; windows older than
    `expires` are forgotten. Without the cap, per-key state would grow with whatever producers invent."""

    def __init__(self, max_tags: int, expires: timedelta) -> None:
        self.max_tags = max_tags
        self.expires = expires
        self._windows: dict[datetime, set[str]] = {}

    def admit(self, tag: str, window: datetime) -> str:
        """`tag` if the window counts it already or has room for it, else :data:`OTHER_TAG`."""
        for old in [w for w in self._windows if w < window - self.expires]:
            del self._windows[old]
        tags = self._windows.setdefault(window, set())
        if tag in tags or len(tags) < self.max_tags:
            tags.add(tag)
            return tag
        return OTHER_TAG

    def __len__(self) -> int:
        """Tags held over all open windows."""
        return sum(len(tags) for tags in self._windows.values())


class Aggregates:
    """Tweets per tag, label and window, counted in the worker and published as deltas.

    Every ``flush_s`` the counts added since the last flush go out as one record per (tag, label,
    window): key ``tag|label|window_start``, value ``{tag, label, window_start, window_end, count}``
    where ``count`` is the number of tweets added (downstream sums them per key). So the records written
    per tweet stay near one (its result) at any load, instead of one count per tag, label and batch.

    At-least-once: the events a flush counts are acked only after their counts are acknowledged, so a
    worker that dies never commits an uncounted tweet. A tweet re-processed after a crash is counted
    again; at most the tweets between the last commit and the crash (one commit interval plus one flush
    interval) are counted twice.
    """

    def __init__(
        self,
        window_s: int,
        expires_s: int,
        max_tags: int,
        publish: Callable[[list[tuple[bytes, bytes]]], Awaitable[None]],
        ack: Callable[[list[Any]], Awaitable[None]],
    ) -> None:
        self.window = timedelta(seconds=window_s)
        self.expires = timedelta(seconds=expires_s)
        self.tags = WindowTags(max_tags, self.expires)
        self._publish, self._ack = publish, ack
        self._pending: Counter[tuple[str, str, datetime]] = Counter()  # counted, not yet published
        self._held: list[list[Any]] = []  # events whose counts are pending, in ack order
        self.totals: Counter[tuple[str, str, datetime]] = Counter()  # this worker's, per open window
        self._lock = asyncio.Lock()

    def window_of(self, timestamp: float) -> datetime:
        size = self.window.total_seconds()
        return datetime.fromtimestamp(timestamp - timestamp % size, UTC)

    def add(self, tags: list[str], label: str, timestamp: float) -> None:
        window = self.window_of(timestamp)
        for tag in tags:
            self._pending[(self.tags.admit(tag, window), label, window)] += 1

    def hold(self, events: list[Any]) -> None:
        """Ack `events` after the next flush (call in input order)."""
        self._held.append(events)

    async def flush(self) -> None:
        """Publish the pending counts, then ack the events they count, oldest first."""
        async with self._lock:
            pending, self._pending = self._pending, Counter()
            held, self._held = self._held, []
            if pending:
                await self._publish([self._record(key, n) for key, n in pending.items()])
                self._keep_totals(pending)
            for events in held:
                await self._ack(events)

    def _record(self, key: tuple[str, str, datetime], count: int) -> tuple[bytes, bytes]:
        tag, label, window = key
        value = {
            "tag": tag,
            "label": label,
            "window_start": window.isoformat(),
            "window_end": (window + self.window).isoformat(),
            "count": count,
        }
        return f"{tag}|{label}|{value['window_start']}".encode(), json.dumps(value).encode()

    def _keep_totals(self, published: Counter[tuple[str, str, datetime]]) -> None:
        self.totals.update(published)
        cutoff = datetime.now(UTC) - self.expires
        for key in [k for k in self.totals if k[2] < cutoff]:
            del self.totals[key]
