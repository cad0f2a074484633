"""Consumer lag of the processors' group on the raw topic: log-end offsets minus committed offsets."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec


class LagError(RuntimeError):
    """Lag could not be measured (topic missing, broker unreachable); the message says why."""


@dataclass(frozen=True)
class LagReading:
    group: str
    topic: str
    total: int | None  # None while the group has committed nothing on the topic
    partitions: dict[int, int] = field(default_factory=dict)
    committed_partitions: int = 0
    measured_at: float = field(default_factory=time.time)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["partitions"] = {str(p): lag for p, lag in self.partitions.items()}
        return data


def _offsets(admin: AdminClient, topic: str, partitions: list[int], spec: OffsetSpec, timeout: float) -> dict:
    request = {TopicPartition(topic, p): spec for p in partitions}
    futures = admin.list_offsets(request, request_timeout=timeout)
    return {tp.partition: future.result().offset for tp, future in futures.items()}


def measure_lag(admin: AdminClient, group: str, topic: str, timeout: float = 10.0) -> LagReading:
    """Sum over the topic's partitions of (high watermark - committed offset).

    A partition the group has not committed on counts its whole retained backlog (high - low), as
    the group will read it all once it gets there. A group with no commit at all has no lag yet.
    """
    metadata = admin.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise LagError(f"topic {topic!r} not found: {metadata.error if metadata else 'no metadata'}")
    partitions = sorted(metadata.partitions)
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    result = admin.list_consumer_group_offsets([request], request_timeout=timeout)[group].result()
    committed = {
        tp.partition: tp.offset for tp in result.topic_partitions if tp.error is None and tp.offset >= 0
    }
    highs = _offsets(admin, topic, partitions, OffsetSpec.latest(), timeout)
    lows = (
        _offsets(admin, topic, partitions, OffsetSpec.earliest(), timeout)
        if len(committed) < len(partitions)
        else {}
    )
    if not committed:
        return LagReading(group, topic, None)
    lags = {p: max(0, highs[p] - committed.get(p, lows.get(p, 0))) for p in partitions}
    return LagReading(group, topic, sum(lags.values()), lags, len(committed))
