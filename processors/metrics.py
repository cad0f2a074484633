"""Prometheus metrics of a processor worker, served at the worker's ``/metrics`` web view."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

MESSAGES_IN = Counter("tweetpulse_processor_messages_in_total", "Raw messages consumed")
RESULTS_OUT = Counter("tweetpulse_processor_results_out_total", "Sentiment results produced", ["label"])
DEAD_LETTERS = Counter("tweetpulse_processor_dlq_total", "Messages sent to the dead-letter topic", ["reason"])
BATCH_SIZE = Histogram(
    "tweetpulse_processor_batch_size",
    "Messages per micro-batch",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
INFERENCE_SECONDS = Histogram(
    "tweetpulse_processor_inference_seconds",
    "Model time per micro-batch (tokenize + ONNX Runtime)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
END_TO_END_SECONDS = Histogram(
    "tweetpulse_processor_end_to_end_seconds",
    "From ingested_at (producer) to classified_at (worker)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CONSUMER_LAG = Gauge(
    "tweetpulse_processor_consumer_lag", "Highwater minus next offset to process", ["topic", "partition"]
)
MODEL = Info("tweetpulse_processor_model", "The model version being served")
MODEL_SWAPS = Counter("tweetpulse_processor_model_swaps_total", "Model swap attempts", ["outcome"])
SEND_RETRIES = Counter(
    "tweetpulse_processor_send_retries_total",
    "Commits that failed (what they held is read and produced again)",
)
