"""One `tweetpulse bench` run: every figure of issue #5, side by side over the same texts."""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tweetpulse.bench.machine import load_average, machine_info
from tweetpulse.bench.pipeline import PipelineRun, PipelineSetup
from tweetpulse.bench.texts import load_texts, take
from tweetpulse.registry import ModelArtifact, ModelRegistry, load_artifact
from tweetpulse.settings import Settings

# The goals: figure -> (comparison, target).
GOALS: dict[str, tuple[str, float]] = {
    "ratio_vs_raw": (">=", 0.9),
    "ratio_vs_naive": (">=", 10.0),
    "latency_p99_ms": ("<=", 150.0),
    "scale_2_over_1": (">=", 1.8),
}


@dataclass(frozen=True)
class BenchOptions:
    model: str | None = None  # registry version or exported folder; None: production
    data: str | None = None  # texts file or "builtin"; None: ../shared/data val file, else built-in
    tweets: int = 5000  # pipeline throughput run size
    raw_texts: int = 1000
    naive_tweets: int = 300
    latency_s: float = 20.0
    partitions: int = 6
    provider: str = "auto"  # auto: CUDA when a GPU is present, as the workers do
    variant: str = "auto"
    naive_model: str | None = None  # a PyTorch folder of the same fine-tuned model, if there is one
    skip: frozenset[str] = frozenset()  # of: raw, pipeline, naive, latency, scaling
    log_dir: Path | None = None


def resolve_model(settings: Settings, spec: str | None, scratch: Path) -> tuple[ModelArtifact, Path]:
    """(the model, a registry root whose production version it is, for the workers)."""
    registry = ModelRegistry(settings.registry.root)
    if spec is None or spec == registry.production():
        return registry.load(), registry.root
    artifact = load_artifact(spec) if Path(spec).expanduser().is_dir() else registry.load(spec)
    private = ModelRegistry(scratch / "registry")  # workers serve production: publish a copy there
    fields = {k: v for k, v in artifact.manifest.items() if k not in ("files", "version", "created_at")}
    private.promote(private.publish(artifact.path, {**fields, "bench_source": str(artifact.path)}))
    return artifact, private.root


def run_bench(settings: Settings, opts: BenchOptions) -> dict[str, Any]:
    """Measure everything `opts` does not skip; returns the JSON-ready report."""
    scratch = Path(tempfile.mkdtemp(prefix="tweetpulse-bench-"))
    log_dir = opts.log_dir or scratch / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    artifact, registry_root = resolve_model(settings, opts.model, scratch)
    texts, source = load_texts(opts.data)
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "model": {"version": artifact.version, "path": str(artifact.path), "variant": opts.variant},
        "data": {"source": source, "texts": len(texts)},
        # the workers inherit these from the environment (TWEETPULSE_PROCESSOR__*), as deployed ones do
        "processor": settings.processor.model_dump(
            include={
                "batch_size",
                "batch_wait_s",
                "inference_chunk",
                "inference_workers",
                "ort_threads",
                "commit_interval_s",
            }
        ),
        "options": {k: v for k, v in vars(opts).items() if k not in ("skip", "log_dir")},
        "worker_logs": str(log_dir),
    }
    figures: dict[str, Any] = {}
    if "raw" not in opts.skip:
        from tweetpulse.bench.raw import raw_throughput

        raw = raw_throughput(artifact, take(texts, opts.raw_texts), opts.provider, opts.variant)
        report["raw"] = raw
        figures["raw_tps"] = raw["tps"]
    setup = PipelineSetup(
        settings,
        registry_root,
        opts.partitions,
        {
            "TWEETPULSE_PROCESSOR__PROVIDER": opts.provider,
            "TWEETPULSE_PROCESSOR__MODEL_VARIANT": opts.variant,
        },
        log_dir,
    )
    if not {"pipeline", "latency"} <= opts.skip:
        with PipelineRun(setup, workers=1) as run:
            if "pipeline" not in opts.skip:
                report["pipeline"] = run.throughput(take(texts, opts.tweets))
                figures["pipeline_tps"] = report["pipeline"]["tps"]
                figures["startup_s"] = report["pipeline"]["startup_s"]
            if "latency" not in opts.skip:
                rate = figures.get("pipeline_tps", 100.0) / 2
                report["latency"] = run.latency(take(texts, max(2, int(rate * opts.latency_s))), rate)
                figures.update(
                    {f"latency_{q}_ms": report["latency"][f"{q}_ms"] for q in ("p50", "p95", "p99")}
                )
    if "scaling" not in opts.skip:
        report["scaling"] = scaling(setup, take(texts, opts.tweets))
        figures["scale_2_over_1"] = report["scaling"]["scale_2_over_1"]
    if "naive" not in opts.skip and importlib.util.find_spec("transformers") is None:
        report["naive"] = {"skipped": "transformers/torch not installed (pip install 'tweetpulse[train]')"}
    elif "naive" not in opts.skip:
        from tweetpulse.bench.naive import naive_throughput

        report["naive"] = naive_throughput(
            settings, take(texts, opts.naive_tweets), opts.naive_model, opts.partitions
        )
        figures["naive_tps"] = report["naive"]["tps"]
    if "pipeline_tps" in figures:
        for name, baseline in (("ratio_vs_raw", "raw_tps"), ("ratio_vs_naive", "naive_tps")):
            if baseline in figures:
                figures[name] = round(figures["pipeline_tps"] / figures[baseline], 3)
    report["figures"] = figures
    report["goals"] = goals(figures)
    report["load_average_after"] = load_average()
    report["gpu"] = gpu_note(report["machine"], opts.provider)
    return report


def scaling(setup: PipelineSetup, texts: list[str]) -> dict[str, Any]:
    """1 vs 2 single-threaded workers (one model call at a time, one ONNX Runtime thread) on the same
    tweets."""
    single = {"TWEETPULSE_PROCESSOR__ORT_THREADS": "1", "TWEETPULSE_PROCESSOR__INFERENCE_WORKERS": "1"}
    out = {}
    for count in (1, 2):
        with PipelineRun(setup, workers=count, **single) as run:
            out[f"workers_{count}"] = run.throughput(texts, prefix=f"scale{count}-")
    one, two = out["workers_1"]["tps"], out["workers_2"]["tps"]
    return {**out, "scale_2_over_1": round(two / one, 3)}


def goals(figures: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, (op, target) in GOALS.items():
        if name in figures:
            value = figures[name]
            out[name] = {
                "target": f"{op} {target:g}",
                "value": value,
                "met": value >= target if op == ">=" else value <= target,
            }
    return out


def gpu_note(machine: dict[str, Any], provider: str) -> str:
    if provider == "cuda" or (provider == "auto" and machine["gpu_present"]):
        return "measured with the CUDA execution provider (GPU figures)"
    if machine["gpu_present"]:
        return "a GPU is present: rerun with --provider cuda for the GPU figures"
    return "no GPU on this host: CPU figures only"
