"""The Kafka sink every producer writes through: raw-tweet contract messages keyed by tweet id.

The producer is idempotent with acks=all (``tweetpulse.kafka.producer_config``), so librdkafka retries
a batch until ``message.timeout.ms`` without duplicating it: a broker that is down at start or goes away
mid-run loses nothing accepted within that timeout. A full local queue (BufferError) is never a drop:
the sink serves delivery reports and tries again. A refused login (wrong SASL credentials or mechanism,
an untrusted broker certificate) is not retried: the producer's ``error_cb`` raises
``tweetpulse.kafka.KafkaFatalError`` from send() or flush() at once, and the sink stops there.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from tweetpulse.contracts import RawTweet
from tweetpulse.kafka import KafkaFatalError, producer_config
from tweetpulse.settings import Settings

log = logging.getLogger(__name__)

FULL_QUEUE_WAIT_S = 0.05  # how long one poll may wait for deliveries to free room in the queue
MAX_FAILURE_LOGS = 20  # per-message failure logs before only the counts are kept

# RawTweet.to_bytes() without model_dump_json's Python-side wrapping: the same bytes at half the cost,
# which matters on the replay hot path (tests check the bytes are identical).
_to_json = RawTweet.__pydantic_serializer__.to_json


@dataclass
class SinkStats:
    """Delivery report counts. ``accepted - delivered - failed`` is what is still in flight."""

    accepted: int = 0
    delivered: int = 0
    failed: int = 0
    full_queue_waits: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def in_flight(self) -> int:
        return self.accepted - self.delivered - self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "delivered": self.delivered,
            "failed": self.failed,
            "in_flight": self.in_flight,
            "full_queue_waits": self.full_queue_waits,
            "failures": dict(self.failures),
        }


class KafkaSink:
    """Writes RawTweets to ``topic`` (default ``settings.topics.raw``); use as a context manager.

    ``overrides`` are librdkafka settings that win over the tuned defaults (tests use them to shrink
    the queue or the delivery timeout).
    """

    def __init__(self, settings: Settings, topic: str | None = None, **overrides: Any) -> None:
        self.topic = topic or settings.topics.raw
        self.stats = SinkStats()
        self.refused: KafkaFatalError | None = None  # set once the producer can deliver nothing more
        self._producer = Producer(producer_config(settings, **overrides))

    def __enter__(self) -> KafkaSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, KafkaFatalError):
            return  # nothing can be delivered: waiting for message.timeout.ms would only hang
        self.flush()

    def send(self, tweet: RawTweet) -> None:
        """Queue one tweet; blocks (serving delivery reports) while the local queue is full. Raises
        KafkaFatalError once the broker has refused the login (then on every later call)."""
        if self.refused is not None:  # inline: this is the replay hot path
            raise self.refused
        value, key = _to_json(tweet, exclude_none=True), tweet.key
        try:
            while True:
                try:
                    self._producer.produce(self.topic, value, key, on_delivery=self._on_delivery)
                    break
                except BufferError:
                    self.stats.full_queue_waits += 1
                    self._producer.poll(FULL_QUEUE_WAIT_S)
            self.stats.accepted += 1
            self._producer.poll(0)
        except KafkaFatalError as exc:
            self.refused = exc
            raise

    def flush(self, timeout: float | None = None) -> int:
        """Wait for every delivery report (up to ``timeout`` s; None: until each one succeeds or times
        out per ``message.timeout.ms``). Returns how many messages are still in flight. A refused login
        ends the wait at once with KafkaFatalError."""
        if self.refused is not None:
            raise self.refused
        try:
            if timeout is None:
                while self._producer.flush(1.0) > 0:
                    pass
                return 0
            return self._producer.flush(timeout)
        except KafkaFatalError as exc:
            self.refused = exc
            raise

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.stats.delivered += 1
            return
        self.stats.failed += 1
        reason = err.name() or str(err)
        self.stats.failures[reason] += 1
        if self.stats.failed <= MAX_FAILURE_LOGS:
            log.warning(
                "delivery failed",
                extra={
                    "topic": self.topic,
                    "key": (msg.key() or b"").decode(errors="replace"),
                    "reason": reason,
                },
            )
