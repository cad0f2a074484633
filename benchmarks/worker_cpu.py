"""Where one worker's CPU goes per tweet at a paced rate (not a test; issue 15's latency analysis).

Starts one real `tweetpulse process` worker on fresh bench topics (bench/pipeline.py), offers the
bench's texts at each rate, and prints one JSON object: per rate, the CPU milliseconds per tweet of
each worker thread (named by `py-spy dump` when py-spy is installed: MainThread, Thread-1 is Faust's
aiokafka consumer thread, inference_N the model calls), of the broker and of this process, and the
end-to-end latency percentiles.

CPU time per tweet at a fixed rate moves much less with a shared host's neighbours than latency
does (latency at high load follows the host's spare capacity from minute to minute), so it is the
figure to compare before and after a change to the worker.

    python benchmarks/worker_cpu.py --rates 100,160 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from tweetpulse.bench.kafka_io import produce_paced
from tweetpulse.bench.machine import machine_info
from tweetpulse.bench.pipeline import PipelineRun, PipelineSetup, percentile
from tweetpulse.bench.texts import load_texts
from tweetpulse.registry import ModelRegistry
from tweetpulse.settings import Settings

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat: Path) -> float:
    """utime + stime from a /proc .../stat file."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def thread_cpu(pid: int) -> dict[int, float]:
    times = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            times[int(task.name)] = cpu_seconds(task / "stat")
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            continue
    return times


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by native thread id (py-spy), or {} without py-spy."""
    if shutil.which("py-spy") is None:
        return {}
    dump = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True, check=False)
    return {int(tid): name for tid, name in re.findall(r'^Thread (\d+) \(.*?\): "(.*)"', dump.stdout, re.M)}


def broker_pid(settings: Settings) -> int | None:
    """The local development broker's pid (deploy/kafka/kafka.sh's pidfile), when it runs here."""
    port = settings.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[-1]
    state = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    pidfile = (
        Path(os.environ.get("TWEETPULSE_KAFKA_STATE", state / "tweetpulse" / f"kafka-{port}")) / "kafka.pid"
    )
    try:
        return int(pidfile.read_text())
    except (OSError, ValueError):
        return None


def measure(run: PipelineRun, texts: list[str], rate: float, seconds: float, broker: int | None) -> dict:
    """One paced run: CPU per tweet by thread and process, and latency percentiles."""
    pid, prefix = run.pids[0], f"cpu{rate:g}-"
    n = max(2, int(rate * seconds))
    offered = [texts[i % len(texts)] for i in range(n)]
    threads, broker_s, own_s, started = thread_cpu(pid), _cpu(broker), time.process_time(), time.monotonic()
    produce_paced(run.settings, offered, rate, prefix)
    got = run.reader.read_until({f"{prefix}{i}" for i in range(n)}, run.setup.timeout_s, run.check)
    wall = time.monotonic() - started
    spent = {tid: s - threads.get(tid, 0.0) for tid, s in thread_cpu(pid).items()}
    names = thread_names(pid)
    ms = [(r.classified_at - r.ingested_at).total_seconds() * 1000 for r in got.results.values()]
    per_tweet = {
        f"{names.get(tid, 'main' if tid == pid else 'thread')} ({tid})": round(s * 1000 / n, 2)
        for tid, s in sorted(spent.items(), key=lambda item: -item[1])
        if s > 0
    }
    return {
        "rate": rate,
        "tweets": n,
        "wall_s": round(wall, 1),
        "worker_ms_per_tweet": round(sum(spent.values()) * 1000 / n, 2),
        "worker_cores": round(sum(spent.values()) / wall, 2),
        "threads_ms_per_tweet": per_tweet,
        "broker_cores": None if broker is None else round((_cpu(broker) - broker_s) / wall, 2),
        "bench_cores": round((time.process_time() - own_s) / wall, 2),
        "latency_ms": {f"p{q}": round(percentile(ms, q), 1) for q in (50, 95, 99)},
    }


def _cpu(pid: int | None) -> float:
    return cpu_seconds(Path(f"/proc/{pid}/stat")) if pid else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="100,160", help="tweets/s, comma-separated (default 100,160)")
    parser.add_argument("--seconds", type=float, default=30, help="length of each paced run (default 30)")
    parser.add_argument("--data", help="labeled tweet file or 'builtin' (default: as tweetpulse bench)")
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    settings = Settings()
    texts, source = load_texts(args.data)
    registry = ModelRegistry(settings.registry.root)
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "tweetpulse-worker-cpu"
    log_dir.mkdir(exist_ok=True)
    setup = PipelineSetup(settings, registry.root, args.partitions, {}, log_dir)
    report = {"machine": machine_info(), "model": registry.production(), "texts": source, "runs": []}
    with PipelineRun(setup, workers=1) as run:
        for rate in (float(r) for r in args.rates.split(",")):
            report["runs"].append(measure(run, texts, rate, args.seconds, broker_pid(settings)))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
