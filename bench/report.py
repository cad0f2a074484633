"""The bench report as a console table."""

from __future__ import annotations

from typing import Any

ROWS: tuple[tuple[str, str, str], ...] = (
    ("raw_tps", "raw model, in-process (tweets/s)", "{:.1f}"),
    ("pipeline_tps", "pipeline through Kafka (tweets/s)", "{:.1f}"),
    ("naive_tps", "naive transformers loop (tweets/s)", "{:.1f}"),
    ("ratio_vs_raw", "pipeline / raw", "{:.3f}"),
    ("ratio_vs_naive", "pipeline / naive", "{:.1f}"),
    ("latency_p50_ms", "latency p50 at half load (ms)", "{:.1f}"),
    ("latency_p95_ms", "latency p95 at half load (ms)", "{:.1f}"),
    ("latency_p99_ms", "latency p99 at half load (ms)", "{:.1f}"),
    ("scale_2_over_1", "2 vs 1 single-threaded workers", "{:.3f}"),
    ("startup_s", "worker start-up to assignment (s)", "{:.1f}"),
)


def format_table(report: dict[str, Any]) -> str:
    figures, goals = report["figures"], report["goals"]
    lines = [f"{'figure':<16} {'what':<38} {'value':>10}  goal"]
    for key, what, fmt in ROWS:
        if key not in figures:
            continue
        goal = goals.get(key)
        verdict = f"{goal['target']} {'ok' if goal['met'] else 'MISSED'}" if goal else ""
        lines.append(f"{key:<16} {what:<38} {fmt.format(figures[key]):>10}  {verdict}")
    m = report["machine"]
    lines += [
        "",
        f"machine: {m['cpu_model']}, {m['usable_cores']} cores, onnxruntime {m['onnxruntime']} "
        f"({', '.join(m['onnxruntime_providers'])}); load average {m['load_average']} before, "
        f"{report['load_average_after']} after",
        f"model: {report['model']['version']} ({report.get('raw', {}).get('model_file', report['model']['variant'])}); "
        f"texts: {report['data']['source']}",
        f"gpu: {report['gpu']}",
    ]
    if "raw" in report:
        by_config = ", ".join(f"{c}: {tps}" for c, tps in report["raw"]["by_config"].items())
        lines.append(f"raw tweets/s by batch/chunk and calls x threads: {by_config}")
    if "scaling" in report:
        s = report["scaling"]
        lines.append(f"scaling: 1 worker {s['workers_1']['tps']}/s, 2 workers {s['workers_2']['tps']}/s")
    return "\n".join(lines)
