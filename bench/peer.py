"""The plain loop: the reference a `tweetpulse process` worker is measured against (issue #26).

What a careful user writes without the framework: one confluent-kafka consumer and producer and a
batch loop that parses each raw value with the worker's own parser (``parse_raw``; a bad one is
skipped and counted, no dead letter), classifies the batch with the worker's Classifier on the same
model, produces one ``SentimentResult`` per tweet to the sentiment topic and then commits, under
either processing guarantee:

- ``at_least_once``: an idempotent producer; at each checkpoint every result produced so far is
  flushed (acknowledged), then the consumed offsets are committed synchronously.
- ``exactly_once``: a transactional producer (``transactional.id`` unique per run); a transaction
  spans the batches of one checkpoint interval and commits their offsets with their results
  (``send_offsets_to_transaction``); the consumer reads ``read_committed``.

A checkpoint comes every ``CHECKPOINT_S`` (0.1 s) while tweets flow, and as soon as the input runs
dry, so the last results are not held back.

It runs as a subprocess (``python -m tweetpulse.bench.peer``), started like the workers
(bench/workers.py: the same environment from ``worker_env``, its own session, its log in the log
folder) and timed like them (:class:`PeerRun` is a :class:`PipelineRun`: fresh topics, warmed up
with one tweet per partition before the clock starts, tweets/s from the first write to the last
result read back in the bench process). In the bench process it would share the interpreter (GIL,
allocator) with the bench's producer and result reader, which the workers do not: a subprocess
makes the two figures differ only by what the worker does between Kafka and the model.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tweetpulse import children
from tweetpulse.bench.kafka_io import ResultReader, _produce, bench_topics
from tweetpulse.bench.pipeline import PipelineRun, PipelineSetup
from tweetpulse.bench.workers import WorkerProcess, stop_all, worker_env
from tweetpulse.contracts import RawTweet
from tweetpulse.kafka import consumer_config, producer_config
from tweetpulse.logs import configure_logging
from tweetpulse.processors.classifier import load_classifier
from tweetpulse.processors.dlq import BadMessageError, parse_raw
from tweetpulse.processors.outputs import sentiment_results
from tweetpulse.registry import ModelRegistry
from tweetpulse.settings import Settings, load_settings

log = logging.getLogger(__name__)

GUARANTEES = ("at_least_once", "exactly_once")
GUARANTEE_ENV = "TWEETPULSE_PROCESSOR__PROCESSING_GUARANTEE"
BATCH = 512  # messages per consume() call
CHECKPOINT_S = 0.1  # commit offsets (or the transaction) at most this often while tweets flow
TIMEOUT_S = 30.0  # flush, offset commit, transaction calls
SUMMARY = "plain_loop"  # key of the JSON line the loop prints when it stops


@dataclass
class Counts:
    """What one plain loop did, printed as its last line."""

    batches: int = 0
    results: int = 0
    skipped: int = 0  # values parse_raw refused
    checkpoints: int = 0  # offset commits, or committed transactions


class PlainLoop:
    """The consume-classify-produce-commit loop over the topics and guarantee of `settings`; its
    consumer group is ``processor.app_id`` (one of its own per bench run)."""

    def __init__(self, settings: Settings, classify: Callable[[list[str]], list[Any]], version: str) -> None:
        self.settings, self.classify, self.version = settings, classify, version
        self.exactly_once = settings.processor.processing_guarantee == "exactly_once"
        group = settings.processor.app_id
        self.consumer = Consumer(
            consumer_config(
                settings,
                **{
                    "group.id": group,
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                },
            )
        )
        extra: dict[str, Any] = {
            "partitioner": "murmur2_random",  # the Java client's, as the workers partition by key
            "on_delivery": self._delivered,
            "delivery.report.only.error": True,
        }
        if self.exactly_once:
            extra["transactional.id"] = f"{group}-peer"
            # librdkafka refuses a message timeout past the transaction's (kafka.extra may set one)
            extra["transaction.timeout.ms"] = extra["delivery.timeout.ms"] = 60_000
        self.producer = Producer(producer_config(settings, **extra))
        if self.exactly_once:
            self.producer.init_transactions(TIMEOUT_S)
        self.failed: KafkaError | None = None
        self.counts = Counts()
        self.consumer.subscribe([settings.topics.raw])

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and self.failed is None:
            self.failed = err

    def run(self, stopping: Callable[[], bool]) -> Counts:
        """Loop until `stopping()` says so; the tweets consumed by then are checkpointed."""
        pending: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset, not yet committed
        since = 0.0
        while not stopping():
            msgs = [m for m in self.consumer.consume(num_messages=BATCH, timeout=0.1) if _usable(m)]
            if msgs:
                if not pending:
                    since = time.monotonic()
                    if self.exactly_once:
                        self.producer.begin_transaction()
                self.handle(msgs)
                pending.update({(m.topic(), m.partition()): m.offset() + 1 for m in msgs})
            if pending and (not msgs or time.monotonic() - since >= CHECKPOINT_S):
                self.checkpoint(pending)
                pending = {}
        if pending:
            self.checkpoint(pending)
        return self.counts

    def handle(self, msgs: list[Message]) -> None:
        """Parse, classify and produce one batch (results are acknowledged at the checkpoint)."""
        conf = self.settings.processor
        tweets: list[RawTweet] = []
        for msg in msgs:
            try:
                tweets.append(parse_raw(msg.value(), conf.max_message_bytes, conf.max_json_depth))
            except BadMessageError:
                self.counts.skipped += 1
        self.counts.batches += 1
        if not tweets:
            return
        started = time.perf_counter()
        predictions = self.classify([t.text for t in tweets])
        for result in sentiment_results(tweets, predictions, self.version, time.perf_counter() - started):
            _produce(self.producer, self.settings.topics.sentiment, result.key, result.to_bytes())
        self.counts.results += len(tweets)

    def checkpoint(self, offsets: dict[tuple[str, int], int]) -> None:
        """Make the results produced so far durable, then commit `offsets` (with them, for EOS)."""
        positions = [TopicPartition(topic, p, offset) for (topic, p), offset in offsets.items()]
        if self.exactly_once:
            metadata = self.consumer.consumer_group_metadata()
            self.producer.send_offsets_to_transaction(positions, metadata, TIMEOUT_S)
            self.producer.commit_transaction(TIMEOUT_S)  # flushes; raises if a result failed
        else:
            if self.producer.flush(TIMEOUT_S):
                raise RuntimeError(f"results not delivered within {TIMEOUT_S:.0f}s")
            if self.failed is not None:  # never commit past a result that was not written
                raise KafkaException(self.failed)
            self.consumer.commit(offsets=positions, asynchronous=False)
        self.counts.checkpoints += 1

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(TIMEOUT_S)


def _usable(msg: Message) -> bool:
    """A record to handle; a fatal consumer error raises, others (logged) are librdkafka's to retry."""
    err = msg.error()
    if err is None:
        return True
    if err.fatal():
        raise KafkaException(err)
    log.warning("consumer error", extra={"error": err.str()})
    return False


def load_model(settings: Settings) -> Any:
    """The registry's production model, served as the worker's settings say, except that the loop's
    one model call at a time gets every intra-op thread (processor.ort_threads, else all cores)."""
    c = settings.processor
    threads = c.model_copy(update={"inference_workers": 1}).intra_op_threads()
    artifact = ModelRegistry(settings.registry.root).load()
    return load_classifier(artifact, c.provider, c.model_variant, threads, c.inference_chunk)


def main() -> int:
    """The subprocess: the settings from the environment (as a worker's), loop until SIGTERM."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    classifier = load_model(settings)
    loop = PlainLoop(settings, classifier.classify, classifier.version)
    log.info("plain loop started", extra={"guarantee": settings.processor.processing_guarantee})
    try:
        counts = loop.run(stop.is_set)
    finally:
        loop.close()
    print(json.dumps({SUMMARY: asdict(counts)}), flush=True)
    return 0


# -- in the bench process --------------------------------------------------------------------------


class PeerProcess(WorkerProcess):
    """The plain loop's subprocess, started, watched and stopped as a worker is (it has no web view)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = 0
        self.log_path = log_path
        self.started = time.monotonic()
        self.proc = children.spawn(
            [sys.executable, "-m", "tweetpulse.bench.peer"], log_path, env=env, death_signal=signal.SIGKILL
        )

    def status(self) -> dict[str, Any] | None:
        return None


class PeerRun(PipelineRun):
    """A :class:`PipelineRun` whose one "worker" is the plain loop: fresh topics, the loop started
    with the workers' environment plus `env` (``GUARANTEE_ENV``...) and warmed; on exit the loop is
    stopped, its consumer group and every topic of the run deleted."""

    def __init__(self, setup: PipelineSetup, **env: str) -> None:
        super().__init__(setup, workers=1, **env)

    def _start(self) -> None:
        s = self.setup
        self.settings = self._stack.enter_context(bench_topics(s.settings, s.partitions, self.token))
        self.admin = AdminClient(self.settings.kafka.confluent_config())
        self._stack.callback(delete_group, self.admin, self.app_id)  # runs after the loop stopped
        env = worker_env(self.settings, self.app_id, s.registry_root, **s.worker_env, **self.env)
        self._stack.callback(lambda: stop_all(self.workers, s.stop_timeout_s))
        self.workers.append(PeerProcess(env, s.log_dir / f"{self.app_id}-peer.log"))
        self.reader = ResultReader(self.settings)
        self._stack.callback(self.reader.close)
        self._warm_up()  # one result per partition: assigned, model loaded, transactions flowing
        self.startup_s = time.monotonic() - self.workers[0].started

    def summary(self) -> dict[str, int] | None:
        """The loop's counts (:class:`Counts`), once it has stopped cleanly; None before."""
        for line in reversed(self.workers[0].log_path.read_text(errors="replace").splitlines()):
            if line.startswith(f'{{"{SUMMARY}"'):
                return json.loads(line)[SUMMARY]
        return None


def delete_group(admin: AdminClient, group: str) -> None:
    """Delete a consumer group the run made (best effort: it is only bookkeeping on the broker)."""
    for future in admin.delete_consumer_groups([group], request_timeout=10).values():
        try:
            future.result()
        except KafkaException as exc:
            log.debug("consumer group not deleted", extra={"group": group, "error": str(exc)})


if __name__ == "__main__":
    sys.exit(main())
