"""`tweetpulse process` workers as subprocesses, exactly as an operator starts them, for the bench."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tweetpulse import children
from tweetpulse.settings import Settings


class WorkerError(RuntimeError):
    """A worker exited or did not get its partitions in time; the message holds its log tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_gone(pid: int) -> bool:
    """Whether no process has this id (another user's process counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def worker_env(settings: Settings, app_id: str, registry_root: Path, **extra: str) -> dict[str, str]:
    """The environment of a worker that reads the topics of `settings` in consumer group `app_id`."""
    t = settings.topics
    env = {
        **os.environ,
        "TWEETPULSE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "TWEETPULSE_TOPICS__RAW": t.raw,
        "TWEETPULSE_TOPICS__SENTIMENT": t.sentiment,
        "TWEETPULSE_TOPICS__DLQ": t.dlq,
        "TWEETPULSE_TOPICS__AGGREGATES": t.aggregates,
        "TWEETPULSE_TOPICS__MODELS": t.models,
        "TWEETPULSE_TOPICS__LABELED": t.labeled,
        "TWEETPULSE_TOPICS__DRIFT": t.drift,
        "TWEETPULSE_TOPICS__PARTITIONS": str(t.partitions),
        "TWEETPULSE_REGISTRY__ROOT": str(registry_root),
        "TWEETPULSE_PROCESSOR__APP_ID": app_id,
        "TWEETPULSE_LOG_FORMAT": "text",
        **extra,
    }
    env.pop("TWEETPULSE_CONFIG", None)
    return env


class WorkerProcess:
    """One `tweetpulse process` subprocess, its log file and its status web view.

    The worker runs in its own session (a Ctrl-C at the terminal reaches the bench, which then stops
    it) and gets SIGKILL when the bench process dies, even killed outright (tweetpulse/children.py)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.started = time.monotonic()
        self.proc = children.spawn(
            [sys.executable, "-m", "tweetpulse", "process"],
            log_path,
            env={**env, "TWEETPULSE_PROCESSOR__WEB_PORT": str(self.port)},
            death_signal=signal.SIGKILL,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self) -> dict[str, Any] | None:
        try:
            url = f"http://127.0.0.1:{self.port}/tweetpulse/status/"
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    def assigned(self) -> list[int]:
        status = self.status()
        return status["assigned_partitions"] if status and not status["rebalancing"] else []

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise WorkerError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")

    def terminate(self) -> None:
        """Ask the worker to stop (SIGTERM: it finishes its in-flight batch, commits and leaves)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then SIGKILL (to its whole process group) if it has not exited after `timeout`
        seconds; returns its exit status once it is gone."""
        children.stop([(self.proc, signal.SIGTERM)], timeout)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL to its whole process group (its own session)."""
        children.kill(self.proc)


def stop_all(workers: Iterable[WorkerProcess], timeout: float = 30) -> None:
    """Stop every worker, all at once: SIGTERM to each, then SIGKILL to those still running when
    `timeout` seconds have passed. Always returns with every worker gone, also on a second Ctrl-C."""
    children.stop([(worker.proc, signal.SIGTERM) for worker in workers], timeout)


def wait_until_assigned(workers: list[WorkerProcess], partitions: int, timeout: float = 180) -> float:
    """Block until the workers own every partition between them (each some, none twice).

    Returns the seconds from the first worker's start until then (the start-up cost).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owned = [w.assigned() for w in workers]
        flat = sorted(p for ps in owned for p in ps)
        if all(owned) and flat == list(range(partitions)):
            return time.monotonic() - min(w.started for w in workers)
        for worker in workers:
            worker.check_alive()
        time.sleep(0.1)
    tails = "\n".join(w.log_tail() for w in workers)
    raise WorkerError(
        f"{len(workers)} worker(s) did not share {partitions} partitions in {timeout}s\n{tails}"
    )
