"""The bench report as a console table."""

from __future__ import annotations

from typing import Any

ROWS: tuple[tuple[str, str, str], ...] = (
    ("raw_tps", "raw model, in-process (tweets/s)", "{:.1f}"),
    ("pipeline_tps", "pipeline through Kafka (tweets/s)", "{:.1f}"),
    ("naive_tps", "naive transformers loop (tweets/s)", "{:.1f}"),
    ("ratio_vs_raw", "pipeline / raw", "{:.3f}"),
    ("ratio_vs_naive", "pipeline / naive", "{:.1f}"),
    ("hostile_mix_tps", "valid tweets/s, 1 hostile per tweet", "{:.1f}"),
    ("hostile_over_clean", "hostile mix / clean pipeline", "{:.3f}"),
    ("latency_p50_ms", "latency p50 at half load (ms)", "{:.1f}"),
    ("latency_p95_ms", "latency p95 at half load (ms)", "{:.1f}"),
    ("latency_p99_ms", "latency p99 at half load (ms)", "{:.1f}"),
    ("latency_p99_at_80pct_ms", "latency p99 at 80% load (ms)", "{:.1f}"),
    ("visible_p99_ms", "... seen by a read_committed reader, half load", "{:.1f}"),
    ("visible_p99_at_80pct_ms", "... seen by a read_committed reader, 80% load", "{:.1f}"),
    ("writes_per_tweet", "Kafka records written per tweet", "{:.3f}"),
    ("writes_per_tweet_low_load", "... at low load (100 tweets/s)", "{:.3f}"),
    ("scale_2_over_1", "2 vs 1 single-threaded workers", "{:.3f}"),
    ("startup_s", "worker start-up to assignment (s)", "{:.1f}"),
    ("framework_raw_tps", "near-free model, in-process (tweets/s)", "{:.1f}"),
    ("framework_tps", "near-free model, pipeline (tweets/s)", "{:.1f}"),
    ("peer_tps", "near-free model, plain loop (tweets/s)", "{:.1f}"),
    ("framework_over_peer", "pipeline / plain loop", "{:.3f}"),
    ("framework_eos_tps", "... exactly once, pipeline (tweets/s)", "{:.1f}"),
    ("peer_eos_tps", "... exactly once, loop (tweets/s)", "{:.1f}"),
    ("framework_over_peer_eos", "... exactly once, pipeline / loop", "{:.3f}"),
)


def format_table(report: dict[str, Any]) -> str:
    figures, goals = report["figures"], report["goals"]
    width = max(len(key) for key, _, _ in ROWS)
    lines = [f"{'figure':<{width}} {'what':<38} {'value':>10}  goal"]
    for key, what, fmt in ROWS:
        if key not in figures:
            continue
        goal = goals.get(key)
        verdict = f"{goal['target']} {'ok' if goal['met'] else 'MISSED'}" if goal else ""
        lines.append(f"{key:<{width}} {what:<38} {fmt.format(figures[key]):>10}  {verdict}")
    m = report["machine"]
    lines += [
        "",
        f"machine: {m['cpu_model']}, {m['usable_cores']} cores, onnxruntime {m['onnxruntime']} "
        f"({', '.join(m['onnxruntime_providers'])}); load average {m['load_average']} before, "
        f"{report['load_average_after']} after",
        f"model: {_model(report)}; texts: {report['data']['source']}",
        f"gpu: {report['gpu']}",
    ]
    if "raw" in report:
        by_config = ", ".join(f"{c}: {tps}" for c, tps in report["raw"]["by_config"].items())
        lines.append(f"raw tweets/s by batch/chunk and calls x threads: {by_config}")
    if "scaling" in report:
        s = report["scaling"]
        lines.append(f"scaling: 1 worker {s['workers_1']['tps']}/s, 2 workers {s['workers_2']['tps']}/s")
    for name, run in (
        ("full load", report.get("pipeline", {})),
        (f"{report.get('low_load', {}).get('offered_rate')} tweets/s", report.get("low_load", {})),
        ("near-free model", report.get("framework", {}).get("pipeline", {})),
    ):
        if "writes" in run:
            w = run["writes"]
            per = ", ".join(f"{topic} {n / w['classified']:.3f}" for topic, n in w["by_topic"].items() if n)
            lines.append(f"records per tweet ({name}): {per}{'' if w['settled'] else ' (not settled)'}")
    for figure, why in report.get("missing", {}).items():
        lines.append(f"{figure}: missing ({why.splitlines()[0][:300]})")
    for part, what in report.items():
        if isinstance(what, dict) and "skipped" in what:
            lines.append(f"{part}: skipped ({what['skipped']})")
    return "\n".join(lines)


def _model(report: dict[str, Any]) -> str:
    model = report["model"]
    if model is None:
        return "none (only parts that bring their own model were run)"
    return f"{model['version']} ({report.get('raw', {}).get('model_file', model['variant'])})"
