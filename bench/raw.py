"""The served ONNX model alone, in-process: the limit the pipeline is measured against."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tweetpulse.processors.classifier import CUDA, choose_providers, load_classifier
from tweetpulse.registry import ModelArtifact

# (texts per classify call, length-sorted chunk per model run): the serving knobs
# processor.batch_size and processor.inference_chunk. 32/32 is the anchor configuration.
BATCHINGS = ((32, 32), (32, 8), (64, 8), (128, 8), (128, 16), (128, 32), (256, 8), (256, 32))
# On a GPU a kernel launch costs more than the padding it saves: bigger batches and chunks.
GPU_BATCHINGS = ((128, 128), (256, 64), (256, 256), (512, 128), (512, 512), (1024, 256), (1024, 1024))


def classify_rate(classifier: Any, texts: list[str], batch_size: int, workers: int = 1) -> float:
    """Tweets/s classifying `texts` in batches of `batch_size`, `workers` calls at a time (the serving
    call, as processor.inference_workers runs it)."""
    batches = [texts[start : start + batch_size] for start in range(0, len(texts), batch_size)]
    with ThreadPoolExecutor(workers) as pool:
        started = time.perf_counter()
        for _ in pool.map(classifier.classify, batches):
            pass
        return len(texts) / (time.perf_counter() - started)


def thread_layouts(cores: int, gpu: bool = False) -> list[tuple[int, int]]:
    """(concurrent calls, ONNX Runtime threads per call) to try: one call on every core, and
    two calls sharing them (what the processor does by default). On a GPU, up to four calls, so
    one batch is tokenized while another runs on the device."""
    calls = (1, 2, 4) if gpu else (1, 2)
    return [(n, max(cores // n, 1)) for n in calls if n == 1 or cores >= n]


def raw_throughput(
    artifact: ModelArtifact,
    texts: list[str],
    provider: str = "auto",
    variant: str = "auto",
    batchings: tuple[tuple[int, int], ...] | None = None,
) -> dict[str, Any]:
    """Tweets/s of the processors' Classifier for each batching and thread layout; `tps` is the best.

    `batchings` defaults to BATCHINGS on the CPU and GPU_BATCHINGS on CUDA."""
    gpu = choose_providers(provider)[0] == CUDA
    batchings = batchings or (GPU_BATCHINGS if gpu else BATCHINGS)
    by_config: dict[str, float] = {}
    for workers, threads in thread_layouts(os.cpu_count() or 1, gpu):
        classifier = load_classifier(artifact, provider, variant, threads=threads)
        classify_rate(classifier, texts[:256], 64, workers)  # warm up the allocator and kernels
        for batch, chunk in batchings:
            classifier.chunk_size = chunk
            key = f"{batch}/{chunk} {workers}x{threads}"
            by_config[key] = round(classify_rate(classifier, texts, batch, workers), 1)
    best = max(by_config, key=lambda key: by_config[key])
    return {
        "tps": by_config[best],
        "best": best,
        "by_config": by_config,
        "config_key": "batch/chunk calls x threads-per-call",
        "texts": len(texts),
        "provider": classifier.provider,
        "model_file": classifier.model_path.name,
    }
