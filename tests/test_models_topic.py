"""Model announcements are untrusted: only the registry's PRODUCTION pointer decides what serves.

Hostile records are on the compacted models topic before a real worker starts and keep arriving while
it runs; the worker starts, never restarts, serves production, and swaps only when production moves.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import test_processors_pipeline as processor_tests
from confluent_kafka import Producer
from test_processors_pipeline import (  # the workers' test helpers, shared rather than copied
    Worker,
    wait_for,
    wait_for_assignment,
)

from tweetpulse.kafka import producer_config
from tweetpulse.registry import ModelRegistry, announce_production
from tweetpulse.settings import Settings

registry = processor_tests.registry  # fixtures
start_worker = processor_tests.start_worker


def announcement(version: object, **fields: object) -> bytes:
    return json.dumps({"version": version, "registry_root": "/elsewhere", **fields}).encode()


HOSTILE_ANNOUNCEMENTS = [
    b"\x00\xff garbage",
    b"",
    None,  # a tombstone
    b"[]",
    b'{"a": ' * 5_000 + b"1" + b"}" * 5_000,
    announcement("../../etc/passwd"),
    announcement("/etc"),
    announcement("v0001/../../x"),
    announcement(5),
    announcement("v" + "9" * 10_000),
    announcement("v0001", unknown=True),
    b"x" * 900 * 1024,
]


def send(settings: Settings, values: list[bytes | None]) -> None:
    producer = Producer(producer_config(settings, **{"message.max.bytes": 2_000_000}))
    for value in values:
        producer.produce(settings.topics.models, key=b"production", value=value)
    assert producer.flush(30) == 0


def test_hostile_announcements_never_stop_or_redirect_a_worker_and_production_still_swaps(
    settings: Settings, registry: ModelRegistry, start_worker: Callable[..., Worker]
) -> None:
    v1 = registry.production()
    v2 = registry.publish(registry.path(v1), {**registry.load(v1).manifest, "note": "the next production"})
    send(settings, HOSTILE_ANNOUNCEMENTS)  # already there when the worker starts
    worker = start_worker()
    wait_for_assignment([worker], settings.topics.partitions)
    pid = worker.proc.pid

    send(settings, [*HOSTILE_ANNOUNCEMENTS, announcement(v2)])  # v2 is published, not production
    announce_production(settings, v2)  # a well-formed announcement of a version that is not production
    wait_for(lambda: "bad model announcement ignored" in worker.log(), 30, "the records to be read", [worker])
    metrics = (worker.get("/metrics") or b"").decode()
    assert 'tweetpulse_processor_model_swaps_total{outcome="bad-announcement"}' in metrics
    assert (worker.status() or {})["model_version"] == v1

    registry.promote(v2)
    announce_production(settings, v2)
    wait_for(lambda: (worker.status() or {}).get("model_version") == v2, 60, f"the swap to {v2}", [worker])
    assert worker.proc.poll() is None and worker.proc.pid == pid
