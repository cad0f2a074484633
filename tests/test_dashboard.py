"""The live dashboard: aggregation state, lag against a real committed group, the Kafka feed, the HTTP
endpoints, and the page in a real headless Chromium while results stream through the real broker."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from tests.poison import READER_EXAMPLES, parses, sentiment_values
from tests.strategies import fuzz
from tweetpulse.contracts import ModelAnnouncement, SentimentResult
from tweetpulse.dashboard import feed as feed_module
from tweetpulse.dashboard.cli import dashboard_options, register
from tweetpulse.dashboard.feed import MAX_REASON_CHARS, ResultFeed, ingest_result
from tweetpulse.dashboard.lag import measure_lag
from tweetpulse.dashboard.server import FEED, HUB, STATE, allowed_host_names, create_app, host_allowed
from tweetpulse.dashboard.state import (
    MAX_STATUS_CHARS,
    OTHER_TAGS,
    TAGS_TRACKED_PER_SHOWN,
    DashboardState,
    status_line,
    tag_of,
)
from tweetpulse.kafka import admin_client, producer_config
from tweetpulse.options import add_settings_options, apply_settings
from tweetpulse.settings import DashboardSettings, Settings, load_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
T0 = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)  # 30 s into a minute


def result(
    n: int | str,
    at: datetime,
    label: str = "positive",
    tags: list[str] | None = None,
    text: str = "a tweet",
    latency_ms: float = 100.0,
    model: str = "v0001",
) -> SentimentResult:
    other = "negative" if label == "positive" else "positive"
    return SentimentResult(
        id=f"t{n}",
        text=text,
        label=label,
        probabilities={label: 0.9, other: 0.1},
        model_version=model,
        rule_tags=tags or [],
        source="synthetic",
        ingested_at=at - timedelta(milliseconds=latency_ms),
        classified_at=at,
        inference_ms=2.0,
    )


class Clock:
    """A settable clock for the state's window arithmetic (not a stand-in for Kafka)."""

    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now


# -- aggregation state -----------------------------------------------------------------------------


def test_results_are_counted_per_minute_and_label_on_a_full_window_axis() -> None:
    clock = Clock(T0)
    state = DashboardState(window_minutes=5, clock=clock)
    state.add(result(1, T0, "positive"))
    state.add(result(2, T0 - timedelta(seconds=20), "negative"))
    state.add(result(3, T0 - timedelta(minutes=2), "negative"))
    snap = state.snapshot()
    minute = int(T0.timestamp() // 60) * 60
    assert [m["t"] for m in snap["minutes"]] == [minute - 60 * i for i in range(4, -1, -1)]
    by_minute = {m["t"]: (m["positive"], m["negative"]) for m in snap["minutes"]}
    assert by_minute[minute] == (1, 1)
    assert by_minute[minute - 120] == (0, 1)
    assert sum(p + n for p, n in by_minute.values()) == 3
    assert snap["totals"] == {
        "count": 3,
        "negative": 2,
        "positive": 1,
        "positive_share": pytest.approx(1 / 3),
    }


def test_tag_is_the_first_rule_tag_else_the_first_hashtag_else_untagged() -> None:
    assert tag_of(result(1, T0, tags=["bitcoin", "crypto"], text="#ignored")) == "bitcoin"
    assert tag_of(result(2, T0, text="so good #WorldCup #final")) == "#worldcup"
    assert tag_of(result(3, T0, text="no tags here")) == "untagged"


def test_per_tag_rows_are_sorted_by_volume_and_limited_to_max_tags() -> None:
    state = DashboardState(window_minutes=3, max_tags=2, clock=Clock(T0))
    for i, tag in enumerate(["a", "b", "b", "c", "c", "c"]):
        state.add(result(i, T0, "positive" if i % 2 else "negative", tags=[tag]))
    tags = state.snapshot()["tags"]
    assert [(t["tag"], t["count"]) for t in tags] == [("c", 3), ("b", 2)]
    assert len(tags[0]["minutes"]) == 3
    assert tags[0]["minutes"][-1]["positive"] + tags[0]["minutes"][-1]["negative"] == 3


def test_buckets_older_than_the_window_expire_but_totals_remain() -> None:
    clock = Clock(T0)
    state = DashboardState(window_minutes=10, clock=clock)
    state.add(result(1, T0, tags=["old"]))
    clock.now += 10 * 60
    state.add(result(2, T0 + timedelta(minutes=10), tags=["new"]))
    snap = state.snapshot()
    assert sum(m["positive"] for m in snap["minutes"]) == 1
    assert [t["tag"] for t in snap["tags"]] == ["new"]
    assert snap["totals"]["count"] == 2
    assert snap["window"]["count"] == 1


def test_a_result_older_than_the_window_counts_in_totals_only() -> None:
    state = DashboardState(window_minutes=5, clock=Clock(T0))
    state.add(result(1, T0 - timedelta(hours=2)))
    snap = state.snapshot()
    assert snap["totals"]["count"] == 1
    assert snap["window"]["count"] == 0
    assert snap["tags"] == []
    assert snap["latest"][0]["id"] == "t1"


def test_a_result_from_the_future_lands_in_the_current_minute() -> None:
    state = DashboardState(window_minutes=5, clock=Clock(T0))
    state.add(result(1, T0 + timedelta(minutes=3)))  # a producer host with a fast clock
    assert state.snapshot()["minutes"][-1]["positive"] == 1


def test_latest_tweets_are_newest_first_and_bounded() -> None:
    state = DashboardState(latest_tweets=3, clock=Clock(T0))
    for i in range(5):
        state.add(result(i, T0, text=f"tweet {i} #x"))
    latest = state.snapshot()["latest"]
    assert [row["id"] for row in latest] == ["t4", "t3", "t2"]
    assert latest[0] | {"classified_at": None} == {
        "id": "t4",
        "text": "tweet 4 #x",
        "label": "positive",
        "confidence": 0.9,
        "tag": "#x",
        "model_version": "v0001",
        "classified_at": None,
        "latency_ms": pytest.approx(100.0),
    }


def test_latest_tweets_and_model_version_follow_classification_time_not_arrival_order() -> None:
    state = DashboardState(clock=Clock(T0))
    state.add(result("b", T0, model="v0002"))  # partitions interleave: the newer result arrives first
    state.add(result("a", T0 - timedelta(seconds=1), model="v0001"))
    snap = state.snapshot()
    assert [row["id"] for row in snap["latest"]] == ["tb", "ta"]
    assert snap["model"]["version"] == "v0002"


def test_distinct_tags_beyond_the_tracking_cap_fold_into_other() -> None:
    state = DashboardState(max_tags=1, clock=Clock(T0))
    for i in range(TAGS_TRACKED_PER_SHOWN + 5):
        state.add(result(i, T0, tags=[f"tag{i}"]))
    state.add(result("x", T0, tags=["late"]))
    state.max_tags = TAGS_TRACKED_PER_SHOWN + 1  # show every tracked tag
    tags = {t["tag"]: t["count"] for t in state.snapshot()["tags"]}
    assert len(tags) == TAGS_TRACKED_PER_SHOWN + 1  # the first 50 tags, then "other"
    assert tags[OTHER_TAGS] == 6
    assert "late" not in tags


def test_throughput_counts_full_seconds_over_10_and_60_seconds() -> None:
    clock = Clock(T0)
    state = DashboardState(clock=clock)
    for second in range(1, 31):  # 2 results in each of the 30 seconds before now
        for k in range(2):
            state.add(result(f"{second}-{k}", T0 - timedelta(seconds=second)))
    throughput = state.snapshot()["throughput"]
    assert throughput["per_s_10s"] == pytest.approx(2.0)
    assert throughput["per_s_60s"] == pytest.approx(1.0)
    assert throughput["per_second"][-30:] == [2] * 30
    assert len(throughput["per_second"]) == 120


def test_latency_percentiles_cover_the_recent_results() -> None:
    state = DashboardState(clock=Clock(T0))
    for i in range(1, 101):
        state.add(result(i, T0, latency_ms=float(i)))
    latency = state.snapshot()["latency_ms"]
    assert (latency["p50"], latency["p95"], latency["samples"]) == (
        pytest.approx(50.0),
        pytest.approx(95.0),
        100,
    )


def test_model_version_is_the_latest_seen_and_the_announcement_is_reported() -> None:
    state = DashboardState(clock=Clock(T0))
    assert state.snapshot()["model"]["version"] is None
    state.set_announcement(ModelAnnouncement(version="v0002", registry_root="/r"))
    assert state.snapshot()["model"]["version"] == "v0002"
    state.add(result(1, T0, model="v0001"))
    model = state.snapshot()["model"]
    assert (model["version"], model["seen_in_results"], model["announced"]) == ("v0001", "v0001", "v0002")


def test_a_training_jobs_status_file_shows_its_first_line_under_the_model(tmp_path: Path) -> None:
    status = tmp_path / "status.txt"
    state = DashboardState(clock=Clock(T0), training_status_file=status)
    assert state.snapshot()["model"]["training"] is None  # no file yet
    status.write_text("background model: fine-tuning (2 min)\nmore\n")
    assert state.snapshot()["model"]["training"] == "background model: fine-tuning (2 min)"


@given(content=st.binary(max_size=4_000) | st.text(max_size=2_000).map(str.encode))
def test_any_status_file_content_gives_one_short_printable_line_or_none(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "status.txt"
        path.write_bytes(content)
        line = status_line(path)
    assert line is None or (0 < len(line) <= MAX_STATUS_CHARS and line.isprintable())


def test_a_status_path_that_is_a_fifo_or_a_folder_is_no_status_and_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")  # opening a FIFO for reading would wait for a writer
    assert status_line(tmp_path / "fifo") is None
    assert status_line(tmp_path) is None
    assert status_line(tmp_path / "missing") is None


@fuzz(READER_EXAMPLES)
@given(values=st.lists(sentiment_values(T0), min_size=1, max_size=8))
def test_the_feed_handler_counts_or_skips_any_value_and_the_snapshot_still_renders(
    values: list[bytes | None], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.clear()  # one fixture for every example
    state = DashboardState(window_minutes=5, clock=Clock(T0))
    with caplog.at_level(logging.WARNING, logger="tweetpulse.dashboard.feed"):
        outcomes = [ingest_result(state, value, 0, offset) for offset, value in enumerate(values)]
    logged = [r for r in caplog.records if r.getMessage() == "sentiment result skipped"]
    expected = ["counted" if parses(value) else "malformed" for value in values]
    assert outcomes == expected  # nothing valid is "unusable", nothing invalid is counted
    snap = json.loads(json.dumps(state.snapshot(), allow_nan=False))  # strict JSON, as browsers parse it
    assert snap["totals"]["count"] == expected.count("counted")
    assert snap["malformed"] == expected.count("malformed") == len(logged)
    assert all(len(r.reason) <= MAX_REASON_CHARS and r.offset >= 0 for r in logged)  # never the bytes
    state.add(result("after", T0))  # still usable
    assert state.snapshot()["totals"]["count"] == expected.count("counted") + 1


def test_a_result_the_state_cannot_use_is_skipped_and_counted_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = DashboardState(clock=Clock(T0))
    monkeypatch.setattr(state, "add", lambda _: 1 / 0)  # any bug a value could trigger downstream
    assert ingest_result(state, result(1, T0).to_bytes()) == "unusable"
    assert state.snapshot()["malformed"] == 1


# -- Kafka: lag and feed -------------------------------------------------------------------------------


def produce(settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer(producer_config(settings))
    for key, value in messages:
        producer.produce(topic, value, key=key)
    assert producer.flush(30) == 0


def high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer(settings.kafka.confluent_config(**{"group.id": f"probe-{uuid.uuid4().hex}"}))
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in range(3)}
    finally:
        consumer.close()


def commit(settings: Settings, group: str, offsets: dict[int, int]) -> None:
    consumer = Consumer(settings.kafka.confluent_config(**{"group.id": group, "enable.auto.commit": False}))
    try:
        consumer.commit(
            offsets=[TopicPartition(settings.topics.raw, p, o) for p, o in offsets.items()],
            asynchronous=False,
        )
    finally:
        consumer.close()


def test_lag_is_high_watermark_minus_committed_offset_of_a_real_group(settings: Settings) -> None:
    produce(settings, settings.topics.raw, [(str(i).encode(), b"{}") for i in range(60)])
    highs = high_watermarks(settings, settings.topics.raw)
    assert sum(highs.values()) == 60
    group = f"processor-{uuid.uuid4().hex[:8]}"
    commit(settings, group, {p: high // 2 for p, high in highs.items()})
    reading = measure_lag(admin_client(settings), group, settings.topics.raw)
    assert reading.partitions == {p: high - high // 2 for p, high in highs.items()}
    assert reading.total == sum(high - high // 2 for high in highs.values())
    assert reading.committed_partitions == 3


def test_lag_counts_the_whole_backlog_of_a_partition_without_commit(settings: Settings) -> None:
    produce(settings, settings.topics.raw, [(str(i).encode(), b"{}") for i in range(30)])
    highs = high_watermarks(settings, settings.topics.raw)
    group = f"processor-{uuid.uuid4().hex[:8]}"
    commit(settings, group, {0: highs[0]})  # caught up on partition 0, nothing on 1 and 2
    reading = measure_lag(admin_client(settings), group, settings.topics.raw)
    assert reading.partitions == {0: 0, 1: highs[1], 2: highs[2]}
    assert reading.total == highs[1] + highs[2]


def test_lag_of_a_group_that_never_committed_is_unknown(settings: Settings) -> None:
    produce(settings, settings.topics.raw, [(b"k", b"{}")])
    reading = measure_lag(admin_client(settings), f"nobody-{uuid.uuid4().hex[:8]}", settings.topics.raw)
    assert reading.total is None
    assert reading.committed_partitions == 0


def wait_until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def test_feed_replays_recent_results_counts_malformed_and_reads_the_announcement(settings: Settings) -> None:
    now = datetime.now(UTC)
    results = [result(i, now, tags=["replayed"]) for i in range(10)]
    produce(settings, settings.topics.sentiment, [(r.key, r.to_bytes()) for r in results])
    produce(settings, settings.topics.sentiment, [(b"bad", b'{"not": "a result"}')])
    announcement = ModelAnnouncement(version="v0042", registry_root="/registry")
    produce(settings, settings.topics.models, [(b"production", announcement.to_bytes())])
    state = DashboardState()
    feed = ResultFeed(settings, state, replay_minutes=5)
    feed.start()
    try:
        wait_until(lambda: state.snapshot()["totals"]["count"] == 10 and state.snapshot()["malformed"] == 1)
        wait_until(lambda: state.snapshot()["model"]["announced"] == "v0042")
    finally:
        feed.stop()
        feed.join(15)
    snap = state.snapshot()
    assert snap["tags"][0]["tag"] == "replayed"
    assert {row["id"] for row in snap["latest"]} == {r.id for r in results}


def test_feed_from_latest_sees_only_results_produced_after_it_is_ready(settings: Settings) -> None:
    now = datetime.now(UTC)
    produce(settings, settings.topics.sentiment, [(b"old", result("old", now).to_bytes())])
    state = DashboardState()
    feed = ResultFeed(settings, state)
    feed.start()
    try:
        assert feed.ready.wait(30)
        produce(settings, settings.topics.sentiment, [(b"new", result("new", now).to_bytes())])
        wait_until(lambda: state.snapshot()["totals"]["count"] >= 1)
        time.sleep(1.0)  # give a wrongly replayed old result the chance to show up
    finally:
        feed.stop()
        feed.join(15)
    assert [row["id"] for row in state.snapshot()["latest"]] == ["tnew"]


def test_a_feed_whose_kafka_code_raises_restarts_with_backoff_resumes_where_it_was_and_says_so_on_healthz(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail = threading.Event()

    class FlakyConsumer(Consumer):  # the real consumer, whose next consume() raises once `fail` is set
        def consume(self, *args: object, **kwargs: object) -> list:
            if fail.is_set():
                fail.clear()
                raise KafkaException(KafkaError(KafkaError._TRANSPORT, "connection lost (test)"))
            return super().consume(*args, **kwargs)

    monkeypatch.setattr(feed_module, "Consumer", FlakyConsumer)
    monkeypatch.setattr(feed_module, "RESTART_BACKOFF_START_S", 1.0)
    now = datetime.now(UTC)

    async def scenario() -> None:
        async with served(settings) as (app, url), aiohttp.ClientSession() as http:
            feed, state = app[FEED], app[STATE]
            wait_until(feed.ready.is_set)
            produce(settings, settings.topics.sentiment, [(b"t1", result(1, now).to_bytes())])
            wait_until(lambda: state.total == 1)
            fail.set()
            wait_until(lambda: feed.restarts == 1)
            health = await http.get(f"{url}/healthz")
            body = await health.json()
            assert (health.status, body["status"], body["restarts"]) == (503, "restarting", 1)
            assert "connection lost (test)" in body["last_error"]
            # Produced while the feed is down, to any partition: read once it is back, nothing twice.
            produce(
                settings,
                settings.topics.sentiment,
                [(f"k{i}".encode(), result(i, now).to_bytes()) for i in range(2, 8)],
            )
            wait_until(lambda: feed.ready.is_set() and state.total == 7)
            health = await http.get(f"{url}/healthz")
            assert (health.status, (await health.json())["restarts"]) == (200, 1)
            time.sleep(1.0)  # give a result read twice the chance to show up
            assert state.total == 7 and feed.is_alive()

    asyncio.run(scenario())


# -- the service: CLI, HTTP, browser ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dashboard_env(settings: Settings, group: str) -> dict[str, str]:
    topics = settings.topics
    return {
        **os.environ,
        "TWEETPULSE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "TWEETPULSE_TOPICS__RAW": topics.raw,
        "TWEETPULSE_TOPICS__SENTIMENT": topics.sentiment,
        "TWEETPULSE_TOPICS__MODELS": topics.models,
        "TWEETPULSE_DASHBOARD__LAG_INTERVAL_S": "1",
        "TWEETPULSE_LOG_FORMAT": "text",
    }


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def processor_group() -> str:
    return f"tweetpulse-processor-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def dashboard_url(settings: Settings, processor_group: str) -> Iterator[str]:
    """The dashboard service as a user runs it (``python -m tweetpulse.dashboard``, the same options and
    code as ``tweetpulse dashboard``), on a free port, against this test's topics."""
    port = free_port()
    command = [sys.executable, "-m", "tweetpulse.dashboard", "--port", str(port), "--group", processor_group]
    proc = subprocess.Popen(command, env=dashboard_env(settings, processor_group))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the dashboard exited"
            try:
                if get(f"{url}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the dashboard did not become healthy"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def test_cli_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="tweetpulse")
    register(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["dashboard", "--help"])
    out = capsys.readouterr().out
    for option in ("--host", "--port", "--group", "--replay-minutes", "--window-minutes"):
        assert option in out


def test_lag_group_defaults_to_the_processors_app_id() -> None:
    parser = argparse.ArgumentParser()
    add_settings_options(parser, "dashboard")
    settings = load_settings(processor={"app_id": "my-workers"})
    assert dashboard_options(apply_settings(parser.parse_args([]), settings)).processor_group == "my-workers"
    given = apply_settings(parser.parse_args(["--group", "other"]), settings)
    assert dashboard_options(given).processor_group == "other"


def test_cli_refuses_an_invalid_port_by_name() -> None:
    command = [sys.executable, "-m", "tweetpulse.dashboard", "--port", "70000"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "port" in done.stderr


def test_snapshot_and_events_endpoints_serve_the_streamed_results(
    settings: Settings, dashboard_url: str
) -> None:
    status, body = get(f"{dashboard_url}/api/snapshot")
    assert status == 200
    assert json.loads(body)["totals"]["count"] == 0
    produce(
        settings, settings.topics.sentiment, [(b"1", result(1, datetime.now(UTC), tags=["api"]).to_bytes())]
    )
    wait_until(lambda: json.loads(get(f"{dashboard_url}/api/snapshot")[1])["totals"]["count"] == 1)
    with urllib.request.urlopen(f"{dashboard_url}/events", timeout=10) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        lines = [stream.readline() for _ in range(5)]
    data = next(line for line in lines if line.startswith(b"data: "))
    event = json.loads(data[len(b"data: ") :])
    assert event["totals"]["count"] == 1
    assert event["tags"][0]["tag"] == "api"
    page_status, page = get(f"{dashboard_url}/")
    assert page_status == 200
    assert b'id="minute-chart"' in page
    assert get(f"{dashboard_url}/static/app.js")[0] == 200


def test_page_in_headless_chromium_updates_tiles_chart_and_table_as_results_stream(
    settings: Settings, dashboard_url: str, processor_group: str, tmp_path
) -> None:
    from playwright.sync_api import sync_playwright

    if not shutil.which(CHROMIUM):  # `make test` installs it (deploy/system-deps.sh --tests)
        pytest.fail("Debian's chromium is not installed (apt-get install chromium)", pytrace=False)

    produce(settings, settings.topics.raw, [(str(i).encode(), b"{}") for i in range(9)])
    commit(settings, processor_group, {p: 0 for p in range(3)})  # a processor that has read nothing yet
    marker = uuid.uuid4().hex[:10]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(dashboard_url)
            page.wait_for_selector("#status.live", timeout=30_000)
            assert page.inner_text("#tile-total .value") == "0"
            assert page.locator("#minute-chart g.bar").count() == 0
            assert page.locator("#latest tbody tr").count() == 0

            now = datetime.now(UTC)
            batch = [
                result(f"{marker}-{i}", now, "positive" if i % 3 else "negative", ["e2e"]) for i in range(12)
            ]
            batch += [
                result(f"{marker}-old-{i}", now - timedelta(minutes=3), "negative", text=f"earlier #{marker}")
                for i in range(5)
            ]
            newest = now + timedelta(milliseconds=1)
            batch.append(result(f"{marker}-last", newest, text=f"the newest tweet {marker}", model="v0007"))
            produce(settings, settings.topics.sentiment, [(r.key, r.to_bytes()) for r in batch])

            page.wait_for_function(
                "document.querySelector('#tile-total .value').textContent === '18'", timeout=60_000
            )
            page.wait_for_function(
                "document.querySelectorAll('#minute-chart g.bar').length >= 2", timeout=30_000
            )
            assert f"the newest tweet {marker}" in page.inner_text("#latest tbody tr:first-child")
            assert page.locator("#latest tbody tr").count() == 18
            assert page.inner_text("#tile-model .value") == "v0007"
            tag_rows = page.locator("#tags tbody tr")
            assert tag_rows.first.get_attribute("data-tag") == "e2e"
            assert page.locator(f'#tags tbody tr[data-tag="#{marker}"]').count() == 1
            page.wait_for_function(
                "document.querySelector('#tile-lag .value').textContent === '9'", timeout=30_000
            )
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            assert page_errors == []
        finally:
            browser.close()


def test_tags_that_leave_the_window_are_evicted_so_new_tags_are_tracked_by_name() -> None:
    clock = Clock(T0)
    state = DashboardState(window_minutes=2, max_tags=1, clock=clock)
    cap = TAGS_TRACKED_PER_SHOWN
    for minute in range(10):  # a stream of ever-new tags: 3x the cap every minute
        for i in range(3 * cap):
            state.add(result(f"{minute}-{i}", T0 + timedelta(minutes=minute), tags=[f"m{minute}-{i}"]))
            assert state.tracked_tags <= cap + 1  # the cap, plus "other"
        clock.now += 60
    clock.now += 120  # everything has left the two-minute window
    state.add(result("fresh", T0 + timedelta(minutes=12), tags=["fresh"]))
    assert state.tracked_tags == 1
    assert [t["tag"] for t in state.snapshot()["tags"]] == ["fresh"]


# -- the server's bounds: shared snapshots, the client cap, the Host check ---------------------------


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:8088", True),
        ("LOCALHOST.", True),
        ("127.0.0.1:8088", True),
        ("[::1]:8088", True),
        ("10.1.2.3:8088", True),  # an address literal cannot be rebound
        ("[fe80::1]", True),
        (None, True),
        ("evil.example", False),
        ("evil.example:8088", False),
        ("localhost.evil.example", False),
        ("dash.example.com:443", True),
    ],
)
def test_host_check_answers_loopback_addresses_and_allowed_names_only(
    host: str | None, allowed: bool
) -> None:
    names = allowed_host_names(DashboardSettings(allowed_hosts=["dash.example.com"]))
    assert host_allowed(host, names) is allowed


def test_host_check_is_off_with_a_star_and_includes_the_bound_name() -> None:
    assert allowed_host_names(DashboardSettings(allowed_hosts=["*"])) is None
    assert host_allowed("box.lan:8088", allowed_host_names(DashboardSettings(host="box.lan")))


@contextlib.asynccontextmanager
async def served(settings: Settings, **options: object) -> AsyncIterator[tuple[web.Application, str]]:
    """The dashboard app on a free loopback port, Kafka threads running, and its base URL."""
    app = create_app(settings, DashboardSettings(**options))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield app, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def read_events(response: aiohttp.ClientResponse, count: int) -> int:
    seen = 0
    while seen < count:
        line = await asyncio.wait_for(response.content.readline(), 10)
        seen += line.startswith(b"event: snapshot")
    return seen


def test_all_event_streams_share_one_snapshot_per_push_interval(settings: Settings) -> None:
    clients, events, interval = 8, 4, 0.2

    async def scenario() -> tuple[int, float, list[int]]:
        async with served(settings, push_interval_s=interval) as (app, url):
            state, computed = app[STATE], []
            original = state.snapshot
            state.snapshot = lambda: computed.append(1) or original()  # count what the server computes
            async with aiohttp.ClientSession() as http:
                started = time.monotonic()
                streams = [await http.get(f"{url}/events") for _ in range(clients)]
                got = await asyncio.gather(*(read_events(s, events) for s in streams))
                elapsed = time.monotonic() - started
                for stream in streams:
                    stream.close()
            return len(computed), elapsed, got

    computed, elapsed, got = asyncio.run(scenario())
    assert got == [events] * clients
    assert computed <= elapsed / interval + 2  # per client it would be clients * events = 32
    assert computed < clients * events / 2


def test_event_streams_beyond_max_clients_get_503_until_one_leaves(settings: Settings) -> None:
    async def scenario() -> None:
        async with (
            served(settings, max_clients=2, push_interval_s=0.1) as (app, url),
            aiohttp.ClientSession() as http,
        ):
            first, second = [await http.get(f"{url}/events") for _ in range(2)]
            await read_events(first, 1)
            await read_events(second, 1)
            refused = await http.get(f"{url}/events")
            assert refused.status == 503
            assert "max_clients" in await refused.text() and refused.headers["Retry-After"]
            assert (await http.get(f"{url}/api/snapshot")).status == 200  # only streams are capped
            first.close()
            deadline = time.monotonic() + 10
            while app[HUB].clients > 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # the server notices at its next write
            third = await http.get(f"{url}/events")
            assert third.status == 200
            assert await read_events(third, 1) == 1
            second.close()
            third.close()

    asyncio.run(scenario())


def test_requests_for_another_host_name_get_421_but_health_checks_do_not(settings: Settings) -> None:
    async def scenario() -> None:
        async with (
            served(settings, allowed_hosts=["dash.example.com"]) as (_, url),
            aiohttp.ClientSession() as http,
        ):
            for path in ("/", "/api/snapshot", "/events", "/static/app.js"):
                refused = await http.get(f"{url}{path}", headers={"Host": "rebound.evil.example"})
                assert refused.status == 421, path
                assert "allowed_hosts" in await refused.text()
            health = await http.get(f"{url}/healthz", headers={"Host": "rebound.evil.example"})
            assert health.status in (200, 503)
            for host in ("dash.example.com", "localhost:8088", "192.168.7.7:8088"):
                assert (await http.get(f"{url}/api/snapshot", headers={"Host": host})).status == 200

    asyncio.run(scenario())


def test_a_client_that_stops_reading_is_dropped_and_frees_its_slot(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tweetpulse.dashboard import server

    monkeypatch.setattr(server, "SSE_WRITE_TIMEOUT_S", 0.5)

    async def scenario() -> None:
        async with served(settings, max_clients=1, push_interval_s=0.01, latest_tweets=200) as (app, url):
            now = datetime.now(UTC)
            for i in range(200):  # ~100 kB snapshots fill the socket buffers quickly
                app[STATE].add(result(i, now, text=f"{i} " + "x" * 480))
            host, port = url.removeprefix("http://").split(":")
            _, writer = await asyncio.open_connection(host, int(port))
            writer.transport.pause_reading()  # connected, never reads a byte
            writer.write(f"GET /events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            deadline = time.monotonic() + 30
            while app[HUB].clients == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert app[HUB].clients == 1
            while app[HUB].clients and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert app[HUB].clients == 0, "the stalled client still holds its slot"
            async with aiohttp.ClientSession() as http:
                stream = await http.get(f"{url}/events")
                assert stream.status == 200 and await read_events(stream, 1) == 1
                stream.close()
            writer.close()

    asyncio.run(scenario())
