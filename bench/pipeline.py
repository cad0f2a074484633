"""Tweets/s through Kafka and the real `tweetpulse process` workers, and end-to-end latency."""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tweetpulse.bench.kafka_io import ResultReader, bench_topics, produce_all, produce_paced
from tweetpulse.bench.texts import raw_tweets, take
from tweetpulse.bench.workers import WorkerProcess, wait_until_assigned, worker_env
from tweetpulse.settings import Settings


@dataclass(frozen=True)
class PipelineSetup:
    """What every pipeline run shares: broker settings, model registry, worker env, log folder."""

    settings: Settings
    registry_root: Path
    partitions: int
    worker_env: dict[str, str]  # TWEETPULSE_PROCESSOR__* and the like, for every worker
    log_dir: Path
    timeout_s: float = 600


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=1000, method="inclusive")[round(q * 10) - 1]


class PipelineRun:
    """Fresh topics, `workers` started and warmed, a result reader; everything torn down on exit."""

    def __init__(self, setup: PipelineSetup, workers: int, **env: str) -> None:
        self.setup, self.count, self.env = setup, workers, env
        self.app_id = f"bench-{uuid.uuid4().hex[:8]}"
        self._stack = ExitStack()

    def __enter__(self) -> PipelineRun:
        s = self.setup
        self.settings = self._stack.enter_context(bench_topics(s.settings, s.partitions))
        env = worker_env(self.settings, self.app_id, s.registry_root, **s.worker_env, **self.env)
        self.workers = [WorkerProcess(env, s.log_dir / f"{self.app_id}-{i}.log") for i in range(self.count)]
        self._stack.callback(lambda: [w.stop() for w in self.workers])
        self.startup_s = wait_until_assigned(self.workers, s.partitions, timeout=s.timeout_s)
        self.reader = ResultReader(self.settings)
        self._stack.callback(self.reader.close)
        self._warm_up()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

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

    def latency(self, texts: list[str], rate: float, prefix: str = "lat-") -> dict[str, Any]:
        """Offer `texts` at `rate`/s; percentiles of classified_at - ingested_at, in ms."""
        offered_s = produce_paced(self.settings, texts, rate, prefix)
        ids = {f"{prefix}{i}" for i in range(len(texts))}
        got = self.reader.read_until(ids, self.setup.timeout_s, self.check)
        ms = [(got.results[i].classified_at - got.results[i].ingested_at).total_seconds() * 1000 for i in ids]
        return {
            "offered_rate": round(rate, 1),
            "achieved_rate": round(len(texts) / offered_s, 1),
            "tweets": len(texts),
            "seconds": round(offered_s, 1),
            "p50_ms": round(percentile(ms, 50), 1),
            "p95_ms": round(percentile(ms, 95), 1),
            "p99_ms": round(percentile(ms, 99), 1),
            "max_ms": round(max(ms), 1),
        }


def default_log_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="tweetpulse-bench-"))
