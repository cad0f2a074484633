"""`tweetpulse process` workers as subprocesses, exactly as an operator starts them, for the bench."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tweetpulse.settings import Settings


class WorkerError(RuntimeError):
    """A worker exited or did not get its partitions in time; the message holds its log tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    """One `tweetpulse process` subprocess, its log file and its status web view."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.started = time.monotonic()
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tweetpulse", "process"],
                env={**env, "TWEETPULSE_PROCESSOR__WEB_PORT": str(self.port)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

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

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


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
