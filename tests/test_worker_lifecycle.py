"""A worker never hangs silently: it stops within the grace in every state, and exits when stuck.

Real workers (subprocesses), real brokers, the really fine-tuned tiny model. The frozen-broker test
uses a broker of its own (SIGSTOP), never the shared one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import test_faults
import test_processors_pipeline as processor_tests
from test_processors_pipeline import (  # the workers' test helpers, shared rather than copied
    WORKER_ENV,
    Worker,
    free_port,
    labeled_tweets,
    produce_tweets,
    wait_for,
    wait_for_assignment,
)

from tweetpulse.bench.workers import worker_env
from tweetpulse.processors.exits import EXIT_STUCK
from tweetpulse.registry import ModelRegistry
from tweetpulse.settings import Settings

GRACE_S = 8

registry = processor_tests.registry  # fixtures
start_worker = processor_tests.start_worker
own_broker = test_faults.own_broker


def stop_within_grace(worker: Worker) -> float:
    """SIGTERM `worker`; the seconds until it exited (fails past the grace, plus a second of slack)."""
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    try:
        worker.proc.wait(GRACE_S + 10)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        pytest.fail(f"still running {GRACE_S + 10} s after SIGTERM:\n{worker.log()[-3000:]}")
    took = time.monotonic() - started
    assert took <= GRACE_S + 1, f"stopped after {took:.1f} s, the grace is {GRACE_S} s"
    return took


def test_sigterm_stops_a_worker_whose_broker_froze_mid_stream_within_the_grace(
    own_broker: str, registry: ModelRegistry, tmp_path: Path
) -> None:
    settings, suffix = test_faults.own_broker_settings(own_broker)
    env = {
        **worker_env(settings, f"tp-freeze-{suffix}", registry.root),
        **WORKER_ENV,
        "TWEETPULSE_PROCESSOR__SHUTDOWN_GRACE_S": str(GRACE_S),
        "TWEETPULSE_PROCESSOR__LIVENESS_TIMEOUT_S": "4",
    }
    worker = Worker(env, tmp_path / "worker.log")
    broker_pid = int((tmp_path / "kafka" / "kafka.pid").read_text())
    try:
        wait_for_assignment([worker], 3)
        producer = threading.Thread(target=produce_tweets, args=(settings, labeled_tweets(3000), 300.0))
        producer.start()
        wait_for(lambda: (worker.status() or {}).get("processed_offsets"), 60, "the first results", [worker])
        wait_for(lambda: worker.get("/livez") is not None, 30, "/livez to pass (offsets committed)", [worker])
        os.kill(broker_pid, signal.SIGSTOP)  # sends and commits now hang: a stuck batch
        wait_for(lambda: worker.get("/livez") is None, 30, "/livez to fail (output not committed)", [worker])
        stop_within_grace(worker)
    finally:
        os.kill(broker_pid, signal.SIGCONT)
        worker.stop()
        producer.join(60)


def test_a_worker_that_cannot_reach_any_broker_exits_non_zero_saying_so(
    settings: Settings, registry: ModelRegistry, tmp_path: Path
) -> None:
    nowhere = settings.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    env = {
        **worker_env(settings.model_copy(update={"kafka": nowhere}), "tp-nowhere", registry.root),
        **WORKER_ENV,
        "TWEETPULSE_PROCESSOR__SHUTDOWN_GRACE_S": str(GRACE_S),
    }
    worker = Worker(env, tmp_path / "worker.log")
    try:
        worker.proc.wait(120)
    except subprocess.TimeoutExpired:
        stop_within_grace(worker)  # still trying: then it must at least stop when asked
    else:
        assert worker.proc.returncode != 0
        assert "cannot start on the Kafka cluster at 127.0.0.1:" in worker.log()


def test_sigterm_while_the_model_loads_stops_the_worker_at_once(
    settings: Settings, start_worker: Callable[..., Worker]
) -> None:
    worker = start_worker(TWEETPULSE_PROCESSOR__SHUTDOWN_GRACE_S=str(GRACE_S))
    time.sleep(1.0)  # importing, loading and warming the model
    assert "partitions assigned" not in worker.log()
    stop_within_grace(worker)


def test_a_model_call_past_its_timeout_ends_the_worker_with_the_stuck_exit_code(
    settings: Settings, start_worker: Callable[..., Worker]
) -> None:
    # Every real model call takes longer than a microsecond: the watchdog sees one still running.
    worker = start_worker(TWEETPULSE_PROCESSOR__INFERENCE_TIMEOUT_S="0.000001")
    wait_for_assignment([worker], settings.topics.partitions)
    produce_tweets(settings, labeled_tweets(3000))
    deadline = time.monotonic() + 120
    while worker.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert worker.proc.returncode == EXIT_STUCK, worker.log()[-3000:]
    assert "a model call did not return within" in worker.log()
