"""Shared fixtures. Every Kafka test talks to the real local broker (`tweetpulse kafka start`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from tweetpulse import localkafka
from tweetpulse.kafka import create_topics, pipeline_topics
from tweetpulse.settings import Settings, TopicSettings, load_settings

KAFKA_PORT = int(os.environ.get("TWEETPULSE_KAFKA_PORT", "9092"))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Starts the project's broker if it is not running (a no-op when it is)."""
    assert localkafka.run("start", port=KAFKA_PORT) == 0, "could not start the local Kafka broker"
    return f"127.0.0.1:{KAFKA_PORT}"


@pytest.fixture
def settings(kafka_bootstrap: str) -> Iterator[Settings]:
    """Settings with a fresh set of pipeline topics, so tests never see each other's messages."""
    suffix = uuid.uuid4().hex[:8]
    defaults = TopicSettings()
    topics = TopicSettings(
        raw=f"{defaults.raw}.{suffix}",
        sentiment=f"{defaults.sentiment}.{suffix}",
        dlq=f"{defaults.dlq}.{suffix}",
        aggregates=f"{defaults.aggregates}.{suffix}",
        models=f"{defaults.models}.{suffix}",
        partitions=3,
    )
    s = load_settings(kafka={"bootstrap_servers": kafka_bootstrap}, topics=topics.model_dump())
    create_topics(s)
    yield s
    AdminClient(s.kafka.confluent_config()).delete_topics([t.name for t in pipeline_topics(s)])


@pytest.fixture
def consume_all(settings: Settings) -> Callable[..., list]:
    """consume_all(topic, expected, timeout) -> the messages read from the beginning of `topic`."""

    def _consume(topic: str, expected: int, timeout: float = 60.0) -> list:
        import time

        consumer = Consumer(
            settings.kafka.confluent_config(
                **{
                    "group.id": f"test-{uuid.uuid4().hex}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                }
            )
        )
        consumer.subscribe([topic])
        messages: list = []
        deadline = time.monotonic() + timeout
        try:
            while len(messages) < expected and time.monotonic() < deadline:
                for msg in consumer.consume(num_messages=1000, timeout=0.5):
                    if msg.error() is None:
                        messages.append(msg)
        finally:
            consumer.close()
        return messages

    return _consume
