"""Replay a tweet file (any format :mod:`tweetpulse.tweetfiles` reads) as raw-tweet messages.

A malformed line is reported (line number and reason), counted and skipped; the run goes on.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from tweetpulse.contracts import IDENTIFIER, RawTweet, describe_validation_error, utcnow
from tweetpulse.tweetfiles import BadRecord, Format, read_records

log = logging.getLogger(__name__)

MAX_BAD_LINE_LOGS = 100  # then only the count grows, so a garbage file cannot flood the log
MAX_ID_CHARS = 64  # contracts.TweetId's max_length
_ID_CHARS = re.compile(IDENTIFIER)


@dataclass
class ReplayCounts:
    read: int = 0
    malformed: int = 0
    passes: int = 0


class Pacer:
    """Holds a loop to ``rate`` iterations per second (None or 0: as fast as possible)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()

    def wait(self) -> None:
        if not self.interval:
            return
        self._next += self.interval
        ahead = self._next - time.monotonic()
        if ahead > 0.001:  # sleeping less than a millisecond costs more than it buys
            time.sleep(ahead)
        elif ahead < -1.0:  # fell far behind (a stall): do not burst to catch up
            self._next = time.monotonic()


def replay_tweets(
    path: str | Path,
    fmt: Format = "auto",
    encoding: str = "utf-8",
    loop: bool = False,
    limit: int | None = None,
    counts: ReplayCounts | None = None,
) -> Iterator[RawTweet]:
    """The file's tweets as RawTweets (labels carried when present), ``limit`` at most, over and over
    when ``loop``. Ids come from the file when it has them, else ``replay-<file>-<line>``; passes after
    the first get a ``:<pass>`` suffix so each replayed message is its own tweet."""
    path = Path(path)
    counts = counts if counts is not None else ReplayCounts()
    prefix = f"replay-{re.sub(r'[^A-Za-z0-9_.-]', '_', path.stem)[:40]}-"
    while limit is None or counts.read < limit:
        counts.passes += 1
        produced_this_pass = 0
        for rec in read_records(path, fmt, encoding):
            if limit is not None and counts.read >= limit:
                return
            if isinstance(rec, BadRecord):
                _report_bad(path, rec, counts)
                continue
            try:
                if rec.tweet is not None:
                    tweet = rec.tweet.model_copy(  # no validation: loop_id keeps the id valid
                        update={"id": loop_id(rec.tweet.id, counts.passes), "ingested_at": utcnow()}
                    )
                else:
                    tweet = RawTweet(
                        id=loop_id(rec.id or f"{prefix}{rec.line}", counts.passes),
                        text=rec.text,
                        label=rec.label,
                        source="replay",
                    )
            except ValidationError as exc:
                _report_bad(path, BadRecord(rec.line, describe_validation_error(exc)), counts)
                continue
            counts.read += 1
            produced_this_pass += 1
            yield tweet
        if not loop or not produced_this_pass:
            return


def loop_id(base: str, passes: int) -> str:
    """``base`` on the first pass, ``base:<pass>`` after. Past the contract's length the head is kept
    with a digest of the whole in place of the rest, so ids stay valid and distinct for any id and
    any number of passes; an invalid id is left so, to be refused as on the first pass."""
    if passes == 1:
        return base
    full = f"{base}:{passes}"
    if len(full) <= MAX_ID_CHARS or len(base) > MAX_ID_CHARS or not _ID_CHARS.fullmatch(base):
        return full
    digest = hashlib.blake2b(full.encode(), digest_size=8).hexdigest()
    return f"{full[: MAX_ID_CHARS - len(digest) - 1]}-{digest}"


def _report_bad(path: Path, bad: BadRecord, counts: ReplayCounts) -> None:
    counts.malformed += 1
    if counts.malformed <= MAX_BAD_LINE_LOGS:
        log.warning(
            "skipped malformed line", extra={"file": str(path), "line": bad.line, "reason": bad.reason}
        )
    elif counts.malformed == MAX_BAD_LINE_LOGS + 1:
        log.warning("more malformed lines: only counting them now", extra={"file": str(path)})
