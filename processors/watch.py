"""``tweetpulse watch``: the latest classified tweets and running counts per label, on the console.

It runs in the foreground, so a Kafka error ends the command (non-zero) with its message; a result it
cannot show is never one: :meth:`Watcher.handle` has one outcome for any bytes.
"""

from __future__ import annotations

import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TextIO

from confluent_kafka import Consumer, KafkaException

from tweetpulse.contracts import ContractError, SentimentResult
from tweetpulse.settings import Settings

COLORS = {"positive": "\033[32m", "negative": "\033[31m"}
RESET = "\033[0m"
MAX_REASON_CHARS = 300  # of an error's text on the console: it may quote part of a value

Outcome = Literal["shown", "unreadable"]


def format_result(result: SentimentResult, color: bool) -> str:
    confidence = result.probabilities[result.label]
    label = f"{result.label:<8}"
    if color:
        label = f"{COLORS.get(result.label, '')}{label}{RESET}"
    text = " ".join(result.text.split())
    text = text if len(text) <= 100 else text[:99] + "…"
    return f"{label} {confidence:4.2f}  [{result.model_version}]  {text}"


def format_counts(counts: Counter[str], total: int, unreadable: int = 0) -> str:
    parts = [f"{label}={n} ({n / total:.0%})" for label, n in sorted(counts.items())] if total else []
    skipped = f" ({unreadable} unreadable skipped)" if unreadable else ""
    return f"-- {total} classified{skipped}: " + ", ".join(parts)


def say(out: TextIO, line: str, flush: bool = False) -> None:
    """Print `line`; a console that cannot encode a character (an ASCII locale) gets it escaped."""
    try:
        print(line, file=out, flush=flush)
    except UnicodeEncodeError:
        encoding = getattr(out, "encoding", None) or "ascii"
        print(line.encode(encoding, "backslashreplace").decode(encoding), file=out, flush=flush)


@dataclass
class Watcher:
    """The console's running state: what was shown, counted per label, and what was skipped."""

    out: TextIO
    color: bool = False
    summary_every: int = 20
    counts: Counter[str] = field(default_factory=Counter)
    total: int = 0
    unreadable: int = 0
    started: float = field(default_factory=time.monotonic)
    status: Callable[[], str] | None = None  # appended to the running counts line (the demo's trainer)

    def handle(self, value: bytes | None, offset: int = -1) -> Outcome:
        """Show one ``tweets.sentiment`` value, or say why it cannot be shown (never its bytes)."""
        try:
            result = SentimentResult.from_bytes(value or b"")
            line = format_result(result, self.color)
        except Exception as exc:  # a contract error, or a value nobody foresaw: skipped and counted
            reason = str(exc) if isinstance(exc, ContractError) else f"{type(exc).__name__}: {exc}"
            self.unreadable += 1
            say(self.out, f"!! unreadable result at offset {offset}: {reason[:MAX_REASON_CHARS]}")
            return "unreadable"
        self.counts[result.label] += 1
        self.total += 1
        say(self.out, line)
        if self.total % self.summary_every == 0:
            rate = self.total / max(time.monotonic() - self.started, 1e-9)
            status = f"  | {self.status()}" if self.status else ""
            say(self.out, f"{self.summary()}  ~{rate:.0f}/s{status}", flush=True)
        return "shown"

    def summary(self) -> str:
        return format_counts(self.counts, self.total, self.unreadable)


def watch(
    settings: Settings,
    from_beginning: bool = False,
    summary_every: int = 20,
    limit: int | None = None,
    out: TextIO = sys.stdout,
    status: Callable[[], str] | None = None,
) -> int:
    """Print results from the sentiment topic until Ctrl-C (or `limit` results); returns how many."""
    consumer = Consumer(
        settings.kafka.confluent_config(
            **{
                "group.id": f"tweetpulse-watch-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest" if from_beginning else "latest",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([settings.topics.sentiment])
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    previous = signal.signal(signal.SIGINT, _stop)
    watcher = Watcher(out, out.isatty(), summary_every, status=status)
    try:
        while not stop and (limit is None or watcher.total < limit):
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                if msg.error() is not None and msg.error().fatal():
                    raise KafkaException(msg.error())  # the consumer cannot go on: say so, non-zero
                if msg.error() is not None or (limit is not None and watcher.total >= limit):
                    continue
                watcher.handle(msg.value(), msg.offset())
    finally:
        signal.signal(signal.SIGINT, previous)
        consumer.close()
        say(out, watcher.summary(), flush=True)
    return watcher.total
