"""No output can be refused for good: a result the broker refuses for its size becomes a dead letter.

The results topic of a real broker is given a small max.message.bytes; a real worker classifies short
and long tweets. A refused batch of small results is re-sent record by record and lands; a result
refused on its own is replaced by a dead letter of its tweet (`output-too-large`). Every tweet gets
exactly one outcome and the worker keeps running.
"""

from __future__ import annotations

from collections.abc import Callable

import test_processors_pipeline as processor_tests
from confluent_kafka.admin import AdminClient, ConfigResource
from test_processors_pipeline import (  # the workers' test helpers, shared rather than copied
    Worker,
    produce_tweets,
    results_by_id,
    wait_for_assignment,
)

from tweetpulse.contracts import DeadLetter, RawTweet
from tweetpulse.settings import Settings

registry = processor_tests.registry  # fixtures
start_worker = processor_tests.start_worker

LIMIT = 1_500  # bytes per record batch on the results topic: one short result fits, a long one not


def test_a_result_too_large_for_its_topic_is_dead_lettered_and_small_ones_all_land(
    settings: Settings, start_worker: Callable[..., Worker], consume_all: Callable
) -> None:
    admin = AdminClient(settings.kafka.confluent_config())
    resource = ConfigResource(
        "topic", settings.topics.sentiment, set_config={"max.message.bytes": str(LIMIT)}
    )
    for future in admin.alter_configs([resource]).values():
        future.result(30)
    short = [
        RawTweet(id=f"s{i}", text=f"short tweet number {i}, quite happy", source="replay") for i in range(200)
    ]
    long = [RawTweet(id=f"l{i}", text="a long and rambling tweet " * 80, source="replay") for i in range(5)]
    worker = start_worker()
    wait_for_assignment([worker], settings.topics.partitions)
    produce_tweets(settings, short[:100] + long + short[100:])

    results = results_by_id(consume_all(settings.topics.sentiment, len(short), timeout=120))
    letters = [
        DeadLetter.from_bytes(m.value()) for m in consume_all(settings.topics.dlq, len(long), timeout=60)
    ]
    assert set(results) == {t.id for t in short}
    assert all(len(r) == 1 for r in results.values())
    assert sorted(m.reason for m in letters) == ["output-too-large"] * len(long)
    assert len({(m.source_partition, m.source_offset) for m in letters}) == len(long)
    assert worker.proc.poll() is None
    assert "record refused as too large" in worker.log()
