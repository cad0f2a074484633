"""``tweetpulse demo`` (``make demo``): the whole pipeline on built-in defaults, stopped by Ctrl-C.

Kafka, topics, a model (a first one is trained on the built-in data when the registry has no
production model), one worker, a synthetic stream at 50 tweets/s, and `watch` in the foreground.
The worker and the producer run in their own sessions, so Ctrl-C reaches only this process, which
then stops the producer first (it flushes), then the worker (it finishes its batch and commits).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tweetpulse import localkafka
from tweetpulse.kafka import create_topics
from tweetpulse.registry import ModelRegistry
from tweetpulse.settings import Settings

STATE_DIR = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "tweetpulse" / "demo"
# The first model: the `fast` recipe on 4,800 class-balanced built-in tweets (~3.5 min on 2 cores).
# The `seed` recipe on the raw built-in data (70% negative) learned little beyond that prior: 0.47
# accuracy on shared/data's validation tweets and 0.53 on the synthetic stream; this one 0.86 and 0.89.
TRAIN = ["train", "--preset", "fast", "--data", "builtin", "--balance", "--max-samples", "4800", "--promote"]


def _tweetpulse(*args: str) -> list[str]:
    return [sys.executable, "-m", "tweetpulse", *args]


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


def ensure_model(settings: Settings) -> bool:
    registry = ModelRegistry(settings.registry.root)
    if registry.production():
        _say(f"model: {registry.production()} from {registry.root}")
        return True
    help_run = subprocess.run(_tweetpulse("train", "--help"), capture_output=True, check=False)
    if help_run.returncode != 0:
        _say("no production model and no `tweetpulse train` command in this install; cannot continue")
        return False
    _say(f"no production model in {registry.root}: training a first one on the built-in data (a few minutes)")
    trainer = subprocess.Popen(_tweetpulse(*TRAIN))
    try:
        trainer.wait()
    except KeyboardInterrupt:
        _stop(trainer, "training")
        raise
    return trainer.returncode == 0 and bool(registry.production())


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(worker: subprocess.Popen, port: int, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/tweetpulse/status/", timeout=2) as r:
                if json.loads(r.read())["assigned_partitions"]:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _stop(proc: subprocess.Popen, name: str, sig: int = signal.SIGINT, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _say(f"{name} did not stop within {timeout:.0f}s; killing it")
            proc.kill()
            proc.wait()
    _say(f"{name} stopped (exit {proc.returncode})")


def run_demo(settings: Settings, rate: float = 50.0) -> int:
    try:
        return _run(settings, rate)
    except KeyboardInterrupt:
        _say("interrupted")
        return 130


def _run(settings: Settings, rate: float) -> int:
    from tweetpulse.processors.watch import watch

    STATE_DIR.mkdir(parents=True, exist_ok=True)
    _say("starting Kafka (a no-op when it runs)")
    if localkafka.run("start") != 0:
        return 1
    for name, outcome in create_topics(settings).items():
        _say(f"topic {name}: {outcome}")
    if not ensure_model(settings):
        return 1
    worker_log, producer_log = STATE_DIR / "worker.log", STATE_DIR / "producer.log"
    worker = _start(_tweetpulse("process"), worker_log)
    producer = dashboard = None
    try:
        _say(f"worker started (pid {worker.pid}, log {worker_log}); waiting for its partitions")
        if not _wait_ready(worker, settings.processor.web_port):
            _say(f"the worker did not become ready; see {worker_log}")
            return 1
        producer = _start(
            _tweetpulse("produce", "synthetic", "--count", "0", "--rate", str(rate), "--no-progress"),
            producer_log,
        )
        _say(f"streaming synthetic tweets at {rate:g}/s (log {producer_log}); Ctrl-C stops everything")
        dashboard = _start(_tweetpulse("dashboard", "--replay-minutes", "10"), STATE_DIR / "dashboard.log")
        d = settings.dashboard
        _say(f"live dashboard: http://{d.host}:{d.port}/ (log {STATE_DIR / 'dashboard.log'})")
        watch(settings)
    finally:
        if dashboard is not None:
            _stop(dashboard, "dashboard")
        if producer is not None:
            _stop(producer, "producer")
        _stop(worker, "worker", signal.SIGTERM)
    return 0
