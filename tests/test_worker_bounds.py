"""What a worker holds and shows is bounded, whatever its input.

Its web server shows only its own views: Faust's built-in ``/router/`` and ``/table/`` (the cluster's
routing, the tables' contents) are off, and ``/tweetpulse/counts/`` returns at most
``COUNTS_MAX_ROWS`` rows. Faust's buffers are sized in bytes (faust_consumer.buffers), with fetches
smaller than the largest record, which still reaches the worker and its dead letter. Unit tests, and
real workers on the real broker.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import test_processors_pipeline as processor_tests
from confluent_kafka import Producer
from test_processors_pipeline import (  # the workers' test helpers, shared rather than copied
    Worker,
    labeled_tweets,
    produce_tweets,
    results_by_id,
    wait_for,
    wait_for_assignment,
)

from tweetpulse.contracts import DeadLetter
from tweetpulse.kafka import producer_config
from tweetpulse.processors.app import Worker as WorkerProcess
from tweetpulse.processors.faust_consumer import buffers
from tweetpulse.processors.views import COUNTS_MAX_ROWS, count_rows
from tweetpulse.settings import Settings, load_settings

registry = processor_tests.registry  # fixtures
start_worker = processor_tests.start_worker

WINDOW_S = 60
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z: windows within the range the contracts admit


def table(windows: int, tags: int) -> list[tuple[Any, Any]]:
    """A windowed table's items: `windows` windows of `tags` tags, tag i counted i+1 times per label."""
    return [
        (
            ("", (T0 + w * WINDOW_S, T0 + w * WINDOW_S + WINDOW_S - 0.1)),
            {"tags": {f"tag{i}": {"negative": i + 1, "positive": i + 1} for i in range(tags)}},
        )
        for w in range(windows)
    ]


def test_counts_rows_are_bounded_newest_windows_and_busiest_tags_first() -> None:
    rows, truncated = count_rows(table(windows=10, tags=1_000), max_rows=2_500)  # 20,000 rows held
    assert truncated and len(rows) == 2_500
    starts = [row["window_start"] for row in rows]
    assert starts == sorted(starts, reverse=True)
    assert {row["tag"] for row in rows[:2]} == {"tag999"}  # the busiest tag of the newest window
    assert len(json.dumps(rows)) < 2_500 * 1_000


def test_counts_rows_all_fit_below_the_bound() -> None:
    rows, truncated = count_rows(table(windows=2, tags=3), max_rows=12)
    assert not truncated and len(rows) == 12
    assert rows[0] == {
        "tag": "tag2",
        "label": "negative",
        "window_start": "2024-01-01T00:01:00+00:00",
        "window_end": "2024-01-01T00:02:00+00:00",
        "count": 3,
    }


def test_counts_rows_leave_out_what_is_not_a_windows_counts() -> None:
    good = {"tags": {"ok": {"positive": 1}}}
    held = [
        (("", (T0, T0 + 59.9)), good),
        (("", (0, 59.9)), good),  # 1970: outside the contracts' range
        ("not a window key", good),
        (("", (str(T0), "59.9")), good),
        (("", (T0, 10**20)), good),
        (("", (T0 + 60, T0 + 119.9)), ["not", "counts"]),
        (("", (T0 + 120, T0 + 179.9)), {"tags": "none"}),
        (("", (T0 + 180, T0 + 239.9)), {"tags": {"x" * 66: {"positive": 1}, 7: {"positive": 1}}}),
        (("", (T0 + 240, T0 + 299.9)), {"tags": {"odd": {"neutral": 1, "positive": "1", "negative": True}}}),
    ]
    rows, truncated = count_rows(held, max_rows=100)
    assert [(row["tag"], row["label"], row["count"]) for row in rows] == [("ok", "positive", 1)]
    assert not truncated


def test_the_worker_app_serves_no_builtin_view_and_buffers_in_bytes() -> None:
    settings = load_settings()
    worker = WorkerProcess(settings, SimpleNamespace(version="v1", provider="cpu"))  # never started
    try:
        conf, expected = worker.app.conf, buffers(settings.processor, settings.topics.partitions)
        assert not (conf.web_router_enabled or conf.web_tables_enabled)
        assert not (conf.web_stats_enabled or conf.web_graph_enabled)
        assert [prefix for prefix, _ in worker.app.web.blueprints._enabled] == [""]  # the plain index
        assert conf.stream_buffer_maxsize == expected.stream_buffer_maxsize < 4_096
        assert conf.consumer_max_fetch_size == expected.consumer_max_fetch_size
    finally:
        worker.close()


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


def test_records_of_about_1_mib_larger_than_a_fetch_still_reach_their_dead_letters(
    settings: Settings, start_worker: Callable[..., Worker], consume_all: Callable
) -> None:
    fetch = buffers(settings.processor, settings.topics.partitions).consumer_max_fetch_size
    huge = json.dumps({"id": "h1", "text": "a" * 1_000_000, "source": "replay"}).encode()
    assert len(huge) > 15 * fetch  # Kafka returns a fetch's first record whatever its size
    tweets = iter(labeled_tweets(4 * settings.topics.partitions))
    worker = start_worker()
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
