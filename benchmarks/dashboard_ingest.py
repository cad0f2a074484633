"""How fast the dashboard ingests results, and what a snapshot costs.

    python benchmarks/dashboard_ingest.py [--results N] [--tags T]

Produces N SentimentResults (spread over the last 30 minutes, T rule tags) into a fresh topic, then
times the dashboard's ResultFeed replaying them (consume, validate, aggregate) until every one is
counted, and times DashboardState.snapshot() + JSON encoding (the work of one SSE push) on the filled
state. Uses the broker in TWEETPULSE_KAFKA__BOOTSTRAP_SERVERS (default 127.0.0.1:9092); the topics
are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from tweetpulse.contracts import SentimentResult
from tweetpulse.dashboard.feed import ResultFeed
from tweetpulse.dashboard.state import DashboardState
from tweetpulse.kafka import create_topics, pipeline_topics, producer_config
from tweetpulse.settings import TopicSettings, load_settings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=int, default=50_000, help="results to produce and ingest")
    parser.add_argument("--tags", type=int, default=20, help="distinct rule tags")
    args = parser.parse_args()
    suffix = uuid.uuid4().hex[:8]
    names = TopicSettings().model_dump(exclude={"partitions", "replication_factor"})
    topics = {key: f"bench.dash.{key}.{suffix}" for key in names} | {"partitions": 3}
    settings = load_settings(topics=topics)
    create_topics(settings)
    try:
        producer = Producer(producer_config(settings))
        now = datetime.now(UTC)
        for i in range(args.results):
            at = now - timedelta(seconds=(i * 1800 / args.results))
            label = "positive" if i % 3 else "negative"
            other = "negative" if label == "positive" else "positive"
            result = SentimentResult(
                id=f"b{i}",
                text=f"benchmark tweet {i} #bench",
                label=label,
                probabilities={label: 0.8, other: 0.2},
                model_version="v0001",
                rule_tags=[f"tag{i % args.tags}"],
                ingested_at=at - timedelta(milliseconds=50),
                classified_at=at,
            )
            producer.produce(settings.topics.sentiment, result.to_bytes(), key=result.key)
            producer.poll(0)
        producer.flush()
        state = DashboardState()
        feed = ResultFeed(settings, state, replay_minutes=60)
        started = time.perf_counter()
        feed.start()
        while state.total < args.results:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        feed.stop()
        feed.join(15)
        t0 = time.perf_counter()
        rounds = 20
        for _ in range(rounds):
            payload = json.dumps(state.snapshot(), separators=(",", ":"))
        snapshot_ms = (time.perf_counter() - t0) * 1000 / rounds
        print(f"ingest: {args.results} results in {elapsed:.2f} s = {args.results / elapsed:,.0f} results/s")
        print(f"snapshot + JSON: {snapshot_ms:.2f} ms, {len(payload) / 1024:.1f} KiB per SSE push")
    finally:
        AdminClient(settings.kafka.confluent_config()).delete_topics(
            [t.name for t in pipeline_topics(settings)]
        )


if __name__ == "__main__":
    main()
