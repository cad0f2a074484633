"""``tweetpulse watch``: the latest classified tweets and running counts per label, on the console."""

from __future__ import annotations

import signal
import sys
import time
import uuid
from collections import Counter
from typing import TextIO

from tweetpulse.contracts import ContractError, SentimentResult
from tweetpulse.settings import Settings

COLORS = {"positive": "\033[32m", "negative": "\033[31m"}
RESET = "\033[0m"


def format_result(result: SentimentResult, color: bool) -> str:
    confidence = result.probabilities[result.label]
    label = f"{result.label:<8}"
    if color:
        label = f"{COLORS.get(result.label, '')}{label}{RESET}"
    text = " ".join(result.text.split())
    text = text if len(text) <= 100 else text[:99] + "…"
    return f"{label} {confidence:4.2f}  [{result.model_version}]  {text}"


def format_counts(counts: Counter[str], total: int) -> str:
    parts = [f"{label}={n} ({n / total:.0%})" for label, n in sorted(counts.items())] if total else []
    return f"-- {total} classified: " + ", ".join(parts)


def watch(
    settings: Settings,
    from_beginning: bool = False,
    summary_every: int = 20,
    limit: int | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print results from the sentiment topic until Ctrl-C (or `limit` results); returns how many."""
    from confluent_kafka import Consumer

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
    counts: Counter[str] = Counter()
    total = 0
    color = out.isatty()
    started = time.monotonic()
    try:
        while not stop and (limit is None or total < limit):
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                if msg.error() is not None or (limit is not None and total >= limit):
                    continue
                try:
                    result = SentimentResult.from_bytes(msg.value())
                except ContractError as exc:
                    print(f"!! unreadable result at offset {msg.offset()}: {exc}", file=out)
                    continue
                counts[result.label] += 1
                total += 1
                print(format_result(result, color), file=out)
                if total % summary_every == 0:
                    rate = total / max(time.monotonic() - started, 1e-9)
                    print(f"{format_counts(counts, total)}  ~{rate:.0f}/s", file=out, flush=True)
    finally:
        signal.signal(signal.SIGINT, previous)
        consumer.close()
        print(format_counts(counts, total), file=out, flush=True)
    return total
