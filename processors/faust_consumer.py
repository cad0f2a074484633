"""A Faust consumer that never commits past a message no stream processed.

faust-streaming 0.15.3 can lose messages at a rebalance (measured: the kill -9 fault test lost 6
consecutive tweets of a partition the survivor kept, in about half the runs on an idle host):

- After the post-rebalance seek to the committed offset C, the fetch loop's read offset is reset to
  C while records fetched concurrently keep arriving, so the next record looks like a jump
  (C -> C+4 in every instrumented run). Faust treats a jump as a *gap* (meant for compacted topics
  and transaction markers) and counts the skipped offsets as acknowledged.
- Records that reach a stream while flow control is suspended are skipped without being processed.
- ``_new_offset`` only refuses a hole at the head of the acked offsets when it is 2 or more wide.

Each of these lets a commit pass offsets whose tweets never got a result. For the *guarded* topics
(delete-policy topics an agent consumes: nothing in them is compacted away) this consumer:

1. never counts a jump as acknowledged, and never commits past a hole at the head;
2. when the hole's message is not being processed (not in the consumer's unacked set) on two
   commits in a row, seeks back to it before the next fetch, so it is read and processed again
   (at-least-once: the records after it are processed twice). Once per offset and consumer
   generation: a refetched message can wait behind the backlog longer than two commits, and the
   seek to the committed offset after a rebalance covers anything lost again;
3. if the broker, read from exactly that offset, returns a later record first (same generation),
   the missing offsets do not exist (transaction markers) and only then are they counted as a gap;
4. after a rebalance, seeks a partition nobody ever committed on to its earliest offset (the
   worker's ``auto_offset_reset``) and holds commits to that offset. aiokafka's
   ``seek_to_committed`` leaves such a partition wherever its fetcher got to, so the records read
   while Faust's flow was stopped, dropped unprocessed, were skipped for good (measured: a kill -9
   of one of two workers lost 404 to 613 of 1,500 tweets in about one run in three: every tweet
   the dead worker had read on a partition before its first commit, and more);
5. keeps a revoked partition's acks and committed offset for the commit of Faust's revoke handler
   (Faust drops them just before it, so that commit passed any hole: 10 for 0..9 with 5 unacked).

It also races each delivery against a flow stop more cheaply (``_deliver``): Faust's fetch loop wraps
every record in ``wait_first(callback(message), suspend_flow.wait())``, four new tasks and an
``asyncio.wait`` per record; here the delivery is still a task of its own (so its timing against a
rebalance is Faust's), raced against one shared task that ends when the flow or the consumer stops.
Faust's own cost per event with the worker's monitor, Faust's race vs this one: 136-154 vs 97-126 us
(benchmarks/faust_event_cost.py, A/B pairs on a 2-core EPYC).
Delivering records inline instead (~61 us) left holes after a rebalance (tweets lost, or, with the
guards above, re-read by the thousand): not done.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

from tweetpulse.settings import ProcessorSettings

log = logging.getLogger(__name__)

# What Faust keeps per partition to decide a commit (and drops when the partition is revoked).
COMMIT_STATE = ("_committed_offset", "_acked", "_acked_index", "_gap")
CommitState = dict[str, Any]  # attribute name -> the partition's entry
KAFKA_MAX_RECORD_BYTES = 1_048_588  # Kafka's default max.message.bytes: the largest batch a topic takes
# Faust's event buffers that hold raw records: the classify agent's, the count agent's, the table's changelog.
STREAM_BUFFERS = 3


@dataclass(frozen=True)
class Buffers:
    """Faust's buffer settings for a worker, and the most raw record bytes they let it hold."""

    stream_buffer_maxsize: int  # events per buffer
    consumer_max_fetch_size: int  # bytes per partition per fetch
    worst_case_bytes: int

    def faust_settings(self) -> dict[str, int]:
        return {
            "stream_buffer_maxsize": self.stream_buffer_maxsize,
            "consumer_max_fetch_size": self.consumer_max_fetch_size,
        }


def buffers(conf: ProcessorSettings, partitions: int, brokers: int = 1) -> Buffers:
    """Faust's buffers, sized in bytes rather than messages (Faust's defaults: 4,096 events of up to
    1 MiB per buffer, 12 GiB for three; 1 MiB per partition per fetch).

    Any record up to R = max(Kafka's default max.message.bytes, ``max_message_bytes``) bytes reaches
    the worker, valid or not, so every event counts as R:

    - buffered, not yet taken by an agent: ``STREAM_BUFFERS`` buffers of S events each, S =
      ``buffer_max_bytes`` // (3 R), at least 1, at most 2 ``batch_size`` (enough to fill a batch);
    - fetched, not yet buffered: aiokafka holds one fetch response per broker while Faust delivers
      the previous one; a response has at most F = ``max_message_bytes`` (a valid tweet always fits)
      per partition, plus one record batch of up to R (Kafka returns the first batch of a fetch
      whatever its size, so a larger record is fetched, and dead-lettered, never stuck): with
      `partitions` per topic and all three topics' partitions on this worker, 2 (3 partitions F +
      `brokers` R).

    Worst case: 3 S R + 2 (3 partitions F + brokers R); with the defaults (S = 42, 6 partitions, one
    broker) 132.1 MB + 4.5 MB = 136.6 MB (130 MiB). The events the classify agent took and holds until
    their ack (batching.py) come on top: at most ``buffer_max_bytes`` of their values plus one
    micro-batch (``batch_size`` R), since a new one waits while more is held.
    """
    record = max(KAFKA_MAX_RECORD_BYTES, conf.max_message_bytes)
    events = max(1, min(2 * conf.batch_size, conf.buffer_max_bytes // (STREAM_BUFFERS * record)))
    fetch = conf.max_message_bytes
    fetched = 2 * (STREAM_BUFFERS * partitions * fetch + brokers * record)
    return Buffers(events, fetch, STREAM_BUFFERS * events * record + fetched)


class GaplessConsumer(faust_aiokafka.Consumer):
    """The aiokafka-driver consumer with the guards above for ``guarded_topics``."""

    guarded_topics: frozenset[str] = frozenset()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._suspected: dict[Any, int] = {}  # tp -> head hole seen at the last commit
        self._refetch: dict[Any, int] = {}  # tp -> offset to seek to before the next fetch
        self._verifying: dict[Any, tuple[int, int]] = {}  # tp -> (offset, generation) of a refetch
        self._refetched: set[tuple[Any, int, int]] = set()  # (tp, offset, generation) already refetched
        self._flow_stop: asyncio.Future | None = None  # done once the flow or the consumer stops

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        # Faust drops a revoked partition's acks and committed offset, then runs the app's revoke
        # handler, which waits for the streams and commits: without them `_new_offset` would commit
        # past a hole there. They are put back for that handler and dropped after it.
        kept = {tp: self._commit_state(tp) for tp in revoked if self._guarded(tp)}
        handler = self._on_partitions_revoked
        self._on_partitions_revoked = functools.partial(self._revoke_guarded, handler, kept)
        try:
            await super().on_partitions_revoked(revoked)
        finally:
            self._on_partitions_revoked = handler

    async def _revoke_guarded(
        self, handler: Callable[[set[Any]], Awaitable[None]], kept: dict[Any, CommitState], revoked: set[Any]
    ) -> None:
        for tp, state in kept.items():
            for name, value in state.items():
                getattr(self, name)[tp] = value
        try:
            await handler(revoked)
        finally:
            for tp in kept:
                for name in COMMIT_STATE:
                    getattr(self, name).pop(tp, None)

    def _commit_state(self, tp: Any) -> CommitState:
        return {name: getattr(self, name)[tp] for name in COMMIT_STATE if tp in getattr(self, name)}

    async def perform_seek(self) -> None:
        await super().perform_seek()
        uncommitted = [tp for tp in self.assignment() if self._guarded(tp) and not self._committed_offset[tp]]
        if uncommitted:
            earliest = await self.earliest_offsets(*uncommitted)
            await self.seek_wait(earliest)
            self._committed_offset.update(earliest)  # the head `_new_offset` guards from here on
            log.info(
                "uncommitted partitions read from their earliest offset",
                extra={"partitions": {f"{tp.topic}:{tp.partition}": o for tp, o in earliest.items()}},
            )

    def _guarded(self, tp: Any) -> bool:
        return tp.topic in self.guarded_topics

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        if not self._guarded(tp):
            await super()._add_gap(tp, offset_from, offset_to)
        # A jump in a guarded topic stays a hole until a refetch proves the offsets do not exist.

    def _new_offset(self, tp: Any) -> int | None:
        committed = self._committed_offset[tp]
        if self._guarded(tp) and committed is not None and self._acked[tp]:
            if not self._covered(tp, committed):  # a hole at the head: commit nothing past it
                self._watch_hole(tp, committed)
                return None
            self._gap[tp].chop(0, committed)  # verified gaps below the commit are spent
        self._suspected.pop(tp, None)
        return super()._new_offset(tp)

    def _covered(self, tp: Any, offset: int) -> bool:
        return offset in self._acked_index[tp] or bool(self._gap[tp].at(offset))

    def _watch_hole(self, tp: Any, offset: int) -> None:
        """Schedules a refetch of `offset` once it stayed unprocessed for two commits in a row."""
        if any(m.tp == tp and m.offset == offset for m in self._unacked_messages):
            self._suspected.pop(tp, None)  # a stream is working on it
        elif self._suspected.get(tp) != offset:
            self._suspected[tp] = offset
        elif (tp, offset, generation := self.app.consumer_generation_id) not in self._refetched:
            # Bounded: entries of earlier generations are spent (the seek after a rebalance covers them).
            self._refetched = {entry for entry in self._refetched if entry[2] == generation}
            log.warning(
                "unprocessed offset behind processed ones; reading it again",
                extra={"topic": tp.topic, "partition": tp.partition, "offset": offset},
            )
            self._refetched.add((tp, offset, generation))
            self._refetch[tp] = offset

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        await self._seek_back()
        async for tp, message in super().getmany(timeout):
            start, generation = self._verifying.pop(tp, (None, None))
            if start is not None and message.offset > start and generation == message.generation_id:
                # Read from exactly `start`, the broker returned a later record: the offsets in
                # between do not exist (transaction markers), so they may be committed past.
                self._gap[tp].addi(start, message.offset)
            yield tp, message

    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's fetch loop (faust/transport/consumer.py ``_drain_messages``, 0.15.3) with the
        cheaper race of `_deliver`."""
        callback, getmany = self.callback, self.getmany
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):
                self.diag.set_flag(faust_consumer.CONSUMER_FETCHING)
                records = getmany(timeout=1.0)
                await asyncio.sleep(0)  # getmany can return at once, again and again
                if self.should_stop:
                    continue
                async for tp, message in records:
                    offset, last = message.offset, read_offset[tp]
                    if last is not None and offset < last:
                        continue  # read before (a seek back): Faust drops it the same way
                    if last and offset - last > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, last + 1, offset)
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                    await self._deliver(callback(message))
                    read_offset[tp] = offset
                self.diag.unset_flag(faust_consumer.CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
        except Exception:
            log.exception("the fetch loop failed")
            raise
        finally:
            self.diag.unset_flag(faust_consumer.CONSUMER_FETCHING)

    async def _deliver(self, delivery: Coroutine[Any, Any, Any]) -> None:
        """Faust's per-record race with one new task instead of four: the delivery runs as a task of its own
        (as in Faust, so the timing against a rebalance is Faust's), raced against one shared task
        that ends when the flow or the consumer stops, instead of three new waiters per record. A
        delivery the stop overtakes is cancelled as Faust cancels it (the seek after the rebalance
        reads the record again)."""
        task = asyncio.ensure_future(delivery)
        if self._flow_stop is None or self._flow_stop.done():
            if self._flow_stop is not None and not self._flow_stop.cancelled():
                self._flow_stop.exception()  # retrieved: a stop is what it reports
            self._flow_stop = asyncio.ensure_future(self.wait_for_stopped(self.suspend_flow))
        try:
            await asyncio.wait([task, self._flow_stop], return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when the fetch loop itself is cancelled (a stop), as Faust's wait_first does
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()

    async def _seek_back(self) -> None:
        if not self._refetch:
            return
        assigned = self.assignment()
        seeks = {tp: offset for tp, offset in self._refetch.items() if tp in assigned}
        self._refetch.clear()
        if not seeks:
            return
        # In the consumer's own thread (as Faust's recovery seeks are): the fetcher drops what it
        # buffered from the old position, so the next record of each tp is the one asked for.
        await self.seek_wait(seeks)
        for tp, offset in seeks.items():
            self._read_offset[tp] = offset
            self._verifying[tp] = (offset, self.app.consumer_generation_id)
            self._suspected.pop(tp, None)


def guarded_transport(topics: Iterable[str]) -> type:
    """The aiokafka Transport whose consumers guard `topics`."""

    class Consumer(GaplessConsumer):
        guarded_topics = frozenset(topics)

    class Transport(faust_aiokafka.Transport):
        pass

    Transport.Consumer = Consumer
    return Transport
