"""Background threads that fill the dashboard state from Kafka: the result tail and the lag poller."""

from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from tweetpulse.contracts import ContractError, ModelAnnouncement, SentimentResult
from tweetpulse.dashboard.lag import LagError, LagReading, measure_lag
from tweetpulse.dashboard.state import DashboardState
from tweetpulse.kafka import admin_client
from tweetpulse.settings import Settings

log = logging.getLogger(__name__)

PRODUCTION_KEY = b"production"
METADATA_TIMEOUT_S = 10.0
TOPIC_RETRY_S = 2.0
# Errors of a topic that is just being created or of a broker that is starting: asked again shortly.
TRANSIENT_ERRORS = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
    }
)


class TopicNotFoundError(LookupError):
    """A topic the dashboard reads does not exist (yet)."""


class ResultFeed(threading.Thread):
    """Tails the sentiment topic (from its end, or from `replay_minutes` ago) and the model topic
    (from its beginning: it is compacted) with assign(), so no consumer group is joined or committed.
    """

    def __init__(self, settings: Settings, state: DashboardState, replay_minutes: int = 0) -> None:
        super().__init__(name="dashboard-feed", daemon=True)
        self.settings = settings
        self.state = state
        self.replay_minutes = replay_minutes
        self.ready = threading.Event()  # set once the start offsets are assigned
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        consumer = Consumer(
            self.settings.kafka.confluent_config(
                **{
                    "group.id": f"tweetpulse-dashboard-{uuid.uuid4().hex[:12]}",  # required, never committed
                    "enable.auto.commit": False,
                    "auto.offset.reset": "latest",
                }
            )
        )
        try:
            assignment = self._wait_for_assignment(consumer)
            if assignment is None:
                return
            consumer.assign(assignment)
            self.ready.set()
            log.info("dashboard consuming", extra={"topic": self.settings.topics.sentiment})
            while not self._stop_event.is_set():
                for message in consumer.consume(num_messages=500, timeout=0.5):
                    self._handle(message)
        except Exception:  # /healthz turns 503 once this thread is gone
            log.exception("dashboard feed stopped")
            raise
        finally:
            consumer.close()

    def _wait_for_assignment(self, consumer: Consumer) -> list[TopicPartition] | None:
        while not self._stop_event.is_set():
            try:
                return self._start_offsets(consumer)
            except TopicNotFoundError as exc:  # the topics may not be created yet
                log.warning("waiting for topic", extra={"reason": str(exc)})
                self._stop_event.wait(TOPIC_RETRY_S)
            except KafkaException as exc:
                if exc.args[0].code() not in TRANSIENT_ERRORS:
                    raise
                log.warning("waiting for the sentiment topic's leaders", extra={"reason": exc.args[0].str()})
                self._stop_event.wait(TOPIC_RETRY_S / 4)
        return None

    def _partitions(self, consumer: Consumer, topic: str) -> list[int]:
        metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise TopicNotFoundError(f"topic {topic!r} not found")
        return sorted(metadata.partitions)

    def _start_offsets(self, consumer: Consumer) -> list[TopicPartition]:
        """Concrete offsets now, rather than OFFSET_END, so nothing produced after `ready` is missed."""
        topic = self.settings.topics.sentiment
        partitions = self._partitions(consumer, topic)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), METADATA_TIMEOUT_S)[1]
            for p in partitions
        }
        starts = dict(ends)
        if self.replay_minutes:
            since_ms = int((time.time() - 60 * self.replay_minutes) * 1000)
            found = consumer.offsets_for_times(
                [TopicPartition(topic, p, since_ms) for p in partitions], METADATA_TIMEOUT_S
            )
            starts.update({tp.partition: tp.offset for tp in found if tp.offset >= 0})
        assignment = [TopicPartition(topic, p, starts[p]) for p in partitions]
        try:
            models = self.settings.topics.models
            assignment += [
                TopicPartition(models, p, OFFSET_BEGINNING) for p in self._partitions(consumer, models)
            ]
        except TopicNotFoundError:
            log.warning("no model topic: the model version comes from results only", extra={"topic": models})
        return assignment

    def _handle(self, message: Message) -> None:
        if message.error() is not None:
            if message.error().fatal():
                raise KafkaException(message.error())
            log.warning("consume error", extra={"error": str(message.error())})
            return
        if message.topic() == self.settings.topics.models:
            self._handle_announcement(message)
            return
        try:
            self.state.add(SentimentResult.from_bytes(message.value() or b""))
        except ContractError as exc:
            # The dashboard only reads: the message stays in its topic, so it is counted and logged.
            self.state.add_malformed()
            log.warning(
                "malformed sentiment result",
                extra={"reason": str(exc), "partition": message.partition(), "offset": message.offset()},
            )

    def _handle_announcement(self, message: Message) -> None:
        if message.key() != PRODUCTION_KEY or message.value() is None:
            return
        try:
            self.state.set_announcement(ModelAnnouncement.from_bytes(message.value()))
        except ContractError as exc:
            log.warning(
                "malformed model announcement", extra={"reason": str(exc), "offset": message.offset()}
            )


class LagPoller(threading.Thread):
    """Measures the processor group's lag on the raw topic every `interval_s` seconds."""

    def __init__(self, settings: Settings, state: DashboardState, group: str, interval_s: float) -> None:
        super().__init__(name="dashboard-lag", daemon=True)
        self.settings = settings
        self.state = state
        self.group = group
        self.interval_s = interval_s
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        admin = admin_client(self.settings)
        topic = self.settings.topics.raw
        while not self._stop_event.is_set():
            try:
                reading = measure_lag(
                    admin, self.group, topic, timeout=max(self.interval_s, METADATA_TIMEOUT_S)
                )
            except (LagError, KafkaException) as exc:
                reading = LagReading(self.group, topic, None, error=str(exc))
                log.warning("lag not measured", extra={"group": self.group, "reason": str(exc)})
            self.state.set_lag(reading.to_dict())
            self._stop_event.wait(self.interval_s)
