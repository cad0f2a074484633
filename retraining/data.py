"""What a retraining run learns from: the base data plus the labeled topic, deduplicated and capped.

Labeled messages are untrusted input: one without a valid ``source`` (``human`` or ``weak``), or
dated in the future (beyond ``label_clock_skew_s``), is refused and counted by reason. Only the
recency window is read, at most ``labeled_cap`` labels are held, and the read ends at the end
offsets taken when it starts (the last stable offset under transactions).

Precedence when two examples have the same (normalized) text: a human label over a weak one over
the base data, newer over older. Weak and human labels are each cut to their share of the training
set (``weak_max_share``, ``human_max_share``). The gate set holds no text that the candidate or
the production model was trained on.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from tweetpulse.contracts import ContractError, LabeledTweet
from tweetpulse.retraining.lineage import normalize_text, text_key
from tweetpulse.retraining.offsets import drop_reached, watermarks
from tweetpulse.settings import RetrainSettings, Settings
from tweetpulse.training.data import Example, load_source
from tweetpulse.tweetfiles import read_labeled

log = logging.getLogger(__name__)

SEED = 13
VAL_FRACTION = 0.1  # of the base data held out as the gate set when there is no val_file
SOURCES = ("human", "weak")


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


class RefusedLabelError(ValueError):
    """A labeled message that is not used; ``reason`` is one of a few stable words (a counter key)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class LabeledRead:
    labels: list[LabeledTweet]  # the best `labeled_cap`: human first, newest first
    messages: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    outside_window: int = 0
    over_cap: int = 0


class NewestLabels:
    """At most `cap` labels, preferring human ones, then newer ones (a heap: memory stays bounded)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.heap: list[tuple[bool, float, int, LabeledTweet]] = []
        self.order = itertools.count()  # tie-breaker: LabeledTweets do not compare
        self.dropped = 0

    def add(self, label: LabeledTweet) -> None:
        item = (label.source == "human", label.labeled_at.timestamp(), next(self.order), label)
        if len(self.heap) < self.cap:
            heapq.heappush(self.heap, item)
            return
        self.dropped += 1
        if self.heap and item[:3] > self.heap[0][:3]:
            heapq.heapreplace(self.heap, item)

    def best(self) -> list[LabeledTweet]:
        return [item[-1] for item in sorted(self.heap, reverse=True)]


def read_labeled_tweets(
    settings: Settings, now: datetime | None = None, timeout: float = 30.0
) -> LabeledRead:
    """The valid labels of the recency window, up to the topic's end offsets when the read starts.

    Each partition is sought to the first message of the window (``offsets_for_times``) and is done
    at its end offset, at end-of-partition, or once the consumer's position reaches the end: the
    last message of a committed transaction sits before its commit marker, so the offset of the
    last message read never reaches the end offset.
    """
    from confluent_kafka import Consumer

    conf = settings.retrain
    now = now or datetime.now(UTC)
    consumer = Consumer(
        settings.kafka.confluent_config(
            **{
                "group.id": f"tweetpulse-retrain-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",  # aborted or open transactions are never used
            }
        )
    )
    topic = settings.topics.labeled
    read = LabeledRead([])
    kept = NewestLabels(conf.labeled_cap)
    try:
        ends = _seek_window(consumer, topic, now - timedelta(hours=conf.labeled_window_h))
        _consume_to_ends(consumer, topic, ends, timeout, lambda msg: _take(msg, read, kept, conf, now))
    finally:
        consumer.close()
    read.labels, read.over_cap = kept.best(), kept.dropped
    _log_refusals(topic, read)
    return read


def _seek_window(consumer: Any, topic: str, since: datetime) -> dict[int, int]:
    """Assign every partition from the first message at or after `since`; returns partition -> end."""
    from confluent_kafka import KafkaException, TopicPartition

    marks = {p: (low, high) for p, (low, high) in watermarks(consumer, topic).items() if high > low}
    if not marks:
        return {}
    since_ms = int(since.timestamp() * 1000)
    found = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in marks], timeout=30)
    for tp in found:
        if tp.error is not None:  # never skip a partition silently
            raise KafkaException(tp.error)
    # offset -1: nothing in the window; the low watermark wins over an offset already deleted
    starts = {tp.partition: max(tp.offset, marks[tp.partition][0]) for tp in found if tp.offset >= 0}
    ends = {p: marks[p][1] for p, start in starts.items() if start < marks[p][1]}
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in ends])
    return ends


def _consume_to_ends(
    consumer: Any, topic: str, ends: dict[int, int], timeout: float, handle: Callable[[Any], None]
) -> None:
    """Feed every message before `ends` to `handle`; raises TimeoutError if reading stalls."""
    from confluent_kafka import KafkaError

    remaining = dict(ends)
    deadline = time.monotonic() + timeout
    while remaining:
        messages = consumer.consume(num_messages=1000, timeout=0.5)
        if messages:
            deadline = time.monotonic() + timeout
        elif time.monotonic() > deadline:
            raise TimeoutError(f"labeled topic {topic}: no progress for {timeout}s before ends {remaining}")
        for msg in messages:
            partition = msg.partition()
            if partition not in remaining:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    del remaining[partition]
                continue
            if msg.offset() < remaining[partition]:
                handle(msg)
            if msg.offset() + 1 >= remaining[partition]:
                del remaining[partition]
        drop_reached(consumer, topic, remaining)


def _take(msg: Any, read: LabeledRead, kept: NewestLabels, conf: RetrainSettings, now: datetime) -> None:
    read.messages += 1
    try:
        label = parse_labeled(msg.value(), msg.timestamp()[1], now, conf.label_clock_skew_s)
    except RefusedLabelError as exc:
        read.refused[exc.reason] += 1
        if read.refused[exc.reason] <= 3:  # a few examples, not one line per message of a flood
            log.warning(
                "labeled message refused",
                extra={"partition": msg.partition(), "offset": msg.offset(), "reason": str(exc)},
            )
        return
    if label.labeled_at < now - timedelta(hours=conf.labeled_window_h):
        read.outside_window += 1
    else:
        kept.add(label)


def parse_labeled(
    value: bytes | None, timestamp_ms: int, now: datetime | None = None, skew_s: float = 300.0
) -> LabeledTweet:
    """One labeled message, validated; raises :class:`RefusedLabelError` with the reason it is not used.

    A message without ``labeled_at`` is dated by its Kafka timestamp; a naive date is UTC.
    """
    try:
        obj: Any = json.loads(value or b"")
    except ValueError as exc:  # also not UTF-8
        raise RefusedLabelError("unreadable", str(exc)) from None
    if not isinstance(obj, dict):
        raise RefusedLabelError("unreadable", f"a JSON {type(obj).__name__}, not an object")
    if obj.get("source") not in SOURCES:  # never defaulted: an unsourced label is not human feedback
        raise RefusedLabelError("unsourced", f"source {obj.get('source')!r} is not one of {list(SOURCES)}")
    if "labeled_at" not in obj and timestamp_ms > 0:
        obj["labeled_at"] = datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat()
    try:
        label = LabeledTweet.from_dict(obj)
    except ContractError as exc:
        raise RefusedLabelError("invalid", str(exc)) from None
    if label.labeled_at.tzinfo is None:
        label = label.model_copy(update={"labeled_at": label.labeled_at.replace(tzinfo=UTC)})
    latest = (now or datetime.now(UTC)) + timedelta(seconds=skew_s)
    if label.labeled_at > latest:
        raise RefusedLabelError(
            "future-dated", f"labeled_at {label.labeled_at.isoformat()} is after {latest.isoformat()}"
        )
    return label


def _log_refusals(topic: str, read: LabeledRead) -> None:
    if read.refused:
        log.warning(
            "labeled messages refused",
            extra={"topic": topic, "refused": dict(read.refused), "messages": read.messages},
        )


def select_labels(
    labels: list[LabeledTweet], conf: RetrainSettings, now: datetime | None = None
) -> list[LabeledTweet]:
    """Labels inside the recency window, newest first, human before weak, at most ``labeled_cap``."""
    since = (now or datetime.now(UTC)) - timedelta(hours=conf.labeled_window_h)
    recent = [lab for lab in labels if lab.labeled_at >= since]
    recent.sort(key=lambda lab: (lab.source != "human", -lab.labeled_at.timestamp()))
    return recent[: conf.labeled_cap]


def share_limits(base: int, human: int, weak: int, human_share: float, weak_share: float) -> tuple[int, int]:
    """The most human and weak examples such that each is at most its share of the whole set.

    Each limit is the largest count given the other; starting from everything and repeating until
    neither moves reaches the largest pair that satisfies both.
    """
    while True:
        h = min(human, _share_cap(human_share, base + weak))
        w = min(weak, _share_cap(weak_share, base + h))
        if (h, w) == (human, weak):
            return h, w
        human, weak = h, w


def _share_cap(share: float, others: int) -> int:
    """The largest n with n <= share * (n + others)."""
    return others * 10**9 if share >= 1 else int(share * others / (1 - share) + 1e-9)


def combine(
    base: list[Example],
    labels: list[LabeledTweet],
    val: list[Example],
    weak_max_share: float,
    human_max_share: float = 1.0,
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
    human, weak = share_limits(
        len(kept["base"]), len(kept["human"]), len(kept["weak"]), human_max_share, weak_max_share
    )
    train = kept["base"] + kept["human"][:human] + kept["weak"][:weak]  # labels come newest first
    random.Random(SEED).shuffle(train)
    counts = {
        "base": len(kept["base"]),
        "human": human,
        "human_over_share": len(kept["human"]) - human,
        "weak": weak,
        "weak_over_share": len(kept["weak"]) - weak,
        "duplicates_or_validation": dropped,
        "train": len(train),
    }
    return train, counts


class BaseSplit(NamedTuple):
    train: list[Example]
    val: list[Example]
    excluded: int  # gate candidates left out because production was trained on them


def base_and_val(settings: Settings, exclude: frozenset[str] = frozenset()) -> BaseSplit:
    """The base training examples and the gate set (a file, or a seeded base hold-out).

    The gate set holds no text whose key is in `exclude` (what production was trained on), and no
    text twice; the candidate is kept off it by :func:`combine`.
    """
    conf = settings.retrain
    base = [ex for spec in conf.base_data for ex in load_source(spec, settings)]
    random.Random(SEED).shuffle(base)
    if conf.val_file is None:
        n_val = max(1, round(len(base) * VAL_FRACTION))
        split = hold_out(base, exclude, min(n_val, conf.max_val_samples or n_val))
    else:
        split = _file_split(conf, base, exclude)
    return BaseSplit(split.train[: conf.max_base_samples], split.val, split.excluded)


def hold_out(shuffled: list[Example], exclude: frozenset[str], n_val: int) -> BaseSplit:
    """The first `n_val` distinct texts not in `exclude` as the gate set; the rest for training."""
    val: list[Example] = []
    train: list[Example] = []
    keys: set[str] = set()
    excluded = 0
    for example in shuffled:
        key = text_key(example[0])
        eligible = len(val) < n_val and key not in keys
        if eligible and key in exclude:
            excluded += 1
        elif eligible:
            keys.add(key)
            val.append(example)
            continue
        train.append(example)
    return BaseSplit(train, val, excluded)


def _file_split(conf: RetrainSettings, base: list[Example], exclude: frozenset[str]) -> BaseSplit:
    if not conf.val_file.is_file():
        raise FileNotFoundError(f"retrain.val_file {conf.val_file}: no such file")
    examples = read_labeled(conf.val_file)
    if not examples:
        raise ValueError(f"retrain.val_file {conf.val_file}: no labeled examples")
    random.Random(SEED + 1).shuffle(examples)
    split = hold_out(examples, exclude, conf.max_val_samples or len(examples))
    return BaseSplit(base, split.val, split.excluded)


def gather(
    settings: Settings, exclude: frozenset[str] = frozenset(), now: datetime | None = None
) -> Gathered:
    """The run's training and gate sets; `exclude`: keys of the texts production was trained on."""
    conf = settings.retrain
    base, val, excluded = base_and_val(settings, exclude)
    read = read_labeled_tweets(settings, now)
    selected = select_labels(read.labels, conf, now)
    train, counts = combine(base, selected, val, conf.weak_max_share, conf.human_max_share)
    counts.update(
        labeled_messages=read.messages,
        labeled_refused=sum(read.refused.values()),
        **{f"labeled_refused_{reason.replace('-', '_')}": n for reason, n in sorted(read.refused.items())},
        labeled_outside_window_or_cap=read.outside_window + read.over_cap + len(read.labels) - len(selected),
        val=len(val),
        val_excluded_as_production_training=excluded,
    )
    log.info("retraining data gathered", extra=counts)
    return Gathered(train, val, counts)
