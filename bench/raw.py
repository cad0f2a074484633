"""The served ONNX model alone, in-process: the limit the pipeline is measured against."""

from __future__ import annotations

import time
from typing import Any

from tweetpulse.registry import ModelArtifact

# (texts per classify call, length-sorted chunk per model run): the serving knobs
# processor.batch_size and processor.inference_chunk. 32/32 is the anchor configuration.
BATCHINGS = ((32, 32), (64, 32), (64, 64), (128, 32), (128, 64), (256, 32), (256, 64))


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
    batchings: tuple[tuple[int, int], ...] = BATCHINGS,
) -> dict[str, Any]:
    """Tweets/s of the processors' Classifier for each batching (ONNX Runtime's default threads),
    then the best batching again with one thread; `tps` is the best of all."""
    from tweetpulse.processors.classifier import load_classifier

    classifier = load_classifier(artifact, provider, variant, threads=0)
    classify_rate(classifier, texts[:256], 64)  # warm up the allocator and kernels
    by_batch = {}
    for batch, chunk in batchings:
        classifier.chunk_size = chunk
        by_batch[f"{batch}/{chunk}"] = round(classify_rate(classifier, texts, batch), 1)
    best = max(by_batch, key=lambda key: by_batch[key])
    batch, chunk = (int(n) for n in best.split("/"))
    single = load_classifier(artifact, provider, variant, threads=1, chunk_size=chunk)
    classify_rate(single, texts[:256], 64)
    by_threads = {"auto": by_batch[best], "1": round(classify_rate(single, texts, batch), 1)}
    threads = max(by_threads, key=lambda key: by_threads[key])
    return {
        "tps": by_threads[threads],
        "best_batching": best,
        "best_threads": threads,
        "by_batching": by_batch,
        "by_threads_at_best_batching": by_threads,
        "texts": len(texts),
        "provider": classifier.provider,
        "model_file": classifier.model_path.name,
    }
