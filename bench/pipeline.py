"""Tweets/s through Kafka and the real `tweetpulse process` workers, and end-to-end latency."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from tweetpulse.bench.hostile import HOSTILE
from tweetpulse.bench.kafka_io import (
    ResultReader,
    bench_topics,
    end_offsets,
    produce_all,
    produce_paced,
    produce_raw,
    run_token,
    run_topics,
)
from tweetpulse.bench.texts import raw_tweets, take
from tweetpulse.bench.workers import WorkerProcess, stop_all, wait_until_assigned, worker_env
from tweetpulse.kafka import pipeline_topics
from tweetpulse.settings import Settings


@dataclass(frozen=True)
class PipelineSetup:
    """What every pipeline run shares: broker settings, model registry, worker env, log folder."""

    settings: Settings
    registry_root: Path
    partitions: int
    worker_env: dict[str, str]  # TWEETPULSE_PROCESSOR__* and the like, for every worker
    log_dir: Path
    timeout_s: float = 600  # for the workers' assignment, the warm-up and each run's results
    stop_timeout_s: float = 30  # SIGTERM, then SIGKILL for a worker still running after this


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=1000, method="inclusive")[round(q * 10) - 1]


class PipelineRun:
    """Fresh topics, `workers` started and warmed, a result reader; everything torn down on exit.

    Torn down also when a step fails, start-up and warm-up included (``__enter__`` cleans up after
    itself: ``__exit__`` is never called for a ``with`` whose ``__enter__`` raised), and on Ctrl-C:
    the reader is closed, every worker stopped (SIGKILL after ``stop_timeout_s``), the workers'
    state folders removed, then every topic of the run deleted, the workers' internal ones included
    (``bench-<token>-...``), in that order, so no client is left to re-create one."""

    def __init__(self, setup: PipelineSetup, workers: int, **env: str) -> None:
        self.setup, self.count, self.env = setup, workers, env
        self.token = run_token()
        self.app_id = f"bench-{self.token}"
        self.workers: list[WorkerProcess] = []
        self._stack = ExitStack()

    def __enter__(self) -> PipelineRun:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _start(self) -> None:
        s = self.setup
        self.settings = self._stack.enter_context(bench_topics(s.settings, s.partitions, self.token))
        self.admin = AdminClient(self.settings.kafka.confluent_config())
        state = Path(tempfile.mkdtemp(prefix=f"tweetpulse-{self.app_id}-"))
        self._stack.callback(shutil.rmtree, state, ignore_errors=True)
        env = worker_env(self.settings, self.app_id, s.registry_root, **s.worker_env, **self.env)
        self._stack.callback(lambda: stop_all(self.workers, s.stop_timeout_s))
        for i in range(self.count):
            (state / str(i)).mkdir()
            worker_state = {"TWEETPULSE_PROCESSOR__DATADIR": str(state / str(i))}
            self.workers.append(WorkerProcess({**env, **worker_state}, s.log_dir / f"{self.app_id}-{i}.log"))
        self.startup_s = wait_until_assigned(self.workers, s.partitions, timeout=s.timeout_s)
        self.reader = ResultReader(self.settings)
        self._stack.callback(self.reader.close)
        self._warm_up()

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def topics(self) -> list[str]:
        """Every topic of this run now on the broker (the bench's and the workers' internal ones)."""
        names = {t.name for t in pipeline_topics(self.settings)}
        return run_topics(self.admin, names, (f"bench.{self.token}",), (f"{self.app_id}-",))

    def written_topics(self) -> list[str]:
        """The topics the workers write: all of the run's but the raw input (the bench writes that)."""
        return [t for t in self.topics() if t != self.settings.topics.raw]

    def check(self) -> None:
        for worker in self.workers:
            worker.check_alive()

    def _warm_up(self) -> None:
        """One tweet per partition through the whole path, so the timed runs see a flowing pipeline
        (the stream's post-rebalance pause and first fetches are start-up, not throughput)."""
        tweets = raw_tweets(take(["warming up the pipeline"], 2 * self.setup.partitions), "warm-")
        produce_all(self.settings, tweets, partition=True)
        self.reader.read_until({t.id for t in tweets}, self.setup.timeout_s, self.check)

    def throughput(self, texts: list[str], prefix: str = "tp-") -> dict[str, Any]:
        """Write len(texts) tweets at full speed; tweets/s from the first write to the last result."""
        tweets = raw_tweets(texts, prefix)
        started = time.time()
        write_s = produce_all(self.settings, tweets)
        got = self.reader.read_until({t.id for t in tweets}, self.setup.timeout_s, self.check)
        elapsed = max(got.arrived[t.id] for t in tweets) - started
        return {
            "tweets": len(tweets),
            "seconds": round(elapsed, 3),
            "tps": round(len(tweets) / elapsed, 1),
            "write_s": round(write_s, 3),
            "workers": self.count,
            "startup_s": round(self.startup_s, 2),
            "duplicates": got.duplicates,
        }

    def hostile_mix(self, texts: list[str], per_tweet: int = 1, prefix: str = "hm-") -> dict[str, Any]:
        """Valid tweets/s when every valid tweet is followed by `per_tweet` hostile messages (every kind
        of bench/hostile.py in turn); each hostile one must come back as a dead letter."""
        tweets = raw_tweets(texts, prefix)
        kinds = list(HOSTILE.values())
        messages: list[tuple[bytes | None, bytes | None]] = []
        for i, tweet in enumerate(tweets):
            messages.append((tweet.key, tweet.to_bytes()))
            messages += [
                (f"{prefix}bad-{i}-{j}".encode(), kinds[(i + j) % len(kinds)][0]) for j in range(per_tweet)
            ]
        started = time.time()
        write_s = produce_raw(self.settings, messages)
        got = self.reader.read_until({t.id for t in tweets}, self.setup.timeout_s, self.check)
        elapsed = max(got.arrived[t.id] for t in tweets) - started
        return {
            "tweets": len(tweets),
            "hostile": len(messages) - len(tweets),
            "seconds": round(elapsed, 3),
            "valid_tps": round(len(tweets) / elapsed, 1),
            "write_s": round(write_s, 3),
        }

    def latency(self, texts: list[str], rate: float, prefix: str = "lat-") -> dict[str, Any]:
        """Offer `texts` at `rate`/s; percentiles of classified_at - ingested_at, and of the time a
        read_committed reader got the result - ingested_at (``visible_*``: includes the commit), in ms."""
        ids = {f"{prefix}{i}" for i in range(len(texts))}
        # Read while offering, so that a result's arrival time is when a reader could have had it.
        with ThreadPoolExecutor(1, thread_name_prefix="paced") as pool:
            offering = pool.submit(produce_paced, self.settings, texts, rate, prefix)
            got = self.reader.read_until(ids, self.setup.timeout_s, self.check)
            offered_s = offering.result()
        ms = [(got.results[i].classified_at - got.results[i].ingested_at).total_seconds() * 1000 for i in ids]
        seen = [(got.arrived[i] - got.results[i].ingested_at.timestamp()) * 1000 for i in ids]
        return {
            "offered_rate": round(rate, 1),
            "achieved_rate": round(len(texts) / offered_s, 1),
            "tweets": len(texts),
            "seconds": round(offered_s, 1),
            "p50_ms": round(percentile(ms, 50), 1),
            "p95_ms": round(percentile(ms, 95), 1),
            "p99_ms": round(percentile(ms, 99), 1),
            "max_ms": round(max(ms), 1),
            "visible_p50_ms": round(percentile(seen, 50), 1),
            "visible_p99_ms": round(percentile(seen, 99), 1),
        }

    # -- Kafka records written per classified tweet ---------------------------------------------

    def settled_offsets(
        self, quiet_s: float | None = None, max_s: float = 60
    ) -> tuple[dict[tuple[str, int], int], bool]:
        """(end offsets of every topic the workers write, whether they settled): taken once none has
        moved for `quiet_s` seconds (default: 1.5 commit intervals, at least 3 s: aggregates and
        changelogs trail the results), or as they are after `max_s`."""
        quiet_s = quiet_s or max(3.0, 1.5 * self.setup.settings.processor.commit_interval_s)
        last = end_offsets(self.admin, self.written_topics())
        still_since, deadline = time.monotonic(), time.monotonic() + max_s
        while time.monotonic() < deadline:
            self.reader.drain(0.5)  # results still arriving count as classified
            self.check()
            now = end_offsets(self.admin, self.written_topics())
            if now != last:
                last, still_since = now, time.monotonic()
            elif time.monotonic() - still_since >= quiet_s:
                return last, True
        return last, False

    def measured_writes(self, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run `step` (a throughput or paced run) and add ``writes``: the Kafka records it made the
        workers write, summed over every topic they write (results, dead letters, aggregates,
        weak labels, and their internal ``<app_id>-...`` topics: count events, changelogs), per
        tweet classified (unique results read back; repeats count as writes, not as tweets)."""
        before, settled_before = self.settled_offsets()
        classified_before = len(self.reader.received.results)
        out = step()
        after, settled_after = self.settled_offsets()
        by_topic: dict[str, int] = {}
        for (topic, partition), end in after.items():
            role = self._role(topic)
            by_topic[role] = by_topic.get(role, 0) + end - before.get((topic, partition), 0)
        classified = len(self.reader.received.results) - classified_before
        total = sum(by_topic.values())
        writes = {
            "records": total,
            "classified": classified,
            "writes_per_tweet": round(total / classified, 3),
            "by_topic": dict(sorted(by_topic.items(), key=lambda kv: -kv[1])),
            "settled": settled_before and settled_after,
        }
        return {**out, "writes": writes}

    def _role(self, topic: str) -> str:
        """A topic's name without the run's id: ``tweets.sentiment``, ``label-counts-changelog``..."""
        if topic.startswith(f"{self.app_id}-"):
            return "<app_id>-" + topic.removeprefix(f"{self.app_id}-")
        return topic.replace(f".bench.{self.token}", "")

    def low_load(self, texts: list[str], rate: float = 100.0, prefix: str = "low-") -> dict[str, Any]:
        """`texts` offered at a paced low `rate`, with the records written per classified tweet."""
        return self.measured_writes(lambda: self.latency(texts, rate, prefix))


def default_log_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="tweetpulse-bench-"))
