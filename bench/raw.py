"""The served ONNX model alone, in-process: the limit the pipeline is measured against."""

from __future__ import annotations

import time
from typing import Any

from tweetpulse.registry import ModelArtifact

BATCH_SIZES = (16, 32, 64, 128, 256)


def classify_rate(classifier: Any, texts: list[str], batch_size: int) -> float:
    """Tweets/s classifying `texts` in consecutive batches of `batch_size` (the serving call)."""
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        classifier.classify(texts[start : start + batch_size])
    return len(texts) / (time.perf_counter() - started)


def raw_throughput(
    artifact: ModelArtifact,
    texts: list[str],
    provider: str = "auto",
    variant: str = "auto",
    threads: int = 0,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
) -> dict[str, Any]:
    """Tweets/s of the processors' Classifier at each batch size; `tps` is the best of them."""
    from tweetpulse.processors.classifier import load_classifier

    classifier = load_classifier(artifact, provider, variant, threads, chunk_size=max(batch_sizes))
    classify_rate(classifier, texts[: max(batch_sizes)], max(batch_sizes))  # warm every shape path
    by_batch = {}
    for size in batch_sizes:
        classifier.chunk_size = size  # one model call per batch, sorted by length inside it
        by_batch[size] = round(classify_rate(classifier, texts, size), 1)
    best = max(by_batch, key=lambda size: by_batch[size])
    return {
        "tps": by_batch[best],
        "best_batch": best,
        "by_batch": by_batch,
        "texts": len(texts),
        "provider": classifier.provider,
        "model_file": classifier.model_path.name,
        "threads": threads,
    }
