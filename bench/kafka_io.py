"""Bench plumbing on the real broker: throw-away topics, a fast producer, and a result reader."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from tweetpulse.contracts import RawTweet, SentimentResult
from tweetpulse.kafka import create_topics, pipeline_topics, producer_config
from tweetpulse.settings import Settings, TopicSettings


@contextmanager
def bench_topics(base: Settings, partitions: int) -> Iterator[Settings]:
    """`base` with a fresh, unique set of pipeline topics, deleted afterwards (with the workers' own
    internal topics, whose names start with the app ids in ``settings.processor.app_id`` + suffix)."""
    suffix = f"bench.{uuid.uuid4().hex[:8]}"
    names = TopicSettings().model_dump(exclude={"partitions", "replication_factor"})
    topics = {key: f"{name}.{suffix}" for key, name in names.items()}
    settings = base.model_copy(
        update={"topics": TopicSettings(**topics, partitions=partitions, replication_factor=1)}
    )
    create_topics(settings)
    try:
        yield settings
    finally:
        admin = AdminClient(settings.kafka.confluent_config())
        ours = [t.name for t in pipeline_topics(settings)]
        internal = [n for n in admin.list_topics(timeout=10).topics if suffix in n and n not in ours]
        admin.delete_topics(ours + internal)


def produce_all(settings: Settings, tweets: list[RawTweet], partition: bool = False) -> float:
    """Write every tweet (keyed by id) to the raw topic as fast as the producer goes; returns seconds.

    With `partition`, tweet i goes to partition i (mod the partition count) instead of by key.
    """
    started = time.perf_counter()
    producer = Producer(producer_config(settings))
    parts = settings.topics.partitions
    for i, tweet in enumerate(tweets):
        extra = {"partition": i % parts} if partition else {}
        _produce(producer, settings.topics.raw, tweet.key, tweet.to_bytes(), **extra)
    if producer.flush(60):
        raise RuntimeError("raw tweets were not all delivered within 60 s")
    return time.perf_counter() - started


def produce_paced(settings: Settings, texts: list[str], rate: float, prefix: str) -> float:
    """Offer `texts` at `rate` tweets/s, each stamped ``ingested_at`` when it is sent; returns the
    seconds from the first to the last send.

    One warm-up tweet (id ``{prefix}warm-up``) is delivered first: a new idempotent producer spends
    up to a second connecting and getting its producer id, which is not the pipeline's latency.
    """
    producer = Producer(producer_config(settings))
    warm = RawTweet(id=f"{prefix}warm-up", text="warming up the producer", source="replay")
    _produce(producer, settings.topics.raw, warm.key, warm.to_bytes())
    if producer.flush(60):
        raise RuntimeError("the paced producer could not deliver its warm-up tweet within 60 s")
    started = time.perf_counter()
    for i, text in enumerate(texts):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        tweet = RawTweet(id=f"{prefix}{i}", text=text, source="replay")
        _produce(producer, settings.topics.raw, tweet.key, tweet.to_bytes())
    offered_s = time.perf_counter() - started
    if producer.flush(60):
        raise RuntimeError("paced tweets were not all delivered within 60 s")
    return offered_s


def _produce(producer: Producer, topic: str, key: bytes, value: bytes, **kwargs: int) -> None:
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            producer.poll(0)
            return
        except BufferError:  # local queue full: let deliveries drain, then retry
            producer.poll(0.05)


@dataclass
class Received:
    """Results read back: the first result per tweet id, when it arrived, and how many repeats."""

    results: dict[str, SentimentResult] = field(default_factory=dict)
    arrived: dict[str, float] = field(default_factory=dict)  # time.time() when first read
    duplicates: int = 0


class ResultReader:
    """Reads the sentiment topic from the beginning, with a short fetch wait so arrival times are tight."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(
            settings.kafka.confluent_config(
                **{
                    "group.id": f"bench-reader-{uuid.uuid4().hex}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 10,
                }
            )
        )
        self.consumer.subscribe([settings.topics.sentiment])
        self.received = Received()

    def read_until(self, ids: set[str], timeout: float, check: Callable[[], None] = lambda: None) -> Received:
        """Read until a result for every id in `ids` is in; `check` raises if a worker died."""
        missing = ids - set(self.received.results)
        deadline = time.monotonic() + timeout
        while missing and time.monotonic() < deadline:
            for msg in self.consumer.consume(num_messages=1000, timeout=0.2):
                if msg.error() is None:
                    self._add(SentimentResult.from_bytes(msg.value()), time.time())
            missing -= set(self.received.results)
            check()
        if missing:
            raise TimeoutError(f"{len(missing)} of {len(ids)} results missing after {timeout:.0f}s")
        return self.received

    def drain(self, seconds: float) -> Received:
        """Keep reading for `seconds` more (late duplicates of results already in)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for msg in self.consumer.consume(num_messages=1000, timeout=0.2):
                if msg.error() is None:
                    self._add(SentimentResult.from_bytes(msg.value()), time.time())
        return self.received

    def _add(self, result: SentimentResult, at: float) -> None:
        got = self.received
        if result.id in got.results:
            got.duplicates += 1
            return
        got.results[result.id] = result
        got.arrived[result.id] = at

    def close(self) -> None:
        self.consumer.close()
