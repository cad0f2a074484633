"""The fault suite (issue #5): the pipeline loses nothing when workers die, the broker restarts,
input is garbage or a model is corrupt, and never prints a secret. Run alone: ``pytest -m fault``.

Real `tweetpulse process` workers and producers as subprocesses on the real broker, with the
worker helpers of tests/test_processors_pipeline.py (short group timeouts, status web view).
The broker-restart test starts a broker of its own on another port; the shared one is never touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import test_processors_pipeline as processor_tests
from test_processors_pipeline import (  # the workers' test helpers, shared rather than copied
    BAD_INPUT,
    WORKER_ENV,
    Worker,
    _processed,
    labeled_tweets,
    produce,
    produce_tweets,
    wait_for,
    wait_for_assignment,
)
from xapi_server import Connection, XApiServer, make_tweet

from tweetpulse import localkafka
from tweetpulse.bench.kafka_io import Received, ResultReader
from tweetpulse.bench.workers import worker_env
from tweetpulse.contracts import DeadLetter, RawTweet
from tweetpulse.kafka import create_topics
from tweetpulse.producers.synthetic import SyntheticTweets
from tweetpulse.registry import POINTER, ModelRegistry, announce_production, write_manifest
from tweetpulse.settings import Settings, TopicSettings, load_settings

pytestmark = pytest.mark.fault
# Their fixtures: `registry` (a private copy of the tiny model registry) and `start_worker`.
registry = processor_tests.registry
start_worker = processor_tests.start_worker

TWEETPULSE = [sys.executable, "-m", "tweetpulse"]
OWN_BROKER_PORT = 19292  # the broker-restart test's own broker (its controller takes 19293)


def stream_of(n: int, prefix: str) -> list[RawTweet]:
    """`n` real labeled tweets with unique ids, repeating the available texts as often as needed."""
    base = labeled_tweets(min(n, 5000), prefix)
    return [
        base[i % len(base)].model_copy(update={"id": f"{prefix}{i}"}) if i >= len(base) else base[i]
        for i in range(n)
    ]


def read_results(settings: Settings, ids: set[str], timeout: float, workers: list[Worker]) -> Received:
    """Every result until each id has one (duplicates counted), then 3 s more for late repeats."""
    reader = ResultReader(settings)
    try:

        def alive() -> None:
            for w in workers:
                assert w.proc.poll() is None, f"worker exited ({w.proc.returncode}):\n{w.log()[-3000:]}"

        try:
            reader.read_until(ids, timeout, alive)
        except TimeoutError as exc:
            got = reader.received.results
            pytest.fail(
                f"{exc}: {len(ids - set(got))} tweets lost\n" + "\n".join(w.log()[-2000:] for w in workers)
            )
        return reader.drain(3.0)
    finally:
        reader.close()


# -- a worker killed with SIGKILL in the middle of a 20k-tweet stream ------------------------------


def produce_around_a_kill(settings: Settings, tweets: list[RawTweet], killed: threading.Event) -> None:
    """The first half of the stream, then (once the kill is done) the second half, at 1000/s."""
    half = len(tweets) // 2
    produce_tweets(settings, tweets[:half], 1000.0)
    assert killed.wait(300), "no kill happened"
    produce_tweets(settings, tweets[half:], 1000.0)


def test_kill_9_of_one_of_two_workers_mid_20k_stream_loses_no_tweet(
    settings: Settings, start_worker: Callable[..., Worker], record_property: Callable
) -> None:
    workers = [start_worker(), start_worker()]
    wait_for_assignment(workers, settings.topics.partitions)
    tweets = stream_of(20_000, "k")
    killed = threading.Event()
    producer = threading.Thread(target=produce_around_a_kill, args=(settings, tweets, killed))
    producer.start()
    victim, survivor = workers
    wait_for(lambda: _processed(victim) > 1000, 180, "the victim to be busy", workers)
    victim.kill()  # SIGKILL: in-flight batches unacknowledged, offsets uncommitted
    killed.set()
    wait_for(
        lambda: survivor.assigned() == list(range(settings.topics.partitions)),
        90,
        "the survivor to take over every partition",
        [survivor],
    )
    producer.join()

    got = read_results(settings, {t.id for t in tweets}, 600, [survivor])
    assert set(got.results) == {t.id for t in tweets}  # 0 lost
    record_property("duplicates", got.duplicates)
    print(f"\nkill -9 mid 20k stream: 0 lost, {got.duplicates} duplicate results (at-least-once)")


# -- the broker stopped and restarted under a running producer and worker -------------------------


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[str]:
    """A broker of this test's own (never the shared one), with its state in tmp_path."""
    state = tmp_path / "kafka"
    assert localkafka.run("start", port=OWN_BROKER_PORT, state_dir=state) == 0, "own broker did not start"
    try:
        yield f"127.0.0.1:{OWN_BROKER_PORT}"
    finally:
        localkafka.run("stop", port=OWN_BROKER_PORT, state_dir=state)


def own_broker_settings(bootstrap: str) -> tuple[Settings, str]:
    """Settings for a broker of a test's own, with fresh pipeline topics (3 partitions) created there;
    and the topics' suffix."""
    suffix = uuid.uuid4().hex[:8]
    names = TopicSettings().model_dump(exclude={"partitions", "replication_factor"})
    topics = {key: f"{name}.{suffix}" for key, name in names.items()}
    settings = load_settings(kafka={"bootstrap_servers": bootstrap}, topics={**topics, "partitions": 3})
    create_topics(settings)
    return settings, suffix


def stream_through_a_broker_restart(
    env: dict[str, str], worker: Worker, port: int, state: Path
) -> list[RawTweet]:
    """2,000 synthetic tweets at 100/s from `tweetpulse produce`, with the broker on `port` (state in
    `state`) stopped for 5 s once the worker classified 500; returns the tweets once all are produced."""
    count, seed = 2000, 7
    producer = subprocess.Popen(
        [*TWEETPULSE, "produce", "synthetic", "--count", str(count), "--seed", str(seed), "--rate", "100"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: _processed(worker) > 500, 120, "the first results", [worker])
    assert localkafka.run("stop", port=port, state_dir=state) == 0
    time.sleep(5)  # producer and worker both see the broker gone (exactly_once: transactions open)
    assert localkafka.run("start", port=port, state_dir=state) == 0
    out, _ = producer.communicate(timeout=240)
    assert producer.returncode == 0, out.decode(errors="replace")
    return list(SyntheticTweets(seed=seed, count=count))


def test_broker_restart_mid_stream_with_producer_and_worker_running_loses_no_tweet(
    own_broker: str,
    registry: ModelRegistry,
    tmp_path: Path,
) -> None:
    settings, suffix = own_broker_settings(own_broker)
    env = {**worker_env(settings, f"tp-fault-{suffix}", registry.root), **WORKER_ENV}
    worker = Worker(env, tmp_path / "worker.log")
    try:
        wait_for_assignment([worker], 3)
        tweets = stream_through_a_broker_restart(env, worker, OWN_BROKER_PORT, tmp_path / "kafka")
        ids = {t.id for t in tweets}
        got = read_results(settings, ids, 300, [worker])
        assert set(got.results) == ids  # 0 lost
        print(f"\nbroker restart: 0 lost, {got.duplicates} duplicate results")
    finally:
        worker.stop()


# -- a flood of malformed messages mixed with valid ones ------------------------------------------


def test_flood_of_malformed_messages_all_reach_the_dlq_with_a_reason_and_every_valid_one_is_classified(
    settings: Settings, start_worker: Callable[..., Worker]
) -> None:
    worker = start_worker()
    wait_for_assignment([worker], settings.topics.partitions)
    tweets = stream_of(2000, "v")
    kinds = list(BAD_INPUT)
    messages: list[tuple[bytes | None, bytes | None]] = []
    for i, tweet in enumerate(tweets):  # one malformed message after every valid one
        reason = kinds[i % len(kinds)]
        messages += [(tweet.key, tweet.to_bytes()), (f"bad-{reason}-{i}".encode(), BAD_INPUT[reason])]
    produce(settings, messages)

    got = read_results(settings, {t.id for t in tweets}, 300, [worker])
    assert set(got.results) == {t.id for t in tweets}
    letters = read_dead_letters(settings, len(tweets), timeout=120)
    assert len(letters) == len(tweets), f"{len(letters)} of {len(tweets)} malformed messages in the DLQ"
    reasons: Counter[str] = Counter()
    for key, letter in letters:
        expected = key.decode().removeprefix("bad-").rsplit("-", 1)[0]
        assert letter.reason == expected and letter.error, letter
        reasons[letter.reason] += 1
    assert set(reasons) == set(kinds)
    assert worker.proc.poll() is None, "the worker crashed"


def read_dead_letters(settings: Settings, expected: int, timeout: float) -> list[tuple[bytes, DeadLetter]]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        settings.kafka.confluent_config(
            **{
                "group.id": f"dlq-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([settings.topics.dlq])
    letters: list[tuple[bytes, DeadLetter]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(letters) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is None:
                    letters.append((msg.key(), DeadLetter.from_bytes(msg.value())))
    finally:
        consumer.close()
    return letters


# -- a corrupt model version announced under load -------------------------------------------------


def corrupt_versions(registry: ModelRegistry) -> dict[str, str]:
    """Two broken versions of the production model: bytes changed after publishing (checksum
    mismatch), and a graph of garbage published with a manifest that matches it (fails to open)."""
    v1 = registry.production()
    fields = {k: v for k, v in registry.load(v1).manifest.items() if k not in ("files", "version")}
    tampered = registry.publish(registry.path(v1), {**fields, "note": "tampered after publishing"})
    with (registry.path(tampered) / "model.int8.onnx").open("r+b") as f:
        f.seek(4096)
        f.write(b"\x13" * 512)
    garbage = registry.publish(registry.path(v1), {**fields, "note": "garbage graph"})
    folder = registry.path(garbage)
    for name in ("model.onnx", "model.int8.onnx"):
        (folder / name).write_bytes(os.urandom(4096))
    manifest = json.loads((folder / "manifest.json").read_text())
    write_manifest(folder, {k: v for k, v in manifest.items() if k != "files"})
    return {"tampered": tampered, "garbage": garbage}


def test_corrupt_model_announced_under_load_is_refused_and_the_old_model_serves_every_tweet(
    settings: Settings,
    registry: ModelRegistry,
    start_worker: Callable[..., Worker],
) -> None:
    v1 = registry.production()
    broken = corrupt_versions(registry)
    worker = start_worker()
    wait_for_assignment([worker], settings.topics.partitions)
    tweets = stream_of(2000, "m")
    producer = threading.Thread(target=produce_tweets, args=(settings, tweets, 200.0))
    producer.start()
    wait_for(lambda: _processed(worker) > 200, 60, "the first results", [worker])
    for n, version in enumerate(broken.values(), start=1):
        (registry.root / POINTER).write_text(version)  # damaged after promotion, on the shared volume
        announce_production(settings, version, registry_root=registry.root)
        wait_for(lambda n=n: worker.log().count("model refused") >= n, 90, f"{version} refused", [worker])
    producer.join()

    got = read_results(settings, {t.id for t in tweets}, 300, [worker])
    assert set(got.results) == {t.id for t in tweets}  # no loss
    assert {r.model_version for r in got.results.values()} == {v1}  # no broken version ever served
    assert (worker.status() or {})["model_version"] == v1
    metrics = (worker.get("/metrics") or b"").decode()
    assert 'tweetpulse_processor_model_swaps_total{outcome="refused"} 2.0' in metrics
    log = worker.log()
    assert "checksum mismatch" in log and "cannot open model" in log


# -- secrets never appear in any output -----------------------------------------------------------

BEARER = f"x-bearer-{uuid.uuid4().hex}"
SASL_PASSWORD = f"sasl-pw-{uuid.uuid4().hex}"


def test_bearer_token_and_sasl_password_never_appear_in_any_log_output(
    settings: Settings,
    start_worker: Callable[..., Worker],
    registry: ModelRegistry,
    tmp_path: Path,
) -> None:
    secrets = {
        "TWEETPULSE_TWITTER__BEARER_TOKEN": BEARER,
        "TWEETPULSE_KAFKA__SASL_PASSWORD": SASL_PASSWORD,
        "TWEETPULSE_KAFKA__SASL_USERNAME": "tweetpulse",
        "TWEETPULSE_LOG_LEVEL": "DEBUG",
    }
    outputs: dict[str, str] = {}
    # 1. A worker on the shared broker with both secrets set, DEBUG logs, classifying tweets.
    worker = start_worker(**secrets)
    wait_for_assignment([worker], settings.topics.partitions)
    # 2. `produce twitter` against the loopback X server, DEBUG logs (tweepy logs request headers).
    with XApiServer(BEARER) as server:
        server.script = [Connection([("tweet", make_tweet(n), ["pets"]) for n in range(20)])]
        env = {**os.environ, **secrets, "TWEETPULSE_TWITTER__API_BASE_URL": server.url,
               "TWEETPULSE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers}  # fmt: skip
        env.pop("TWEETPULSE_CONFIG", None)
        twitter = subprocess.Popen(
            [
                *TWEETPULSE,
                "produce",
                "twitter",
                "--rule",
                "cats:pets",
                "--rules-mode",
                "replace",
                "--topic",
                settings.topics.raw,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        got = read_results(settings, {make_tweet(n)["id"] for n in range(20)}, 120, [worker])
        twitter.send_signal(signal.SIGINT)
        outputs["produce twitter"] = twitter.communicate(timeout=60)[0].decode(errors="replace")
    assert server.unauthorized == 0 and len(got.results) == 20  # the token was really used
    # 3. The same secrets with SASL_PLAINTEXT against the PLAINTEXT listener: connecting fails, and the
    #    failure output (librdkafka's own stderr, with its security debug on, and ours) is checked.
    sasl = {**env, "TWEETPULSE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "TWEETPULSE_KAFKA__SASL_MECHANISM": "PLAIN",
            "TWEETPULSE_KAFKA__EXTRA": json.dumps({"debug": "security,broker,conf", "message.timeout.ms": 4000})}  # fmt: skip
    failing = subprocess.run(
        [*TWEETPULSE, "produce", "synthetic", "--count", "3", "--topic", settings.topics.raw],
        env=sasl,
        capture_output=True,
        timeout=120,
    )
    outputs["produce over SASL"] = (failing.stdout + failing.stderr).decode(errors="replace")
    assert failing.returncode != 0, "the SASL producer should not reach a PLAINTEXT listener"
    assert "sasl.password = [redacted]" in outputs["produce over SASL"]  # the config dump was printed
    sasl_worker = Worker({**sasl, **WORKER_ENV, "TWEETPULSE_REGISTRY__ROOT": str(registry.root),
                          "TWEETPULSE_PROCESSOR__APP_ID": f"tp-sasl-{uuid.uuid4().hex[:6]}"},
                         tmp_path / "sasl-worker.log")  # fmt: skip
    time.sleep(15)  # long enough to load the model, try to connect and log the failure
    sasl_worker.stop()
    outputs["worker over SASL"] = sasl_worker.log()
    worker.stop()
    outputs["worker"] = worker.log()

    for name, text in outputs.items():
        assert text, f"{name}: no output captured"
        assert BEARER not in text, f"{name} printed the X bearer token"
        assert SASL_PASSWORD not in text, f"{name} printed the SASL password"
    assert "Bearer ***" in outputs["produce twitter"]  # the header was logged, redacted
