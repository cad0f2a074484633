"""The worker's one owner of output and commits (as Quix Streams' ``Checkpoint``): records are
produced as batches finish; every ``processor.commit_interval_s``, at a revoke and at a stop, what was
produced and the input offsets it covers are made durable together.

- ``exactly_once``: one transactional producer per worker (KIP-447): the transaction holds the
  results, dead letters, weak labels and label-count events of its batches, then
  ``send_offsets_to_transaction`` with the consumer's group metadata and ``commit_transaction``.
  read_committed readers see a batch's outputs once, within one interval; a zombie (a worker the
  group gave up on) is fenced by its stale group generation and its transaction aborted.
- ``at_least_once``: an idempotent producer; flush, then commit the offsets. A worker that dies
  between the two has its last interval's input classified again.

A commit that fails rewinds every assigned partition to its committed offsets (an aborted transaction
leaves nothing visible; at_least_once repeats what was produced): ``Source.rewind`` ends the epochs, so
nothing fetched before it is produced after. A producer in a fatal state (fenced) is replaced. Commits
that keep failing for ``processor.send_timeout_s`` end the worker (EXIT_BROKER_UNAVAILABLE), a broker
refusal no retry fixes at once (EXIT_MISCONFIGURED).

Every blocking librdkafka call of a commit, an abort or a producer's replacement runs on a thread of its
own, awaited for its timeout plus a grace (:func:`call_with_deadline`): ``send_offsets_to_transaction``
can block past its own timeout when the group coordinator restarts (confluentinc/librdkafka#5456,
#5511), which held the commit lock, and so every batch, until the watchdog ended the worker. A call past
its deadline is abandoned with its producer: the commit fails (a rewind) and a new producer, whose
``init_transactions`` fences the old one (exactly_once), takes over in place. An abandoned call's
producer stays alive until the call returns.

Size: the producer's ``message.max.bytes`` is the smallest ``max.message.bytes`` of the output topics
(read at start, and again after a refusal), so a record the broker would refuse is refused by
``produce`` itself and replaced by its dead letter (:meth:`Outputs.dead_letter_for_refused`) before it
can fail a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import ConfigResource

from tweetpulse.kafka import admin_client, producer_config
from tweetpulse.processors import metrics
from tweetpulse.processors.exits import EXIT_BROKER_UNAVAILABLE, EXIT_MISCONFIGURED, fatal
from tweetpulse.processors.source import TP, Record, Source
from tweetpulse.processors.watchdog import Watchdog
from tweetpulse.settings import Settings

log = logging.getLogger(__name__)

BATCH_OVERHEAD_BYTES = 128  # a record batch's header and a record's framing, kept below the topic limit
DEFAULT_TOPIC_LIMIT = 1_048_588  # Kafka's max.message.bytes default
KAFKA_TIMEOUT_S = 30.0  # one transactional call to the coordinator
DEADLINE_GRACE_S = 10.0  # how long a blocking call may overrun the timeout it was given
MISCONFIGURED = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "grant this worker's principal WRITE on the topic",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "grant this worker's principal the cluster permissions it needs",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "grant this worker's principal its transactional id",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "grant this worker's principal READ on its consumer group",
    KafkaError.TOPIC_EXCEPTION: "fix the topic name in the settings (TWEETPULSE_TOPICS__*)",
}


@dataclass(frozen=True)
class Output:
    """One record to produce; `source` is the raw record it came from (for its dead letter)."""

    topic: str
    key: bytes | None
    value: bytes
    source: Record | None = None
    timestamp: float | None = None  # epoch seconds; None: the time it is produced
    partition: int | None = None  # None: by key (murmur2, as Java clients do)


class CommitFailedError(Exception):
    """A commit that did not happen: everything since the last one is rewound."""


class Checkpoint:
    """Produces batches' outputs and commits them with their input offsets (see the module doc).

    `dead_letter_for_refused(output, reason, error)` gives the dead letter that replaces an output too
    large for its topic (None: nothing smaller). `pending()` gives the outputs that must travel in the
    same commit as the batches produced since the last one (the label-count events)."""

    def __init__(
        self,
        settings: Settings,
        sources: list[Source],
        output_topics: list[str],
        dead_letter_for_refused: Callable[[Output, str, str], Output | None],
        pending: Callable[[], list[Output]],
        watchdog: Watchdog,
    ) -> None:
        conf = settings.processor
        self.settings = settings
        self.sources = {source.topic: source for source in sources}
        self.output_topics = output_topics
        self.dead_letter_for_refused = dead_letter_for_refused
        self.pending = pending
        self.watchdog = watchdog  # the liveness clock: produced, committed, given up
        self.transactional = conf.processing_guarantee == "exactly_once"
        self.transactional_id = conf.transactional_id or f"{conf.app_id}-{socket.gethostname()}-{os.getpid()}"
        self.send_timeout_s = conf.send_timeout_s
        self.lock = asyncio.Lock()  # held while a batch is produced and while a commit runs
        self._positions: dict[TP, int] = {}  # next offset per partition, of what was produced
        self._produced = 0  # records produced since the last commit
        self._failures: list[KafkaError] = []  # delivery failures since the last commit
        self._generation = 0  # whose delivery failures count: the current producer's
        self._failing_since: float | None = None
        self._broken: KafkaError | None = None  # the producer's fatal error (fenced), until replaced
        self.producer: Producer | None = None  # from start()

    def start(self) -> None:
        """Create the producer (exactly_once: and fence this transactional id's predecessor).
        Blocking: call it off the loop."""
        self.producer = self._new_producer(1)
        self._generation = 1

    # -- producing ----------------------------------------------------------------------------------

    async def produce(self, records: list[Record], build: Callable[[list[Record]], list[Output]]) -> int:
        """Produce the outputs `build` makes of the `records` that are still live, and count their
        offsets as done (they commit with the next commit); returns the bytes produced. Records of an
        ended epoch are dropped."""
        async with self.lock:
            live = [r for r in records if self.sources[r.topic].live(r)]
            if not live:
                return 0
            outputs = build(live)
            self._produce_all(outputs)
            self.watchdog.produced()
            for record in live:
                self._positions[record.tp] = record.offset + 1
            return sum(len(output.value) for output in outputs)

    def _produce_all(self, outputs: list[Output]) -> None:
        try:
            for output in outputs:
                self._produce(output)
            self.producer.poll(0)  # serves delivery failures and errors
        except KafkaException as exc:  # fenced, not in a transaction, KafkaFatalError from error_cb...
            self._broken = self._broken or exc.args[0]  # the next commit fails and replaces the producer

    def _produce(self, output: Output) -> None:
        while self._broken is None:  # a broken producer's output is rewound at the next commit
            try:
                extra = {} if output.partition is None else {"partition": output.partition}
                stamp = {} if output.timestamp is None else {"timestamp": int(output.timestamp * 1000)}
                self.producer.produce(output.topic, output.value, output.key, **extra, **stamp)
                self._produced += 1
                return
            except BufferError:  # the producer's queue is full: let it drain
                self.producer.poll(0.05)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
                output = self._dead_lettered(output, exc.args[0])

    def _dead_lettered(self, output: Output, err: KafkaError) -> Output:
        log.error(
            "record refused as too large for its topic; dead-lettering its source",
            extra={"topic": output.topic, "bytes": len(output.value)},
        )
        letter = self.dead_letter_for_refused(output, "output-too-large", f"{err.name()}: {err.str()}"[:500])
        if letter is None:
            fatal(
                EXIT_MISCONFIGURED,
                f"topic {output.topic} refuses even a {len(output.value)}-byte record; raise its "
                "max.message.bytes",
                topic=output.topic,
            )
        return letter

    # -- committing ---------------------------------------------------------------------------------

    async def commit(self) -> None:
        """Make what was produced, and the offsets it covers, durable together; a failure rewinds."""
        async with self.lock:
            self._produce_all(self.pending())
            if not self._produced and not self._positions:
                return
            offsets = [TopicPartition(tp.topic, tp.partition, o) for tp, o in self._positions.items()]
            try:
                await self._commit(offsets)
            except CommitFailedError as failed:
                self._rewind(str(failed))
                return
            finally:
                self._positions, self._produced = {}, 0
            self._failing_since = None
            self.watchdog.committed()

    async def abort(self, why: str) -> None:
        """Give up everything since the last commit (the partitions were lost) and rewind the rest."""
        async with self.lock:
            if self.transactional and self._produced:
                await self._recover()
            self._positions, self._produced = {}, 0
            self.pending()  # counts of what was just given up: the partitions' next reader counts them
            self._rewind_all()
            self.watchdog.gave_up()
            log.warning("uncommitted output given up", extra={"why": why})

    def forget(self, tps: list[TP]) -> None:
        """Stop tracking partitions that were committed and revoked."""
        for tp in tps:
            self._positions.pop(tp, None)

    def close(self) -> None:
        if self.transactional:
            with contextlib.suppress(KafkaException):
                self.producer.abort_transaction(5)
        self.producer.flush(5)

    async def _commit(self, offsets: list[TopicPartition]) -> None:
        """CommitFailedError once the producer is ready for the next try."""
        try:
            if self._broken is not None:
                err = self._broken
                raise CommitFailedError(f"the producer failed: {err.name()}: {err.str()}")
            if self.transactional:
                await self._commit_transaction(offsets)
            else:
                await self._flush_and_commit(offsets)
        except CommitFailedError:
            await self._recover()
            raise
        except KafkaException as exc:  # KafkaFatalError from error_cb included
            err = exc.args[0]
            self._refused(err)
            if err.fatal():
                self._broken = self._broken or err
            await self._recover()
            raise CommitFailedError(f"{err.name()}: {err.str()}") from exc

    async def _commit_transaction(self, offsets: list[TopicPartition]) -> None:
        producer = self.producer
        deadline = time.monotonic() + KAFKA_TIMEOUT_S
        for topic, group_offsets in _by_topic(offsets).items():
            metadata = self.sources[topic].group_metadata()
            await self._blocking(
                KAFKA_TIMEOUT_S,
                producer.send_offsets_to_transaction,
                group_offsets,
                metadata,
                KAFKA_TIMEOUT_S,
            )
        while True:
            try:
                await self._blocking(KAFKA_TIMEOUT_S, producer.commit_transaction, KAFKA_TIMEOUT_S)
                break
            except KafkaException as exc:
                if not exc.args[0].retriable() or time.monotonic() > deadline:
                    raise
        self._check_deliveries()
        producer.begin_transaction()

    async def _blocking(self, timeout_s: float, call: Callable[..., Any], *args: Any) -> Any:
        """`call(*args)`, a librdkafka call given `timeout_s`, on a thread of its own. Past the deadline
        the producer is abandoned (broken: the next recovery replaces it, and its deliveries are no
        longer counted) and a non-retriable KafkaException(_TIMED_OUT) raised."""
        try:
            return await call_with_deadline(timeout_s + DEADLINE_GRACE_S, call, *args)
        except TimeoutError:
            name = getattr(call, "__name__", "a producer call")
            err = KafkaError(KafkaError._TIMED_OUT, f"{name} blocked past its {timeout_s:g} s timeout")
            log.error("librdkafka call abandoned with its producer", extra={"call": name})
            self._generation += 1  # its late delivery reports are not this producer's
            self._broken = err
            raise KafkaException(err) from None

    async def _recover(self) -> None:
        """After a failed commit or a lost assignment: the transaction aborted and a new one begun, or
        (the producer broken, or the abort failed) a new producer. While that fails (broker gone) the
        producer stays broken and the next commit tries again."""
        if self._broken is not None and self._broken.code() in MISCONFIGURED:
            self._refused(self._broken)
        if self.transactional and self._broken is None:
            try:
                await self._blocking(KAFKA_TIMEOUT_S, self.producer.abort_transaction, KAFKA_TIMEOUT_S)
                self.producer.begin_transaction()
                return
            except KafkaException as exc:
                self._broken = self._broken or exc.args[0]
        if self._broken is None:
            return
        try:
            await self._replace_producer()
        except KafkaException as exc:
            log.warning("producer not replaced yet", extra={"error": exc.args[0].str()})

    async def _flush_and_commit(self, offsets: list[TopicPartition]) -> None:
        left = await self._blocking(self.send_timeout_s, self.producer.flush, self.send_timeout_s)
        self._check_deliveries()
        if left:
            raise CommitFailedError(f"{left} records not acknowledged in {self.send_timeout_s:g} s")
        if offsets:
            try:
                for topic, group_offsets in _by_topic(offsets).items():
                    self.sources[topic].commit_offsets(group_offsets)
            except KafkaException as exc:
                raise CommitFailedError(f"offsets not committed: {exc.args[0].str()}") from exc

    def _check_deliveries(self) -> None:
        failures, self._failures = self._failures, []
        if not failures:
            return
        for err in failures:
            self._refused(err)
        too_large = [err for err in failures if err.code() == KafkaError.MSG_SIZE_TOO_LARGE]
        if too_large:
            self._broken = too_large[0]  # the topics' limits changed: a new producer reads them again
        raise CommitFailedError(
            f"{len(failures)} records not delivered ({failures[0].name()}: {failures[0].str()})"
        )

    def _rewind(self, why: str) -> None:
        metrics.SEND_RETRIES.inc()
        now = time.monotonic()
        self._failing_since = self._failing_since or now
        if now - self._failing_since > self.send_timeout_s:
            fatal(
                EXIT_BROKER_UNAVAILABLE,
                f"no commit for {self.send_timeout_s:g} s ({why}); exiting so another worker takes over "
                "(what was not committed is read again: nothing is lost)",
            )
        log.warning("commit failed; reading again from the committed offsets", extra={"error": why})
        self._rewind_all()

    def _rewind_all(self) -> None:
        for source in self.sources.values():
            source.rewind()

    def _refused(self, err: KafkaError) -> None:
        fix = MISCONFIGURED.get(err.code())
        if fix is not None:
            fatal(EXIT_MISCONFIGURED, f"the broker refuses this worker: {err.str()}; {fix}")

    # -- the producer -------------------------------------------------------------------------------

    def _on_delivery(self, generation: int, err: KafkaError | None, msg: Any) -> None:
        # A replaced producer's failures went with its aborted transaction (rewound): they must not
        # fail the next producer's commit after it succeeded (the zombie test's over-count).
        if err is not None and generation == self._generation:
            self._failures.append(err)

    def _new_producer(self, generation: int) -> Producer:
        """A producer whose delivery failures count while `generation` is the checkpoint's (blocking:
        reads the topics' limits, and exactly_once: fences this transactional id's predecessor)."""
        conf = self.settings.processor
        overrides: dict[str, Any] = {
            "client.id": f"{self.settings.kafka.client_id}-processor",
            "partitioner": "murmur2_random",  # the Java clients' (and Kafka Streams') key partitioning
            "linger.ms": 5,
            "message.max.bytes": self._record_limit(),
            "delivery.timeout.ms": int(conf.send_timeout_s * 1000),
            "on_delivery": functools.partial(self._on_delivery, generation),
            "delivery.report.only.error": True,  # no callback per delivered record
        }
        if self.transactional:
            # Below the session timeout: a dead worker's open transaction is aborted by the time its
            # partitions move, so the next owner's reads are not held up by it.
            timeout_ms = max(1000, int(conf.session_timeout_s * 800))
            overrides.update(
                {
                    "transactional.id": self.transactional_id,
                    "transaction.timeout.ms": timeout_ms,
                    "delivery.timeout.ms": min(timeout_ms, int(conf.send_timeout_s * 1000)),
                }
            )
        producer = Producer(producer_config(self.settings, **overrides))
        if self.transactional:
            producer.init_transactions(KAFKA_TIMEOUT_S)
            producer.begin_transaction()
        return producer

    async def _replace_producer(self) -> None:
        log.warning("replacing the producer", extra={"transactional_id": self.transactional_id})
        with contextlib.suppress(KafkaException):
            self.producer.flush(0)
        generation = self._generation + 1
        self.producer = await self._blocking(2 * KAFKA_TIMEOUT_S, self._new_producer, generation)
        self._generation = generation
        self._broken, self._failures = None, []

    def _record_limit(self) -> int:
        """The smallest max.message.bytes of the output topics, less a batch's framing."""
        admin = admin_client(self.settings)
        resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in self.output_topics]
        limit = DEFAULT_TOPIC_LIMIT
        try:
            for future in admin.describe_configs(resources, request_timeout=KAFKA_TIMEOUT_S).values():
                entry = future.result().get("max.message.bytes")
                if entry is not None and entry.value:
                    limit = min(limit, int(entry.value))
        except KafkaException as exc:
            self._refused(exc.args[0])
            log.warning("topic limits unknown; assuming Kafka's default", extra={"error": exc.args[0].str()})
        return max(1_000, limit - BATCH_OVERHEAD_BYTES)


async def call_with_deadline(deadline_s: float, call: Callable[..., Any], *args: Any) -> Any:
    """`call(*args)` on a daemon thread of its own, its result or exception; TimeoutError once
    `deadline_s` passed, the thread left to finish (or block) on its own: a blocked call never holds
    up the loop, another call or the process's exit."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if outcome.done():  # the caller stopped waiting
            return
        if error is None:
            outcome.set_result(result)
        else:
            outcome.set_exception(error)

    def run() -> None:
        try:
            result, error = call(*args), None
        except BaseException as exc:  # handed to the caller, whatever it is
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="librdkafka-call", daemon=True).start()
    return await asyncio.wait_for(outcome, deadline_s)


def _by_topic(offsets: list[TopicPartition]) -> dict[str, list[TopicPartition]]:
    """Offsets per input topic (each topic is read by a consumer group of its own)."""
    grouped: dict[str, list[TopicPartition]] = {}
    for offset in offsets:
        grouped.setdefault(offset.topic, []).append(offset)
    return grouped
