"""One `tweetpulse bench` run: every figure of issues #5 and #15, side by side over the same texts."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from tweetpulse.bench import nearfree
from tweetpulse.bench.machine import load_average, machine_info
from tweetpulse.bench.naive import naive_throughput
from tweetpulse.bench.peer import GUARANTEE_ENV, GUARANTEES, PeerRun
from tweetpulse.bench.pipeline import PipelineRun, PipelineSetup
from tweetpulse.bench.raw import raw_throughput
from tweetpulse.bench.texts import load_texts, take
from tweetpulse.registry import ModelArtifact, ModelRegistry, load_artifact
from tweetpulse.settings import Settings

# The goals: figure -> (comparison, target).
GOALS: dict[str, tuple[str, float]] = {
    "ratio_vs_raw": (">=", 0.9),
    "ratio_vs_naive": (">=", 10.0),
    "latency_p99_ms": ("<=", 150.0),
    "latency_p99_at_80pct_ms": ("<=", 100.0),
    "visible_p99_at_80pct_ms": ("<=", 100.0),
    "scale_2_over_1": (">=", 1.8),
    "framework_tps": (">=", 12_000.0),
    "framework_over_peer": (">=", 0.9),
    "framework_over_peer_eos": (">=", 0.9),
    "writes_per_tweet": ("<=", 1.1),
    "writes_per_tweet_low_load": ("<=", 1.1),
}
# Parts that measure the served model (the others build or pick their own).
PARTS = ("raw", "pipeline", "writes", "hostile", "latency", "scaling", "naive", "framework", "peer")
MODEL_PARTS = frozenset({"raw", "pipeline", "writes", "hostile", "latency", "scaling"})
LOW_LOAD_RATE = 100.0  # tweets/s offered for writes_per_tweet_low_load
LOW_LOAD_S = 10.0


@dataclass(frozen=True)
class BenchOptions:
    """`tweetpulse bench`'s measurements: each option declared here once (tweetpulse.options)."""

    model: str | None = Field(
        None,
        description="registry version or exported model folder to measure (none: the production version)",
    )
    data: str | None = Field(
        None,
        description="labeled tweet file to take texts from, or 'builtin' (none: ../shared/data/tweets-val.jsonl "
        "when present, else the built-in tweets)",
    )
    tweets: int = Field(5000, ge=1, description="tweets in each pipeline run")
    raw_texts: int = Field(1000, ge=1, description="texts per raw-model batching tried")
    naive_tweets: int = Field(300, ge=1, description="messages the naive loop handles")
    latency_s: float = Field(
        20.0,
        gt=0,
        description="length of the paced latency run",
        json_schema_extra={"cli": ["--latency-seconds"]},
    )
    partitions: int = Field(6, ge=1, le=10_000, description="partitions of the bench topics")
    provider: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="ONNX Runtime provider for the raw model and the workers (auto: CUDA when a GPU is present)",
    )
    variant: Literal["auto", "int8", "fp32"] = Field("auto", description="model graph")
    naive_model: str | None = Field(
        None,
        description="PyTorch folder of the same fine-tuned model for the naive loop (none: the offline MiniLM "
        "base with a 2-label head: same architecture and compute)",
    )
    framework_tweets: int = Field(
        20000, ge=1, description="tweets in each near-free model run, worker or plain loop"
    )
    framework_rounds: int = Field(
        2, ge=1, description="worker and plain-loop runs per guarantee, alternating; the best of each counts"
    )
    low_load_s: float = Field(
        LOW_LOAD_S, gt=0, description="length of the 100 tweets/s run (writes per tweet)"
    )
    skip: frozenset[Literal[PARTS]] = Field(frozenset(), description="leave these parts out")
    log_dir: Path | None = Field(None, description="keep the workers' logs here (none: a temporary folder)")


def needs_model(skip: frozenset[str]) -> bool:
    """Whether a run that skips `skip` measures the served model (the framework part builds its own)."""
    return not skip >= MODEL_PARTS


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
    """Measure everything `opts` does not skip; returns the JSON-ready report.

    Every topic it creates is deleted and every worker it starts is stopped, also when a step fails
    or on Ctrl-C; its scratch folder (model copies, the near-free model) goes too, the logs stay."""
    scratch = Path(tempfile.mkdtemp(prefix="tweetpulse-bench-"))
    log_dir = opts.log_dir or scratch / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _run_bench(settings, opts, scratch, log_dir)
    finally:
        for child in scratch.iterdir():
            if child != log_dir:
                shutil.rmtree(child, ignore_errors=True)


def _run_bench(settings: Settings, opts: BenchOptions, scratch: Path, log_dir: Path) -> dict[str, Any]:
    texts, source = load_texts(opts.data)
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "model": None,
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
                "processing_guarantee",
            }
        ),
        "options": {k: v for k, v in vars(opts).items() if k not in ("skip", "log_dir")},
        "skipped": sorted(opts.skip),
        "worker_logs": str(log_dir),
    }
    figures: dict[str, Any] = {}
    worker_env = {
        "TWEETPULSE_PROCESSOR__PROVIDER": opts.provider,
        "TWEETPULSE_PROCESSOR__MODEL_VARIANT": opts.variant,
    }
    if needs_model(opts.skip):
        artifact, registry_root = resolve_model(settings, opts.model, scratch)
        report["model"] = {"version": artifact.version, "path": str(artifact.path), "variant": opts.variant}
        served(
            settings,
            opts,
            artifact,
            PipelineSetup(settings, registry_root, opts.partitions, worker_env, log_dir),
            texts,
            report,
            figures,
        )
    if "naive" not in opts.skip and importlib.util.find_spec("transformers") is None:
        report["naive"] = {"skipped": "transformers/torch not installed (pip install 'tweetpulse[train]')"}
    elif "naive" not in opts.skip:
        report["naive"] = naive_throughput(
            settings, take(texts, opts.naive_tweets), opts.naive_model, opts.partitions
        )
        figures["naive_tps"] = report["naive"]["tps"]
    if not {"framework", "peer"} <= opts.skip:
        report["framework"] = framework(
            settings,
            opts,
            PipelineSetup(settings, scratch, opts.partitions, worker_env, log_dir),
            scratch / "near-free",
            texts,
        )
        got, missing = framework_figures(report["framework"])
        figures.update(got)
        if missing:
            report["missing"] = missing
    if "pipeline_tps" in figures:
        for name, baseline in (("ratio_vs_raw", "raw_tps"), ("ratio_vs_naive", "naive_tps")):
            if baseline in figures:
                figures[name] = round(figures["pipeline_tps"] / figures[baseline], 3)
    report["figures"] = figures
    report["goals"] = goals(figures)
    report["load_average_after"] = load_average()
    report["gpu"] = gpu_note(report["machine"], opts.provider)
    return report


def served(
    settings: Settings,
    opts: BenchOptions,
    artifact: ModelArtifact,
    setup: PipelineSetup,
    texts: list[str],
    report: dict[str, Any],
    figures: dict[str, Any],
) -> None:
    """The served model's parts: raw, one worker (throughput, writes, hostile mix, latency), scaling."""
    if "raw" not in opts.skip:
        raw = raw_throughput(artifact, take(texts, opts.raw_texts), opts.provider, opts.variant)
        report["raw"] = raw
        figures["raw_tps"] = raw["tps"]
    if not {"pipeline", "hostile", "latency", "writes"} <= opts.skip:
        with PipelineRun(setup, workers=1) as run:
            one_worker(run, opts, texts, report, figures)
    if "scaling" not in opts.skip:
        report["scaling"] = scaling(setup, take(texts, opts.tweets))
        figures["scale_2_over_1"] = report["scaling"]["scale_2_over_1"]


def one_worker(
    run: PipelineRun, opts: BenchOptions, texts: list[str], report: dict[str, Any], figures: dict[str, Any]
) -> None:
    writes = "writes" not in opts.skip
    if "pipeline" not in opts.skip:
        tp = partial(run.throughput, take(texts, opts.tweets))
        report["pipeline"] = run.measured_writes(tp) if writes else tp()
        figures["pipeline_tps"] = report["pipeline"]["tps"]
        figures["startup_s"] = report["pipeline"]["startup_s"]
        if writes:
            figures["writes_per_tweet"] = report["pipeline"]["writes"]["writes_per_tweet"]
    if writes:
        # 100 tweets/s, or half of what this host's pipeline does if that is less (a busy host)
        rate = min(LOW_LOAD_RATE, figures.get("pipeline_tps", 2 * LOW_LOAD_RATE) / 2)
        report["low_load"] = run.low_load(take(texts, max(2, int(rate * opts.low_load_s))), rate)
        figures["writes_per_tweet_low_load"] = report["low_load"]["writes"]["writes_per_tweet"]
    if "hostile" not in opts.skip:
        report["hostile_mix"] = run.hostile_mix(take(texts, opts.tweets))
        figures["hostile_mix_tps"] = report["hostile_mix"]["valid_tps"]
        if "pipeline_tps" in figures:
            figures["hostile_over_clean"] = round(figures["hostile_mix_tps"] / figures["pipeline_tps"], 3)
    if "latency" not in opts.skip:
        rate = figures.get("pipeline_tps", 100.0) / 2
        report["latency"] = run.latency(take(texts, max(2, int(rate * opts.latency_s))), rate)
        figures.update({f"latency_{q}_ms": report["latency"][f"{q}_ms"] for q in ("p50", "p95", "p99")})
        figures["visible_p99_ms"] = report["latency"]["visible_p99_ms"]
        if "pipeline_tps" in figures:  # 80% of the measured maximum
            rate = figures["pipeline_tps"] * 0.8
            report["latency_80pct"] = run.latency(
                take(texts, max(2, int(rate * opts.latency_s))), rate, prefix="lat80-"
            )
            figures["latency_p99_at_80pct_ms"] = report["latency_80pct"]["p99_ms"]
            figures["visible_p99_at_80pct_ms"] = report["latency_80pct"]["visible_p99_ms"]
        else:
            report["latency_80pct"] = {"skipped": "needs pipeline_tps (the measured maximum rate)"}


def framework(
    settings: Settings, opts: BenchOptions, setup: PipelineSetup, work_dir: Path, texts: list[str]
) -> dict[str, Any]:
    """The framework ceiling: the near-free model (bench/nearfree.py, built here) in-process, and
    through one real worker beside the plain loop (bench/peer.py) under each processing guarantee
    (real broker, the same texts)."""
    why = nearfree.missing()
    if why:
        return {"skipped": why}
    started = time.perf_counter()
    artifact, registry_root = nearfree.build_near_free(work_dir, take(texts, 64))
    out: dict[str, Any] = {"model": nearfree.ARCHITECTURE, "build_s": round(time.perf_counter() - started, 1)}
    if "framework" not in opts.skip:
        # the near-free model alone: it explains the ceiling, in seconds
        raw = raw_throughput(artifact, take(texts, opts.raw_texts), opts.provider, opts.variant)
        out.update(raw_tps=raw["tps"], raw=raw)
    near_free = replace(setup, registry_root=registry_root)
    for guarantee in GUARANTEES:
        out[guarantee] = side_by_side(near_free, opts, guarantee, take(texts, opts.framework_tweets))
    alo = out["at_least_once"]
    if alo["framework"]:
        out["pipeline"], out["tps"] = alo["framework"][0], alo["framework_tps"]
    return out


def side_by_side(
    setup: PipelineSetup, opts: BenchOptions, guarantee: str, texts: list[str]
) -> dict[str, Any]:
    """One worker and the plain loop under `guarantee`, both started and warmed, then measured in
    turn (worker, loop, worker, loop...) `opts.framework_rounds` times on `texts`: a slower spell of
    the shared host hits both. Each tps is the best round's (load only ever slows a run down).

    The worker is a black box: under exactly_once its failure (it is being rewritten) is recorded
    as ``framework_error`` and the loop's rounds go on; under at_least_once it raises, as before."""
    env = {GUARANTEE_ENV: guarantee}
    out: dict[str, Any] = {"framework": [], "peer": []}
    tolerate = (Exception,) if guarantee == "exactly_once" else ()
    with ExitStack() as stack, ExitStack() as worker_stack:
        worker = None
        if "framework" not in opts.skip:
            try:
                worker = worker_stack.enter_context(PipelineRun(setup, workers=1, **env))
            except tolerate as exc:
                out["framework_error"] = failure(exc)
        peer = stack.enter_context(PeerRun(setup, **env)) if "peer" not in opts.skip else None
        for i in range(opts.framework_rounds):
            if worker is not None:
                try:
                    out["framework"].append(worker_round(worker, opts, guarantee, texts, i))
                except tolerate as exc:
                    out["framework_error"], worker = failure(exc), None
                    worker_stack.close()  # stopped now, not after the loop's rounds
            if peer is not None:
                out["peer"].append(peer.throughput(texts, f"peer{i}-"))
    return {**out, **ratio(out)}


def worker_round(
    run: PipelineRun, opts: BenchOptions, guarantee: str, texts: list[str], i: int
) -> dict[str, Any]:
    """One timed worker run; the first at_least_once one also counts the records it writes."""
    tp = partial(run.throughput, texts, f"fw{i}-")
    measure_writes = i == 0 and guarantee == "at_least_once" and "writes" not in opts.skip
    return run.measured_writes(tp) if measure_writes else tp()


def failure(exc: Exception) -> str:
    """An exception as one short reason for the report."""
    return f"{type(exc).__name__}: {exc}"[:2000]


def ratio(out: dict[str, Any]) -> dict[str, Any]:
    """The best rounds' tps and framework / peer, where both were measured."""
    best = {f"{side}_tps": max(r["tps"] for r in out[side]) for side in ("framework", "peer") if out[side]}
    if len(best) == 2:
        best["framework_over_peer"] = round(best["framework_tps"] / best["peer_tps"], 3)
    return best


# the figures of the framework part, per guarantee: what side_by_side reports -> the figure's name
FRAMEWORK_FIGURES = {
    "at_least_once": {
        "framework_tps": "framework_tps",
        "peer_tps": "peer_tps",
        "framework_over_peer": "framework_over_peer",
    },
    "exactly_once": {
        "framework_tps": "framework_eos_tps",
        "peer_tps": "peer_eos_tps",
        "framework_over_peer": "framework_over_peer_eos",
    },
}


def framework_figures(part: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the framework part's figures, why a figure it should have is missing)."""
    figures: dict[str, Any] = {}
    missing: dict[str, str] = {}
    if "raw_tps" in part:
        figures["framework_raw_tps"] = part["raw_tps"]
    for guarantee, names in FRAMEWORK_FIGURES.items():
        got = part.get(guarantee, {})
        for key, name in names.items():
            if key in got:
                figures[name] = got[key]
            elif "framework_error" in got and (key == "framework_tps" or got["peer"]):
                missing[name] = got["framework_error"]
    return figures, missing


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
