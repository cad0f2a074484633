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
from faust.types import TP

from tweetpulse.processors.faust_consumer import guarded_transport

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
