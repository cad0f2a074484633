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

from tests.strategies import records, sample
from tweetpulse.bench.hostile import HOSTILE
from tweetpulse.contracts import DeadLetter, SentimentResult
from tweetpulse.kafka import producer_config
from tweetpulse.processors.dlq import BadMessageError, parse_raw
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


def test_a_generated_sample_on_every_topic_the_worker_reads_gets_one_outcome_each_and_no_crash(
    settings: Settings, start_worker: Callable[..., Worker], consume_all: Callable
) -> None:
    """Generated raw records (contract-valid at the edges, near-valid, byte mutations) and generated
    records on the worker's own count-events topic and on the models topic: each raw record gets one
    result or one dead letter (as the parser says in-process), and the worker never restarts."""
    raw = [*sample(records("raw-tweet"), 300), NAIVE_INGESTED_AT]
    worker = start_worker()
    wait_for_assignment([worker], settings.topics.partitions)
    pid = worker.proc.pid

    producer = Producer(producer_config(settings))
    count_events = f"{worker.app_id}-label-count-events"
    for value in sample(records("label-counts"), 150):
        producer.produce(count_events, value=value)
    for value in COUNT_EVENTS_OF_THE_ISSUE:  # stamped in their window, so the agent adds them up
        producer.produce(count_events, value=value, timestamp=1_704_067_230_000)
    for value in sample(records("model-announcement"), 50):
        producer.produce(settings.topics.models, key=b"production", value=value)
    for i, value in enumerate(raw):
        producer.produce(settings.topics.raw, key=f"gen-{i}".encode(), value=value)
        producer.poll(0)
    assert producer.flush(30) == 0

    expected_ids: Counter = Counter()
    expected_letters = set()
    for i, value in enumerate(raw):
        try:
            expected_ids[parse_raw(value).id] += 1
        except BadMessageError:
            expected_letters.add(f"gen-{i}".encode())
    letters = consume_all(settings.topics.dlq, len(expected_letters), timeout=120)
    results = consume_all(settings.topics.sentiment, sum(expected_ids.values()), timeout=60)
    assert sorted(m.key() for m in letters) == sorted(expected_letters), worker.log()[-4000:]
    assert Counter(SentimentResult.from_bytes(m.value()).id for m in results) == expected_ids
    assert NAIVE_INGESTED_AT_ID in expected_ids
    assert worker.proc.poll() is None and worker.proc.pid == pid, worker.log()[-4000:]
    assert "crashed" not in worker.log()
    assert "bad count event skipped" in worker.log()  # the sum past the bound, the year-1 window
    assert worker.stop() == 0


NAIVE_INGESTED_AT_ID = "naive1"
# What Python's datetime.utcnow().isoformat() writes: crash-looped every worker before (issue 25).
NAIVE_INGESTED_AT = (
    b'{"schema_version": 1, "id": "naive1", "text": "hi", "source": "replay",'
    b' "ingested_at": "2024-01-01T00:00:00"}'
)
_WINDOW = b'"window_start": "2024-01-01T00:00:00Z", "window_end": "2024-01-01T00:01:00Z"'
COUNT_EVENTS_OF_THE_ISSUE = [  # two increments whose sum passes the bound; a naive year-1 window
    b"{" + _WINDOW + b', "tweets": {"positive": 1000000000000}, "tags": {}}',
    b"{" + _WINDOW + b', "tweets": {"positive": 1000000000000}, "tags": {}}',
    b'{"window_start": "0001-01-01T00:00:00", "window_end": "0001-01-01T00:01:00", "tweets": {}, "tags": {}}',
]


def test_a_worker_recovers_past_hostile_records_on_its_table_changelog(
    settings: Settings, start_worker: Callable[..., Worker], consume_all: Callable
) -> None:
    """The label counts' changelog is a topic like any other: a worker restoring the table from
    records it cannot use skips them and classifies on."""
    first = start_worker()
    wait_for_assignment([first], settings.topics.partitions)
    changelog = f"{first.app_id}-label-counts-changelog"
    assert first.stop() == 0

    producer = Producer(producer_config(settings))
    window_key = b'["2024-01-01T00:00:00+00:00", [1704067200.0, 1704067259.9]]'
    hostile = [*sample(records("label-counts"), 40), b"\xff\xfe", b"[]", b"null", b'{"tweets": 5}']
    for partition in range(settings.topics.partitions):
        for value in hostile:
            producer.produce(changelog, key=window_key, value=value, partition=partition)
            producer.produce(changelog, key=value or b"k", value=value, partition=partition)
    assert producer.flush(30) == 0

    second = start_worker()
    wait_for_assignment([second], settings.topics.partitions, timeout=120)
    tweets = labeled_tweets(30)
    for tweet in tweets:
        producer.produce(settings.topics.raw, key=tweet.key, value=tweet.to_bytes())
    assert producer.flush(30) == 0
    results = consume_all(settings.topics.sentiment, len(tweets), timeout=90)
    assert {SentimentResult.from_bytes(m.value()).id for m in results} == {t.id for t in tweets}
    assert second.proc.poll() is None, second.log()[-4000:]
    assert "crashed" not in second.log()
    assert second.stop() == 0
