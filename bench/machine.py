"""What the figures were measured on: cores, CPU model, load, ONNX Runtime and its providers."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from tweetpulse.processors.classifier import gpu_present


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    import onnxruntime as ort  # heavy (~0.2 s, CUDA probing): only when the bench reports the machine

    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "gpu_present": gpu_present(),
        "load_average": load_average(),
    }
