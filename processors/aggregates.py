"""The label counts: accumulated in the worker, sent as few count events as the load allows, and bounded.

Every classified tweet adds to a count per ``tag|label`` and tumbling window. Sending one count event
per tag, label and micro-batch cost up to three records per key and batch (the count event, the
table's changelog record and the aggregate update: 1.94 records per tweet at full load, 3.76 at 100
tweets/s). :class:`PendingCounts` holds them instead until sending them is cheap or they are due, and
the tweets they count are acknowledged (their offsets committed) only after their count events are:
at-least-once for the counts as for the results.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta

OTHER_TAG = "(other)"  # what tags past the cap of a window are counted under
RECORDS_PER_KEY = 3  # a count event, the table's changelog record, the aggregate update
TWEETS_PER_RECORD = 10  # the count records of a flush stay at most 1 per 10 tweets counted (<= 1.1 per tweet)


def window_start(timestamp: float, window_s: int) -> float:
    """The start (epoch seconds) of the tumbling window `timestamp` falls in: the one rule for both
    the worker's pending counts and the count agent."""
    return timestamp - timestamp % window_s


class PendingCounts:
    """Counts of classified tweets not yet sent, per window start (epoch seconds) and ``tag|label``.

    Due when the tweets pending pay for their records (at least ``TWEETS_PER_RECORD`` tweets per count
    record: a flush adds at most 0.1 records per tweet), when a window they count in has closed, or
    when the oldest has waited ``flush_s`` (the bound on staleness, and on how long commits wait).
    """

    def __init__(self, window_s: int, flush_s: float) -> None:
        self.window_s = window_s
        self.flush_s = flush_s
        self._windows: dict[float, Counter[str]] = {}
        self._tweets = 0
        self._since: float | None = None  # when the oldest pending count was added
        self._sent: asyncio.Future[None] | None = None  # resolved once the pending counts are sent

    def add(self, keys: Iterable[str], tweets: int, now: float) -> asyncio.Future[None] | None:
        """Counts `keys` (one per tweet and tag) in the window of `now`; the future resolves once
        they are sent (None when there is nothing to count)."""
        counts = Counter(keys)
        if not counts:
            return None
        window = window_start(now, self.window_s)
        self._windows.setdefault(window, Counter()).update(counts)
        self._tweets += tweets
        if self._since is None:
            self._since = now
        if self._sent is None:
            self._sent = asyncio.get_running_loop().create_future()
        return self._sent

    def due(self, now: float) -> bool:
        if self._since is None:
            return False
        records = RECORDS_PER_KEY * sum(len(counts) for counts in self._windows.values())
        closed = min(self._windows) + self.window_s <= now
        return closed or self._tweets >= TWEETS_PER_RECORD * records or now - self._since >= self.flush_s

    def take(self) -> tuple[dict[float, Counter[str]], asyncio.Future[None]] | None:
        """The pending counts and the future to resolve once they are sent; None when there are none."""
        if self._sent is None:
            return None
        taken = self._windows, self._sent
        self._windows, self._tweets, self._since, self._sent = {}, 0, None, None
        return taken


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
