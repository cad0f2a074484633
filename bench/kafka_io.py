"""Bench plumbing on the real broker: throw-away topics, a fast producer, and a result reader."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from tweetpulse.contracts import RawTweet, SentimentResult
from tweetpulse.kafka import create_topics, pipeline_topics, producer_config
from tweetpulse.settings import Settings, TopicSettings

log = logging.getLogger(__name__)


def run_token() -> str:
    """A fresh id for one bench run: its topics end in ``.bench.<token>``, its app id is
    ``bench-<token>`` (Faust names its internal topics ``<app id>-...``)."""
    return uuid.uuid4().hex[:8]


@contextmanager
def bench_topics(base: Settings, partitions: int, token: str | None = None) -> Iterator[Settings]:
    """`base` with a fresh, unique set of pipeline topics. On the way out, also when the body
    raises, every topic of the run is deleted: the pipeline topics by name, and every topic whose
    name contains ``bench.<token>`` or starts with ``bench-<token>-`` (the workers' internal topics)."""
    token = token or run_token()
    suffix = f"bench.{token}"
    names = TopicSettings().model_dump(exclude={"partitions", "replication_factor"})
    topics = {key: f"{name}.{suffix}" for key, name in names.items()}
    settings = base.model_copy(
        update={"topics": TopicSettings(**topics, partitions=partitions, replication_factor=1)}
    )
    try:
        create_topics(settings)
        yield settings
    finally:
        delete_run_topics(
            settings, {t.name for t in pipeline_topics(settings)}, (suffix,), (f"bench-{token}-",)
        )


def run_topics(
    admin: AdminClient, names: set[str], contains: tuple[str, ...], prefixes: tuple[str, ...]
) -> list[str]:
    """The topics on the broker that belong to a run: named in `names`, or whose names contain one of
    `contains` or start with one of `prefixes`."""
    listed = admin.list_topics(timeout=10).topics
    return sorted(n for n in listed if n in names or any(c in n for c in contains) or n.startswith(prefixes))


def delete_run_topics(
    settings: Settings,
    names: set[str],
    contains: tuple[str, ...] = (),
    prefixes: tuple[str, ...] = (),
    timeout: float = 60,
) -> list[str]:
    """Delete a run's topics (see :func:`run_topics`) and wait until the broker lists none of them;
    returns what was deleted. Listed again until none is left: a topic a dying worker was still
    creating, or that a client re-created (the broker auto-creates topics), is caught too."""
    admin = AdminClient(settings.kafka.confluent_config())
    deleted: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        left = run_topics(admin, names, contains, prefixes)
        if not left:
            return sorted(deleted)
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench topics still on the broker after {timeout:.0f}s: {left}")
        for topic, future in admin.delete_topics(left, operation_timeout=30).items():
            try:
                future.result()
                deleted.add(topic)
            except KafkaException as exc:  # already gone, or being deleted: listed again below
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    log.debug("topic deletion failed; retrying", extra={"topic": topic, "error": str(exc)})
        time.sleep(0.5)


def end_offsets(admin: AdminClient, topics: list[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> end offset (the next offset to be written) of every partition of `topics`."""
    metadata = admin.list_topics(timeout=10).topics
    request = {
        TopicPartition(name, p): OffsetSpec.latest()
        for name in topics
        if name in metadata
        for p in metadata[name].partitions
    }
    if not request:
        return {}
    futures = admin.list_offsets(request, request_timeout=30)
    return {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}


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


def produce_raw(settings: Settings, messages: list[tuple[bytes | None, bytes | None]]) -> float:
    """Write (key, value) pairs as they are, bad bytes included, to the raw topic; returns seconds."""
    started = time.perf_counter()
    producer = Producer(producer_config(settings, **{"message.max.bytes": 2_000_000}))
    for key, value in messages:
        _produce(producer, settings.topics.raw, key, value)
    if producer.flush(60):
        raise RuntimeError("raw messages were not all delivered within 60 s")
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


def _produce(producer: Producer, topic: str, key: bytes | None, value: bytes | None, **kwargs: int) -> None:
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
    """Reads the sentiment topic from the beginning, with a short fetch wait so arrival times are tight,
    as a downstream consumer does: read_committed (under exactly_once a result arrives once its
    transaction commits; a result of an aborted one never does)."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(
            settings.kafka.confluent_config(
                **{
                    "group.id": f"bench-reader-{uuid.uuid4().hex}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 10,
                    "isolation.level": "read_committed",
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
