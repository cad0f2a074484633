"""The consumer thread's epochs (processors/source.py): no record of a partition the worker no longer
owns, or gave up since its fetch, is handed on, and no fetched record is skipped unprocessed."""

from __future__ import annotations

from typing import Any

import pytest

from tweetpulse.processors.source import TP, Rebalance, Record, Source
from tweetpulse.settings import load_settings


class _Message:
    """What Source reads of a confluent-kafka Message."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._tp, self._offset = (topic, partition), offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._tp[0]

    def partition(self) -> int:
        return self._tp[1]

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_700_000_000_000


@pytest.fixture
def source() -> Any:
    async def deliver(records: list[Record]) -> None: ...

    settings = load_settings(kafka={"bootstrap_servers": "127.0.0.1:1"})
    src = Source(settings, "raw", "group", deliver, Rebalance())
    with src._lock:
        for partition in (0, 1, 2):
            src.epochs[TP("raw", partition)] = src._new_epoch()
    yield src
    src.consumer.close()


def test_records_are_tagged_with_their_partitions_current_epoch_and_are_live(source: Any) -> None:
    before = dict(source.epochs)
    records = source._records([_Message("raw", 0, 5), _Message("raw", 1, 7)], before)
    assert [(r.tp, r.offset, r.epoch) for r in records] == [
        (TP("raw", 0), 5, before[TP("raw", 0)]),
        (TP("raw", 1), 7, before[TP("raw", 1)]),
    ]
    assert all(source.live(r) for r in records) and records[0].timestamp == 1_700_000_000.0


def test_a_rewind_ends_the_epoch_so_records_fetched_before_it_are_no_longer_live(source: Any) -> None:
    (record,) = source._records([_Message("raw", 0, 5)], dict(source.epochs))
    source.rewind([TP("raw", 0)])
    assert not source.live(record)
    assert source._rewind == {TP("raw", 0)}  # read again from its committed offset


def test_a_partition_rewound_during_the_fetch_has_its_records_dropped_and_read_again(source: Any) -> None:
    before = dict(source.epochs)
    source.rewind([TP("raw", 1)])  # as if the loop aborted a transaction while consume() ran
    source._rewind.clear()
    records = source._records([_Message("raw", 0, 5), _Message("raw", 1, 7)], before)
    assert [r.tp for r in records] == [TP("raw", 0)]
    assert source._rewind == {TP("raw", 1)}  # never skipped: sought back before the next fetch


def test_records_of_a_partition_revoked_during_the_fetch_are_dropped(source: Any) -> None:
    before = dict(source.epochs)
    source._end([_Partition("raw", 2)])
    assert source._records([_Message("raw", 2, 9)], before) == []
    assert TP("raw", 2) not in source.assignment() and not source._rewind


def test_a_partition_assigned_during_the_fetch_keeps_its_records(source: Any) -> None:
    before = dict(source.epochs)
    with source._lock:
        source.epochs[TP("raw", 3)] = source._new_epoch()
    (record,) = source._records([_Message("raw", 3, 0)], before)
    assert source.live(record)


class _Partition:
    def __init__(self, topic: str, partition: int) -> None:
        self.topic, self.partition = topic, partition
