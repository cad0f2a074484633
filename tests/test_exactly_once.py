"""Exactly-once under faults (issue #26, goal 1): with ``processing_guarantee=exactly_once``, what a
downstream consumer reading ``isolation.level=read_committed`` sees is one result per tweet, one dead
letter per malformed message, one weak label per cue-bearing tweet, and label totals on the aggregates
topic that add up to exactly the results, whatever happens to the workers or the broker:

- two of three workers killed with SIGKILL, the second while the group is still handing over the
  first one's partition;
- a worker frozen (SIGSTOP) past its session timeout, so the group moves on without it, then thawed:
  a zombie, whose late writes must never become visible;
- the broker stopped and restarted under a running producer and worker.

Black-box: real `tweetpulse process` subprocesses (the helpers of tests/test_processors_pipeline.py,
short group timeouts) on the real broker; the broker-restart test starts a broker of its own on
another port. Each test reads every output topic from its beginning once everything is in, waits,
and reads it all again to its end, so that a late (zombie or retried) write is counted too.
Run alone: ``pytest -m fault tests/test_exactly_once.py``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import test_processors_pipeline as processor_tests
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from test_faults import own_broker_settings, stream_of, stream_through_a_broker_restart
from test_processors_pipeline import (  # the workers' test helpers, shared rather than copied
    BAD_INPUT,
    WORKER_ENV,
    Worker,
    _processed,
    produce,
    wait_for,
    wait_for_assignment,
)

from tweetpulse import localkafka
from tweetpulse.bench.workers import worker_env
from tweetpulse.contracts import (
    DeadLetter,
    LabelCounts,
    LabeledTweet,
    RawTweet,
    SentimentResult,
    aggregate_tags,
)
from tweetpulse.processors.weak_labels import WeakLabeler
from tweetpulse.registry import ModelRegistry
from tweetpulse.settings import Settings

pytestmark = pytest.mark.fault
# Their fixtures: `registry` (a private copy of the tiny model registry) and `start_worker`.
registry = processor_tests.registry
start_worker = processor_tests.start_worker

TWEETPULSE = [sys.executable, "-m", "tweetpulse"]
EOS = {"TWEETPULSE_PROCESSOR__PROCESSING_GUARANTEE": "exactly_once"}
# Every cue-bearing tweet gets a weak label, so that weak labels are checked per tweet too.
WEAK_LABELS = {"TWEETPULSE_RETRAIN__WEAK_LABELS": "true", "TWEETPULSE_RETRAIN__WEAK_LABEL_RATE": "1.0"}
EOS_WORKER = {**EOS, **WEAK_LABELS}
# This suite's own broker (its controller takes the next port): not test_faults.py's 19292, so that
# both suites may run at the same time on one host.
EOS_BROKER_PORT = 19392
LATE_S = 5.0  # after everything is in: how long to wait before reading it all again
TOTALS_CATCH_UP_S = 120.0  # once every result is in: how long the label totals may take to count them
# No new committed record for this long: the outputs are stuck (far above a transaction timeout, after
# which the broker aborts a killed worker's open transaction and read_committed readers move on).
STALL_S = 240.0


# -- what a read_committed downstream consumer sees -----------------------------------------------


@dataclass
class Committed:
    """The committed records of the output topics, every record kept (repeats included)."""

    results: dict[str, list[SentimentResult]] = field(default_factory=dict)  # by tweet id
    letters: dict[bytes, list[DeadLetter]] = field(default_factory=dict)  # by the malformed input's key
    weak: Counter[str] = field(default_factory=Counter)  # weak labels per tweet id
    totals: dict[bytes, LabelCounts] = field(default_factory=dict)  # the LAST running total per window

    def result_count(self) -> int:
        return sum(len(r) for r in self.results.values())


class Downstream:
    """A read_committed consumer of the output topics, from their beginnings, assigned every partition
    (no group): what a downstream consumer of exactly-once output is shown."""

    def __init__(self, settings: Settings) -> None:
        t = settings.topics
        self.topics = {"results": t.sentiment, "letters": t.dlq, "weak": t.labeled, "totals": t.aggregates}
        self.consumer = Consumer(
            settings.kafka.confluent_config(
                **{
                    "group.id": f"eos-downstream-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                    "fetch.wait.max.ms": 50,
                }
            )
        )
        metadata = self.consumer.list_topics(timeout=10).topics
        partitions = [
            TopicPartition(name, p, OFFSET_BEGINNING)
            for name in self.topics.values()
            for p in metadata[name].partitions
        ]
        self.consumer.assign(partitions)
        self._not_at_end = {(tp.topic, tp.partition) for tp in partitions}
        self.seen = Committed()
        self.records = 0  # committed records read so far, on all the topics

    def poll(self, seconds: float) -> Committed:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for msg in self.consumer.consume(num_messages=1000, timeout=0.2):
                where = (msg.topic(), msg.partition())
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        self._not_at_end.discard(where)
                    continue
                self._not_at_end.add(where)
                self.records += 1
                self._add(msg.topic(), msg.key(), msg.value())
        return self.seen

    def read_to_end(self, timeout: float) -> Committed:
        """Until every partition is read to its end (for read_committed: its last stable offset)."""
        deadline = time.monotonic() + timeout
        while self._not_at_end and time.monotonic() < deadline:
            self.poll(0.5)
        assert not self._not_at_end, f"not read to the end in {timeout:.0f}s: {sorted(self._not_at_end)}"
        return self.seen

    def _add(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        seen, names = self.seen, self.topics
        if topic == names["results"]:
            result = SentimentResult.from_bytes(value or b"")
            assert key == result.key, f"result keyed {key!r} for tweet {result.id}"
            seen.results.setdefault(result.id, []).append(result)
        elif topic == names["letters"]:
            seen.letters.setdefault(key or b"", []).append(DeadLetter.from_bytes(value or b""))
        elif topic == names["weak"]:
            label = LabeledTweet.from_bytes(value or b"")
            assert key == label.key and label.source == "weak", label
            seen.weak[label.id] += 1
        elif topic == names["totals"]:
            counts = LabelCounts.from_bytes(value or b"")
            assert key == counts.key, f"label counts keyed {key!r} for window {counts.window_start}"
            seen.totals[counts.key] = counts  # a window's records are on one partition, in order

    def close(self) -> None:
        self.consumer.close()


@dataclass(frozen=True)
class Expected:
    """What the workers were given: the tweets' ids, the malformed messages' keys, the cue-bearing ids."""

    ids: set[str]
    bad_keys: set[bytes] = field(default_factory=set)
    weak_ids: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, tweets: list[RawTweet], bad_keys: set[bytes] | None = None) -> Expected:
        weak = {label.id for label in WeakLabeler(1.0).label_all(tweets)}
        return cls({t.id for t in tweets}, bad_keys or set(), weak)

    def all_in(self, seen: Committed) -> bool:
        """Each output has a record for everything expected."""
        return (
            self.ids <= seen.results.keys()
            and self.bad_keys <= seen.letters.keys()
            and self.weak_ids <= seen.weak.keys()
        )


def totals_caught_up(seen: Committed) -> bool:
    """The label totals count at least every committed result (they lag the results by a flush)."""
    return sum(sum(c.tweets.values()) for c in seen.totals.values()) >= seen.result_count()


def read_committed_outputs(
    settings: Settings, expected: Expected, timeout: float, alive: list[Worker]
) -> Committed:
    """Reads the outputs until everything expected is in (or `timeout`: the assertions then say what is
    missing), with the `alive` workers checked on the way; then, LATE_S later, everything again from the
    beginning to the end, and returns that second reading (late duplicates, aborted writes made visible
    by mistake, a total that moved on: all in it)."""
    downstream = Downstream(settings)
    try:
        deadline = time.monotonic() + timeout
        last_news, records = time.monotonic(), 0
        while not expected.all_in(downstream.poll(1.0)) and time.monotonic() < deadline:
            for worker in alive:
                assert worker.proc.poll() is None, (
                    f"worker exited ({worker.proc.returncode}):\n{worker.log()[-4000:]}"
                )
            if downstream.records != records:
                last_news, records = time.monotonic(), downstream.records
            elif time.monotonic() - last_news > STALL_S:
                break  # stuck: the assertions say what is missing
        deadline = time.monotonic() + TOTALS_CATCH_UP_S
        while not totals_caught_up(downstream.poll(1.0)) and time.monotonic() < deadline:
            pass
    finally:
        downstream.close()
    time.sleep(LATE_S)
    again = Downstream(settings)
    try:
        return again.read_to_end(120)
    finally:
        again.close()


def check_exactly_once(
    seen: Committed,
    expected: Expected,
    record_property: Callable[[str, object], None],
    what: str,
    workers: list[Worker],
) -> None:
    """Records and prints the figures, then asserts: every tweet one result, every malformed message
    one dead letter (with the right reason), every cue-bearing tweet one weak label, and the final
    label totals summed over windows equal to the committed results, in all, per label and per tag."""
    repeats = {i: len(r) - 1 for i, r in seen.results.items() if len(r) > 1}
    lost = expected.ids - seen.results.keys()
    unexpected = seen.results.keys() - expected.ids
    letter_repeats = sum(len(v) - 1 for v in seen.letters.values())
    letters_lost = expected.bad_keys - seen.letters.keys()
    weak_repeats = sum(n - 1 for n in seen.weak.values())
    weak_lost = expected.weak_ids - seen.weak.keys()
    every_result = [r for results in seen.results.values() for r in results]
    by_label = Counter(r.label for r in every_result)
    by_tag = Counter((tag, r.label) for r in every_result for tag in aggregate_tags(r.rule_tags, r.text))
    totals_by_label: Counter[str] = Counter()
    totals_by_tag: Counter[tuple[str, str]] = Counter()
    for counts in seen.totals.values():
        totals_by_label.update(counts.tweets)
        totals_by_tag.update(
            {(t, label): n for t, labels in counts.tags.items() for label, n in labels.items()}
        )
    figures = {
        "tweets": len(expected.ids),
        "lost": len(lost),
        "duplicates": sum(repeats.values()),
        "duplicated_tweets": len(repeats),
        "unexpected_results": len(unexpected),
        "dead_letters_lost": len(letters_lost),
        "dead_letter_duplicates": letter_repeats,
        "weak_labels_lost": len(weak_lost),
        "weak_label_duplicates": weak_repeats,
        "windows": len(seen.totals),
        "label_totals": sum(totals_by_label.values()),
        "label_totals_minus_results": sum(totals_by_label.values()) - len(every_result),
        "longest_gap_s": round(longest_gap(seen), 2),
    }
    for name, value in figures.items():
        record_property(name, value)
    print(f"\n{what}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))

    logs = "\n".join(f"--- {w.log_path}:\n{w.log()[-2000:]}" for w in workers)
    assert not lost, f"{len(lost)} tweets have no committed result, e.g. {sorted(lost)[:5]}\n{logs}"
    assert not repeats, f"{len(repeats)} tweets have more than one committed result, e.g. {list(repeats)[:5]}"
    assert not unexpected, f"results for tweets never sent: {sorted(unexpected)[:5]}"
    assert not letters_lost, f"{len(letters_lost)} malformed messages have no dead letter"
    assert letter_repeats == 0, f"{letter_repeats} duplicate dead letters"
    assert seen.letters.keys() == expected.bad_keys, "dead letters for valid tweets"
    for key, (letter, *_) in seen.letters.items():
        assert letter.reason == key.decode().removeprefix("bad-").rsplit("-", 1)[0] and letter.error, letter
    assert not weak_lost, f"{len(weak_lost)} cue-bearing tweets have no weak label"
    assert weak_repeats == 0, f"{weak_repeats} duplicate weak labels"
    assert seen.weak.keys() == expected.weak_ids, "weak labels for tweets without a clear cue"
    # Counted in windows of processing time (PendingCounts.add(..., time.time()), not classified_at):
    # what is exact is the sum over windows, which must count each committed result once.
    assert totals_by_label == by_label, (
        f"final label totals {dict(totals_by_label)} != results {dict(by_label)}"
    )
    assert totals_by_tag == by_tag, "final per-tag totals differ from the committed results"
    assert sum(totals_by_label.values()) == len(expected.ids)


def longest_gap(seen: Committed) -> float:
    """The longest time (s) between two consecutive classifications of the committed results."""
    times = sorted(r[0].classified_at.timestamp() for r in seen.results.values())
    return max((b - a for a, b in pairwise(times)), default=0.0)


# -- helpers -------------------------------------------------------------------------------------


class Background(threading.Thread):
    """A producer (or any call) on a thread, whose exception is raised by `join_or_raise`."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        super().__init__(daemon=True)
        self._call = (target, args)
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        target, args = self._call
        try:
            target(*args)
        except BaseException as exc:  # re-raised in the test's thread
            self.error = exc

    def join_or_raise(self, timeout: float) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"the producer did not finish within {timeout:.0f}s"
        if self.error is not None:
            raise self.error


def with_malformed(
    tweets: list[RawTweet], every: int
) -> tuple[list[tuple[bytes | None, bytes | None]], set[bytes]]:
    """The tweets as (key, value) messages with a malformed message (each kind of BAD_INPUT in turn)
    after every `every`-th, and the malformed messages' keys (``bad-<reason>-<n>``)."""
    kinds = list(BAD_INPUT)
    messages: list[tuple[bytes | None, bytes | None]] = []
    bad_keys: set[bytes] = set()
    for i, tweet in enumerate(tweets):
        messages.append((tweet.key, tweet.to_bytes()))
        if i % every == every - 1:
            reason = kinds[(i // every) % len(kinds)]
            key = f"bad-{reason}-{i}".encode()
            messages.append((key, BAD_INPUT[reason]))
            bad_keys.add(key)
    return messages, bad_keys


def holdings(workers: list[Worker]) -> dict[int, set[int]]:
    """Each worker's partitions (by pid), or {} while one of them holds none or is rebalancing."""
    held = {w.proc.pid: set(w.assigned()) for w in workers}
    return held if all(held.values()) else {}


def wait_for_a_takeover(
    survivors: list[Worker], before: dict[int, set[int]], timeout: float
) -> tuple[Worker, float]:
    """The first survivor seen holding a partition it did not hold before (checked every 50 ms), and
    when (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in survivors:
            status = worker.status() or {}
            if set(status.get("assigned_partitions", ())) - before[worker.proc.pid]:
                return worker, time.monotonic()
            assert worker.proc.poll() is None, (
                f"worker exited ({worker.proc.returncode}):\n{worker.log()[-4000:]}"
            )
        time.sleep(0.05)
    pytest.fail(f"no survivor took over a partition within {timeout:.0f}s")


# -- two of three workers killed, the second during the rebalance the first kill caused -----------


@pytest.mark.timeout(1800)
def test_exactly_once_three_workers_two_killed_one_during_the_rebalance_gives_each_tweet_one_result(
    settings: Settings, start_worker: Callable[..., Worker], record_property: Callable[[str, object], None]
) -> None:
    workers = [start_worker(**EOS_WORKER) for _ in range(3)]
    wait_for_assignment(workers, settings.topics.partitions)  # 3 partitions: one each
    tweets = stream_of(20_000, "x")
    messages, bad_keys = with_malformed(tweets, every=100)  # 200 malformed messages, every kind
    expected = Expected.of(tweets, bad_keys)
    half = len(messages) // 2
    killed, abandoned = threading.Event(), threading.Event()

    def stream() -> None:  # at 1000/s: the first half, then (once both kills are done) the rest
        produce(settings, messages[:half], 1000.0)
        assert killed.wait(600), "the kills never happened"
        if not abandoned.is_set():
            produce(settings, messages[half:], 1000.0)

    producer = Background(stream)
    first, *survivors = workers
    try:
        wait_for(lambda: _processed(first) > 1000, 300, "the first victim to be busy", workers)
        wait_for(lambda: holdings(survivors), 60, "the survivors' partitions", workers)
        before = holdings(survivors)
        first.kill()  # SIGKILL: its open transaction is neither committed nor aborted by it
        killed_at = time.monotonic()
        # The second kill: right after a survivor is first seen holding the dead worker's partition (its
        # assignment changed), i.e. once the session timeout noticed the first death and while that
        # survivor is starting on the partition (fetching from the committed offset, its first
        # transaction of it open). Its death is noticed a session timeout later: a second rebalance on
        # top of the first.
        second, took_over_at = wait_for_a_takeover(survivors, before, 120)
        second.kill()
    except BaseException:
        abandoned.set()  # the test failed: the producer writes no second half
        raise
    finally:
        killed.set()
    (last,) = [w for w in survivors if w is not second]
    record_property("second_kill_after_s", round(took_over_at - killed_at, 2))
    wait_for(
        lambda: last.assigned() == list(range(settings.topics.partitions)),
        120,
        "the last survivor to take over every partition",
        [last],
    )
    producer.join_or_raise(300)

    seen = read_committed_outputs(settings, expected, 1200, [last])
    check_exactly_once(seen, expected, record_property, "3 workers, 2 killed (one mid-rebalance)", workers)
    assert last.proc.poll() is None, "the last survivor crashed"


# -- a zombie: frozen past its session timeout, then thawed ---------------------------------------


def test_a_zombie_worker_is_fenced_and_nothing_it_writes_becomes_visible(
    settings: Settings, start_worker: Callable[..., Worker], record_property: Callable[[str, object], None]
) -> None:
    workers = [start_worker(**EOS_WORKER), start_worker(**EOS_WORKER)]
    wait_for_assignment(workers, settings.topics.partitions)
    tweets = stream_of(3000, "z")
    messages, bad_keys = with_malformed(tweets, every=50)
    expected = Expected.of(tweets, bad_keys)
    producer = Background(produce, settings, messages, 100.0)  # ~30 s of stream
    zombie, other = workers
    wait_for(lambda: _processed(zombie) > 200, 120, "the zombie-to-be to be busy", workers)
    os.kill(zombie.proc.pid, signal.SIGSTOP)  # mid-batch: classified records in an open transaction
    stopped_at = time.monotonic()
    try:
        # WORKER_ENV's session timeout is 6 s: the group drops the frozen worker and the other takes
        # its partitions (committed offsets, transactions of its own) while the zombie still holds
        # what it had read and written.
        wait_for(
            lambda: other.assigned() == list(range(settings.topics.partitions)),
            60,
            "the other worker to take over every partition",
            [other],
        )
        time.sleep(max(0.0, stopped_at + 15 - time.monotonic()))
    finally:
        os.kill(zombie.proc.pid, signal.SIGCONT)  # it resumes where it was: sends, commits, heartbeats
    record_property("stopped_s", round(time.monotonic() - stopped_at, 1))
    producer.join_or_raise(120)

    # The zombie may be fenced and exit, or rejoin the group: either way nothing it wrote in the
    # transaction it had open may become visible, and nothing it does later may repeat a result.
    seen = read_committed_outputs(settings, expected, 300, [other])
    record_property("zombie_exit_code", zombie.proc.poll())
    check_exactly_once(seen, expected, record_property, "zombie frozen 15 s, then thawed", workers)
    assert other.proc.poll() is None, "the worker that took over crashed"


# -- the broker stopped and restarted under a running producer and worker -------------------------


@pytest.fixture
def eos_broker(tmp_path: Path) -> Iterator[str]:
    """A broker of this test's own (never the shared one), with its state in tmp_path."""
    state = tmp_path / "kafka"
    assert localkafka.run("start", port=EOS_BROKER_PORT, state_dir=state) == 0, "own broker did not start"
    try:
        yield f"127.0.0.1:{EOS_BROKER_PORT}"
    finally:
        localkafka.run("stop", port=EOS_BROKER_PORT, state_dir=state)


def raw_counts(settings: Settings) -> Counter[str]:
    """How often each key is on the raw topic (what the producer delivered)."""
    consumer = Consumer(
        settings.kafka.confluent_config(
            **{
                "group.id": f"eos-raw-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
    )
    topic = settings.topics.raw
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    counts: Counter[str] = Counter()
    not_at_end = set(partitions)
    deadline = time.monotonic() + 60
    try:
        while not_at_end and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is None:
                    counts[(msg.key() or b"").decode()] += 1
                elif msg.error().code() == KafkaError._PARTITION_EOF:
                    not_at_end.discard(msg.partition())
    finally:
        consumer.close()
    assert not not_at_end, "the raw topic was not read to its end"
    return counts


def test_exactly_once_broker_restart_mid_stream_loses_and_duplicates_nothing(
    eos_broker: str,
    registry: ModelRegistry,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    settings, suffix = own_broker_settings(eos_broker)
    env = {**worker_env(settings, f"tp-eos-{suffix}", registry.root), **WORKER_ENV, **EOS_WORKER}
    worker = Worker(env, tmp_path / "worker.log")
    try:
        wait_for_assignment([worker], 3)
        tweets = stream_through_a_broker_restart(env, worker, EOS_BROKER_PORT, tmp_path / "kafka")
        expected = Expected.of(tweets)
        seen = read_committed_outputs(settings, expected, 300, [worker])
        # The producer is idempotent: a tweet on the raw topic twice would be its fault, not the worker's.
        input_repeats = {i: n - 1 for i, n in raw_counts(settings).items() if n > 1}
        record_property("input_duplicates", sum(input_repeats.values()))
        assert not input_repeats, f"the producer delivered {len(input_repeats)} tweets more than once"
        check_exactly_once(seen, expected, record_property, "broker restart mid-stream", [worker])
    finally:
        worker.stop()
