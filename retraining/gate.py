"""The deploy gate: score the candidate and production on the same fixed validation set, then decide.

Both models are scored by `tweetpulse evaluate`'s code
(:func:`tweetpulse.training.evaluate.evaluate_artifact`), so the only difference between the two
numbers is the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tweetpulse.contracts import Label
from tweetpulse.registry import VARIANTS, ArtifactError, ModelArtifact


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


def candidate_artifact(folder: Path, fields: dict[str, Any]) -> ModelArtifact:
    """An exported, not yet published folder as an artifact (its manifest fields are in memory)."""
    if not (folder / VARIANTS["fp32"]).is_file():
        raise ArtifactError(f"{folder}: no {VARIANTS['fp32']}; the export is incomplete")
    return ModelArtifact(folder, {**fields, "version": "candidate"})


def score_model(artifact: ModelArtifact, examples: list[tuple[str, Label]], variant: str = "fp32") -> Score:
    """Accuracy and macro-F1 of one variant of `artifact` on `examples`."""
    from tweetpulse.training.evaluate import evaluate_artifact

    report = evaluate_artifact(artifact, examples, variant)
    return Score(report["accuracy"], report["macro_f1"], report["examples"])


def decide(candidate: Score, production: Score | None, tolerance: float) -> Verdict:
    """Promote unless the candidate's accuracy is more than `tolerance` below production's."""
    if production is None:
        return Verdict(True, "no production model to compare with")
    floor = production.accuracy - tolerance
    if candidate.accuracy >= floor:
        return Verdict(
            True,
            f"candidate accuracy {candidate.accuracy:.4f} >= production {production.accuracy:.4f} "
            f"- tolerance {tolerance}",
        )
    return Verdict(
        False,
        f"candidate accuracy {candidate.accuracy:.4f} < production {production.accuracy:.4f} "
        f"- tolerance {tolerance}; production kept",
    )
