"""The processor's Faust consumer never commits past a raw tweet that no stream processed.

Unit tests of the commit guard on a real (unstarted) Faust consumer; the end-to-end proof is the
kill -9 fault test in test_faults.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

from tweetpulse.processors.faust_consumer import KAFKA_MAX_RECORD_BYTES, buffers, guarded_transport
from tweetpulse.settings import ProcessorSettings

RAW = "tweets.raw"
OTHER = "unguarded"


@pytest.fixture
def consumer() -> Any:
    app = faust.App("guard-test", broker="kafka://127.0.0.1:9")  # never started: nothing connects
    app.transport = guarded_transport([RAW])(app.conf.broker_consumer, app)
    app.topic(RAW)
    app.topic(OTHER)
    return app.consumer


@dataclass(frozen=True)
class InFlight:
    """What the consumer's unacked set holds: a message a stream has taken and not acked yet."""

    tp: TP
    offset: int


def processed(consumer: Any, tp: TP, *offsets: int) -> None:
    for offset in offsets:
        consumer._acked[tp].append(offset)
        consumer._acked_index[tp].add(offset)


def test_commit_stops_before_an_unprocessed_offset_at_the_head(consumer: Any) -> None:
    tp = TP(RAW, 0)
    consumer._committed_offset[tp] = 10
    processed(consumer, tp, 11, 12)  # 10 never processed
    assert consumer._new_offset(tp) is None
    processed(consumer, tp, 10)
    assert consumer._new_offset(tp) == 13


def test_unguarded_topics_keep_fausts_behaviour(consumer: Any) -> None:
    tp = TP(OTHER, 0)
    consumer._committed_offset[tp] = 10
    processed(consumer, tp, 11, 12)
    assert consumer._new_offset(tp) == 13  # Faust's own check lets a 1-wide head hole through


def test_a_fetch_jump_is_not_counted_as_processed(consumer: Any) -> None:
    tp = TP(RAW, 0)
    consumer._committed_offset[tp] = 10
    processed(consumer, tp, 10)
    asyncio.run(consumer._add_gap(tp, 11, 14))  # what Faust's fetch loop does on 10 -> 15
    processed(consumer, tp, 15)
    assert consumer._new_offset(tp) == 11
    assert consumer._new_offset(tp) is None  # 11-14 were never processed


def test_an_offset_left_unprocessed_for_two_commits_is_read_again(consumer: Any) -> None:
    tp = TP(RAW, 0)
    consumer._committed_offset[tp] = 10
    processed(consumer, tp, 11)
    consumer._new_offset(tp)
    assert tp not in consumer._refetch  # one commit: it may still be on its way
    consumer._new_offset(tp)
    assert consumer._refetch[tp] == 10


def test_an_offset_a_stream_is_working_on_is_not_read_again(consumer: Any) -> None:
    tp = TP(RAW, 0)
    consumer._committed_offset[tp] = 10
    processed(consumer, tp, 11)
    in_flight = InFlight(tp, 10)
    consumer._unacked_messages = {in_flight}
    for _ in range(3):
        assert consumer._new_offset(tp) is None
    assert tp not in consumer._refetch


def test_a_hole_is_read_again_once_per_generation(consumer: Any) -> None:
    tp = TP(RAW, 0)
    consumer._committed_offset[tp] = 10
    processed(consumer, tp, 11)
    for _ in range(2):
        consumer._new_offset(tp)
    assert consumer._refetch.pop(tp) == 10
    for _ in range(4):  # the refetched message waits behind a backlog: no second refetch
        consumer._new_offset(tp)
    assert tp not in consumer._refetch
    consumer.app.consumer_generation_id += 1  # after a rebalance it may be read again
    for _ in range(2):
        consumer._new_offset(tp)
    assert consumer._refetch[tp] == 10


def test_offsets_a_refetch_skips_are_committed_past(consumer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tp = TP(RAW, 0)

    async def fetched(self: Any, timeout: float) -> Any:  # the broker, read from 10, returns 12
        yield tp, SimpleNamespace(tp=tp, offset=12, generation_id=consumer.app.consumer_generation_id)

    monkeypatch.setattr(faust_aiokafka.Consumer, "getmany", fetched)
    consumer._committed_offset[tp] = 10
    processed(consumer, tp, 12)  # 10 and 11 do not exist (say, transaction markers)
    assert consumer._new_offset(tp) is None
    consumer._verifying[tp] = (10, consumer.app.consumer_generation_id)  # what a refetch from 10 sets
    asyncio.run(_drain(consumer))
    assert consumer._new_offset(tp) == 13


async def _drain(consumer: Any) -> None:
    async for _ in consumer.getmany(1.0):
        pass


def _message(tp: TP, offset: int) -> Message:
    return Message(tp.topic, tp.partition, offset, 0.0, 0, None, None, b"{}", None, tp=tp)


def test_a_revoke_time_commit_stops_before_a_hole(consumer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust drops a revoked partition's acks and committed offset, then its revoke handler waits for
    the streams and commits: the guard must still see the hole at 5 then."""
    tp = TP(RAW, 0)
    committed: dict[TP, int] = {}

    async def commit(offsets: dict[TP, int]) -> bool:
        committed.update(offsets)
        return True

    async def flushed() -> None:
        pass

    async def app_revoke_handler(revoked: set[TP]) -> None:  # faust App._on_partitions_revoked
        for offset in (8, 9):  # streams finish what they held (consumer.wait_empty), 5 never comes
            consumer.ack(_message(tp, offset))
        await consumer.commit()

    monkeypatch.setattr(consumer, "_commit", commit)
    monkeypatch.setattr(consumer, "assignment", lambda: {tp})  # aiokafka keeps it until the next one
    monkeypatch.setattr(consumer.app.producer, "flush", flushed)
    monkeypatch.setattr(consumer.app.topics, "acks_enabled_for", lambda topic: True)  # an agent's topic
    consumer._on_partitions_revoked = app_revoke_handler
    consumer._committed_offset[tp] = 0
    for offset in (0, 1, 2, 3, 4, 6, 7):  # 5 was taken and not acked
        consumer.ack(_message(tp, offset))

    asyncio.run(consumer.on_partitions_revoked({tp}))
    assert committed == {tp: 5}, "not committed up to the unprocessed offset 5, or past it"
    assert consumer._committed_offset.get(tp) is None and tp not in consumer._acked  # dropped after


MiB = 1024 * 1024


def test_buffers_hold_a_bounded_number_of_bytes_whatever_the_records_sizes() -> None:
    conf = ProcessorSettings()
    sized = buffers(conf, partitions=6)
    assert sized.consumer_max_fetch_size == conf.max_message_bytes  # larger records: one per fetch
    assert 3 * sized.stream_buffer_maxsize * KAFKA_MAX_RECORD_BYTES <= conf.buffer_max_bytes
    assert sized.worst_case_bytes == 136_578_560 < 131 * MiB  # the figure in the docstring
    assert sized.faust_settings() == {"stream_buffer_maxsize": 42, "consumer_max_fetch_size": 64 * 1024}

    larger_records = buffers(ProcessorSettings(max_message_bytes=8 * MiB), partitions=6)
    assert larger_records.stream_buffer_maxsize == 128 // 24  # 3 buffers of 8 MiB events
    assert buffers(ProcessorSettings(buffer_max_bytes=4 * MiB), 6).stream_buffer_maxsize == 1
    assert buffers(ProcessorSettings(buffer_max_bytes=16 * 1024 * MiB), 6).stream_buffer_maxsize == 256
