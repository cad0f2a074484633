"""What a retraining run learns from: the base data plus the labeled topic, deduplicated and capped.

Precedence when two examples have the same (normalized) text: a human label over a weak one over
the base data, newer over older. Weak labels are cut to ``weak_max_share`` of the training set, and
no validation text is trained on.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tweetpulse.contracts import ContractError, LabeledTweet
from tweetpulse.retraining.offsets import watermarks
from tweetpulse.settings import RetrainSettings, Settings
from tweetpulse.training.data import Example, load_source, make_splits
from tweetpulse.tweetfiles import read_labeled

log = logging.getLogger(__name__)

SEED = 13
_URL = re.compile(r"https?://\S+")
_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """The dedupe key: case-folded, links dropped, whitespace collapsed."""
    return _SPACE.sub(" ", _URL.sub(" ", text)).strip().casefold()


@dataclass
class Gathered:
    train: list[Example]
    val: list[Example]
    counts: dict[str, int] = field(default_factory=dict)

    def write(self, folder: Path) -> tuple[Path, Path]:
        """The training and validation sets as JSONL files (what the training pipeline reads)."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = folder / "retrain-train.jsonl", folder / "retrain-val.jsonl"
        for path, examples in zip(paths, (self.train, self.val), strict=True):
            path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in examples))
        return paths


def read_labeled_tweets(settings: Settings, timeout: float = 30.0) -> tuple[list[LabeledTweet], int]:
    """Every message of the labeled topic up to its end offsets now, and how many were malformed.

    A message without ``source`` is human feedback (``{id, text, label}``), and one without
    ``labeled_at`` is dated by its Kafka timestamp.
    """
    from confluent_kafka import Consumer, TopicPartition

    topic = settings.topics.labeled
    consumer = Consumer(
        settings.kafka.confluent_config(
            **{"group.id": f"tweetpulse-retrain-{uuid.uuid4().hex}", "enable.auto.commit": False}
        )
    )
    labels: list[LabeledTweet] = []
    malformed = 0
    try:
        ends = {
            p: (low, high) for p, (low, high) in watermarks(consumer, topic, timeout).items() if high > low
        }
        consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in ends.items()])
        remaining = {p: high for p, (_, high) in ends.items()}
        deadline = time.monotonic() + timeout
        while remaining:
            messages = consumer.consume(num_messages=1000, timeout=0.5)  # short polls
            if messages:
                deadline = time.monotonic() + timeout
            elif time.monotonic() > deadline:
                raise TimeoutError(f"labeled topic {topic}: no messages for {timeout}s before its end")
            for msg in messages:
                if msg.error() is not None or msg.partition() not in remaining:
                    continue
                if msg.offset() + 1 >= remaining[msg.partition()]:
                    del remaining[msg.partition()]
                parsed = parse_labeled(msg.value(), msg.timestamp()[1])
                if parsed is None:
                    malformed += 1
                else:
                    labels.append(parsed)
    finally:
        consumer.close()
    if malformed:
        log.warning("malformed labeled messages skipped", extra={"topic": topic, "malformed": malformed})
    return labels, malformed


def parse_labeled(value: bytes | None, timestamp_ms: int) -> LabeledTweet | None:
    try:
        obj: Any = json.loads(value or b"")
        if not isinstance(obj, dict):
            return None
        obj.setdefault("source", "human")
        if "labeled_at" not in obj and timestamp_ms > 0:
            obj["labeled_at"] = datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat()
        return LabeledTweet.from_dict(obj)
    except (ValueError, ContractError):
        return None


def select_labels(
    labels: list[LabeledTweet], conf: RetrainSettings, now: datetime | None = None
) -> list[LabeledTweet]:
    """Labels inside the recency window, newest first, human before weak, at most ``labeled_cap``."""
    since = (now or datetime.now(UTC)) - timedelta(hours=conf.labeled_window_h)
    recent = [lab for lab in labels if lab.labeled_at >= since]
    recent.sort(key=lambda lab: (lab.source != "human", -lab.labeled_at.timestamp()))
    return recent[: conf.labeled_cap]


def combine(
    base: list[Example], labels: list[LabeledTweet], val: list[Example], weak_max_share: float
) -> tuple[list[Example], dict[str, int]]:
    """Deduplicated training examples (see the module docstring) and what each source contributed."""
    seen = {normalize_text(text) for text, _ in val}
    kept: dict[str, list[Example]] = {"human": [], "weak": [], "base": []}
    dropped = 0
    for source, text, label in [(lab.source, lab.text, lab.label) for lab in labels] + [
        ("base", t, lab) for t, lab in base
    ]:
        key = normalize_text(text)
        if not key or key in seen:
            dropped += 1
            continue
        seen.add(key)
        kept[source].append((text, label))
    others = len(kept["human"]) + len(kept["base"])
    weak_limit = (
        len(kept["weak"]) if weak_max_share >= 1 else int(weak_max_share * others / (1 - weak_max_share))
    )
    weak_cut = max(0, len(kept["weak"]) - weak_limit)
    train = kept["base"] + kept["human"] + kept["weak"][:weak_limit]
    random.Random(SEED).shuffle(train)
    counts = {
        "base": len(kept["base"]),
        "human": len(kept["human"]),
        "weak": len(kept["weak"]) - weak_cut,
        "weak_over_share": weak_cut,
        "duplicates_or_validation": dropped,
        "train": len(train),
    }
    return train, counts


def base_and_val(settings: Settings) -> tuple[list[Example], list[Example]]:
    """The base training examples and the fixed validation set (file, or a seeded base hold-out)."""
    conf = settings.retrain
    base = [ex for spec in conf.base_data for ex in load_source(spec, settings)]
    if conf.val_file is not None:
        if not conf.val_file.is_file():
            raise FileNotFoundError(f"retrain.val_file {conf.val_file}: no such file")
        val = read_labeled(conf.val_file)
        if not val:
            raise ValueError(f"retrain.val_file {conf.val_file}: no labeled examples")
        splits = make_splits(
            base, val, seed=SEED, max_train=conf.max_base_samples, max_val=conf.max_val_samples
        )
    else:
        splits = make_splits(
            base, None, seed=SEED, max_train=conf.max_base_samples, max_val=conf.max_val_samples
        )
    return splits.train, splits.val


def gather(settings: Settings, now: datetime | None = None) -> Gathered:
    conf = settings.retrain
    base, val = base_and_val(settings)
    labels, malformed = read_labeled_tweets(settings)
    selected = select_labels(labels, conf, now)
    train, counts = combine(base, selected, val, conf.weak_max_share)
    counts.update(
        labeled_messages=len(labels),
        labeled_malformed=malformed,
        labeled_outside_window_or_cap=len(labels) - len(selected),
        val=len(val),
    )
    log.info("retraining data gathered", extra=counts)
    return Gathered(train, val, counts)
