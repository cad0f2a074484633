"""`tweetpulse bench` end to end on the real broker (functional only: no timing thresholds here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tweetpulse.registry import ModelRegistry

FIGURES = {
    "raw_tps",
    "pipeline_tps",
    "naive_tps",
    "ratio_vs_raw",
    "ratio_vs_naive",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "scale_2_over_1",
    "startup_s",
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


def test_quick_bench_writes_every_figure_the_machine_and_the_goals_to_json(
    tiny_model_registry: ModelRegistry, kafka_bootstrap: str, tmp_path: Path
) -> None:
    pytest.importorskip("transformers", reason="the naive baseline needs the [train] extra")
    out = tmp_path / "out.json"
    run = bench(tiny_model_registry.root, kafka_bootstrap, "--quick", "--json", str(out))
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
    assert set(report["goals"]) == {"ratio_vs_raw", "ratio_vs_naive", "latency_p99_ms", "scale_2_over_1"}
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
