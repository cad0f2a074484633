"""Child processes that never outlive their parent: the demo's and the bench's one supervisor.

A child runs in its own session (a Ctrl-C at the terminal reaches only the parent, which then stops
it), with the default SIGINT (an ignored one, as in a background job, would survive exec), and is
told by the kernel (Linux's PR_SET_PDEATHSIG) to stop with a signal when the thread that started it
dies, so that a parent killed outright (-9) leaves no child behind. libc's ``prctl`` is looked up
here, in the parent, at import: loading a library (dlopen) in a forked child can deadlock.

Stopping never leaves a child running: each gets its stop signal, then SIGKILL (to its whole
process group) if it has not exited in time, also when a second Ctrl-C interrupts the wait.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


def _prctl() -> Any:
    """libc's prctl, or None where there is none (not Linux): cleanup still stops the children."""
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def _in_child(death_signal: int) -> Callable[[], None]:
    """What runs in the child between fork and exec: no import, no library loaded."""

    def setup() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, death_signal)

    return setup


def spawn(
    args: list[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    death_signal: int = signal.SIGTERM,
    append: bool = False,
) -> subprocess.Popen:
    """Start `args` in its own session, its stdout and stderr to `log`; it gets `death_signal` when
    the thread that started it dies."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab" if append else "wb") as out:
        return subprocess.Popen(
            args,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_in_child(death_signal),
        )


def kill(proc: subprocess.Popen) -> int:
    """SIGKILL to the child's process group (its own session) and to it; returns its exit status."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.kill()
    return proc.wait()


def stop(procs: Sequence[tuple[subprocess.Popen, int]], timeout: float = 30) -> None:
    """Stop the children all at once: each (child, stop signal) gets its signal, then SIGKILL those
    still running after `timeout` seconds. Returns with every child gone, also when a second Ctrl-C
    interrupts the wait."""
    try:
        for proc, sig in procs:
            if proc.poll() is None:
                proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        for proc, _ in procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                kill(proc)
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                kill(proc)


def say(message: str) -> None:
    """Print a status line; a closed stdout (the reader of a pipe is gone) is no error."""
    with contextlib.suppress(OSError, ValueError):  # BrokenPipeError is an OSError
        print(f"==> {message}", flush=True)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP are ignored meanwhile (only the main thread handles signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = [signal.signal(s, signal.SIG_IGN) for s in stops]
    try:
        yield
    finally:
        for s, handler in zip(stops, previous, strict=True):
            signal.signal(s, handler)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    stop_signal: int


class Children:
    """The named processes a command started (the demo's pipeline, a seed training), stopped newest
    first however the command ends: the producer flushes before the worker commits and stops.

    `death_signal`: what each child gets when this process dies without stopping them (SIGTERM: the
    worker still commits). `report`: where the "NAME stopped (exit N)" lines go, once every child is
    stopped (stdout may be a closed pipe)."""

    def __init__(self, death_signal: int = signal.SIGTERM, report: Callable[[str], None] = say) -> None:
        self.death_signal = death_signal
        self.report = report
        self.running: list[Child] = []
        self.stopped: list[str] = []

    def start(
        self,
        name: str,
        args: list[str],
        log: Path,
        stop_signal: int = signal.SIGINT,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen:
        """Start a child, its output appended to `log`; `stop_signal` asks it to stop cleanly; `env`
        (none: this process's)."""
        proc = spawn(args, log, env=env, death_signal=self.death_signal, append=True)
        self.running.append(Child(name, proc, stop_signal))
        return proc

    def forget(self, proc: subprocess.Popen) -> None:
        """A child that has exited and needs no stopping."""
        self.running = [child for child in self.running if child.proc is not proc]

    def stop_all(self, timeout: float = 30) -> None:
        """Stop the children newest first, each `timeout` seconds before SIGKILL, ignoring Ctrl-C,
        SIGTERM and SIGHUP meanwhile; then report."""
        with signals_deferred():
            while self.running:
                child = self.running.pop()
                stop([(child.proc, child.stop_signal)], timeout)
                self.stopped.append(f"{child.name} stopped (exit {child.proc.returncode})")
        while self.stopped:
            self.report(self.stopped.pop(0))
