"""What a model was trained on, as keys of normalized texts (:func:`tweetpulse.training.data.text_key`),
so the gate never scores it on them.

A model the retrainer publishes carries ``training-keys.txt`` (one key per line, checksummed by its
manifest like every file). A model from ``tweetpulse train`` records its data sources, seed, split
sizes and the fingerprint of its exact split, but not the texts: its training split is rebuilt from
those and trusted only when the fingerprint matches. Anything else is unknown.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tweetpulse.training.data import DataError, Example, load_source, make_splits, text_key
from tweetpulse.training.presets import PRESETS

if TYPE_CHECKING:
    from tweetpulse.registry import ModelArtifact
    from tweetpulse.settings import Settings

log = logging.getLogger(__name__)

TRAINING_KEYS = "training-keys.txt"
_SPLIT = re.compile(r"^(\d+(?:\.\d+)?)% split$")  # the pipeline's "val" when it held out a share


@dataclass(frozen=True)
class Lineage:
    keys: frozenset[str] | None  # None: unknown
    source: Literal["recorded", "rebuilt", "unknown", "none"]


NO_MODEL = Lineage(frozenset(), "none")  # no production model: nothing to exclude


def write_training_keys(folder: Path, texts: Iterable[str]) -> Path:
    """Record the keys of the texts a model in `folder` was trained on (before it is published):
    its labeled examples and, for a distilled student, the teacher-only transfer texts too."""
    path = folder / TRAINING_KEYS
    path.write_text("".join(f"{key}\n" for key in sorted({text_key(t) for t in texts})))
    return path


def training_lineage(artifact: ModelArtifact, settings: Settings) -> Lineage:
    """The training texts of a loaded (checksum-verified) model, recorded or rebuilt, else unknown."""
    recorded = artifact.file(TRAINING_KEYS)  # only a listed (verified) copy counts
    if recorded is not None:
        return Lineage(frozenset(recorded.read_text().split()), "recorded")
    examples = rebuild_training_split(artifact.manifest, settings)
    if examples is None:
        log.warning(
            "production's training set is unknown; the gate cannot exclude it",
            extra={"version": artifact.version},
        )
        return Lineage(None, "unknown")
    return Lineage(frozenset(text_key(t) for t, _ in examples), "rebuilt")


def rebuild_training_split(manifest: dict[str, Any], settings: Settings) -> list[Example] | None:
    """The training examples of a `tweetpulse train` model, if its recorded split can be reproduced.

    The manifest lacks ``--balance`` and ``--max-samples``, so the few values they can take are
    tried; only a split whose fingerprint equals the recorded one is returned.
    """
    data, fingerprint = manifest.get("data") or {}, manifest.get("data_fingerprint")
    specs, val_spec = data.get("train"), data.get("val")
    if not fingerprint or not isinstance(specs, list) or not isinstance(val_spec, str):
        return None
    split = _SPLIT.match(val_spec)
    if not all(_reproducible(spec) for spec in [*specs, *([] if split else [val_spec])]):
        return None  # Kafka topics move on and HF datasets need the network: not reproducible
    try:
        train = [ex for spec in specs for ex in load_source(str(spec), settings)]
        val = None if split else load_source(val_spec, settings)
    except (DataError, OSError, ValueError):
        return None
    fraction = float(split.group(1)) / 100 if split else 0.1
    return _matching_split(manifest, train, val, fraction, fingerprint)


def _reproducible(spec: object) -> bool:
    return isinstance(spec, str) and not spec.startswith(("kafka:", "hf:"))


def _matching_split(
    manifest: dict[str, Any],
    train: list[Example],
    val: list[Example] | None,
    fraction: float,
    fingerprint: str,
) -> list[Example] | None:
    metrics = manifest.get("metrics") or {}
    preset = PRESETS.get(str(manifest.get("preset")))
    caps = dict.fromkeys([metrics.get("train_examples"), preset.max_samples if preset else None, None])
    seed = int(manifest.get("seed", 13))
    for balance in (False, True):
        for cap in caps:
            try:
                splits = make_splits(train, val, fraction, seed, cap, metrics.get("val_examples"), balance)
            except DataError:
                continue
            if splits.fingerprint() == fingerprint:
                return splits.train
    return None
