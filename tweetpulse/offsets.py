"""End offsets of a topic, retried while partition leadership settles (e.g. right after creation)."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaException, TopicPartition


def watermarks(consumer: Any, topic: str, timeout: float = 30.0) -> dict[int, tuple[int, int]]:
    """Partition -> (low, high) watermarks; raises ValueError for a missing topic."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if metadata is None or metadata.error is not None:
                raise ValueError(f"topic {topic!r} does not exist; run `tweetpulse topics create`")
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                for p in sorted(metadata.partitions)
            }
        except KafkaException as exc:
            if not exc.args[0].retriable() and exc.args[0].name() != "NOT_LEADER_FOR_PARTITION":
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def drop_reached(consumer: Any, topic: str, remaining: dict[int, int]) -> None:
    """Forget the partitions whose position reached their end offset in `remaining`.

    A transaction's commit marker takes an offset but is never delivered, so the last message read
    is not at ``end - 1``; the consumer's position does pass the marker.
    """
    if not remaining:
        return
    for tp in consumer.position([TopicPartition(topic, p) for p in remaining]):
        if tp.offset >= remaining[tp.partition]:
            del remaining[tp.partition]
