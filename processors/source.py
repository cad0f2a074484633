"""The worker's input: a confluent-kafka consumer in the processors' group, handing whole fetches to
the Faust agents.

One thread polls (librdkafka heartbeats on a thread of its own, so a slow model never costs the group
membership), turns each fetch into :class:`Record` lists and hands them to the event loop, which
holds the thread while its agents are full (back-pressure). Rebalancing is cooperative (incremental):
a worker keeps the partitions it keeps, and only a revoked partition's output is committed or dropped
(``on_revoke`` / ``on_lost``, run on the loop by :class:`~tweetpulse.processors.checkpoint.Checkpoint`).

Every record carries the *epoch* of its partition when it was fetched. An epoch ends when the partition
is revoked or lost, or rewound after a failed commit; a record of an ended epoch is never produced or
counted (:meth:`Source.live`), so nothing the worker no longer owns, or already gave up, reaches an
output: the partition's next reader (this worker after a rewind) reads it again from the committed
offset.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from tweetpulse.kafka import consumer_config
from tweetpulse.processors.exits import crashed
from tweetpulse.settings import Settings

log = logging.getLogger(__name__)

HANDOFF_CHECK_S = 0.5  # how often a blocked hand-off checks for a stop
HIGHWATER_EVERY_S = 1.0  # how often the end offsets (consumer lag) are noted
CALLBACK_TIMEOUT_S = 60.0
QUEUE_MAX_KBYTES = 2_097_151  # librdkafka's largest queued.max.messages.kbytes  # longest a rebalance callback waits for the loop (a commit is bounded itself)


class TP(NamedTuple):
    topic: str
    partition: int


@dataclass(slots=True, frozen=True)
class Record:
    """One consumed message: what the worker needs of it, and its partition's epoch when fetched."""

    tp: TP
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float  # epoch seconds (the record's CreateTime or LogAppendTime)
    epoch: int

    @property
    def topic(self) -> str:
        return self.tp.topic

    @property
    def partition(self) -> int:
        return self.tp.partition


class Rebalance:
    """What the loop does when partitions come and go (coroutines; run on the worker's loop)."""

    async def assigned(self, tps: list[TP]) -> None: ...
    async def revoked(self, tps: list[TP]) -> None: ...
    async def lost(self, tps: list[TP]) -> None: ...


class Source:
    """One input topic's consumer thread, in a consumer group of its own (the sticky assignor balances
    a group's partitions in all, not per topic). `deliver` (a coroutine on the worker's loop) takes each fetch's records;
    `restore` runs on this thread for newly assigned or rewound partitions before any of their records
    is fetched."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        group_id: str,
        deliver: Callable[[list[Record]], Awaitable[None]],
        rebalance: Rebalance,
        restore: Callable[[list[TP]], None] = lambda tps: None,
    ) -> None:
        conf = settings.processor
        self.topic = topic
        self.loop: asyncio.AbstractEventLoop | None = None  # the worker's, from start()
        self.deliver = deliver
        self.rebalance = rebalance
        self.restore = restore
        self.fetch_max = conf.fetch_max_records
        # consume() returns once it has fetch_max records or this passed: a tweet waits at most this
        # long for company (also how soon the thread notices a stop or a rewind when idle)
        self.fetch_wait_s = conf.batch_wait_s
        self.consumer = Consumer(consumer_config(settings, **consumer_overrides(settings, group_id)))
        self.epochs: dict[TP, int] = {}  # the assigned partitions and their current epochs
        self.rebalancing = False
        self.assigned_once = threading.Event()
        self._next_epoch = 0
        self._lock = threading.Lock()  # epochs change under it; a fetch is tagged with a snapshot
        self._rewind: set[TP] = set()  # partitions to seek back to their committed offsets
        self._stop = threading.Event()
        # confluent-kafka serializes every call on a consumer with its consume(): only this thread
        # calls it, and the others ask it (offsets to commit) or read what it noted.
        self._to_commit: queue.SimpleQueue[list[TopicPartition]] = queue.SimpleQueue()
        self._metadata: Any = None
        self._highwater: dict[TP, int] = {}
        self._highwater_at = 0.0
        self._thread = threading.Thread(target=self._run, name=f"consumer-{topic}", daemon=True)

    # -- the loop's side ----------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self._thread.start()

    def live(self, record: Record) -> bool:
        """Whether `record` belongs to its partition's current epoch (may still be produced)."""
        return self.epochs.get(record.tp) == record.epoch

    def rewind(self, tps: Iterable[TP] | None = None) -> None:
        """End the epochs of `tps` (all assigned partitions by default) and read them again from their
        committed offsets: what was fetched of them and not committed is dropped."""
        with self._lock:
            tps = list(self.epochs if tps is None else tps)
            for tp in tps:
                if tp in self.epochs:
                    self.epochs[tp] = self._new_epoch()
            self._rewind.update(tps)

    def assignment(self) -> list[TP]:
        return list(self.epochs)

    def group_metadata(self) -> Any:
        """The group generation this worker's consumer is in, as of its last poll (exactly_once sends
        it with the offsets: a worker the group has moved on from is fenced)."""
        return self._metadata

    def commit_offsets(self, offsets: list[TopicPartition]) -> None:
        """Have the consumer thread commit `offsets` (at_least_once: after the producer's flush) before
        its next fetch, or before a revoke callback returns."""
        self._to_commit.put(offsets)

    def highwater(self, tp: TP) -> int | None:
        """The partition's end offset as last fetched (None until the first fetch)."""
        return self._highwater.get(tp)

    def close(self) -> None:
        """Leave the group (the revoke callback commits what was produced) and end the thread.
        Blocking: call it off the loop, while the loop runs."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        elif self.loop is None:  # never started (the worker failed before it consumed)
            self.consumer.close()

    # -- the consumer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._commit_requested(asynchronous=True)
                self._seek_rewound()
                with self._lock:
                    before = dict(self.epochs)
                messages = self.consumer.consume(self.fetch_max, self.fetch_wait_s)
                self._metadata = self.consumer.consumer_group_metadata()
                records = self._records(messages, before)
                if records:
                    self._hand_off(records)
                self._note_highwater()
            self.consumer.close()
        except Exception as exc:
            crashed("the consumer thread", exc)

    def _records(self, messages: list[Any], before: dict[TP, int]) -> list[Record]:
        """The fetched records of assigned partitions, tagged with their epochs. A partition whose epoch
        changed during the fetch (a rewind, or a revoke and assignment inside it) has its records
        dropped and is read again from its committed offset: nothing fetched is skipped unprocessed."""
        records = []
        with self._lock:
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        if err.fatal():
                            raise KafkaException(err)
                        log.warning("consumer error", extra={"error": err.str()})
                    continue
                tp = TP(msg.topic(), msg.partition())
                epoch = self.epochs.get(tp)
                if epoch is None:
                    continue  # revoked during the fetch: no longer this worker's
                if before.get(tp, epoch) != epoch:
                    self._rewind.add(tp)
                    continue
                _, stamp = msg.timestamp()
                records.append(Record(tp, msg.offset(), msg.key(), msg.value(), stamp / 1000, epoch))
        return records

    def _commit_requested(self, asynchronous: bool) -> None:
        while True:
            try:
                offsets = self._to_commit.get_nowait()
            except queue.Empty:
                return
            try:
                self.consumer.commit(offsets=offsets, asynchronous=asynchronous)
            except KafkaException as exc:  # the next commit covers them; a lost partition is read again
                log.warning("offsets not committed", extra={"error": exc.args[0].str()})

    def _note_highwater(self) -> None:
        now = time.monotonic()
        if now - self._highwater_at < HIGHWATER_EVERY_S:
            return
        self._highwater_at = now
        for tp in list(self.epochs):
            _, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            if high >= 0:
                self._highwater[tp] = high

    def _hand_off(self, records: list[Record]) -> None:
        future = asyncio.run_coroutine_threadsafe(self.deliver(records), self.loop)
        while True:
            try:
                future.result(HANDOFF_CHECK_S)
                return
            except TimeoutError:
                if self._stop.is_set():
                    future.cancel()
                    return

    def _seek_rewound(self) -> None:
        with self._lock:
            tps, self._rewind = [tp for tp in self._rewind if tp in self.epochs], set()
        if not tps:
            return
        committed = self.consumer.committed([TopicPartition(*tp) for tp in tps], timeout=30)
        for tp in committed:
            at = TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
            try:
                self.consumer.seek(at)
            except KafkaException:  # not fetching yet (just assigned): assign it again at the offset
                self.consumer.incremental_unassign([TopicPartition(tp.topic, tp.partition)])
                self.consumer.incremental_assign([at])
        self.restore([TP(tp.topic, tp.partition) for tp in committed])
        log.info("partitions rewound to their committed offsets", extra={"partitions": _names(tps)})

    def _new_epoch(self) -> int:
        self._next_epoch += 1
        return self._next_epoch

    def _call(self, what: str, coro: Awaitable[None]) -> None:
        """Run a rebalance coroutine on the loop and wait for it, then commit what it asked to commit
        (this is the consumer thread, inside the callback: the partitions are still this worker's)."""
        self.rebalancing = True
        try:
            self._metadata = self.consumer.consumer_group_metadata()
            asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALLBACK_TIMEOUT_S)
            self._commit_requested(asynchronous=False)
        except Exception as exc:
            crashed(f"the {what} callback", exc)
        finally:
            self.rebalancing = False

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = [TP(p.topic, p.partition) for p in partitions]
        self.restore(tps)
        with self._lock:
            for tp in tps:
                self.epochs[tp] = self._new_epoch()
        self.assigned_once.set()
        self._call("assign", self.rebalance.assigned(tps))

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = self._end(partitions)
        self._call("revoke", self.rebalance.revoked(tps))

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = self._end(partitions)
        self._call("lost", self.rebalance.lost(tps))

    def _end(self, partitions: list[TopicPartition]) -> list[TP]:
        with self._lock:
            tps = [TP(p.topic, p.partition) for p in partitions]
            for tp in tps:
                self.epochs.pop(tp, None)
            return tps


def consumer_overrides(settings: Settings, group_id: str) -> dict[str, Any]:
    """The worker consumers' librdkafka settings (kafka.extra wins over none of these: they are what
    the worker's guarantees rest on)."""
    conf = settings.processor
    return {
        "group.id": group_id,
        "client.id": f"{settings.kafka.client_id}-processor",
        "partition.assignment.strategy": "cooperative-sticky",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",  # aborted outputs of a worker's own internal topics too
        "auto.offset.reset": "earliest",
        "session.timeout.ms": int(conf.session_timeout_s * 1000),
        "heartbeat.interval.ms": int(conf.heartbeat_interval_s * 1000),
        # The thread waits for the agents while they are full: up to a model call plus a send.
        "max.poll.interval.ms": int(max(conf.rebalance_timeout_s, conf.stall_timeout_s) * 1000),
        # Bounded prefetch in bytes (the agents' queue and the batcher hold the rest, see batching.py).
        "queued.max.messages.kbytes": min(max(1024, conf.buffer_max_bytes // 4 // 1024), QUEUE_MAX_KBYTES),
        "fetch.max.bytes": min(conf.buffer_max_bytes // 4, 52_428_800),
    }


def _names(tps: Iterable[TP]) -> list[str]:
    return [f"{t}:{p}" for t, p in sorted(tps)]
