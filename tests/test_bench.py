"""`tweetpulse bench` end to end on the real broker (functional only: no timing thresholds here)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from conftest import require

from tweetpulse.bench.kafka_io import produce_raw
from tweetpulse.bench.pipeline import PipelineRun, PipelineSetup
from tweetpulse.bench.workers import WorkerError, process_gone
from tweetpulse.registry import ModelRegistry
from tweetpulse.settings import Settings, load_settings

FIGURES = {
    "raw_tps",
    "pipeline_tps",
    "naive_tps",
    "ratio_vs_raw",
    "ratio_vs_naive",
    "hostile_mix_tps",
    "hostile_over_clean",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_p99_at_80pct_ms",
    "visible_p99_ms",
    "visible_p99_at_80pct_ms",
    "writes_per_tweet",
    "writes_per_tweet_low_load",
    "scale_2_over_1",
    "startup_s",
    "framework_tps",
    "framework_raw_tps",
    "peer_tps",
    "framework_over_peer",
    "framework_eos_tps",
    "peer_eos_tps",
    "framework_over_peer_eos",
}
GOALS = {
    "ratio_vs_raw",
    "ratio_vs_naive",
    "latency_p99_ms",
    "latency_p99_at_80pct_ms",
    "visible_p99_at_80pct_ms",
    "scale_2_over_1",
    "framework_tps",
    "framework_over_peer",
    "framework_over_peer_eos",
    "writes_per_tweet",
    "writes_per_tweet_low_load",
}


def bench(registry_root: Path, kafka_bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "TWEETPULSE_REGISTRY__ROOT": str(registry_root),
        "TWEETPULSE_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
    }
    env.pop("TWEETPULSE_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "tweetpulse", "bench", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def bench_process(registry_root: Path, kafka_bootstrap: str, *args: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "TWEETPULSE_REGISTRY__ROOT": str(registry_root),
        "TWEETPULSE_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
    }
    env.pop("TWEETPULSE_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "tweetpulse", "bench", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _topics_of(bootstrap: str, tokens: set[str]) -> list[str]:
    """Topics on the broker of the bench runs `tokens`: ``*.bench.<token>`` and ``bench-<token>-*``."""
    names = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    return sorted(n for n in names if any(f"bench.{t}" in n or n.startswith(f"bench-{t}-") for t in tokens))


def _workers_of(app_ids: set[str]) -> list[int]:
    """Live processes whose environment names one of `app_ids` as their processor app id."""
    wanted = {f"TWEETPULSE_PROCESSOR__APP_ID={a}".encode() for a in app_ids}
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0") if proc.name.isdigit() else []
        except OSError:  # gone meanwhile, or not ours
            continue
        if wanted & set(environ):
            pids.append(int(proc.name))
    return pids


def _setup(registry: ModelRegistry, kafka_bootstrap: str, log_dir: Path, **kwargs: float) -> PipelineSetup:
    settings: Settings = load_settings(kafka={"bootstrap_servers": kafka_bootstrap})
    env = {"TWEETPULSE_PROCESSOR__PROVIDER": "cpu"}
    return PipelineSetup(settings, registry.root, 2, env, log_dir, **kwargs)


def _assert_nothing_left(run: PipelineRun, kafka_bootstrap: str) -> None:
    assert run.pids and all(process_gone(pid) for pid in run.pids), run.pids
    assert all(w.proc.returncode is not None for w in run.workers)
    assert _workers_of({run.app_id}) == []
    assert _topics_of(kafka_bootstrap, {run.token}) == []


def test_a_run_whose_workers_never_get_their_partitions_in_time_stops_them_and_deletes_its_topics(
    tiny_model_registry: ModelRegistry, kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = PipelineRun(_setup(tiny_model_registry, kafka_bootstrap, tmp_path, timeout_s=0.5), workers=2)
    with pytest.raises(WorkerError, match="did not share 2 partitions"), run:
        pytest.fail("__enter__ must raise")
    _assert_nothing_left(run, kafka_bootstrap)
    assert len(run.pids) == 2


def test_a_warm_up_that_cannot_succeed_stops_the_worker_and_deletes_every_topic_it_made(
    tiny_model_registry: ModelRegistry, kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warm-up waits, with a real reader and a 1 s timeout, for a result no tweet will give: it
    times out after the worker got its partitions and made Faust's internal topics."""
    seen: dict[str, list[str]] = {}

    def hopeless_warm_up(self: PipelineRun) -> None:
        seen["topics"] = self.topics()
        self.reader.read_until({"never-sent"}, 1.0, self.check)

    monkeypatch.setattr(PipelineRun, "_warm_up", hopeless_warm_up)
    run = PipelineRun(_setup(tiny_model_registry, kafka_bootstrap, tmp_path), workers=1)
    with pytest.raises(TimeoutError, match="1 of 1 results missing"), run:
        pytest.fail("__enter__ must raise")
    assert f"tweets.raw.bench.{run.token}" in seen["topics"]
    assert any(t.startswith(f"{run.app_id}-") for t in seen["topics"]), seen  # Faust's own topics
    _assert_nothing_left(run, kafka_bootstrap)


def test_ctrl_c_mid_run_kills_a_worker_deaf_to_sigterm_and_deletes_every_topic(
    tiny_model_registry: ModelRegistry, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """KeyboardInterrupt raised inside the run, after real traffic, with the worker stopped
    (SIGSTOP: SIGTERM stays pending), so only the SIGKILL after stop_timeout_s can end it."""
    run = PipelineRun(_setup(tiny_model_registry, kafka_bootstrap, tmp_path, stop_timeout_s=3), workers=1)
    with pytest.raises(KeyboardInterrupt), run:
        assert run.throughput(["what a lovely day", "this is awful"] * 25)["tweets"] == 50
        topics = run.topics()
        os.kill(run.pids[0], signal.SIGSTOP)
        raise KeyboardInterrupt
    assert any(t.startswith(f"{run.app_id}-") for t in topics), topics
    assert {f"tweets.raw.bench.{run.token}", f"tweets.sentiment.bench.{run.token}"} <= set(topics)
    _assert_nothing_left(run, kafka_bootstrap)
    assert run.workers[0].proc.returncode == -signal.SIGKILL


def test_sigterm_to_the_bench_stops_its_worker_deletes_its_topics_and_exits_130(
    tiny_model_registry: ModelRegistry, kafka_bootstrap: str, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    args = [
        "--skip",
        "raw",
        "--skip",
        "scaling",
        "--skip",
        "naive",
        "--skip",
        "framework",
        "--skip",
        "hostile",
    ]
    proc = bench_process(tiny_model_registry.root, kafka_bootstrap, *args, "--log-dir", str(logs))
    try:
        deadline = time.monotonic() + 300
        app_ids: set[str] = set()
        while time.monotonic() < deadline and proc.poll() is None:  # until the worker made its topics
            app_ids = {log.name.rsplit("-", 1)[0] for log in logs.glob("bench-*.log")}
            tokens = {a.removeprefix("bench-") for a in app_ids}
            if (
                app_ids
                and _workers_of(app_ids)
                and any(
                    t.startswith(tuple(f"{a}-" for a in app_ids)) for t in _topics_of(kafka_bootstrap, tokens)
                )
            ):
                break
            time.sleep(0.5)
        assert app_ids and proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted" in out
    assert _workers_of(app_ids) == []
    assert _topics_of(kafka_bootstrap, {a.removeprefix("bench-") for a in app_ids}) == []


def test_quick_bench_writes_every_figure_the_machine_and_the_goals_to_json(
    tiny_model_registry: ModelRegistry, kafka_bootstrap: str, tmp_path: Path
) -> None:
    require("transformers", "the naive baseline needs the [train] extra")
    out = tmp_path / "out.json"
    logs = tmp_path / "logs"
    run = bench(
        tiny_model_registry.root, kafka_bootstrap, "--quick", "--json", str(out), "--log-dir", str(logs)
    )
    assert run.returncode == 0, run.stderr[-4000:]

    report = json.loads(out.read_text())
    figures = report["figures"]
    assert set(figures) == FIGURES
    assert all(isinstance(v, int | float) and v > 0 for v in figures.values()), figures
    assert figures["ratio_vs_raw"] == pytest.approx(figures["pipeline_tps"] / figures["raw_tps"], rel=1e-2)
    assert figures["ratio_vs_naive"] == pytest.approx(
        figures["pipeline_tps"] / figures["naive_tps"], rel=1e-2
    )
    assert report["pipeline"]["tweets"] == 500 and report["pipeline"]["workers"] == 1
    assert report["scaling"]["workers_2"]["workers"] == 2
    assert report["latency"]["offered_rate"] == pytest.approx(figures["pipeline_tps"] / 2, rel=1e-2)
    assert report["latency"]["p50_ms"] <= report["latency"]["p95_ms"] <= report["latency"]["p99_ms"]
    assert report["latency_80pct"]["offered_rate"] == pytest.approx(0.8 * figures["pipeline_tps"], rel=1e-2)
    assert figures["latency_p99_at_80pct_ms"] == report["latency_80pct"]["p99_ms"]
    # Records written per tweet: every result is one record on tweets.sentiment, and the total
    # (every topic the worker writes) is what the figure divides by the tweets classified.
    for part, tweets in (("pipeline", 500), ("low_load", report["low_load"]["tweets"] + 1)):  # +1: warm-up
        writes = report[part]["writes"]
        assert writes["classified"] == tweets, (part, writes)
        assert writes["by_topic"]["tweets.sentiment"] >= tweets, (part, writes)
        assert writes["records"] == sum(writes["by_topic"].values())
        assert writes["writes_per_tweet"] == pytest.approx(writes["records"] / tweets, abs=1e-3)
    assert figures["writes_per_tweet"] == report["pipeline"]["writes"]["writes_per_tweet"]
    assert report["low_load"]["offered_rate"] <= 100
    # The framework ceiling: the near-free model the bench built, in-process and through a worker.
    framework = report["framework"]
    assert framework["model"]["num_hidden_layers"] == 1 and framework["model"]["hidden_size"] == 32
    assert framework["pipeline"]["tweets"] == 2000 and framework["pipeline"]["workers"] == 1
    assert figures["framework_tps"] == framework["pipeline"]["tps"]
    assert figures["framework_raw_tps"] == framework["raw"]["tps"]
    # ... beside the plain loop, under both guarantees, one round each (--quick).
    for guarantee, suffix in (("at_least_once", ""), ("exactly_once", "_eos")):
        side = framework[guarantee]
        assert [r["tweets"] for r in side["framework"] + side["peer"]] == [2000, 2000], side
        assert figures[f"peer{suffix}_tps"] == side["peer"][0]["tps"]
        assert figures[f"framework_over_peer{suffix}"] == pytest.approx(
            figures[f"framework{suffix}_tps"] / figures[f"peer{suffix}_tps"], rel=1e-2
        )
    assert set(report["goals"]) == GOALS
    assert all(isinstance(g["met"], bool) for g in report["goals"].values())
    machine = report["machine"]
    assert (
        machine["cores"] >= 1
        and machine["cpu_model"]
        and "CPUExecutionProvider" in machine["onnxruntime_providers"]
    )
    assert len(machine["load_average"]) == 3 and len(report["load_average_after"]) == 3
    assert report["model"]["version"] == tiny_model_registry.production()
    assert "gpu" in report
    # The table on stdout names every figure.
    for name in FIGURES:
        assert name in run.stdout
    # Nothing of the run is left on the broker or in the process table: one worker, the scaling
    # runs' 1 + 2, the near-free ones and plain loops, 2 of each (their logs name their app ids), and
    # the naive loop's topics.
    app_ids = {log.name.rsplit("-", 1)[0] for log in logs.glob("bench-*.log")}
    assert len(app_ids) == 7, sorted(logs.iterdir())
    tokens = {a.removeprefix("bench-") for a in app_ids} | {report["naive"]["run"]}
    assert _topics_of(kafka_bootstrap, tokens) == []
    assert _workers_of(app_ids) == []


def test_bench_with_an_empty_registry_exits_2_and_says_to_train_a_model(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = bench(tmp_path / "empty-registry", kafka_bootstrap, "--quick")
    assert run.returncode == 2
    assert "no production model" in run.stderr and "tweetpulse train" in run.stderr


def test_bench_refuses_an_unknown_model_version_with_a_clear_message(
    tiny_model_registry: ModelRegistry, kafka_bootstrap: str
) -> None:
    run = bench(tiny_model_registry.root, kafka_bootstrap, "--quick", "--model", "v9999")
    assert run.returncode == 2
    assert "no model version 'v9999'" in run.stderr


def _committed_results(settings: Settings, expected: int, timeout: float = 60) -> Counter[str]:
    """Result ids on the sentiment topic as a read_committed consumer sees them, read from the start
    until `expected` records are in and then 1 s more (late repeats would show)."""
    from tweetpulse.contracts import SentimentResult

    consumer = Consumer(
        settings.kafka.confluent_config(
            **{
                "group.id": f"test-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
    )
    consumer.subscribe([settings.topics.sentiment])
    ids: Counter[str] = Counter()
    deadline, more = time.monotonic() + timeout, None
    try:
        while time.monotonic() < (more or deadline):
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                if msg.error() is None:
                    ids[SentimentResult.from_bytes(msg.value()).id] += 1
            if more is None and ids.total() >= expected:
                more = time.monotonic() + 1.0
    finally:
        consumer.close()
    return ids


def test_the_plain_loop_gives_every_tweet_one_committed_result_under_both_guarantees_and_cleans_up(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The peer of `tweetpulse bench` (bench/peer.py) on the near-free model: each guarantee's loop
    skips (and counts) bad values, writes exactly one result per tweet, exits cleanly on SIGTERM and
    leaves no process, topic or consumer group behind."""
    from tweetpulse.bench.nearfree import build_near_free, missing

    if missing():
        pytest.fail(missing(), pytrace=False)
    from tweetpulse.bench.peer import GUARANTEE_ENV, GUARANTEES, PeerRun

    artifact, root = build_near_free(tmp_path / "near-free", ["a sample tweet for the parity gate"] * 8)
    settings: Settings = load_settings(kafka={"bootstrap_servers": kafka_bootstrap})
    setup = PipelineSetup(settings, root, 2, {"TWEETPULSE_PROCESSOR__PROVIDER": "cpu"}, tmp_path, 180)
    texts = ["what a lovely day", "this is awful", "meh, it is fine I guess"] * 100
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for guarantee in GUARANTEES:
        run = PeerRun(setup, **{GUARANTEE_ENV: guarantee})
        with run:
            produce_raw(run.settings, [(b"bad", b"not json"), (b"bad", None)])  # before the tweets
            got = run.throughput(texts, "p-")
            committed = _committed_results(run.settings, len(texts) + 4)  # + the warm-up's 2 per partition
            topics = run.topics()
            process = run.workers[0].proc
        assert got["tweets"] == 300 and got["duplicates"] == 0, (guarantee, got)
        wanted = {f"p-{i}" for i in range(300)} | {f"warm-{i}" for i in range(4)}
        assert set(committed) == wanted and set(committed.values()) == {1}, (guarantee, committed)
        results = run.reader.received.results
        assert {r.model_version for r in results.values()} == {artifact.version}
        assert process.returncode == 0, run.workers[0].log_tail()
        summary = run.summary()
        assert summary is not None and summary["results"] == 304 and summary["skipped"] == 2, summary
        assert {f"tweets.raw.bench.{run.token}", f"tweets.sentiment.bench.{run.token}"} <= set(topics)
        assert _topics_of(kafka_bootstrap, {run.token}) == []
        assert _workers_of({run.app_id}) == []
        groups = admin.list_consumer_groups().result().valid
        assert run.app_id not in {g.group_id for g in groups}
