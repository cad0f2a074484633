"""The worker's watchdog: it never heartbeats while making no progress, and it stops when asked.

A thread, not an event-loop task, so that it also fires when the loop itself is blocked. It ends the
process (see :mod:`exits`) when

- a model call has not returned within ``inference_timeout_s``;
- tweets are in flight and no batch has finished within ``stall_timeout_s``;
- the event loop has not run for ``stall_timeout_s``;
- a stop was requested (SIGTERM / SIGINT) and the worker is still running ``shutdown_grace_s`` later.

It also answers the health endpoints: live unless output produced ``liveness_timeout_s`` ago is still
not committed, or no offset was committed for that long while there is lag (or the loop is blocked);
ready once a model is loaded and an assignment finished.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass

from tweetpulse.processors.exits import EXIT_SHUTDOWN_TIMEOUT, EXIT_STUCK, fatal

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Limits:
    inference_timeout_s: float
    stall_timeout_s: float
    shutdown_grace_s: float
    liveness_timeout_s: float


class Watchdog:
    """Progress bookkeeping (called from the event loop and the inference threads) and its checks."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._calls: dict[int, float] = {}  # model call id -> when it started
        self._ids = itertools.count()
        now = time.monotonic()
        self.in_flight = 0  # events taken from the stream whose batch has not finished
        self.last_progress = now  # a batch finished, or nothing was in flight
        self.last_beat = now  # the event loop ran
        self.last_commit = now  # offsets committed (or partitions assigned: a fresh start)
        self.lag = 0  # messages behind the high watermark, summed over assigned partitions
        self.lagging_since = now  # when the lag last rose from 0
        self.uncommitted_since: float | None = None  # the oldest output produced and not committed
        self.ready = False
        self._stop_deadline: float | None = None
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- bookkeeping ----------------------------------------------------------------------------

    def call_started(self) -> int:
        with self._lock:
            call = next(self._ids)
            self._calls[call] = time.monotonic()
            return call

    def call_finished(self, call: int) -> None:
        with self._lock:
            self._calls.pop(call, None)

    def taken(self, events: int) -> None:
        if self.in_flight == 0:
            self.last_progress = time.monotonic()  # the stall clock starts with the first event
        self.in_flight += events

    def finished(self, events: int) -> None:
        self.in_flight -= events
        self.last_progress = time.monotonic()

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def produced(self) -> None:
        if self.uncommitted_since is None:
            self.uncommitted_since = time.monotonic()

    def committed(self) -> None:
        self.last_commit = time.monotonic()
        self.uncommitted_since = None

    def gave_up(self) -> None:
        """Uncommitted output was aborted (its partitions moved on): nothing is waiting any more."""
        self.uncommitted_since = None

    def measured_lag(self, lag: int) -> None:
        if lag > 0 and self.lag == 0:
            self.lagging_since = time.monotonic()  # an idle worker gets new work: its clock starts now
        self.lag = lag

    def stop_requested(self) -> None:
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self.limits.shutdown_grace_s
            log.info("stopping", extra={"grace_s": self.limits.shutdown_grace_s})

    # -- health ---------------------------------------------------------------------------------

    def liveness(self) -> str | None:
        """None when live, else why not."""
        now = time.monotonic()
        if now - self.last_beat > self.limits.stall_timeout_s:
            return f"event loop blocked for {now - self.last_beat:.0f} s"
        # A commit that hangs (broker frozen) or keeps failing, whether or not the worker is behind.
        uncommitted = self.uncommitted_since
        if uncommitted is not None and now - uncommitted > self.limits.liveness_timeout_s:
            return f"output produced {now - uncommitted:.0f} s ago not committed yet"
        # Lagging, and no commit for the timeout, counted from the lag's start if that came later.
        waiting = now - max(self.last_commit, self.lagging_since)
        if self.lag > 0 and waiting > self.limits.liveness_timeout_s:
            return f"no offset committed for {waiting:.0f} s with lag {self.lag}"
        return None

    # -- checks ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            time.sleep(CHECK_INTERVAL_S)
            problem = self.check()
            if problem is not None:
                code, message = problem
                fatal(code, message)

    def check(self) -> tuple[int, str] | None:
        """The exit code and reason when the worker must end now, else None."""
        now, limits = time.monotonic(), self.limits
        if self._stop_deadline is not None and now > self._stop_deadline:
            return (
                EXIT_SHUTDOWN_TIMEOUT,
                f"still running {limits.shutdown_grace_s:g} s after the stop request",
            )
        with self._lock:
            oldest = min(self._calls.values(), default=None)
        if oldest is not None and now - oldest > limits.inference_timeout_s:
            return EXIT_STUCK, f"a model call did not return within {limits.inference_timeout_s:g} s"
        if self.in_flight > 0 and now - self.last_progress > limits.stall_timeout_s:
            return EXIT_STUCK, (
                f"{self.in_flight} tweets in flight and no batch finished for {limits.stall_timeout_s:g} s"
            )
        if now - self.last_beat > limits.stall_timeout_s:
            return EXIT_STUCK, f"the event loop did not run for {limits.stall_timeout_s:g} s"
        return None
