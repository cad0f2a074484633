"""Topics are an interface other teams write to: every byte on them is untrusted.

A real worker on the real broker with a really fine-tuned model gets every hostile kind below,
interleaved with valid tweets on every partition. Each valid tweet gets exactly one result, each
hostile message exactly one dead letter whose reason names its kind, the worker never restarts, and
SIGTERM stops it within the grace afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import signal
import time
from collections import Counter
from collections.abc import Callable

import test_processors_pipeline as processor_tests
from confluent_kafka import Producer
from test_processors_pipeline import (  # the workers' test helpers, shared rather than copied
    Worker,
    labeled_tweets,
    results_by_id,
    wait_for_assignment,
)

from tweetpulse.bench.hostile import HOSTILE
from tweetpulse.contracts import DeadLetter
from tweetpulse.kafka import producer_config
from tweetpulse.settings import Settings

GRACE_S = 10

registry = processor_tests.registry  # fixtures
start_worker = processor_tests.start_worker


def test_every_hostile_kind_gets_one_dead_letter_every_valid_tweet_one_result_and_the_worker_survives(
    settings: Settings, start_worker: Callable[..., Worker], consume_all: Callable
) -> None:
    assert len(HOSTILE) >= 25
    tweets = labeled_tweets(6 * len(HOSTILE))
    worker = start_worker(TWEETPULSE_PROCESSOR__SHUTDOWN_GRACE_S=str(GRACE_S))
    wait_for_assignment([worker], settings.topics.partitions)
    pid = worker.proc.pid

    producer = Producer(producer_config(settings, **{"message.max.bytes": 2_000_000}))
    kinds = list(HOSTILE)
    valid = iter(tweets)
    sent_valid = []
    for partition in range(settings.topics.partitions):  # every kind on every partition, between tweets
        for i, kind in enumerate(kinds):
            for good in (next(valid), next(valid)):
                producer.produce(
                    settings.topics.raw, key=good.key, value=good.to_bytes(), partition=partition
                )
                sent_valid.append(good)
            producer.produce(
                settings.topics.raw, key=f"bad-{i}".encode(), value=HOSTILE[kind][0], partition=partition
            )
            producer.poll(0)
    assert producer.flush(30) == 0

    n_bad = len(kinds) * settings.topics.partitions
    letters = consume_all(settings.topics.dlq, n_bad, timeout=180)
    results = consume_all(settings.topics.sentiment, len(sent_valid), timeout=60)
    assert len(letters) == n_bad, worker.log()[-4000:]
    by_id = results_by_id(results)
    assert set(by_id) == {t.id for t in sent_valid}
    assert all(len(r) == 1 for r in by_id.values()), "a valid tweet got more than one result"

    reasons: Counter = Counter()
    for msg in letters:
        kind = kinds[int(msg.key().decode().removeprefix("bad-"))]
        value, reason = HOSTILE[kind]
        letter = DeadLetter.from_bytes(msg.value())
        assert letter.reason == reason, f"{kind}: {letter.reason} ({letter.error})"
        original = value or b""
        kept = base64.b64decode(letter.original_value_b64)
        assert original.startswith(kept) and len(kept) <= 8 * 1024
        assert letter.original_size == len(original)
        assert letter.original_sha256 == hashlib.sha256(original).hexdigest()
        assert letter.truncated == (len(original) > 8 * 1024)
        reasons[kind] += 1
    assert reasons == Counter({kind: settings.topics.partitions for kind in kinds})

    assert worker.proc.poll() is None and worker.proc.pid == pid, "the worker restarted"
    assert "crashed" not in worker.log()
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.wait(GRACE_S + 5)
    assert time.monotonic() - started <= GRACE_S + 1
