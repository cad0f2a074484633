"""Background threads that fill the dashboard state from Kafka: the result tail and the lag poller.

Both are total on their input (:func:`ingest_result` has one outcome for any bytes) and restart
themselves with bounded exponential backoff when their Kafka code raises (:class:`RestartingThread`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Literal

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


RESTART_BACKOFF_START_S = 0.5
RESTART_BACKOFF_MAX_S = 30.0
MAX_REASON_CHARS = 300  # of an exception's text in a log line: it may quote part of a value

Outcome = Literal["counted", "malformed", "unusable"]


class TopicNotFoundError(LookupError):
    """A topic the dashboard reads does not exist (yet)."""


def short_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_REASON_CHARS]


def ingest_result(
    state: DashboardState, value: bytes | None, partition: int = -1, offset: int = -1
) -> Outcome:
    """Count one ``tweets.sentiment`` value in `state`. Any value is either counted or skipped: counted
    as malformed and logged with the reason (never its bytes), so no record can stop the feed."""
    try:
        result = SentimentResult.from_bytes(value or b"")
    except Exception as exc:  # a contract error, or a parser bug: still one outcome
        return _skipped(state, "malformed", exc, partition, offset)
    try:
        state.add(result)
    except Exception as exc:  # a valid value the state cannot use (a bug): skipped, not fatal
        return _skipped(state, "unusable", exc, partition, offset)
    return "counted"


def _skipped(state: DashboardState, outcome: Outcome, exc: Exception, partition: int, offset: int) -> Outcome:
    # The dashboard only reads: the message stays in its topic, so it is counted and logged.
    state.add_malformed()
    reason = str(exc)[:MAX_REASON_CHARS] if isinstance(exc, ContractError) else short_error(exc)
    log.warning(
        "sentiment result skipped",
        extra={"outcome": outcome, "reason": reason, "partition": partition, "offset": offset},
    )
    return outcome


class RestartingThread(threading.Thread):
    """A daemon thread whose :meth:`body` is run again, after a bounded exponential backoff, whenever
    it raises, until :meth:`stop`. The dashboard restarts its threads rather than exit: the page keeps
    serving what it has, and /healthz says 503 (with the restart count) while the feed is down."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.restarts = 0
        self.last_error: str | None = None
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def body(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        backoff = RESTART_BACKOFF_START_S
        while not self._stop_event.is_set():
            started = time.monotonic()
            try:
                self.body()
            except Exception as exc:
                if time.monotonic() - started > RESTART_BACKOFF_MAX_S:
                    backoff = RESTART_BACKOFF_START_S  # it ran healthy for a while: a new episode
                self.failed()  # first, so that whoever sees the new count sees the thread down
                self.restarts += 1
                self.last_error = short_error(exc)
                log.exception(
                    "dashboard thread failed; restarting",
                    extra={"component": self.name, "restarts": self.restarts, "retry_s": backoff},
                )
                self._stop_event.wait(backoff)
                backoff = min(backoff * 2, RESTART_BACKOFF_MAX_S)

    def failed(self) -> None:
        """Called after :meth:`body` raised, before the backoff."""


class ResultFeed(RestartingThread):
    """Tails the sentiment topic (from its end, or from `replay_minutes` ago) and the model topic
    (from its beginning: it is compacted) with assign(), so no consumer group is joined or committed.
    A restart resumes the sentiment topic where the feed was, so nothing is counted twice.
    """

    def __init__(self, settings: Settings, state: DashboardState, replay_minutes: int = 0) -> None:
        super().__init__(name="dashboard-feed")
        self.settings = settings
        self.state = state
        self.replay_minutes = replay_minutes
        self.ready = threading.Event()  # set while the start offsets are assigned and consumed from
        self._resume: dict[int, int] = {}  # sentiment partition -> next offset, for a restart

    def failed(self) -> None:
        self.ready.clear()

    def body(self) -> None:
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
        # A restart resumes every partition where the last assignment was, read or not.
        starts.update({p: offset for p, offset in self._resume.items() if p in starts})
        self._resume = dict(starts)
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
        ingest_result(self.state, message.value(), message.partition(), message.offset())
        self._resume[message.partition()] = message.offset() + 1

    def _handle_announcement(self, message: Message) -> None:
        if message.key() != PRODUCTION_KEY or message.value() is None:
            return
        try:
            self.state.set_announcement(ModelAnnouncement.from_bytes(message.value()))
        except Exception as exc:  # a contract error, or a parser bug: the model comes from results then
            log.warning(
                "malformed model announcement",
                extra={"reason": str(exc)[:MAX_REASON_CHARS], "offset": message.offset()},
            )


class LagPoller(RestartingThread):
    """Measures the processor group's lag on the raw topic every `interval_s` seconds."""

    def __init__(self, settings: Settings, state: DashboardState, group: str, interval_s: float) -> None:
        super().__init__(name="dashboard-lag")
        self.settings = settings
        self.state = state
        self.group = group
        self.interval_s = interval_s

    def body(self) -> None:
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
