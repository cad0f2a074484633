"""The deploy gate: score the candidate and production on the same gate set, then decide.

Both models are scored by `tweetpulse evaluate`'s code
(:func:`tweetpulse.training.evaluate.evaluate_artifact`), so the only difference between the two
numbers is the model. The gate set holds no text either model was trained on (see
:mod:`tweetpulse.training.lineage`). A candidate is promoted only if the gate set is large enough,
its accuracy reaches the absolute floor ``min_accuracy`` (so a chain of promotions, each within
``tolerance`` of the last, cannot ratchet quality down), and it is within ``tolerance`` of a
production model that was loaded and scored; with no production model at all, the floor decides.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tweetpulse.contracts import Label
from tweetpulse.registry import VARIANTS, ArtifactError, ModelArtifact, ModelRegistry
from tweetpulse.training.evaluate import evaluate_artifact
from tweetpulse.training.lineage import NO_MODEL, Lineage, training_lineage

if TYPE_CHECKING:
    from tweetpulse.settings import RetrainSettings, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Score:
    accuracy: float
    macro_f1: float
    examples: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str


@dataclass(frozen=True)
class GateRules:
    tolerance: float
    min_accuracy: float
    min_examples: int

    @classmethod
    def from_settings(cls, conf: RetrainSettings) -> GateRules:
        return cls(conf.tolerance, conf.min_accuracy, conf.min_gate_examples)


@dataclass(frozen=True)
class Baseline:
    """The production side of the gate: its version, the loaded model and what it was trained on."""

    version: str | None
    artifact: ModelArtifact | None = None
    lineage: Lineage = NO_MODEL
    problem: str | None = None  # why production exists but cannot be compared with

    @property
    def exclude(self) -> frozenset[str]:
        return self.lineage.keys or frozenset()


def load_baseline(registry: ModelRegistry, settings: Settings) -> Baseline:
    """Production loaded and verified, with its training set; `problem` says why not."""
    version = registry.production()
    if version is None:
        return Baseline(None)
    try:
        artifact = registry.load(version)
    except (ArtifactError, OSError) as exc:
        log.error("production model cannot be loaded", extra={"version": version, "error": str(exc)})
        return Baseline(version, problem=f"production {version} cannot be loaded ({exc})")
    return Baseline(version, artifact, training_lineage(artifact, settings))


def candidate_artifact(folder: Path, fields: dict[str, Any]) -> ModelArtifact:
    """An exported, not yet published folder as an artifact (its manifest fields are in memory)."""
    if not (folder / VARIANTS["fp32"]).is_file():
        raise ArtifactError(f"{folder}: no {VARIANTS['fp32']}; the export is incomplete")
    return ModelArtifact(folder, {**fields, "version": "candidate"})


def score_model(artifact: ModelArtifact, examples: list[tuple[str, Label]], variant: str = "fp32") -> Score:
    """Accuracy and macro-F1 of one variant of `artifact` on `examples`."""
    report = evaluate_artifact(artifact, examples, variant)
    return Score(report["accuracy"], report["macro_f1"], report["examples"])


def too_small(examples: int, rules: GateRules) -> Verdict | None:
    """A refusal when the gate set is too small to tell two models apart; None when it is not."""
    if examples >= rules.min_examples:
        return None
    return Verdict(
        False, f"gate set has {examples} examples < retrain.min_gate_examples {rules.min_examples}"
    )


def decide(
    candidate: Score, production: Score | None, rules: GateRules, production_version: str | None = None
) -> Verdict:
    """Promote only a candidate above the floor and within tolerance of a scored production model.

    `production` None with a `production_version` means production exists but was not scored: the
    candidate is not promoted.
    """
    refusal = too_small(candidate.examples, rules)
    if refusal is not None:
        return refusal
    if candidate.accuracy < rules.min_accuracy:
        return Verdict(
            False,
            f"candidate accuracy {candidate.accuracy:.4f} < retrain.min_accuracy {rules.min_accuracy}",
        )
    if production is None:
        if production_version is not None:
            return Verdict(
                False, f"production {production_version} was not scored; it is never replaced blind"
            )
        return Verdict(
            True,
            f"no production model; candidate accuracy {candidate.accuracy:.4f} >= floor {rules.min_accuracy}",
        )
    if production.examples != candidate.examples:
        return Verdict(False, "candidate and production were not scored on the same gate set")
    if candidate.accuracy < production.accuracy - rules.tolerance:
        return Verdict(
            False,
            f"candidate accuracy {candidate.accuracy:.4f} < production {production.accuracy:.4f} "
            f"- tolerance {rules.tolerance}",
        )
    return Verdict(
        True,
        f"candidate accuracy {candidate.accuracy:.4f} >= production {production.accuracy:.4f} "
        f"- tolerance {rules.tolerance}, and >= floor {rules.min_accuracy}",
    )
