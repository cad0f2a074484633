"""Messages/s into Kafka: `tweetpulse produce replay` against a bare confluent-kafka loop, side by side.

    python benchmarks/replay_throughput.py [FILE] [--repeat N] [--partitions P]

FILE defaults to ../shared/data/tweets-train.jsonl. The bare loop gets every advantage: the file is read
into memory first and each line is sent as is (``Producer.produce`` + ``poll(0)``); our path reads,
parses, validates and serializes each tweet to the raw-tweet contract. Both use the same producer
config (``tweetpulse.kafka.producer_config``), a fresh topic each, and are timed from producer creation
to the end of the final flush. Uses the broker in TWEETPULSE_KAFKA__BOOTSTRAP_SERVERS (default
127.0.0.1:9092); the topics are deleted afterwards. Goal: ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from tweetpulse.kafka import TopicSpec, create_topics, producer_config
from tweetpulse.producers import cli as produce_cli
from tweetpulse.settings import Settings, load_settings

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweets-train.jsonl"


def bare_loop(settings: Settings, topic: str, lines: list[bytes]) -> float:
    started = time.perf_counter()
    producer = Producer(producer_config(settings))
    for n, line in enumerate(lines):
        producer.produce(topic, line, str(n).encode())
        producer.poll(0)
    producer.flush()
    return len(lines) / (time.perf_counter() - started)


def replay_path(settings: Settings, topic: str, path: Path) -> tuple[float, int]:
    """`tweetpulse produce replay PATH --topic TOPIC` (its parser and handler, without other roles)."""
    parser = argparse.ArgumentParser()
    produce_cli.register(parser.add_subparsers())
    args = parser.parse_args(["produce", "replay", str(path), "--topic", topic, "--no-progress"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = args.handler(args, settings)
    summary = json.loads(out.getvalue().split("summary ", 1)[1])
    if code != 0 or summary["failed"]:
        sys.exit(f"replay run failed: {summary}")
    return summary["delivered"] / summary["seconds"], summary["delivered"]


def parse_only(path: Path) -> float:
    """Our per-message CPU without Kafka: read, parse, validate, serialize (where the gap comes from)."""
    from tweetpulse.producers.replay import replay_tweets
    from tweetpulse.producers.sink import _to_json

    started = time.perf_counter()
    count = sum(1 for tweet in replay_tweets(path) if _to_json(tweet, exclude_none=True))
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT_FILE, help="JSONL file to replay")
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs of each; medians reported")
    parser.add_argument("--partitions", type=int, default=3, help="partitions of each benchmark topic")
    args = parser.parse_args()

    settings = load_settings()
    lines = [line for line in args.file.read_bytes().splitlines() if line.strip()]
    ours, bare, topics = [], [], []
    for run in range(args.repeat):
        t_ours, t_bare = (f"bench.replay.{kind}.{uuid.uuid4().hex[:8]}" for kind in ("ours", "bare"))
        topics += [t_ours, t_bare]
        create_topics(settings, [TopicSpec(t, args.partitions, 1, {}) for t in (t_ours, t_bare)])
        rate, delivered = replay_path(settings, t_ours, args.file)
        ours.append(rate)
        bare.append(bare_loop(settings, t_bare, lines))
        print(f"run {run + 1}: replay {ours[-1]:,.0f} msg/s ({delivered} msgs), bare {bare[-1]:,.0f} msg/s")
    AdminClient(settings.kafka.confluent_config()).delete_topics(topics)
    ratio = statistics.median(ours) / statistics.median(bare)
    print(f"replay parse+validate+serialize alone (no Kafka): {parse_only(args.file):,.0f} msg/s")
    print(
        f"replay path: {statistics.median(ours):,.0f} msg/s | bare produce loop: "
        f"{statistics.median(bare):,.0f} msg/s | ratio {ratio:.2f} (goal >= 0.8) | file {args.file}"
    )


if __name__ == "__main__":
    main()
