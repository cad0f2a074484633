"""Faust's own cost per event, per transport, on the configured broker (not a test; issue 15's proof).

One topic of N small records (6 partitions); each variant reads all of it in a fresh process and
group, timed from its first record to its N-th, with nothing else done per record:

- ``aiokafka``: a plain AIOKafkaConsumer ``getmany`` loop, the client Faust's default transport wraps;
- ``faust``: one Faust agent, ``take_events(512)``, events acked as the worker's agent acks them
  (Faust's stream, event, ack and commit machinery over the aiokafka transport);
- ``faust-lean``: the same with the worker's own consumer (processors/faust_consumer.py), which races
  each delivery against a flow stop with one new task instead of four, and its monitor
  (processors/monitor.py), which keeps no statistics per record;
- ``faust-send``: the same, plus one ``topic.send`` per event (Faust's per-message produce path);
- ``faust-producer``: the same, sending through Faust's transport producer (``app.producer.send``,
  a thin layer over aiokafka's ``send``) instead of ``topic.send``;
- ``faust-confluent``: ``faust`` over Faust's ``confluent://`` transport.

    python benchmarks/faust_event_cost.py --records 50000

The worker can never be faster than the ``faust`` figure, whatever the model costs: with a near-free
model and one result per event, its ceiling is about 1 / (faust + faust-send extra) per event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tweetpulse.bench.machine import machine_info
from tweetpulse.settings import Settings

VARIANTS = ("aiokafka", "faust", "faust-lean", "faust-send", "faust-producer", "faust-confluent")
BATCH = 512
VALUE = json.dumps({"id": "0", "text": "x" * 120, "source": "synthetic"}).encode()  # a tweet's size


def produce(settings: Settings, topic: str, records: int) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(settings.kafka.confluent_config())
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result()
    producer = Producer(settings.kafka.confluent_config(**{"linger.ms": 20}))
    for i in range(records):
        producer.produce(topic, key=str(i).encode(), value=VALUE)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush()


def measure(variant: str, settings: Settings, topic: str, records: int, timeout_s: float) -> dict:
    """Runs one variant in a fresh process; its events/s and microseconds per event, or why none."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        args = [sys.executable, __file__, "--run", variant, topic, str(records), str(out)]
        try:
            subprocess.run(args, timeout=timeout_s, check=False, capture_output=True, cwd=folder)
        except subprocess.TimeoutExpired:
            return {"variant": variant, "error": f"read nothing to the end within {timeout_s:g} s"}
        if not out.exists():
            return {"variant": variant, "error": "exited without a result"}
        seconds = json.loads(out.read_text())["seconds"]
    return {
        "variant": variant,
        "events_per_s": round(records / seconds, 1),
        "us_per_event": round(seconds / records * 1e6, 1),
    }


def run_variant(variant: str, topic: str, records: int, out: Path) -> None:
    settings = Settings()
    if variant == "aiokafka":
        asyncio.run(_plain_aiokafka(settings, topic, records, out))
    else:
        _faust(settings, variant, topic, records, out)


async def _plain_aiokafka(settings: Settings, topic: str, records: int, out: Path) -> None:
    from aiokafka import AIOKafkaConsumer

    from tweetpulse.processors.brokers import aiokafka_options

    consumer = AIOKafkaConsumer(
        topic,
        group_id=f"cost-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        max_poll_records=BATCH,
        **aiokafka_options(settings.kafka),
    )
    await consumer.start()
    seen, started = 0, None
    try:
        while seen < records:
            for batch in (await consumer.getmany(timeout_ms=1000, max_records=BATCH)).values():
                started = started or time.perf_counter()
                seen += len(batch)
    finally:
        await consumer.stop()
    out.write_text(json.dumps({"seconds": time.perf_counter() - started}))


def _faust(settings: Settings, variant: str, topic: str, records: int, out: Path) -> None:
    import faust

    from tweetpulse.processors.brokers import broker_urls, faust_credentials
    from tweetpulse.processors.monitor import WorkerMonitor

    transport = "confluent" if variant == "faust-confluent" else "kafka"
    lean = {"monitor": WorkerMonitor()} if variant == "faust-lean" else {}
    app = faust.App(
        f"cost-{uuid.uuid4().hex[:8]}",
        broker=[url.replace("kafka://", f"{transport}://") for url in broker_urls(settings.kafka)],
        broker_credentials=faust_credentials(settings.kafka),
        store="memory://",
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        topic_partitions=6,
        datadir=str(out.parent / "faust"),
        **lean,
    )
    if variant == "faust-lean":  # before any topic: the conductor is built on the app's transport
        from tweetpulse.processors.faust_consumer import guarded_transport

        app.transport = guarded_transport([topic])(app.conf.broker_consumer, app)
    source, sink = app.topic(topic), app.topic(f"{topic}-out")
    state = {"seen": 0, "started": 0.0}

    @app.agent(source)
    async def read(stream: Any) -> None:
        async for events in stream.take_events(BATCH, within=0.01):
            state["started"] = state["started"] or time.perf_counter()
            if variant == "faust-send":
                for event in events:
                    await sink.send(key=event.message.key, value=event.message.value)
            elif variant == "faust-producer":
                acks = [
                    await app.producer.send(
                        sink.get_topic_name(), e.message.key, e.message.value, None, None, None
                    )
                    for e in events
                ]
                await asyncio.gather(*acks)
            state["seen"] += len(events)
            if state["seen"] >= records:
                out.write_text(json.dumps({"seconds": time.perf_counter() - state["started"]}))
                os._exit(0)  # the figure is written; Faust's orderly stop is not what is measured

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=50_000, help="records each variant reads")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one variant may take")
    parser.add_argument(
        "--run", nargs=4, metavar=("VARIANT", "TOPIC", "RECORDS", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.run:
        variant, topic, records, out = args.run
        run_variant(variant, topic, int(records), Path(out))
        return
    settings = Settings()
    topic = f"bench.faust-cost.{uuid.uuid4().hex[:8]}"
    produce(settings, topic, args.records)
    try:
        rows = [measure(v, settings, topic, args.records, args.timeout) for v in args.variants]
    finally:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(settings.kafka.confluent_config())
        names = [t for t in admin.list_topics(timeout=10).topics if t.startswith((topic, "cost-"))]
        if names:
            admin.delete_topics(names)
    print(json.dumps({"records": args.records, "machine": machine_info(), "variants": rows}, indent=2))


if __name__ == "__main__":
    main()
