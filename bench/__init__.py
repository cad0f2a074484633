"""Benchmarks (``tweetpulse bench``): the served model alone, the Kafka pipeline, and the naive
transformers-per-message loop, side by side on the same texts; latency at half load; 1 vs 2 workers."""
