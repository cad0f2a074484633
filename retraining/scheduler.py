"""The long-running retrainer: a run every interval, and early runs when the stream drifts.

With drift triggering on, two threads run beside the scheduler: the drift monitor (results in, drift
events out to ``tweets.drift``) and a listener on ``tweets.drift`` that wakes the scheduler, so a
drift event from any producer triggers a run. Drift-triggered runs are at least
``drift_cooldown_s`` apart. SIGTERM/SIGINT stop the scheduler between runs (a run in progress
finishes first; publishing is atomic, so a kill half-way leaves production as it was).

If a drift thread ends on its own (its Kafka code raised), the scheduler stops the same way and
:func:`run_scheduler` raises :class:`DriftThreadError`, so the process ends non-zero and its
orchestrator restarts it, rather than going on retraining on the interval with no drift detection.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from tweetpulse.contracts import ContractError, DriftEvent
from tweetpulse.offsets import watermarks
from tweetpulse.retraining.drift import DriftMonitor
from tweetpulse.retraining.run import Decision, retrain_once
from tweetpulse.settings import Settings

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
KEPT_DECISIONS = 100


class DriftThreadError(RuntimeError):
    """A drift thread (monitor or listener) stopped before the scheduler did."""


def parse_duration(text: str) -> float:
    """'90s', '30m', '6h', '1d' or plain seconds -> seconds."""
    match = _DURATION.match(text.lower())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"invalid duration {text!r}: expected e.g. 90s, 30m, 6h or 1d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


class DriftListener:
    """Sets `triggered` for every drift event produced to the drift topic from now on."""

    def __init__(self, settings: Settings, triggered: threading.Event) -> None:
        self.settings = settings
        self.triggered = triggered
        self.last: DriftEvent | None = None
        self.ready = threading.Event()

    def run(self, stop: threading.Event) -> None:
        topic = self.settings.topics.drift
        consumer = Consumer(
            self.settings.kafka.confluent_config(
                **{
                    "group.id": f"tweetpulse-retrain-drift-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                }
            )
        )
        try:
            ends = {p: high for p, (_, high) in watermarks(consumer, topic).items()}
            # Concrete end offsets (not OFFSET_END, resolved later): every event produced from now on is seen.
            consumer.assign([TopicPartition(topic, p, end) for p, end in ends.items()])
            self.ready.set()
            while not stop.is_set():
                for msg in consumer.consume(num_messages=100, timeout=0.5):
                    self._on_message(msg)
        finally:
            consumer.close()

    def _on_message(self, msg) -> None:
        if msg.error() is not None:
            return
        try:
            self.last = DriftEvent.from_bytes(msg.value() or b"")
        except ContractError as exc:
            log.error("malformed drift event ignored", extra={"error": str(exc)})
            return
        log.warning("drift event received", extra={"reasons": self.last.reasons})
        self.triggered.set()


@dataclass
class Schedule:
    every_s: float | None  # None: drift-triggered runs only
    on_drift: bool
    at_start: bool = False
    max_runs: int | None = None  # stop after this many runs (None: until stopped)


def run_scheduler(
    settings: Settings,
    schedule: Schedule,
    stop: threading.Event,
    retrain: Callable[[Settings, str], Decision] = retrain_once,
) -> list[Decision]:
    """Retrain on the schedule until `stop` is set; returns the last ``KEPT_DECISIONS`` decisions
    (every one is in the registry's decisions log)."""
    if schedule.every_s is None and not schedule.on_drift:
        raise ValueError("a schedule needs an interval, drift triggering, or both")
    drift = threading.Event()
    failures: list[str] = []  # drift threads that ended on their own
    threads = _start_drift_threads(settings, drift, stop, failures) if schedule.on_drift else []
    decisions: deque[Decision] = deque(maxlen=KEPT_DECISIONS)  # bounded: the scheduler runs for months
    runs = 0
    last_drift_run = float("-inf")
    next_due = time.monotonic() if schedule.at_start else _due(schedule)
    try:
        while not stop.is_set() and (schedule.max_runs is None or runs < schedule.max_runs):
            if drift.is_set() and time.monotonic() - last_drift_run >= settings.retrain.drift_cooldown_s:
                drift.clear()
                last_drift_run = time.monotonic()
                decisions.append(retrain(settings, "drift"))
                runs += 1
            elif time.monotonic() >= next_due:
                decisions.append(retrain(settings, "schedule"))
                runs += 1
                next_due = _due(schedule)
            else:
                if drift.is_set():  # inside the cooldown: noted, not acted on
                    log.info("drift within the cooldown; no early run")
                    drift.clear()
                stop.wait(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    if failures:
        raise DriftThreadError("; ".join(failures))
    return list(decisions)


def _due(schedule: Schedule) -> float:
    return time.monotonic() + schedule.every_s if schedule.every_s else float("inf")


def _start_drift_threads(
    settings: Settings, drift: threading.Event, stop: threading.Event, failures: list[str]
) -> list[threading.Thread]:
    listener = DriftListener(settings, drift)
    # One group per results topic, so a restarted retrainer resumes where it left off.
    monitor = DriftMonitor(settings, group_id=f"tweetpulse-drift-{settings.topics.sentiment}")
    threads = [
        _guarded("drift-listener", listener.run, stop, failures),
        _guarded("drift-monitor", monitor.run, stop, failures),
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while not (listener.ready.wait(0.1) or stop.is_set() or time.monotonic() > deadline):
        pass  # a listener that fails at once sets `stop` instead of `ready`
    return threads


def _guarded(
    name: str, target: Callable[[threading.Event], object], stop: threading.Event, failures: list[str]
) -> threading.Thread:
    """A thread running ``target(stop)``; if it raises or returns before `stop` is set, the failure is
    logged and recorded in `failures`, and `stop` is set so the scheduler ends (non-zero)."""

    def run() -> None:
        try:
            target(stop)
        except Exception as exc:
            failures.append(f"{name} crashed: {type(exc).__name__}: {exc}"[:500])
            log.exception(f"{name} crashed; the scheduler stops", extra={"component": name})
        else:
            if not stop.is_set():
                failures.append(f"{name} ended on its own")
                log.error(f"{name} ended on its own; the scheduler stops", extra={"component": name})
        finally:
            stop.set()  # also when logging fails: the scheduler must not go on without this thread

    return threading.Thread(target=run, name=name, daemon=True)
