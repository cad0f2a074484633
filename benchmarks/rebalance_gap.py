"""How long a third worker joining mid-stream pauses the output of the workers already running
(issue #26, goal 4: cooperative rebalancing; the eager rebalance of the Faust/aiokafka worker pauses
every partition, a cooperative one only those that move).

One run, on the real broker (bench/kafka_io.py, bench/pipeline.py, bench/workers.py):

* fresh topics with 6 partitions (unique suffix, deleted afterwards), a model registry whose
  production model is the near-free model of bench/nearfree.py (built here in ~10 s; ``--model
  production`` serves the default registry's production model instead);
* two real ``tweetpulse process`` workers in one consumer group (same app id, their own web ports,
  CPU provider, the short group timings of tests/test_processors_pipeline.py), started, given every
  partition between them and warmed with a tweet per partition;
* tweets offered at a steady ``--rate`` for ``--seconds``, tweet i written to partition i mod 6
  (explicit, so each tweet id's input partition is known); at ``--join-at`` seconds a third worker
  is started in the same group, and the stream goes on;
* a read_committed reader (as ResultReader) notes when each result arrives (one clock reading per
  fetch) and its ``classified_at``; every 0.5 s each worker's ``/tweetpulse/status/`` is read to
  know who owns which partition.

Per input partition, the longest gap between consecutive result arrivals that overlaps the window
[join - 2 s, join + 25 s] (join: when the third worker was started; cut at the end of the stream),
and when it starts. A partition is *kept* when the same worker owned it before the join and at the
end of the stream, else *moved*. Reported: the longest gap over kept partitions and over moved ones
(also by ``classified_at``), the baseline before the join (median of the gaps between consecutive
deliveries of a partition, and the median over partitions of the longest gap in [join - 12 s,
join - 2 s]), the seconds from the third worker's start until it owns partitions (its status view
lists them and says it is not rebalancing: for the Faust worker that includes its recovery after
the rebalance) and until every worker's assignment settles, and results lost or duplicated (as a
read_committed reader sees them). The figures, the CPU model (lscpu) and the worker logs' warnings
are printed; ``--json`` keeps the per-partition detail.

``--code before`` runs the workers of the previous version (the tree at /tmp/before, eager
rebalance) through ``PYTHONPATH=/tmp/before_site`` (a sitecustomize that repoints the editable
install; the workers start outside the checkout, see main()); ``--code both`` runs the new code,
then the old, and prints them side by side. Each runs under its own default processing guarantee
unless ``--guarantee`` pins one.

    python benchmarks/rebalance_gap.py --code both --rate 200 --seconds 42 --json gaps.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from tweetpulse.bench.kafka_io import _produce
from tweetpulse.bench.machine import cpu_model, load_average
from tweetpulse.bench.pipeline import PipelineRun, PipelineSetup
from tweetpulse.bench.texts import load_texts, take
from tweetpulse.bench.workers import WorkerProcess, stop_all, worker_env
from tweetpulse.contracts import RawTweet, SentimentResult
from tweetpulse.kafka import producer_config
from tweetpulse.registry import ModelRegistry
from tweetpulse.settings import Settings

BEFORE_SITE = Path("/tmp/before_site")  # its sitecustomize runs the tree at /tmp/before
PARTITIONS = 6
POLL_S = 0.5
WINDOW = (-2.0, 25.0)  # seconds around the third worker's start
BASELINE = (-12.0, -2.0)
SETTLE_S = 3.0  # the first seconds of the stream are not baseline (the producer and fetches warm up)
PREFIX = "rg-"

# The short group timings of tests/test_processors_pipeline.py (WORKER_ENV): a dead member is noticed
# after 6 s, rebalances finish fast.
SHORT_GROUP_TIMINGS = {
    "TWEETPULSE_PROCESSOR__SESSION_TIMEOUT_S": "6",
    "TWEETPULSE_PROCESSOR__HEARTBEAT_INTERVAL_S": "1",
    "TWEETPULSE_PROCESSOR__REBALANCE_TIMEOUT_S": "20",
    "TWEETPULSE_PROCESSOR__COMMIT_INTERVAL_S": "1",
    "TWEETPULSE_PROCESSOR__LAG_INTERVAL_S": "1",
    "TWEETPULSE_PROCESSOR__PROVIDER": "cpu",
    "TWEETPULSE_PROCESSOR__ORT_THREADS": "1",
    "TWEETPULSE_PROCESSOR__BATCH_SIZE": "32",
    "TWEETPULSE_LOG_FORMAT": "text",
}


# -- what happens during the run ------------------------------------------------------------------


@dataclass
class Sample:
    """One read of a worker's status view (assigned None: it did not answer)."""

    at: float  # time.time()
    worker: int
    assigned: list[int] | None
    rebalancing: bool


class OwnershipPoller(threading.Thread):
    """Reads every worker's status view every :data:`POLL_S` seconds (workers added later included)."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        super().__init__(name="ownership-poller", daemon=True)
        self.workers = workers
        self.samples: list[Sample] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            started = time.monotonic()
            for i, worker in enumerate(list(self.workers)):
                status = worker.status()
                assigned = None if status is None else list(status["assigned_partitions"])
                self.samples.append(Sample(time.time(), i, assigned, bool(status and status["rebalancing"])))
            self.stopped.wait(max(POLL_S - (time.monotonic() - started), 0.01))

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


class ArrivalReader(threading.Thread):
    """Reads the results topic on the run's read_committed reader: per tweet id, every (arrival time,
    classified_at) it was read with; one clock reading per fetch, so a fetch is one delivery."""

    def __init__(self, consumer: Consumer) -> None:
        super().__init__(name="arrival-reader", daemon=True)
        self.consumer = consumer
        self.seen: dict[str, list[tuple[float, float]]] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            messages = self.consumer.consume(num_messages=1000, timeout=0.2)
            at = time.time()
            for msg in messages:
                if msg.error() is None:
                    result = SentimentResult.from_bytes(msg.value())
                    self.seen.setdefault(result.id, []).append((at, result.classified_at.timestamp()))

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


@dataclass
class Timeline:
    """The stream's moments (time.time()) and the third worker."""

    stream_start: float = 0.0
    stream_end: float = 0.0
    join: float = 0.0
    joiner: WorkerProcess | None = None
    offered: int = 0


def stream(
    run: PipelineRun,
    texts: list[str],
    rate: float,
    seconds: float,
    join_at: float,
    start_joiner: Callable[[], WorkerProcess],
) -> Timeline:
    """Offer tweets at `rate`/s for `seconds`, tweet i to partition i mod the partition count, and
    start the third worker `join_at` seconds in."""
    timeline = Timeline()
    producer = Producer(producer_config(run.settings))
    topic, parts = run.settings.topics.raw, run.settings.topics.partitions
    count = int(rate * seconds)
    timeline.stream_start = time.time()
    started, checked = time.perf_counter(), time.monotonic()
    try:
        for i in range(count):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if timeline.joiner is None and time.perf_counter() - started >= join_at:
                timeline.join = time.time()
                timeline.joiner = start_joiner()
            tweet = RawTweet(id=f"{PREFIX}{i}", text=texts[i % len(texts)], source="replay")
            _produce(producer, topic, tweet.key, tweet.to_bytes(), partition=i % parts)
            timeline.offered = i + 1
            if time.monotonic() - checked > 1:
                run.check()
                checked = time.monotonic()
        timeline.stream_end = time.time()
        if producer.flush(60):
            raise RuntimeError("the tweets were not all delivered within 60 s")
    finally:
        # Gone before the run's topics are deleted, also when this raises (a traceback keeps this
        # frame's locals): a live producer may re-create a deleted topic on a metadata refresh.
        producer = None
    return timeline


# -- the figures ------------------------------------------------------------------------------------


def longest_gap(times: list[float], lo: float, hi: float) -> tuple[float, float] | None:
    """(length, start) of the longest gap between consecutive `times` (sorted) that overlaps [lo, hi];
    a window edge stands in for a missing arrival before or after it. None without arrivals in or
    after it."""
    inside = [t for t in times if lo <= t <= hi]
    before = max((t for t in times if t < lo), default=lo)
    after = min((t for t in times if t > hi), default=None)
    if not inside and after is None:
        return None
    points = [before, *inside, *([after] if after is not None else [hi])]
    return max((b - a, a) for a, b in pairwise(points))


def owners_at(samples: list[Sample], workers: set[int], until: float) -> dict[int, int]:
    """partition -> worker, from each worker's last answered, non-rebalancing status before `until`."""
    last: dict[int, Sample] = {}
    for s in samples:
        if s.worker in workers and s.at < until and s.assigned is not None and not s.rebalancing:
            last[s.worker] = s
    return {p: w for w, s in last.items() for p in s.assigned or []}


def settled_at(samples: list[Sample], final: dict[int, list[int]], after: float) -> float | None:
    """When every worker's status last changed to its final assignment (after `after`)."""
    settled = after
    for s in samples:
        if s.at > after and (
            s.assigned is None or s.rebalancing or sorted(s.assigned) != final.get(s.worker)
        ):
            settled = max(settled, s.at)
    later = [s.at for s in samples if s.at > settled]
    return min(later) if later else None


def analyse(timeline: Timeline, seen: dict[str, list[tuple[float, float]]], samples: list[Sample]) -> dict:
    join = timeline.join
    # No gap is counted past the end of the stream (nothing more was offered).
    lo, hi = join + WINDOW[0], min(join + WINDOW[1], timeline.stream_end)
    base_lo, base_hi = max(join + BASELINE[0], timeline.stream_start + SETTLE_S), join + BASELINE[1]
    arrived: dict[int, list[float]] = {p: [] for p in range(PARTITIONS)}
    classified: dict[int, list[float]] = {p: [] for p in range(PARTITIONS)}
    for tweet_id, reads in seen.items():
        if tweet_id.startswith(PREFIX):
            p = int(tweet_id.removeprefix(PREFIX)) % PARTITIONS
            arrived[p].append(reads[0][0])
            classified[p].append(reads[0][1])
    before = owners_at(samples, {0, 1}, join)
    end = owners_at(samples, {0, 1, 2}, float("inf"))  # as the run ends (after the drain)
    final = {w: sorted(p for p, o in end.items() if o == w) for w in (0, 1, 2)}
    partitions: dict[int, dict[str, Any]] = {}
    baseline_deliveries: list[float] = []
    for p in range(PARTITIONS):
        times, done = sorted(set(arrived[p])), sorted(classified[p])
        pre = [t for t in times if timeline.stream_start + SETTLE_S <= t < join]
        baseline_deliveries += [b - a for a, b in pairwise(pre)]
        kind = "unknown" if p not in before or p not in end else "kept" if before[p] == end[p] else "moved"
        partitions[p] = {
            "kind": kind,
            "owner_before": before.get(p),
            "owner_after": end.get(p),
            "max_gap_s": _length(gap := longest_gap(times, lo, hi)),
            "max_gap_starts_s": None if gap is None else round(gap[1] - join, 3),  # after the join
            "max_gap_classified_s": _length(longest_gap(done, lo, hi)),
            "baseline_max_gap_s": _length(longest_gap(times, base_lo, base_hi)),
        }

    def worst(kind: str, key: str) -> float | None:
        gaps = [d[key] for d in partitions.values() if d["kind"] == kind and d[key] is not None]
        return round(max(gaps), 3) if gaps else None

    def worst_starts(kind: str) -> float | None:
        gaps = [d for d in partitions.values() if d["kind"] == kind and d["max_gap_s"] is not None]
        return max(gaps, key=lambda d: d["max_gap_s"])["max_gap_starts_s"] if gaps else None

    joiner_owns = next(
        (s.at for s in samples if s.worker == 2 and s.at >= join and s.assigned and not s.rebalancing), None
    )
    joiner_up = next((s.at for s in samples if s.worker == 2 and s.assigned is not None), None)
    settled = settled_at(samples, final, joiner_owns or join)
    ids = {f"{PREFIX}{i}" for i in range(timeline.offered)}
    baseline_max = [
        d["baseline_max_gap_s"] for d in partitions.values() if d["baseline_max_gap_s"] is not None
    ]
    return {
        "kept_partitions": [p for p, d in partitions.items() if d["kind"] == "kept"],
        "moved_partitions": [p for p, d in partitions.items() if d["kind"] == "moved"],
        "kept_max_gap_s": worst("kept", "max_gap_s"),
        "moved_max_gap_s": worst("moved", "max_gap_s"),
        "kept_gap_starts_s": worst_starts("kept"),
        "moved_gap_starts_s": worst_starts("moved"),
        "kept_max_gap_classified_s": worst("kept", "max_gap_classified_s"),
        "moved_max_gap_classified_s": worst("moved", "max_gap_classified_s"),
        "baseline_median_gap_s": _round(
            statistics.median(baseline_deliveries) if baseline_deliveries else None
        ),
        "baseline_max_gap_s": _round(statistics.median(baseline_max) if baseline_max else None),
        "joiner_status_up_s": _round(joiner_up - join if joiner_up else None),
        "joiner_owns_s": _round(joiner_owns - join if joiner_owns else None),
        "assignment_settled_s": _round(settled - join if settled else None),
        "offered": timeline.offered,
        "lost": len(ids - seen.keys()),
        "duplicates": sum(len(reads) - 1 for tweet_id, reads in seen.items() if tweet_id in ids),
        "owners_before": {w: sorted(p for p, o in before.items() if o == w) for w in (0, 1)},
        "owners_after": final,
        "partitions": partitions,
    }


def _length(gap: tuple[float, float] | None) -> float | None:
    return None if gap is None else round(gap[0], 3)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def log_problems(paths: list[Path], limit: int = 8) -> dict[str, Any]:
    """Per worker log: how many ERROR / WARNING / Traceback lines, and the first distinct ones."""
    out: dict[str, Any] = {}
    for path in paths:
        counts: Counter[str] = Counter()
        first: list[str] = []
        for line in path.read_text(errors="replace").splitlines():
            level = next((lvl for lvl in ("CRITICAL", "ERROR", "Traceback", "WARNING") if lvl in line), None)
            if level:
                counts[level] += 1
                if len(first) < limit and line[:200] not in first:
                    first.append(line[:200])
        out[path.name] = {"counts": dict(counts), "first": first}
    return out


# -- one run ------------------------------------------------------------------------------------------


def code_info(extra_env: dict[str, str]) -> dict[str, str]:
    """Which tree the workers run and their default processing guarantee (in a child, as they start)."""
    probe = (
        "import importlib.util, json, tweetpulse; from tweetpulse.settings import Settings; "
        "print(json.dumps({'app': importlib.util.find_spec('tweetpulse.processors.app').origin, "
        "'package': tweetpulse.__file__, 'guarantee': Settings().processor.processing_guarantee}))"
    )
    env = {**os.environ, **extra_env}
    env.pop("TWEETPULSE_CONFIG", None)
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    # .../processors/app.py and .../tweetpulse/__init__.py: both of one tree, or the run means nothing
    trees = {str(Path(found["app"]).parents[1]), str(Path(found["package"]).parents[1])}
    if len(trees) != 1:
        sys.exit(f"the workers would mix two trees: {sorted(trees)} (run from outside the checkout)")
    return {"worker_code": trees.pop(), "guarantee": found["guarantee"]}


def run_once(
    code: str, args: argparse.Namespace, registry_root: Path, texts: list[str], log_dir: Path
) -> dict:
    extra = dict(SHORT_GROUP_TIMINGS)
    if code == "before":
        if not (BEFORE_SITE / "sitecustomize.py").is_file():
            sys.exit(f"--code before needs {BEFORE_SITE}/sitecustomize.py")
        extra["PYTHONPATH"] = str(BEFORE_SITE)
    if args.guarantee != "default":
        extra["TWEETPULSE_PROCESSOR__PROCESSING_GUARANTEE"] = args.guarantee
    info = code_info(extra)
    setup = PipelineSetup(
        Settings(), registry_root, PARTITIONS, extra, log_dir, timeout_s=240, stop_timeout_s=30
    )
    print(f"[{code}] starting 2 workers ({info['worker_code']}, {info['guarantee']})", file=sys.stderr)
    joiner_state: list[Path] = []
    with PipelineRun(setup, workers=2) as run:
        poller = OwnershipPoller(run.workers)
        reader = ArrivalReader(run.reader.consumer)

        def start_joiner() -> WorkerProcess:
            state = Path(tempfile.mkdtemp(prefix=f"tweetpulse-{run.app_id}-joiner-"))
            joiner_state.append(state)
            env = worker_env(
                run.settings,
                run.app_id,
                registry_root,
                **extra,
                TWEETPULSE_PROCESSOR__DATADIR=str(state),
            )
            worker = WorkerProcess(env, log_dir / f"{run.app_id}-2.log")
            run.workers.append(worker)  # stopped with the others, also when the run fails
            return worker

        try:
            poller.start()
            reader.start()
            time.sleep(1.0)  # a couple of ownership samples before the stream
            print(f"[{code}] streaming {args.rate:g}/s for {args.seconds:g} s", file=sys.stderr)
            timeline = stream(run, texts, args.rate, args.seconds, args.join_at, start_joiner)
            ids = {f"{PREFIX}{i}" for i in range(timeline.offered)}
            deadline = time.monotonic() + args.drain
            while not ids <= reader.seen.keys() and time.monotonic() < deadline:
                run.check()
                time.sleep(0.2)
            time.sleep(2.0)  # late duplicates, and the final ownership samples
        finally:
            poller.stop()
            reader.stop()
            try:
                stop_all(run.workers, setup.stop_timeout_s)
            finally:
                for state in joiner_state:
                    shutil.rmtree(state, ignore_errors=True)
        logs = [w.log_path for w in run.workers]
    figures = analyse(timeline, reader.seen, poller.samples)
    return {
        "code": code,
        **info,
        "rate": args.rate,
        "seconds": args.seconds,
        "join_at_s": args.join_at,
        "startup_s": round(run.startup_s, 2),
        **figures,
        "worker_logs": log_problems(logs),
        "log_files": [str(p) for p in logs],
    }


# -- output ---------------------------------------------------------------------------------------------

ROWS = [
    ("worker code", "worker_code"),
    ("processing guarantee", "guarantee"),
    ("kept partitions", "kept_partitions"),
    ("moved partitions", "moved_partitions"),
    ("longest gap, kept partitions (s)", "kept_max_gap_s"),
    ("longest gap, moved partitions (s)", "moved_max_gap_s"),
    ("  kept gap starts (s after the join)", "kept_gap_starts_s"),
    ("  moved gap starts (s after the join)", "moved_gap_starts_s"),
    ("  same by classified_at, kept (s)", "kept_max_gap_classified_s"),
    ("  same by classified_at, moved (s)", "moved_max_gap_classified_s"),
    ("baseline: median gap between deliveries (s)", "baseline_median_gap_s"),
    ("baseline: median longest gap in 10 s (s)", "baseline_max_gap_s"),
    ("third worker: status view up after (s)", "joiner_status_up_s"),
    ("third worker: owns partitions after (s)", "joiner_owns_s"),
    ("assignment settled after (s)", "assignment_settled_s"),
    ("tweets offered", "offered"),
    ("results lost (read_committed)", "lost"),
    ("results duplicated (read_committed)", "duplicates"),
]


def table(reports: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, list):
            return ",".join(map(str, value)) or "-"
        return "-" if value is None else str(value)

    width = max(len(label) for label, _ in ROWS)
    cols = [[cell(r.get(key)) for _, key in ROWS] for r in reports]
    col_w = [max(len(r["code"]), *(len(c) for c in col)) for r, col in zip(reports, cols, strict=True)]
    lines = ["  ".join([" " * width, *(r["code"].rjust(w) for r, w in zip(reports, col_w, strict=True))])]
    for i, (label, _) in enumerate(ROWS):
        lines.append(
            "  ".join([label.ljust(width), *(c[i].rjust(w) for c, w in zip(cols, col_w, strict=True))])
        )
    return "\n".join(lines)


def lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return cpu_model()


def model_registry(kind: str, work_dir: Path, texts: list[str]) -> tuple[Path, dict[str, Any]]:
    """(registry root, what the model is): the near-free model built under `work_dir`, or the default
    registry's production model."""
    if kind == "production":
        registry = ModelRegistry(Settings().registry.root)
        version = registry.production()
        if version is None:
            sys.exit(f"no production model in {registry.root}")
        return registry.root, {"model": "production", "version": version, "path": str(registry.path(version))}
    from tweetpulse.bench.nearfree import ARCHITECTURE, build_near_free, missing

    if why := missing():
        sys.exit(f"the near-free model {why}; use --model production")
    started = time.perf_counter()
    artifact, root = build_near_free(work_dir, take(texts, 64))
    return root, {
        "model": "near-free",
        "version": artifact.version,
        "architecture": ARCHITECTURE,
        "build_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--code", choices=["new", "before", "both"], default="both")
    parser.add_argument("--rate", type=float, default=200, help="tweets/s offered (default 200)")
    parser.add_argument("--seconds", type=float, default=42, help="length of the stream (default 42)")
    parser.add_argument("--join-at", type=float, default=15, help="third worker starts at (default 15 s)")
    parser.add_argument("--drain", type=float, default=60, help="longest wait for the last results (s)")
    parser.add_argument("--model", choices=["near-free", "production"], default="near-free")
    parser.add_argument(
        "--guarantee",
        choices=["default", "at_least_once", "exactly_once"],
        default="default",
        help="processing guarantee of the workers (default: each code's own default)",
    )
    parser.add_argument("--data", help="labeled tweet file or 'builtin' (default: as tweetpulse bench)")
    parser.add_argument("--json", type=Path, help="write the full report here")
    args = parser.parse_args()
    if args.join_at + WINDOW[1] > args.seconds:
        print(f"note: the window ends {WINDOW[1]:g} s after the join, after the stream", file=sys.stderr)
    texts, source = load_texts(args.data)
    json_path = args.json.resolve() if args.json else None
    work_dir = Path(tempfile.mkdtemp(prefix="tweetpulse-rebalance-gap-"))
    # The workers start in this folder, not in the checkout: `python -m tweetpulse` puts its working
    # directory first on sys.path, and the checkout's tweetpulse/ folder would win over the editable
    # install that /tmp/before_site repoints (the old worker would run the new tweetpulse/ modules).
    started_in = os.getcwd()
    os.chdir(work_dir)
    log_dir = work_dir / "logs"
    log_dir.mkdir()
    try:
        registry_root, model = model_registry(args.model, work_dir / "model", texts)
        codes = ["new", "before"] if args.code == "both" else [args.code]
        reports = [run_once(code, args, registry_root, texts, log_dir) for code in codes]
    finally:
        kept_logs = Path(tempfile.gettempdir()) / f"{work_dir.name}-logs"
        shutil.copytree(log_dir, kept_logs, dirs_exist_ok=True)
        os.chdir(started_in)
        shutil.rmtree(work_dir, ignore_errors=True)
    report = {
        "cpu": lscpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "load_average_after": load_average(),
        "texts": source,
        **model,
        "window_s": WINDOW,
        "runs": reports,
    }
    for r in reports:
        r["log_files"] = [str(kept_logs / Path(p).name) for p in r["log_files"]]
    if json_path:
        json_path.write_text(json.dumps(report, indent=2, default=str))
    print(f"CPU: {report['cpu']} ({report['cores']} usable cores; load after {report['load_average_after']})")
    print(f"model: {model['model']}; texts: {source}; window [join{WINDOW[0]:+g} s, join+{WINDOW[1]:g} s]")
    print(table(reports))
    for r in reports:
        for name, problems in r["worker_logs"].items():
            if problems["counts"]:
                print(f"{r['code']} {name}: {problems['counts']}")
                for line in problems["first"]:
                    print(f"    {line}")
    print(f"worker logs: {kept_logs}")


if __name__ == "__main__":
    main()
