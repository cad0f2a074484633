"""What a worker holds and shows is bounded, whatever its input.

Its web server shows only its own views: Faust's built-in ``/router/`` and ``/table/`` (the cluster's
routing, the tables' contents) are off, and ``/tweetpulse/counts/`` returns at most
``COUNTS_MAX_ROWS`` rows, of window totals read back from a changelog anyone can write to only when
they are valid totals of their key. Each of its consumers prefetches a bounded number of bytes
(``source.consumer_overrides``: a quarter of ``buffer_max_bytes``), with fetches smaller than a few of
the largest records, which still reach the worker and their dead letters. Unit tests, and real workers
on the real broker.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import test_processors_pipeline as processor_tests
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from test_processors_pipeline import (  # the workers' test helpers, shared rather than copied
    Worker,
    labeled_tweets,
    produce_tweets,
    results_by_id,
    wait_for,
    wait_for_assignment,
)

from tweetpulse.contracts import DeadLetter, LabelCounts
from tweetpulse.kafka import TopicSpec, consumer_config, create_topics, producer_config
from tweetpulse.processors.aggregates import label_counts, read_changelog
from tweetpulse.processors.app import Worker as WorkerProcess
from tweetpulse.processors.source import consumer_overrides
from tweetpulse.processors.views import COUNTS_MAX_ROWS, count_rows
from tweetpulse.settings import Settings, load_settings

registry = processor_tests.registry  # fixtures
start_worker = processor_tests.start_worker

WINDOW_S = 60
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z: windows within the range the contracts admit
MIB = 1024 * 1024


def totals(windows: int, tags: int) -> list[LabelCounts]:
    """The totals the count agent holds: `windows` windows of `tags` tags, tag i counted i+1 times per
    label."""
    return [
        label_counts(
            T0 + w * WINDOW_S,
            WINDOW_S,
            {"tweets": {}, "tags": {f"tag{i}": {"negative": i + 1, "positive": i + 1} for i in range(tags)}},
        )
        for w in range(windows)
    ]


def test_counts_rows_are_bounded_newest_windows_and_busiest_tags_first() -> None:
    rows, truncated = count_rows(totals(windows=10, tags=1_000), max_rows=2_500)  # 20,000 rows held
    assert truncated and len(rows) == 2_500
    starts = [row["window_start"] for row in rows]
    assert starts == sorted(starts, reverse=True)
    assert {row["tag"] for row in rows[:2]} == {"tag999"}  # the busiest tag of the newest window
    assert len(json.dumps(rows)) < 2_500 * 1_000


def test_counts_rows_all_fit_below_the_bound() -> None:
    rows, truncated = count_rows(totals(windows=2, tags=3), max_rows=12)
    assert not truncated and len(rows) == 12
    assert rows[0] == {
        "tag": "tag2",
        "label": "negative",
        "window_start": "2024-01-01T00:01:00+00:00",
        "window_end": "2024-01-01T00:02:00+00:00",
        "count": 3,
    }


def test_counts_rows_say_truncated_whenever_they_leave_a_row_out() -> None:
    held = label_counts(T0, WINDOW_S, {"tweets": {}, "tags": {"y": {}, "z": {}, "a": {"positive": 0}}})
    rows, truncated = count_rows([held], max_rows=1)
    assert truncated or [(row["tag"], row["count"]) for row in rows] == [("a", 0)]


def _total(start: float, end: float, tags: object, **fields: object) -> bytes:
    return json.dumps(
        {"window_start": start, "window_end": end, "tweets": {}, "tags": tags, **fields}
    ).encode()


def test_the_counts_view_shows_only_valid_totals_of_their_key_read_back_from_the_changelog(
    settings: Settings,
) -> None:
    good = label_counts(T0, WINDOW_S, {"tweets": {"positive": 1}, "tags": {"ok": {"positive": 1}}})
    other = label_counts(T0 + 60, WINDOW_S, {"tweets": {}, "tags": {"other": {"negative": 2}}})
    at = lambda start: (T0 + start, T0 + start + WINDOW_S)  # noqa: E731
    written: list[tuple[bytes | None, bytes | None]] = [
        (good.key, good.to_bytes()),
        (b"1970-01-01T00:00:00+00:00", _total(0, WINDOW_S, {"ok": {"positive": 1}})),  # outside the range
        (b"not a window key", good.to_bytes()),
        (other.key, good.to_bytes()),  # another window's key
        (label_counts(T0 + 30, 30, {}).key, _total(T0 + 30, T0 + 90, {"ok": {"positive": 1}})),  # misaligned
        (good.key, _total(T0, T0 + 120, {"ok": {"positive": 1}})),  # not one window long
        (good.key, _total(T0, 10**20, {"ok": {"positive": 1}})),
        (good.key, _total(*at(0), ["not", "counts"])),
        (good.key, _total(*at(0), "none")),
        (good.key, _total(*at(0), {"x" * 66: {"positive": 1}})),  # a tag past 65 characters
        (good.key, _total(*at(0), {"odd": {"neutral": 1}})),
        (good.key, _total(*at(0), {"ok": {"positive": -1}})),
        (good.key, _total(*at(0), {"ok": {"positive": 10**12 + 1}})),
        (good.key, b"\xff\xfe not utf-8"),
        (good.key, None),  # a tombstone
        (None, good.to_bytes()),
    ]
    topic = f"tp-test-changelog-{uuid.uuid4().hex[:8]}"
    create_topics(settings, [TopicSpec(topic, 2, settings.topics.replication_factor, {})])
    try:
        producer = Producer(producer_config(settings))
        for key, value in written:
            producer.produce(topic, value, key, partition=0)
        producer.produce(topic, other.to_bytes(), other.key, partition=1)
        assert producer.flush(30) == 0
        restored = read_changelog(settings, topic, [0, 1], WINDOW_S, timeout_s=60)
    finally:
        AdminClient(settings.kafka.confluent_config()).delete_topics([topic])
    assert {p: {start: t.to_bytes() for start, t in w.items()} for p, w in restored.items()} == {
        0: {float(T0): good.to_bytes()},
        1: {float(T0 + 60): other.to_bytes()},
    }
    rows, truncated = count_rows([t for w in restored.values() for t in w.values()], max_rows=100)
    assert [(row["tag"], row["label"], row["count"]) for row in rows] == [
        ("other", "negative", 2),  # the newest window first
        ("ok", "positive", 1),
    ]
    assert not truncated


def test_the_worker_app_serves_no_builtin_view() -> None:
    settings = load_settings()
    worker = WorkerProcess(settings, SimpleNamespace(version="v1", provider="cpu"))  # never started
    try:
        conf = worker.app.conf
        assert not (conf.web_router_enabled or conf.web_tables_enabled)
        assert not (conf.web_stats_enabled or conf.web_graph_enabled)
        assert [prefix for prefix, _ in worker.app.web.blueprints._enabled] == [""]  # the plain index
        assert worker.source.fetch_max == settings.processor.fetch_max_records
    finally:
        worker.close()
        for source in (worker.source, worker.count_source):  # built, never started
            source.consumer.close()


@pytest.mark.parametrize(
    "buffer_max_bytes",
    [
        4 * MIB,  # the least the settings admit
        128 * MIB,  # the default
        8 * 1024**3 - 4096,
        16 * 1024**3,  # the most the settings admit: capped at librdkafka's largest queue
    ],
)
def test_each_worker_consumer_prefetches_at_most_a_quarter_of_buffer_max_bytes(buffer_max_bytes: int) -> None:
    extra = {  # kafka.extra never loosens what the worker's bounds and guarantees rest on
        "queued.max.messages.kbytes": 10**6,
        "fetch.max.bytes": 10**9,
        "enable.auto.commit": True,
        "isolation.level": "read_uncommitted",
    }
    settings = load_settings(processor={"buffer_max_bytes": buffer_max_bytes}, kafka={"extra": extra})
    overrides = consumer_overrides(settings, "tp-test-group")
    quarter = buffer_max_bytes // 4
    prefetched = overrides["queued.max.messages.kbytes"] * 1024  # librdkafka's prefetch queue, in bytes
    assert 1 * MIB <= prefetched <= quarter  # never below one fetch of the largest record Kafka admits
    assert 1 * MIB <= overrides["fetch.max.bytes"] <= min(quarter, prefetched)  # a fetch fits the queue
    config = consumer_config(settings, **overrides)
    assert {name: config[name] for name in extra} == {name: overrides[name] for name in extra}
    assert config["enable.auto.commit"] is False and config["isolation.level"] == "read_committed"
    assert config["group.id"] == "tp-test-group"
    Consumer(config).close()  # librdkafka takes them


def http_status(worker: Worker, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}{path}", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_real_worker_hides_fausts_router_and_table_views_and_bounds_its_counts_view(
    settings: Settings, start_worker: Callable[..., Worker]
) -> None:
    # 32 tags per tweet, each tag on one tweet only: one row per tag, past the view's bound.
    tweets = [
        t.model_copy(update={"rule_tags": [f"t{i}-{j}" for j in range(32)]})
        for i, t in enumerate(labeled_tweets(COUNTS_MAX_ROWS // 32 + 10))
    ]
    worker = start_worker(TWEETPULSE_PROCESSOR__AGG_MAX_TAGS="50000")
    wait_for_assignment([worker], settings.topics.partitions)
    for path in ("/router/", "/table/", "/table/label-counts/", "/graph/", "/stats/", "/assignment/"):
        assert http_status(worker, path) == 404, path
    assert http_status(worker, "/tweetpulse/counts/") == 200

    produce_tweets(settings, tweets)
    counts: dict = {}

    def truncated() -> bool:
        body = worker.get("/tweetpulse/counts/")
        counts.update(json.loads(body) if body else {})
        return bool(counts.get("truncated"))

    wait_for(truncated, 120, "the counts view to hold more than its bound", [worker])
    assert len(counts["counts"]) == COUNTS_MAX_ROWS
    assert len(json.dumps(counts)) < COUNTS_MAX_ROWS * 1_000
    assert worker.stop() == 0


def test_records_of_about_1_mib_more_than_the_consumer_prefetches_still_reach_their_dead_letters(
    settings: Settings, start_worker: Callable[..., Worker], consume_all: Callable
) -> None:
    bounded = {"buffer_max_bytes": 4 * MIB}  # the least the settings admit: 1 MiB fetches and prefetch
    overrides = consumer_overrides(load_settings(processor=bounded), "tp-test-group")
    huge = json.dumps({"id": "h1", "text": "a" * 1_000_000, "source": "replay"}).encode()
    assert 2 * len(huge) > overrides["fetch.max.bytes"]  # a fetch holds one of them at most
    assert 3 * len(huge) > 1024 * overrides["queued.max.messages.kbytes"]  # a partition's 3: more than
    assert 3 * settings.topics.partitions * len(huge) > bounded["buffer_max_bytes"]  # the worker holds
    tweets = iter(labeled_tweets(4 * settings.topics.partitions))
    worker = start_worker(TWEETPULSE_PROCESSOR__BUFFER_MAX_BYTES=str(bounded["buffer_max_bytes"]))
    wait_for_assignment([worker], settings.topics.partitions)

    producer = Producer(producer_config(settings, **{"message.max.bytes": 2_000_000}))
    sent = []
    for partition in range(settings.topics.partitions):
        for kind in ("tweet", "huge", "huge", "tweet", "huge", "tweet", "tweet"):
            if kind == "huge":
                producer.produce(settings.topics.raw, key=b"huge", value=huge, partition=partition)
            else:
                sent.append(tweet := next(tweets))
                producer.produce(
                    settings.topics.raw, key=tweet.key, value=tweet.to_bytes(), partition=partition
                )
            assert producer.flush(30) == 0  # one record per batch: two huge ones pass the topic's limit

    letters = consume_all(settings.topics.dlq, 3 * settings.topics.partitions, timeout=120)
    results = consume_all(settings.topics.sentiment, len(sent), timeout=60)
    assert len(letters) == 3 * settings.topics.partitions, worker.log()[-4000:]
    for msg in letters:
        letter = DeadLetter.from_bytes(msg.value())
        assert letter.reason == "oversized-message" and letter.original_size == len(huge)
        assert letter.original_sha256 == hashlib.sha256(huge).hexdigest()
    assert set(results_by_id(results)) == {t.id for t in sent}
    assert "crashed" not in worker.log()
    assert worker.stop() == 0
