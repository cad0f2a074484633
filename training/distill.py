"""Knowledge distillation: a teacher's logits over the transfer texts, cached, for a student to learn.

The transfer set is the training split plus any extra texts (`Preset.transfer`, `--transfer`), never
a validation text. A published teacher (a registry version or export folder) is scored through the
serving classifier (processors/classifier.py), so the student learns what the teacher serves; a hub
id or transformers folder is scored with PyTorch. The ``best`` teacher, trained when there is none,
is the pipeline's (:func:`tweetpulse.training.pipeline.resolve_teacher`). Logits are cached per teacher and text
($XDG_CACHE_HOME/tweetpulse/teacher-logits/), so a second run with the same teacher scores nothing.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tweetpulse.processors.classifier import Classifier
from tweetpulse.registry import ArtifactError, ModelArtifact, ModelRegistry, load_artifact, write_durably
from tweetpulse.training.base import bf16_native, resolve_base
from tweetpulse.training.data import Example, load_texts, normalize_text

if TYPE_CHECKING:
    from tweetpulse.settings import Settings

log = logging.getLogger(__name__)

SCORING_BLOCK = 4096  # texts scored between cache writes and progress lines


@dataclass(frozen=True)
class Teacher:
    """Where the soft labels come from: a published model (scored by the serving classifier) or a
    transformers model (a hub id or folder, scored with PyTorch)."""

    name: str  # what the manifest records: a registry version, a folder or a hub id
    key: str  # the cache key: changes whenever the teacher's weights do
    artifact: ModelArtifact | None = None
    variant: str = "auto"

    def logits(self, texts: list[str]) -> np.ndarray:
        return self._scorer(texts)

    @cached_property
    def _scorer(self) -> Callable[[list[str]], np.ndarray]:
        """Opened once, on first use: texts are scored in blocks (see cached_logits)."""
        if self.artifact is not None:
            return Classifier(self.artifact, variant=self.variant).logits  # type: ignore[arg-type]
        return _torch_scorer(self.name)


@dataclass(frozen=True)
class TransferSet:
    """The student's training rows: labeled ones (the training split) and teacher-only texts."""

    examples: list[Example]
    unlabeled: list[str]
    logits: dict[str, np.ndarray]  # text -> the teacher's logits
    teacher: Teacher
    seconds: float  # spent scoring (0 when all came from the cache)

    def manifest_fields(self, temperature: float, kd_weight: float, sources: list[str]) -> dict[str, Any]:
        return {
            "teacher": self.teacher.name,
            "teacher_key": self.teacher.key,
            "temperature": temperature,
            "kd_weight": kd_weight,
            "transfer": sources,
            "transfer_labeled": len(self.examples),
            "transfer_unlabeled": len(self.unlabeled),
            "teacher_scoring_seconds": round(self.seconds, 1),
        }


def logits_cache() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "tweetpulse" / "teacher-logits"


def published_teacher(artifact: ModelArtifact, variant: str = "auto") -> Teacher:
    graph = artifact.manifest.get("files", {})
    digest = hashlib.sha256(repr(sorted(graph.items())).encode()).hexdigest()[:16]
    return Teacher(artifact.version, f"{artifact.version}-{digest}-{variant}", artifact, variant)


def named_teacher(spec: str, registry: ModelRegistry) -> Teacher:
    """A teacher from --teacher other than "best": a registry version or "production", an export
    folder, a transformers folder or a hub id."""
    if spec == "production":
        return published_teacher(registry.load())
    if spec in registry.versions():
        return published_teacher(registry.load(spec))
    folder = Path(spec).expanduser()
    if (folder / "manifest.json").is_file():
        return published_teacher(load_artifact(folder))
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise ArtifactError(f"teacher {spec}: neither a published model nor a transformers model folder")
    return Teacher(spec, "torch-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", spec).strip("_"))


def build_transfer_set(
    teacher: Teacher, train: list[Example], val: list[Example], sources: list[str], settings: Settings
) -> TransferSet:
    """The training split plus the texts of `sources` that are neither training nor validation
    texts (compared lower-cased, without punctuation), each with the teacher's logits."""
    seen = {normalize_text(t) for t, _ in train} | {normalize_text(t) for t, _ in val}
    unlabeled = []
    for spec in sources:
        for text in load_texts(spec, settings):
            key = normalize_text(text)
            if key not in seen:
                seen.add(key)
                unlabeled.append(text)
    texts = [t for t, _ in train] + unlabeled
    started = time.monotonic()
    logits = cached_logits(teacher, texts)
    seconds = time.monotonic() - started
    log.info(
        "transfer set ready",
        extra={
            "teacher": teacher.name,
            "labeled": len(train),
            "unlabeled": len(unlabeled),
            "seconds": round(seconds, 1),
        },
    )
    return TransferSet(train, unlabeled, dict(zip(texts, logits, strict=True)), teacher, seconds)


def cached_logits(teacher: Teacher, texts: list[str], cache: Path | None = None) -> np.ndarray:
    """The teacher's logits for `texts`, scoring only those the cache does not hold."""
    path = (cache or logits_cache()) / f"{teacher.key}.npz"
    known = _read_cache(path)
    digests = [hashlib.sha256(t.encode()).digest() for t in texts]
    missing = sorted({d: t for d, t in zip(digests, texts, strict=True) if d not in known}.items())
    log.info("teacher logits", extra={"cached": len(texts) - len(missing), "to_score": len(missing)})
    started = time.monotonic()
    for done in range(0, len(missing), SCORING_BLOCK):
        block = missing[done : done + SCORING_BLOCK]
        known.update(zip((d for d, _ in block), teacher.logits([t for _, t in block]), strict=True))
        _write_cache(path, known)  # per block: an interrupted run resumes where it stopped
        rate = (done + len(block)) / max(time.monotonic() - started, 1e-9)
        log.info(
            "teacher scoring",
            extra={"scored": done + len(block), "of": len(missing), "texts_per_s": round(rate, 1)},
        )
    return np.stack([known[d] for d in digests]).astype(np.float32)


def _read_cache(path: Path) -> dict[bytes, np.ndarray]:
    """The cached {text digest: logits}; empty when there is none or it is unreadable (a cache:
    rescoring is always correct), with a warning for the latter."""
    if not path.is_file():
        return {}
    try:
        with np.load(path) as stored:
            return dict(zip((bytes(d) for d in stored["digests"]), stored["logits"], strict=True))
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        log.warning(
            "teacher logits cache unreadable; rescoring", extra={"path": str(path), "error": str(exc)}
        )
        return {}


def _write_cache(path: Path, known: dict[bytes, np.ndarray]) -> None:
    """Replace the cache durably: a crash or power loss leaves the old cache or the new one, never
    a truncated file that np.load would fail on (40 bytes a text: it fits in memory)."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        digests=np.frombuffer(b"".join(known), dtype=np.uint8).reshape(-1, 32),
        logits=np.stack(list(known.values())).astype(np.float32),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(path, buffer.getvalue())


def _torch_scorer(name: str, batch_size: int = 64) -> Callable[[list[str]], np.ndarray]:
    """Logits of a transformers sequence-classification model (negative, positive columns)."""
    # torch, transformers: only with the train extra (a published teacher needs neither)
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path, _ = resolve_base(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    columns = _sentiment_columns(model.config.id2label)

    def score(texts: list[str]) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), 2), dtype=np.float32)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_native()):
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = tokenizer(
                    [texts[i] for i in rows],
                    truncation=True,
                    max_length=128,
                    padding=True,
                    return_tensors="pt",
                )
                out[rows] = model(**batch).logits.float()[:, columns].numpy()
        return out

    return score


def _sentiment_columns(id2label: dict[int, str]) -> list[int]:
    """The negative and positive logit columns of a classifier (a 3-class model's neutral is dropped)."""
    by_name = {str(v).lower(): int(k) for k, v in id2label.items()}
    try:
        return [by_name["negative"], by_name["positive"]]
    except KeyError:
        raise ArtifactError(f"teacher labels {sorted(by_name)} have no negative and positive") from None
