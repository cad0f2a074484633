"""The label counts: tweets per label, in all and per tag, in tumbling windows, at a bounded record cost.

Each classified batch adds to :class:`PendingCounts` in the worker. What is pending goes out as one
count event per open window (a :class:`LabelCounts` increment, key = the window's start) every
``agg_flush_s``, when a window closes, when a rebalance starts and when the worker stops. The count
agent adds each event to the window's running total (:func:`add_counts`, kept in a windowed Faust
table: one changelog record) and publishes the total on ``tweets.sentiment.agg`` (one record). A
flush thus costs three records per open window, whatever the load and however many tags: about 0.03
records per tweet at 100 tweets/s with the 1 s default flush, far less at full load.

A batch's offsets are committed only once its count event is acknowledged (batching.py), so counts
are at-least-once, as results are: a worker that dies has its uncommitted batches classified and
counted again by the partition's next owner. A window's count is too high by at most the tweets of
those batches (at most ``agg_flush_s`` + ``commit_interval_s`` of that worker's input), plus, should
the count agent die between publishing a total and committing its count event, that event once more.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from faust.serializers.codecs import Codec

from tweetpulse.contracts import MAX_TIME, MIN_TIME, ContractError, LabelCounts
from tweetpulse.processors import metrics

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
    """The window's new running total: what the table holds for it (`stored`: a total this agent
    wrote, or None where the changelog held something else, see :class:`ChangelogCodec`) plus
    `increment`. :class:`ContractError` when a sum would pass the contract's bound: the count agent
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


class ChangelogCodec(Codec):
    """JSON for the counts table's changelog, read back as untrusted: a key or value that is not a
    window's becomes None (a value the count agent counts from empty, a key no window has) and is
    counted, so that no record on the changelog can fail the table's recovery (Faust retries a
    failed recovery forever) and the table holds only what its readers can use."""

    def __init__(self, is_valid: Callable[[Any], bool], **kwargs: Any) -> None:
        super().__init__(is_valid=is_valid, **kwargs)
        self.is_valid = is_valid

    def _dumps(self, obj: Any) -> bytes:
        return json.dumps(obj).encode()

    def _loads(self, data: bytes) -> Any:
        try:
            obj = json.loads(data)
            if self.is_valid(obj):
                return obj
        except (ValueError, RecursionError):  # UnicodeDecodeError and ContractError are ValueErrors
            pass
        metrics.DEAD_LETTERS.labels("bad-changelog-record").inc()
        return None


_MIN_S, _MAX_S = MIN_TIME.timestamp(), MAX_TIME.timestamp()


def _is_window_key(obj: Any) -> bool:
    """A windowed table's key as Faust writes it, [key, [start, end]], within the contracts' range."""
    match obj:
        case [str(), [int() | float() as start, int() | float() as end]]:
            return _MIN_S <= start <= end < _MAX_S
    return False


def _is_window_totals(obj: Any) -> bool:
    """A window's counts as the table stores them: what a label-counts record may carry."""
    if not isinstance(obj, dict) or set(obj) != {"tweets", "tags"}:
        return False
    label_counts(_MIN_S, 60, obj)  # ContractError when not
    return True


WINDOW_KEYS = ChangelogCodec(_is_window_key)
WINDOW_TOTALS = ChangelogCodec(_is_window_totals)


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
    """Counts of classified tweets not yet sent, per window start (epoch seconds).

    Due when the oldest has waited ``flush_s`` (the bound on staleness, and on how long commits wait
    for them) or a window they count in has closed."""

    def __init__(self, window_s: int, flush_s: float, max_tags: int) -> None:
        self.window_s = window_s
        self.flush_s = flush_s
        self.max_tags = max_tags
        self._windows: dict[float, WindowCounts] = {}
        self._since: float | None = None  # when the oldest pending count was added
        self._sent: asyncio.Future[None] | None = None  # resolved once the pending counts are sent

    def add(self, tweets: Iterable[tuple[list[str], str]], now: float) -> asyncio.Future[None] | None:
        """Counts each (tags, label) tweet in the window of `now`; the future resolves once they are
        sent (None when there is nothing to count)."""
        window: WindowCounts | None = None
        for tags, label in tweets:
            if window is None:
                start = window_start(now, self.window_s)
                window = self._windows.setdefault(start, WindowCounts(self.max_tags))
            window.add_tweet(label)
            for tag in tags:
                window.add_tag(tag, label)
        if window is None:
            return None
        if self._since is None:
            self._since = now
        if self._sent is None:
            self._sent = asyncio.get_running_loop().create_future()
        return self._sent

    def due(self, now: float) -> bool:
        if self._since is None:
            return False
        return now - self._since >= self.flush_s or min(self._windows) + self.window_s <= now

    def take(self) -> tuple[list[LabelCounts], asyncio.Future[None]] | None:
        """The pending counts, one increment per window, and the future to resolve once they are
        sent; None when there are none."""
        if self._sent is None:
            return None
        increments = [label_counts(start, self.window_s, w.totals()) for start, w in self._windows.items()]
        taken = increments, self._sent
        self._windows, self._since, self._sent = {}, None, None
        return taken
