"""The processor's pieces without workers: the ONNX classifier on a real exported model, and parsing
raw messages into tweets or dead letters."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.poison import READER_EXAMPLES, parses, sentiment_values
from tests.strategies import fuzz
from tweetpulse.contracts import LABELS, MAX_TEXT_CHARS, RawTweet, aggregate_tags
from tweetpulse.processors.checkpoint import call_with_deadline
from tweetpulse.processors.classifier import gpu_present, load_classifier
from tweetpulse.processors.dlq import BadMessageError, dead_letter, parse_raw
from tweetpulse.registry import ArtifactError, ModelRegistry, load_artifact

TEXTS = [
    "I love this so much, best day ever!",
    "worst service I have ever had, never again",
    "ok",
    "The flight was delayed three hours and nobody told us anything at the gate, absolutely furious "
    "with how this was handled from start to finish",
    "thank you so much for the quick help :)",
]


def test_classifier_returns_one_prediction_per_text_in_input_order(
    tiny_model_registry: ModelRegistry,
) -> None:
    classifier = load_classifier(
        tiny_model_registry.load(), provider="cpu", variant="fp32", threads=1, chunk_size=2
    )
    batch = classifier.classify(TEXTS)
    one_by_one = [classifier.classify([text])[0] for text in TEXTS]
    assert [p.label for p in batch] == [p.label for p in one_by_one]
    for together, alone in zip(batch, one_by_one, strict=True):
        assert set(together.probabilities) == set(LABELS)
        assert sum(together.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        # length-sorted chunks with dynamic padding give the same numbers as unpadded single texts
        for label in LABELS:
            assert together.probabilities[label] == pytest.approx(alone.probabilities[label], abs=1e-4)
    assert classifier.version == tiny_model_registry.production()
    assert classifier.classify([]) == []


def test_runs_are_cut_where_padding_costs_more_than_a_run_and_at_the_chunk_size(
    tiny_model_registry: ModelRegistry,
) -> None:
    classifier = load_classifier(tiny_model_registry.load(), provider="cpu", variant="fp32", threads=1)
    assert classifier.pad_budget >= 0  # calibrated on this host when loaded
    classifier.chunk_size, classifier.pad_budget = 3, 2.0
    lengths = [5, 5, 5, 5, 6, 9, 9, 30]
    runs = [lengths[s] for s in classifier._chunks(lengths)]
    # equal lengths share a run up to chunk_size; 1 x 1 token of padding fits the budget, 2 x 3 do not
    assert runs == [[5, 5, 5], [5, 6], [9, 9], [30]]
    assert classifier._chunks([]) == []
    classifier.pad_budget = float("inf")  # padding is free: runs of chunk_size, as before
    assert [lengths[s] for s in classifier._chunks(lengths)] == [[5, 5, 5], [5, 6, 9], [9, 30]]


def test_classifier_serves_the_int8_graph_on_cpu_by_default(tiny_model_registry: ModelRegistry) -> None:
    classifier = load_classifier(tiny_model_registry.load(), provider="cpu", threads=1)
    assert classifier.model_path.name == "model.int8.onnx"
    assert classifier.provider == "CPUExecutionProvider"
    predictions = classifier.classify(TEXTS)
    assert len(predictions) == len(TEXTS)
    assert all(p.label in LABELS for p in predictions)


@pytest.mark.skipif(gpu_present(), reason="a GPU is present: CUDA may start here")
def test_cuda_asked_for_on_a_host_where_it_cannot_start_is_refused_not_served_on_the_cpu(
    tiny_model_registry: ModelRegistry,
) -> None:
    with pytest.raises(ArtifactError, match="cuda"):
        load_classifier(tiny_model_registry.load(), provider="cuda", threads=1)


def test_tampered_artifact_is_refused_before_it_can_serve(
    tiny_model_registry: ModelRegistry, tmp_path: Path
) -> None:
    version = tiny_model_registry.production()
    copy = tmp_path / "tampered"
    shutil.copytree(tiny_model_registry.path(version), copy)
    with (copy / "model.int8.onnx").open("r+b") as f:
        f.seek(1000)
        f.write(b"\x00" * 64)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact(copy)


def raw(**fields: object) -> bytes:
    base = {"id": "t1", "text": "hello world", "source": "synthetic"}
    return json.dumps({**base, **fields}).encode()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "malformed-json"),
        (b"\xff\xfe\x00 not utf-8", "not-utf8"),
        (b"[1, 2, 3]", "not-an-object"),
        (json.dumps({"id": "t1", "source": "synthetic"}).encode(), "missing-text"),
        (raw(text=""), "empty-text"),
        (raw(text="   \n\t"), "empty-text"),
        (raw(text=123), "wrong-type"),
        (raw(text="x" * (MAX_TEXT_CHARS + 1)), "oversized-text"),
        (raw(source="fax"), "invalid-value"),
        (None, "tombstone"),
        (b"", "empty-message"),
    ],
)
def test_bad_raw_message_is_refused_with_a_countable_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(BadMessageError) as caught:
        parse_raw(value)
    assert caught.value.reason == reason
    assert caught.value.error


def test_dead_letter_keeps_the_original_bytes_and_source_position() -> None:
    value = b"\xff\xfe broken"
    with pytest.raises(BadMessageError) as caught:
        parse_raw(value)
    letter = dead_letter(caught.value, "tweets.raw.x", 2, 41, b"key-1", value)
    assert base64.b64decode(letter.original_value_b64) == value
    assert base64.b64decode(letter.original_key_b64 or "") == b"key-1"
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("tweets.raw.x", 2, 41)
    assert letter.reason == "not-utf8" and "UTF-8" in letter.error


def test_tweets_are_counted_under_rule_tags_else_hashtags_else_none() -> None:
    tagged = RawTweet(
        id="a", text="#ignored text", source="twitter", rule_tags=["airlines", "airlines", "food"]
    )
    hashtags = RawTweet(id="b", text="so good #Food #yum #food", source="twitter")
    plain = RawTweet(id="c", text="nothing to see", source="twitter")
    assert aggregate_tags(tagged.rule_tags, tagged.text) == ["airlines", "food"]
    assert aggregate_tags(hashtags.rule_tags, hashtags.text) == ["#food", "#yum"]
    assert aggregate_tags(plain.rule_tags, plain.text) == ["untagged"]


T0 = 1_700_000_040.0  # a window start (60 s windows) in the range contracts admit


def test_a_window_counts_at_most_max_tags_tags_and_the_rest_under_other() -> None:
    from tweetpulse.processors.aggregates import OTHER_TAG, add_counts, label_counts

    increment = label_counts(
        T0, 60, {"tweets": {"positive": 5}, "tags": {f"t{i}": {"positive": 1} for i in range(5)}}
    )
    total = add_counts({}, increment, max_tags=3)
    assert total["tags"] == {
        "t0": {"positive": 1},
        "t1": {"positive": 1},
        "t2": {"positive": 1},
        OTHER_TAG: {"positive": 2},
    }
    again = add_counts(total, increment, max_tags=3)  # counted tags keep their own key
    assert again["tags"]["t1"] == {"positive": 2} and again["tags"][OTHER_TAG] == {"positive": 4}
    assert again["tweets"] == {"positive": 10} and total["tweets"] == {"positive": 5}  # total is not changed


def test_a_window_of_long_non_ascii_tags_stays_one_record_below_kafkas_default_size_limit() -> None:
    from tweetpulse.contracts import MAX_AGGREGATE_TAG_CHARS
    from tweetpulse.processors.aggregates import OTHER_TAG, PendingCounts, add_counts, label_counts

    # 5,000 hashtags of 65 three-byte letters: 1.18 MB as one record without a byte bound
    tags = [f"#{i:05d}" + "漢" * (MAX_AGGREGATE_TAG_CHARS - 6) for i in range(5_000)]
    counts = PendingCounts(window_s=60, max_tags=5_000)
    counts.add([(tags, "positive")], now=T0 + 120)
    (increment,) = counts.take()
    assert len(increment.to_bytes()) < 1_000_000 < 1_048_588  # Kafka's default max.message.bytes
    assert increment.tags[OTHER_TAG] == {"positive": 5_000 - (len(increment.tags) - 1)}
    total = add_counts({}, increment, max_tags=5_000)
    again = add_counts(total, increment, max_tags=5_000)
    assert len(label_counts(T0 + 120, 60, again).to_bytes()) < 1_000_000
    assert sum(c["positive"] for c in again["tags"].values()) == 10_000  # nothing lost, only merged


def test_pending_counts_are_taken_whole_one_increment_per_window_and_none_are_pending_after() -> None:
    from tweetpulse.processors.aggregates import PendingCounts

    counts = PendingCounts(window_s=60, max_tags=100)
    assert counts.take() == []  # nothing counted: a commit carries no count event
    assert counts.add([(["#a"], "positive")] * 29, now=T0 + 120) is None
    counts.add([(["#a", "#b"], "negative")], now=T0 + 121)  # the same window: one increment for both
    (increment,) = counts.take()
    assert increment.window_start.timestamp() == T0 + 120
    assert increment.window_end.timestamp() == T0 + 180
    assert increment.tweets == {"positive": 29, "negative": 1}
    assert increment.tags == {"#a": {"positive": 29, "negative": 1}, "#b": {"negative": 1}}
    assert counts.take() == []  # taken: nothing pending, counted once
    counts.add([], now=T0 + 121)  # a batch without results (dead letters only) opens no window
    assert counts.take() == []

    counts.add([(["x"], "negative")], now=T0 + 179)
    counts.add([(["x"], "negative")], now=T0 + 181)  # the next window: an increment of its own
    increments = counts.take()
    assert [i.window_start.timestamp() for i in increments] == [T0 + 120, T0 + 180]
    assert [i.tweets for i in increments] == [{"negative": 1}, {"negative": 1}]
    assert counts.take() == []


def test_a_count_event_outside_its_timestamps_window_or_off_contract_is_refused() -> None:
    from tweetpulse.processors.aggregates import count_event, label_counts

    event = label_counts(
        T0 + 120, 60, {"tweets": {"positive": 1}, "tags": {"#a": {"positive": 1}}}
    ).to_bytes()
    assert count_event(event, T0 + 150, 60) is not None
    assert count_event(event, T0 + 181, 60) is None  # counted in another window than it says
    assert count_event(b'{"tweets": {"positive": -1}}', T0 + 150, 60) is None
    assert count_event(event.replace(b'"positive"', b'"neutral"'), T0 + 150, 60) is None
    assert count_event(b"\xff", T0 + 150, 60) is None and count_event(None, T0 + 150, 60) is None


def test_what_is_being_sent_runs_to_its_end_however_often_its_caller_is_cancelled() -> None:
    asyncio.run(_cancelled_twice())


async def _cancelled_twice() -> None:
    from tweetpulse.processors.batching import run_to_completion

    finished = []

    async def send() -> None:
        await asyncio.sleep(0.05)
        finished.append(True)

    caller = asyncio.ensure_future(run_to_completion(send()))
    for _ in range(2):  # Faust cancels an agent, then cancels it again while it stops
        await asyncio.sleep(0.01)
        caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert finished == [True]


def test_an_idle_worker_is_live_when_work_arrives_and_not_once_it_lags_without_committing() -> None:
    import time

    from tweetpulse.processors.watchdog import Limits, Watchdog

    watchdog = Watchdog(Limits(30, 30, 30, liveness_timeout_s=0.2))
    time.sleep(0.3)  # idle longer than the timeout: no lag, nothing to commit
    assert watchdog.liveness() is None
    watchdog.measured_lag(500)  # tweets arrive
    assert watchdog.liveness() is None  # its clock starts with the lag, not at its last commit
    time.sleep(0.3)
    watchdog.measured_lag(800)
    assert "no offset committed" in (watchdog.liveness() or "")
    watchdog.committed()
    assert watchdog.liveness() is None


def test_a_worker_whose_produced_output_stays_uncommitted_is_not_live_even_without_lag() -> None:
    import time

    from tweetpulse.processors.watchdog import Limits, Watchdog

    watchdog = Watchdog(Limits(30, 30, 30, liveness_timeout_s=0.2))
    watchdog.produced()  # a batch produced; its commit hangs (broker frozen) while lag stays 0
    watchdog.measured_lag(0)
    assert watchdog.liveness() is None
    time.sleep(0.3)
    watchdog.produced()  # later batches keep the oldest output's clock
    assert "not committed" in (watchdog.liveness() or "")
    watchdog.committed()
    assert watchdog.liveness() is None
    watchdog.produced()
    watchdog.gave_up()  # the partitions moved on: their output was aborted, nothing waits
    time.sleep(0.3)
    assert watchdog.liveness() is None


def test_the_count_agents_writes_wait_once_they_run_a_second_ahead_of_their_bytes_per_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tweetpulse.processors import aggregates

    clock = [1_000.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # a fake clock: the test measures the waits, not time
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(aggregates.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(aggregates.asyncio, "sleep", sleep)

    async def write(budget: aggregates.WriteBudget, n: int, size: int) -> None:
        for _ in range(n):
            await budget.spend(size)

    budget = aggregates.WriteBudget(2**17)  # powers of two: the fake clock's sums are exact
    asyncio.run(write(budget, 16, 2**13))  # one second's worth: a burst passes without a wait
    assert slept == []
    asyncio.run(write(budget, 16 * 29, 2**13))  # 29 seconds' worth more
    assert sum(slept) == pytest.approx(29.0)  # written at the rate, after the first second's burst


# -- tweetpulse watch (issue 25: total on its input) ----------------------------------------------------


@fuzz(READER_EXAMPLES)
@given(
    values=st.lists(sentiment_values(datetime(2026, 3, 1, tzinfo=UTC)), min_size=1, max_size=8),
    ascii_console=st.booleans(),
)
def test_watch_shows_or_skips_any_value_and_its_summary_counts_both(
    values: list[bytes | None], ascii_console: bool
) -> None:
    from tweetpulse.processors.watch import MAX_REASON_CHARS, Watcher

    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii") if ascii_console else io.StringIO()  # LANG=C, or a pipe
    watcher = Watcher(out, summary_every=3)
    outcomes = [watcher.handle(value, offset) for offset, value in enumerate(values)]
    assert outcomes == ["shown" if parses(value) else "unreadable" for value in values]
    assert (watcher.total, watcher.unreadable) == (outcomes.count("shown"), outcomes.count("unreadable"))
    summary = watcher.summary()
    assert f"{watcher.total} classified" in summary and (
        f"{watcher.unreadable} unreadable" in summary
    ) == bool(watcher.unreadable)
    out.flush()
    printed = raw.getvalue().decode("ascii") if ascii_console else out.getvalue()
    skipped = [line for line in printed.splitlines() if line.startswith("!! unreadable")]
    assert len(skipped) == watcher.unreadable
    assert all(len(line) <= 60 + MAX_REASON_CHARS for line in skipped)  # a reason, never the bytes


def test_the_classify_agent_takes_no_more_once_it_holds_buffer_max_bytes_of_records_until_produced() -> None:
    asyncio.run(_held_bytes())


class _HeldCheckpoint:
    """The checkpoint's one method the batcher uses: produces (builds the outputs) once `open` is set."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.produced: list[int] = []  # offsets of the records produced, in order
        self.outputs: list = []

    async def produce(self, records: list, build: Callable[[list], list]) -> int:
        await self.open.wait()
        outputs = build(records)
        self.produced += [record.offset for record in records]
        self.outputs += outputs
        return sum(len(output.value) for output in outputs)


async def _held_bytes() -> None:
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from tweetpulse.contracts import DeadLetter
    from tweetpulse.processors.batching import Batcher
    from tweetpulse.processors.outputs import Outputs, Topics
    from tweetpulse.processors.source import TP, Record
    from tweetpulse.processors.watchdog import Limits, Watchdog
    from tweetpulse.settings import ProcessorSettings

    mib = 1024 * 1024
    conf = ProcessorSettings(buffer_max_bytes=4 * mib, batch_size=8)
    checkpoint = _HeldCheckpoint()
    outputs = Outputs(Topics("sentiment", "dlq", "labeled", "count-events"), 1024, None)
    model = SimpleNamespace(classifier=SimpleNamespace(version="v1"))  # dead letters never reach it
    batcher = Batcher(
        conf, model, ThreadPoolExecutor(1), outputs, checkpoint, Watchdog(Limits(60, 60, 60, 60))
    )

    def fetch(offset: int) -> list[Record]:  # a 1 MiB value (oversized: a dead letter), one a fetch
        return [Record(TP("raw", 0), offset, None, b"x" * mib, T0, epoch=1)]

    async with batcher.running():
        try:
            for offset in range(4):
                await asyncio.wait_for(batcher.submit(fetch(offset)), 10)
            fifth = asyncio.ensure_future(batcher.submit(fetch(4)))
            await asyncio.sleep(0.2)
            assert not fifth.done()  # 5 MiB held > 4 MiB: it waits for produce, not for the model
            assert batcher._waiting_records == 0  # the model stage took every fetch
            assert checkpoint.produced == []
        finally:
            checkpoint.open.set()
        await asyncio.wait_for(fifth, 10)
    assert checkpoint.produced == list(range(5))  # in input order, each once
    assert [DeadLetter.from_bytes(o.value).reason for o in checkpoint.outputs] == ["oversized-message"] * 5
    assert {o.topic for o in checkpoint.outputs} == {"dlq"}
    assert batcher.processed_offsets == {TP("raw", 0): 5}
    assert batcher.count_events() == []  # no tweet classified: nothing to count


def test_a_blocking_call_past_its_deadline_is_given_up_without_holding_the_loop_or_the_exit() -> None:
    """The checkpoint's librdkafka calls (send_offsets_to_transaction can block past its own timeout,
    confluentinc/librdkafka#5456): the caller gets TimeoutError at the deadline while the loop keeps
    running, and the abandoned call's thread is a daemon that may finish after its loop is gone."""
    release, late_errors = threading.Event(), []
    hook, threading.excepthook = threading.excepthook, late_errors.append

    def fails() -> None:
        raise ValueError("refused")

    async def scenario() -> int:
        assert await call_with_deadline(5, lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(ValueError, match="refused"):
            await call_with_deadline(5, fails)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.ensure_future(tick())
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await call_with_deadline(0.3, release.wait, 30)
        assert time.monotonic() - started < 2
        ticker.cancel()
        return ticks

    try:
        assert asyncio.run(scenario()) > 5  # the loop ran while the call blocked
        abandoned = [t for t in threading.enumerate() if t.name == "librdkafka-call"]
        assert abandoned and all(t.daemon for t in abandoned)
        release.set()  # it returns after its loop closed: nothing raises
        for thread in abandoned:
            thread.join(5)
            assert not thread.is_alive()
    finally:
        threading.excepthook = hook
    assert late_errors == []
