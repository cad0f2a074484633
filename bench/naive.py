"""The baseline: what users write instead of the pipeline.

A plain confluent-kafka consume loop that calls a transformers ``pipeline("text-classification")``
(PyTorch, default threads) on each message and produces the result. Needs the ``[train]`` extra.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from tweetpulse.bench.kafka_io import bench_topics, produce_all, run_token
from tweetpulse.bench.texts import raw_tweets
from tweetpulse.settings import Settings
from tweetpulse.training.base import OFFLINE_BASE_NAME, offline_base_path

ID2LABEL = {0: "negative", 1: "positive"}


def naive_classifier(model: str | None) -> tuple[Any, str]:
    """(a transformers text-classification pipeline, what it is).

    `model` is a folder or hub id of a fine-tuned PyTorch model. None: the offline MiniLM base with a
    fresh 2-label head: the same architecture and compute as the served model, not its weights (the
    registry keeps only the ONNX export), which is all a speed baseline needs.
    """
    # transformers (the [train] extra, seconds to import): only when the naive loop runs
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
    from transformers.utils import logging as hf_logging

    if model is not None:
        return pipeline("text-classification", model=model), model
    base = offline_base_path()
    hf_logging.set_verbosity_error()  # "newly initialized classifier weights" is expected here
    net = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()}
    )
    tokenizer = AutoTokenizer.from_pretrained(base)
    return pipeline(
        "text-classification", model=net, tokenizer=tokenizer
    ), f"{OFFLINE_BASE_NAME} + 2-label head"


def naive_loop(settings: Settings, classify: Any, count: int) -> float:
    """The user's loop over `count` messages; returns seconds from the first message to the last flush."""
    consumer = Consumer(
        settings.kafka.confluent_config(
            **{"group.id": f"naive-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
        )
    )
    producer = Producer(settings.kafka.confluent_config())
    consumer.subscribe([settings.topics.raw])
    done, started = 0, None
    try:
        while done < count:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            started = started or time.perf_counter()
            tweet = json.loads(msg.value())
            prediction = classify(tweet["text"])[0]
            result = {"id": tweet["id"], "label": prediction["label"], "score": prediction["score"]}
            producer.produce(settings.topics.sentiment, json.dumps(result).encode(), msg.key())
            producer.poll(0)
            done += 1
        producer.flush(30)
    finally:
        consumer.close()
    return time.perf_counter() - (started or time.perf_counter())


def naive_throughput(
    base: Settings, texts: list[str], model: str | Path | None = None, partitions: int = 6
) -> dict[str, Any]:
    """Tweets/s of the naive loop over `texts`, preloaded into a fresh raw topic (model load excluded)."""
    import torch  # the [train] extra, seconds to import: only when the naive loop runs

    started = time.perf_counter()
    classify, what = naive_classifier(str(model) if model else None)
    classify("warm up the model")
    load_s = time.perf_counter() - started
    token = run_token()
    with bench_topics(base, partitions, token) as settings:
        produce_all(settings, raw_tweets(texts, "naive-"))
        seconds = naive_loop(settings, classify, len(texts))
    return {
        "run": token,
        "tps": round(len(texts) / seconds, 1),
        "tweets": len(texts),
        "seconds": round(seconds, 2),
        "model": what,
        "torch_threads": torch.get_num_threads(),
        "load_s": round(load_s, 2),
    }
