"""What a retraining run learns from: the base data plus the labeled topic, deduplicated and capped.

Labeled messages are untrusted input, read, parsed and selected by :mod:`tweetpulse.labeled` (the one
reader and rule, which ``tweetpulse train --data kafka:`` follows too): a message without a valid
``source``, dated in the future (beyond ``label_clock_skew_s``), or unreadable in any way is refused
and counted by reason. Only the recency window is read, at most ``labeled_cap`` labels are held
(human first, then newest), and the read ends at the end offsets taken when it starts (the last
stable offset under transactions).

How labels join the base data, and how much of the training set they may be: :func:`combine`. The
gate set holds no text that the candidate or the production model was trained on.
"""

from __future__ import annotations

import json
import logging
import random
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from tweetpulse.contracts import LabeledTweet
from tweetpulse.labeled import LabeledRead, read_labeled
from tweetpulse.settings import RetrainSettings, Settings
from tweetpulse.training.data import Example, load_source, normalize_text, text_key
from tweetpulse.tweetfiles import read_labeled as read_labeled_file

log = logging.getLogger(__name__)

SEED = 13
VAL_FRACTION = 0.1  # of the base data held out as the gate set when there is no val_file


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


def read_labeled_tweets(
    settings: Settings, now: datetime | None = None, timeout: float = 30.0
) -> LabeledRead:
    """The valid labels of the recency window of the labeled topic, at most ``labeled_cap`` (human
    first, then newest), up to the topic's end offsets when the read starts (:func:`read_labeled`)."""
    conf = settings.retrain
    now = now or datetime.now(UTC)
    since = now - timedelta(hours=conf.labeled_window_h)
    return read_labeled(settings, settings.topics.labeled, since, conf.labeled_cap, now, timeout)


def share_limits(base: int, human: int, weak: int, human_share: float, weak_share: float) -> tuple[int, int]:
    """The most human and weak labels such that, in a training set of `base` examples plus them,
    each class is at most its share and both together at most the larger share (the class is
    self-declared, so it cannot buy a label more room); human labels are taken first.

    The largest total n that the shares of a set of base + n examples can hold, split human first.
    """
    most = min(_share_cap(max(human_share, weak_share), base), human + weak)
    for n in range(most, 0, -1):  # at most labeled_cap steps, each a few integer operations
        size = base + n
        h, w = min(human, _of(human_share, size)), min(weak, _of(weak_share, size))
        if h + w >= n:
            return min(h, n), n - min(h, n)
    return 0, 0


def _of(share: float, size: int) -> int:
    """The most examples `share` of a set of `size` allows."""
    return size if share >= 1 else int(share * size + 1e-9)


def _share_cap(share: float, others: int) -> int:
    """The largest n with n <= share * (n + others)."""
    return sys.maxsize if share >= 1 else int(share * others / (1 - share) + 1e-9)


def combine(
    base: list[Example],
    labels: list[LabeledTweet],
    val: list[Example],
    weak_max_share: float,
    human_max_share: float = 1.0,
) -> tuple[list[Example], dict[str, int]]:
    """The training examples and what each source contributed.

    The base data is the anchor; topic labels never displace it, whatever ``source`` they claim
    (it is self-declared). Texts are compared normalized (case, links, whitespace):

    - every base example is kept (but one whose text is a validation text, or a repeat);
    - a label whose text is a base text is left out and the base example's label stands
      (``labels_on_base_texts``), so labels on every base text, flipped or not, change nothing;
    - a label whose text is a validation text or an earlier label's is left out; `labels` come
      human first, newest first, so a human label beats a weak one and a newer one an older one;
    - then the caps apply to the final training set: human labels are at most ``human_max_share``
      of it, weak labels at most ``weak_max_share``, and all labels together at most the larger of
      the two (:func:`share_limits`). A flood of labels, of any claimed source, is at most that
      share of what the model learns: at 0.5, never more labels than base examples.
    """
    held_out = {normalize_text(text) for text, _ in val}
    kept_base, base_keys = _distinct_base(base, held_out)
    kept, on_base, repeats = _distinct_labels(labels, held_out, base_keys)
    human, weak = share_limits(
        len(kept_base), len(kept["human"]), len(kept["weak"]), human_max_share, weak_max_share
    )
    train = kept_base + kept["human"][:human] + kept["weak"][:weak]  # labels come newest first
    random.Random(SEED).shuffle(train)
    counts = {
        "base": len(kept_base),
        "human": human,
        "human_over_share": len(kept["human"]) - human,
        "weak": weak,
        "weak_over_share": len(kept["weak"]) - weak,
        "labels_on_base_texts": on_base,
        "duplicates_or_validation": len(base) - len(kept_base) + repeats,
        "train": len(train),
    }
    return train, counts


def _distinct_base(base: list[Example], held_out: set[str]) -> tuple[list[Example], set[str]]:
    """The base examples but those whose text is a validation text, empty, or a repeat; their keys."""
    kept: list[Example] = []
    keys: set[str] = set()
    for text, label in base:
        key = normalize_text(text)
        if key and key not in held_out and key not in keys:
            keys.add(key)
            kept.append((text, label))
    return kept, keys


def _distinct_labels(
    labels: list[LabeledTweet], held_out: set[str], base_keys: set[str]
) -> tuple[dict[str, list[Example]], int, int]:
    """The labels by source, first of each text, none on a base or validation text; how many were
    on base texts, and how many were repeats or on validation texts."""
    kept: dict[str, list[Example]] = {"human": [], "weak": []}
    seen = set(held_out)
    on_base = repeats = 0
    for lab in labels:
        key = normalize_text(lab.text)
        if key in base_keys:
            on_base += 1
        elif not key or key in seen:
            repeats += 1
        else:
            seen.add(key)
            kept[lab.source].append((lab.text, lab.label))
    return kept, on_base, repeats


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
    examples = read_labeled_file(conf.val_file)
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
    read = read_labeled_tweets(settings, now)  # the window, capped, human first, newest first
    train, counts = combine(base, read.labels, val, conf.weak_max_share, conf.human_max_share)
    counts.update(
        labeled_messages=read.messages,
        labeled_refused=sum(read.refused.values()),
        **{f"labeled_refused_{reason.replace('-', '_')}": n for reason, n in sorted(read.refused.items())},
        labeled_outside_window_or_cap=read.outside_window + read.over_cap,
        val=len(val),
        val_excluded_as_production_training=excluded,
    )
    log.info("retraining data gathered", extra=counts)
    return Gathered(train, val, counts)
