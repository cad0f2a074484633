"""Kafka helpers on confluent-kafka: admin (topics) and client configs built from the settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from tweetpulse.settings import Settings

log = logging.getLogger(__name__)

# librdkafka's own log lines go to this logger (through the project's redacting handler) instead of
# raw to stderr: an unreachable broker would otherwise print a "Connect ... failed" line every ~50 ms.
# Producer and Consumer pass them on from poll()/flush(); AdminClient only from admin.poll().
LIBRDKAFKA_LOGGER = "librdkafka"

COMPACTED = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01", "segment.ms": "60000"}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


def pipeline_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic the pipeline uses, with the configured partition count and replication."""
    t = settings.topics
    spec = lambda name, parts, cfg=None: TopicSpec(name, parts, t.replication_factor, cfg or {})  # noqa: E731
    return [
        spec(t.raw, t.partitions),
        spec(t.sentiment, t.partitions),
        spec(t.dlq, max(1, t.partitions // 2)),
        spec(t.aggregates, max(1, t.partitions // 2)),
        spec(t.models, 1, COMPACTED),  # one partition: every worker reads the whole announcement log
        spec(t.labeled, max(1, t.partitions // 2)),
        spec(t.drift, 1),  # rare events; one partition keeps them in order
    ]


def client_logger() -> logging.Logger:
    """The logger confluent-kafka clients log to (their ``logger`` config key)."""
    return logging.getLogger(LIBRDKAFKA_LOGGER)


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(settings.kafka.confluent_config(), logger=client_logger())


def create_topics(
    settings: Settings, specs: list[TopicSpec] | None = None, timeout: float = 30.0
) -> dict[str, str]:
    """Create missing topics; existing ones are left as they are. Returns name -> 'created'|'exists'."""
    specs = specs if specs is not None else pipeline_topics(settings)
    admin = admin_client(settings)
    existing = set(admin.list_topics(timeout=timeout).topics)
    outcome = {s.name: "exists" for s in specs if s.name in existing}
    new = [
        NewTopic(
            s.name, num_partitions=s.partitions, replication_factor=s.replication_factor, config=s.config
        )
        for s in specs
        if s.name not in existing
    ]
    if new:
        for name, future in admin.create_topics(
            new, operation_timeout=timeout, request_timeout=timeout
        ).items():
            try:
                future.result()
                outcome[name] = "created"
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # a concurrent creator won the race
                    raise
                outcome[name] = "exists"
            log.info("topic %s", outcome[name], extra={"topic": name})
    return outcome


def list_topics(settings: Settings, timeout: float = 10.0) -> list[str]:
    metadata = admin_client(settings).list_topics(timeout=timeout)
    return sorted(name for name in metadata.topics if not name.startswith("__"))


def describe_topics(settings: Settings, names: list[str], timeout: float = 10.0) -> list[TopicInfo]:
    admin = admin_client(settings)
    metadata = admin.list_topics(timeout=timeout)
    missing = [n for n in names if n not in metadata.topics]
    if missing:
        raise KeyError(f"no such topic: {', '.join(missing)}")
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
    configs = {
        r.name: f.result() for r, f in admin.describe_configs(resources, request_timeout=timeout).items()
    }
    infos = []
    for name in names:
        partitions = metadata.topics[name].partitions
        replicas = len(next(iter(partitions.values())).replicas) if partitions else 0
        non_default = {
            k: v.value for k, v in configs[name].items() if not v.is_default and v.value is not None
        }
        infos.append(TopicInfo(name, len(partitions), replicas, non_default))
    return infos


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Durable, throughput-tuned producer defaults; settings.kafka.extra and overrides win. Holds
    ``logger`` (librdkafka's logs through Python logging), which confluent-kafka takes from the dict."""
    base = {
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.size": 256 * 1024,
        "queue.buffering.max.messages": 500_000,
        "logger": client_logger(),
    }
    conf = settings.kafka.confluent_config()
    return {**base, **conf, **overrides}


def consumer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """A confluent-kafka Consumer config: the settings' and ``overrides``, with librdkafka's logs
    through Python logging (``logger``)."""
    return {**settings.kafka.confluent_config(**overrides), "logger": client_logger()}
