"""Real `tweetpulse process` workers on the real broker with a really fine-tuned, exported model.

Each test gets fresh topics (the `settings` fixture) and its own Faust app id (consumer group), and
starts workers as subprocesses, exactly as an operator would. Group timeouts are shortened (see
WORKER_ENV) so that a killed worker's partitions move within seconds instead of the default 30 s.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from tweetpulse.bench.workers import free_port, worker_env
from tweetpulse.contracts import LABELS, DeadLetter, LabelCounts, RawTweet, SentimentResult, aggregate_tags
from tweetpulse.kafka import producer_config
from tweetpulse.processors.classifier import load_classifier
from tweetpulse.registry import ModelRegistry, announce_production
from tweetpulse.settings import Settings

SHARED_VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweets-val.jsonl"

# Short group timeouts for tests: a dead member is noticed after 6 s, rebalances finish fast.
WORKER_ENV = {
    "TWEETPULSE_PROCESSOR__SESSION_TIMEOUT_S": "6",
    "TWEETPULSE_PROCESSOR__HEARTBEAT_INTERVAL_S": "1",
    "TWEETPULSE_PROCESSOR__REBALANCE_TIMEOUT_S": "20",
    "TWEETPULSE_PROCESSOR__COMMIT_INTERVAL_S": "1",
    "TWEETPULSE_PROCESSOR__LAG_INTERVAL_S": "1",
    "TWEETPULSE_PROCESSOR__PROVIDER": "cpu",
    "TWEETPULSE_PROCESSOR__ORT_THREADS": "1",
    "TWEETPULSE_PROCESSOR__BATCH_SIZE": "32",
    "TWEETPULSE_LOG_FORMAT": "text",
}


class Worker:
    """One `tweetpulse process` subprocess and its web views."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.app_id = env.get("TWEETPULSE_PROCESSOR__APP_ID", "tweetpulse-processor")
        self._log = log_path.open("wb")
        env = {**env, "TWEETPULSE_PROCESSOR__WEB_PORT": str(self.port)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tweetpulse", "process"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return response.read()
        except OSError:
            return None

    def status(self) -> dict | None:
        body = self.get("/tweetpulse/status/")
        return json.loads(body) if body else None

    def assigned(self) -> list[int]:
        status = self.status()
        return status["assigned_partitions"] if status and not status["rebalancing"] else []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def wait_for(condition: Callable[[], object], timeout: float, what: str, workers: list[Worker] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        for worker in workers:
            assert worker.proc.poll() is None, (
                f"worker exited ({worker.proc.returncode}):\n{worker.log()[-4000:]}"
            )
        time.sleep(0.25)
    logs = "\n".join(w.log()[-3000:] for w in workers)
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n{logs}")


def wait_for_assignment(workers: list[Worker], partitions: int, timeout: float = 90) -> None:
    """Until the workers own every partition between them, each at least one, none twice."""

    def settled() -> bool:
        owned = [w.assigned() for w in workers]
        flat = [p for ps in owned for p in ps]
        return all(owned) and sorted(flat) == list(range(partitions))

    wait_for(settled, timeout, f"{len(workers)} worker(s) to share {partitions} partitions", workers)


@pytest.fixture
def registry(tiny_model_registry: ModelRegistry, tmp_path: Path) -> ModelRegistry:
    """A private copy of the tiny model registry, so a test may publish versions into it."""
    root = tmp_path / "registry"
    shutil.copytree(tiny_model_registry.root, root)
    return ModelRegistry(root)


@pytest.fixture
def start_worker(
    settings: Settings, registry: ModelRegistry, tmp_path: Path
) -> Iterator[Callable[..., Worker]]:
    app_id = f"tp-test-{uuid.uuid4().hex[:8]}"
    env = worker_env(settings, app_id, registry.root, **WORKER_ENV)
    workers: list[Worker] = []

    def _start(port: int | None = None, **extra_env: str) -> Worker:
        worker = Worker({**env, **extra_env}, tmp_path / f"worker-{len(workers)}.log", port)
        workers.append(worker)
        return worker

    yield _start
    for worker in workers:
        worker.stop()
    admin = AdminClient(settings.kafka.confluent_config())
    internal = [name for name in admin.list_topics(timeout=10).topics if name.startswith(app_id)]
    if internal:
        admin.delete_topics(internal)


def labeled_tweets(n: int, prefix: str = "t") -> list[RawTweet]:
    """Real labeled tweets (../shared/data when present, else generated ones), with unique ids."""
    if SHARED_VAL.is_file():
        rows = [json.loads(line) for line in SHARED_VAL.read_text().splitlines()[:n]]
    else:
        from tweetpulse.producers.synthetic import SyntheticTweets

        rows = [{"text": t.text, "label": t.label} for t in SyntheticTweets(seed=1, count=n)]
    tags = ["airlines", "food", ""]
    return [
        RawTweet(
            id=f"{prefix}{i}",
            text=row["text"],
            label=row["label"],
            source="replay",
            rule_tags=[tags[i % 3]] if tags[i % 3] else [],
        )
        for i, row in enumerate(rows)
    ]


def produce(
    settings: Settings, messages: list[tuple[bytes | None, bytes | None]], rate: float | None = None
) -> None:
    producer = Producer(producer_config(settings))
    for i, (key, value) in enumerate(messages):
        producer.produce(settings.topics.raw, key=key, value=value)
        producer.poll(0)
        if rate and i % 10 == 9:
            time.sleep(10 / rate)
    assert producer.flush(30) == 0


def produce_tweets(settings: Settings, tweets: list[RawTweet], rate: float | None = None) -> None:
    produce(settings, [(t.key, t.to_bytes()) for t in tweets], rate)


def results_by_id(messages: list) -> dict[str, list[SentimentResult]]:
    out: dict[str, list[SentimentResult]] = {}
    for msg in messages:
        result = SentimentResult.from_bytes(msg.value())
        assert msg.key() == result.id.encode()
        out.setdefault(result.id, []).append(result)
    return out


def test_worker_classifies_every_labeled_tweet_once_like_the_model_does(
    settings: Settings, registry: ModelRegistry, start_worker: Callable[..., Worker], consume_all: Callable
) -> None:
    tweets = labeled_tweets(300)
    produce_tweets(settings, tweets)  # before the worker starts: a new group reads from the beginning
    worker = start_worker(TWEETPULSE_PROCESSOR__MODEL_VARIANT="fp32")
    wait_for_assignment([worker], settings.topics.partitions)
    messages = consume_all(settings.topics.sentiment, len(tweets), timeout=120)
    results = results_by_id(messages)

    assert len(messages) == len(tweets), worker.log()[-3000:]
    assert set(results) == {t.id for t in tweets}
    expected = load_classifier(registry.load(), provider="cpu", variant="fp32").classify(
        [t.text for t in tweets]
    )
    for tweet, prediction in zip(tweets, expected, strict=True):
        (result,) = results[tweet.id]
        assert result.model_version == registry.production()
        assert result.text == tweet.text and result.true_label == tweet.label
        assert result.rule_tags == tweet.rule_tags and result.source == "replay"
        assert result.classified_at >= result.ingested_at and result.inference_ms is not None
        for label in LABELS:
            assert result.probabilities[label] == pytest.approx(prediction.probabilities[label], abs=1e-3)
        if abs(prediction.probabilities["positive"] - 0.5) > 0.01:
            assert result.label == prediction.label

    # The windowed counts: per tag and label, emitted to the aggregates topic and in the web view.
    expected_counts = Counter(
        (tag, results[t.id][0].label) for t in tweets for tag in aggregate_tags(t.rule_tags, t.text)
    )
    wait_for(
        lambda: _counts_from_view(worker) == expected_counts, 60, "the counts web view to add up", [worker]
    )
    # The published totals: the last record per window is its total, and they add up to the same.
    totals = {}
    for record in consume_all(settings.topics.aggregates, 10**6, timeout=10):  # all of it
        counts = LabelCounts.from_bytes(record.value())
        assert record.key() == counts.key
        totals[record.key()] = counts
    published = Counter()
    for counts in totals.values():
        published.update(
            {(tag, label): n for tag, labels in counts.tags.items() for label, n in labels.items()}
        )
    assert published == expected_counts
    assert sum(sum(c.tweets.values()) for c in totals.values()) == len(tweets)

    metrics = (worker.get("/metrics") or b"").decode()
    assert "tweetpulse_processor_messages_in_total 300.0" in metrics
    assert (
        f'tweetpulse_processor_model_info{{provider="CPUExecutionProvider",version="{registry.production()}"}}'
        in metrics
    )
    assert "tweetpulse_processor_inference_seconds_count" in metrics
    wait_for(
        lambda: "tweetpulse_processor_consumer_lag{" in (worker.get("/metrics") or b"").decode(),
        20,
        "the lag gauge",
        [worker],
    )
    assert worker.stop() == 0


def _counts_from_view(worker: Worker) -> Counter:
    body = worker.get("/tweetpulse/counts/")
    counts: Counter = Counter()
    for row in json.loads(body)["counts"] if body else []:
        counts[(row["tag"], row["label"])] += row["count"]
    return counts


BAD_INPUT = {
    "malformed-json": b'{"id": "x1", "text": "unterminated',
    "not-utf8": b'{"id": "x2", "text": "caf\xe9", "source": "replay"}',
    "missing-text": json.dumps({"id": "x3", "source": "replay"}).encode(),
    "empty-text": json.dumps({"id": "x4", "text": "  ", "source": "replay"}).encode(),
    "wrong-type": json.dumps({"id": "x5", "text": ["a", "list"], "source": "replay"}).encode(),
    "oversized-text": json.dumps({"id": "x6", "text": "a" * 4001, "source": "replay"}).encode(),
    "not-an-object": b'"just a string"',
    "tombstone": None,
    "empty-message": b"",
}


def test_every_kind_of_bad_input_goes_to_the_dlq_and_the_worker_keeps_classifying(
    settings: Settings, start_worker: Callable[..., Worker], consume_all: Callable
) -> None:
    tweets = labeled_tweets(60)
    messages: list[tuple[bytes | None, bytes | None]] = []
    for i, tweet in enumerate(tweets):
        messages.append((tweet.key, tweet.to_bytes()))
        if i % 7 == 3 and len(messages) < 70:
            reason = list(BAD_INPUT)[(i // 7) % len(BAD_INPUT)]
            messages.append((f"bad-{reason}".encode(), BAD_INPUT[reason]))
    for reason, value in BAD_INPUT.items():  # and each kind again, all at the end
        messages.append((f"bad-{reason}".encode(), value))
    bad_count = sum(1 for key, _ in messages if key.startswith(b"bad-"))
    worker = start_worker()
    wait_for_assignment([worker], settings.topics.partitions)
    produce(settings, messages)

    letters = consume_all(settings.topics.dlq, bad_count, timeout=120)
    results = consume_all(settings.topics.sentiment, len(tweets), timeout=60)
    assert len(letters) == bad_count, worker.log()[-3000:]
    assert len(results) == len(tweets)
    assert set(results_by_id(results)) == {t.id for t in tweets}

    seen = Counter()
    for msg in letters:
        letter = DeadLetter.from_bytes(msg.value())
        reason = msg.key().decode().removeprefix("bad-")
        assert letter.reason == reason, letter
        original = BAD_INPUT[reason]
        assert base64.b64decode(letter.original_value_b64) == (original or b"")
        assert base64.b64decode(letter.original_key_b64 or "") == msg.key()
        assert letter.source_topic == settings.topics.raw and letter.error
        assert letter.source_offset >= 0 and 0 <= letter.source_partition < settings.topics.partitions
        seen[reason] += 1
    assert set(seen) == set(BAD_INPUT)
    metrics = (worker.get("/metrics") or b"").decode()
    for reason, n in seen.items():
        assert f'tweetpulse_processor_dlq_total{{reason="{reason}"}} {float(n)}' in metrics
    assert worker.proc.poll() is None


def test_hot_swap_under_load_loses_nothing_duplicates_nothing_and_refuses_a_corrupt_model(
    settings: Settings, registry: ModelRegistry, start_worker: Callable[..., Worker], consume_all: Callable
) -> None:
    v1 = registry.production()
    v2 = registry.publish(registry.path(v1), {**registry.load(v1).manifest, "note": "republished for a swap"})
    corrupt = registry.publish(registry.path(v1), {**registry.load(v1).manifest, "note": "to be tampered"})
    worker = start_worker()
    wait_for_assignment([worker], settings.topics.partitions)
    tweets = labeled_tweets(1500)
    producer = threading.Thread(target=produce_tweets, args=(settings, tweets, 150.0))
    producer.start()
    wait_for(lambda: _processed(worker) > 300, 60, "the first results", [worker])
    registry.promote(v2)  # workers serve what PRODUCTION names; the announcement tells them to look
    announce_production(settings, v2)
    wait_for(lambda: (worker.status() or {}).get("model_version") == v2, 60, f"the swap to {v2}", [worker])
    registry.promote(corrupt)  # verified when promoted, then damaged on the shared volume
    with (registry.path(corrupt) / "model.int8.onnx").open("r+b") as f:
        f.seek(2048)
        f.write(b"\x13" * 256)
    announce_production(settings, corrupt)
    wait_for(lambda: "model refused" in worker.log(), 60, "the corrupt model to be refused", [worker])
    producer.join()

    messages = consume_all(settings.topics.sentiment, len(tweets), timeout=120)
    results = results_by_id(messages)
    assert len(messages) == len(tweets), "a result is missing or duplicated"
    assert set(results) == {t.id for t in tweets}
    versions = Counter(r[0].model_version for r in results.values())
    assert set(versions) == {v1, v2}, versions  # the corrupt version never served
    assert (worker.status() or {})["model_version"] == v2
    # per partition, results switch from v1 to v2 once and never back
    by_partition: dict[int, list[str]] = {}
    for msg in messages:
        by_partition.setdefault(msg.partition(), []).append(
            SentimentResult.from_bytes(msg.value()).model_version
        )
    for seq in by_partition.values():
        assert seq == sorted(seq), "a batch after the swap was served by the old model"
    metrics = (worker.get("/metrics") or b"").decode()
    assert 'tweetpulse_processor_model_swaps_total{outcome="swapped"} 1.0' in metrics
    assert 'tweetpulse_processor_model_swaps_total{outcome="refused"} 1.0' in metrics


def _processed(worker: Worker) -> int:
    status = worker.status() or {}
    return sum(status.get("processed_offsets", {}).values())


def test_results_reach_each_output_partition_in_the_input_order_of_their_partition(
    settings: Settings, start_worker: Callable[..., Worker], consume_all: Callable
) -> None:
    # Small batches and two model calls at once: calls finish out of order, sends must not.
    worker = start_worker(TWEETPULSE_PROCESSOR__BATCH_SIZE="16")
    wait_for_assignment([worker], settings.topics.partitions)
    tweets = labeled_tweets(2000)
    produce_tweets(settings, tweets)
    source = {m.key(): (m.partition(), m.offset()) for m in consume_all(settings.topics.raw, len(tweets))}
    results = consume_all(settings.topics.sentiment, len(tweets), timeout=120)
    assert {m.key() for m in results} == set(source)
    last: dict[tuple[int, int], int] = {}  # (output partition, input partition) -> its last input offset
    for msg in results:  # a partition's records arrive in log order
        partition, offset = source[msg.key()]
        key = (msg.partition(), partition)
        assert offset > last.get(key, -1), f"{msg.key()!r} overtook an earlier tweet of its partition"
        last[key] = offset


def test_two_workers_share_the_partitions_and_produce_a_result_for_every_input(
    settings: Settings, start_worker: Callable[..., Worker], consume_all: Callable
) -> None:
    workers = [start_worker(), start_worker()]
    wait_for_assignment(workers, settings.topics.partitions)
    tweets = labeled_tweets(800)
    produce_tweets(settings, tweets)
    messages = consume_all(settings.topics.sentiment, len(tweets), timeout=120)
    results = results_by_id(messages)
    assert set(results) == {t.id for t in tweets}
    assert len(messages) == len(tweets)  # a stable group classifies each tweet once
    assert all(_processed(w) > 0 for w in workers), "one worker did all the work"


def test_worker_killed_mid_stream_loses_nothing_once_the_group_recovers(
    settings: Settings, start_worker: Callable[..., Worker], consume_all: Callable
) -> None:
    workers = [start_worker(), start_worker()]
    wait_for_assignment(workers, settings.topics.partitions)
    tweets = labeled_tweets(1500)
    producer = threading.Thread(target=produce_tweets, args=(settings, tweets, 150.0))
    producer.start()
    victim, survivor = workers
    wait_for(lambda: _processed(victim) > 100, 60, "the victim to be busy", workers)
    victim.kill()  # SIGKILL: no commit, no goodbye; the group notices after the session timeout
    wait_for(
        lambda: survivor.assigned() == list(range(settings.topics.partitions)),
        90,
        "the survivor to take over every partition",
        [survivor],
    )
    producer.join()

    messages = consume_until_all_seen(settings, {t.id for t in tweets}, timeout=120)
    results = results_by_id(messages)
    missing = {t.id for t in tweets} - set(results)
    assert not missing, f"{len(missing)} tweets lost"
    duplicates = len(messages) - len(results)
    # At-least-once: the victim's uncommitted batches are classified again by the survivor.
    print(f"killed worker: {duplicates} duplicate results out of {len(messages)}")


def consume_until_all_seen(
    settings: Settings, ids: set[str], timeout: float, read_committed: bool = False
) -> list:
    """Results from the beginning of the sentiment topic until every id in `ids` has one (or timeout).

    Unlike consume_all, duplicates do not count towards the goal. With `read_committed`, only
    messages of committed transactions are returned (what a downstream consumer of EOS output sees).
    """
    from confluent_kafka import Consumer

    consumer = Consumer(
        settings.kafka.confluent_config(
            **{
                "group.id": f"test-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            }
        )
    )
    consumer.subscribe([settings.topics.sentiment])
    messages: list = []
    missing = set(ids)
    deadline = time.monotonic() + timeout
    try:
        while missing and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is None:
                    messages.append(msg)
                    missing.discard(msg.key().decode())
    finally:
        consumer.close()
    return messages


@pytest.mark.fault
def test_exactly_once_worker_killed_mid_stream_gives_each_tweet_one_committed_result(
    settings: Settings, start_worker: Callable[..., Worker]
) -> None:
    eos = {"TWEETPULSE_PROCESSOR__PROCESSING_GUARANTEE": "exactly_once"}
    workers = [start_worker(**eos), start_worker(**eos)]
    wait_for_assignment(workers, settings.topics.partitions)
    tweets = labeled_tweets(1500)
    producer = threading.Thread(target=produce_tweets, args=(settings, tweets, 150.0))
    producer.start()
    victim, survivor = workers
    wait_for(lambda: _processed(victim) > 100, 60, "the victim to be busy", workers)
    victim.kill()
    wait_for(
        lambda: survivor.assigned() == list(range(settings.topics.partitions)),
        90,
        "the survivor to take over every partition",
        [survivor],
    )
    producer.join()

    consume_until_all_seen(settings, {t.id for t in tweets}, timeout=120, read_committed=True)
    time.sleep(5)  # anything committed late would be a duplicate: read again after a pause
    messages = consume_until_all_seen(settings, {"never"}, timeout=10, read_committed=True)
    results = results_by_id(messages)
    assert not ({t.id for t in tweets} - set(results)), "tweets lost"
    duplicated = {i: len(r) for i, r in results.items() if len(r) > 1}
    assert not duplicated, f"{len(duplicated)} tweets have more than one committed result"
