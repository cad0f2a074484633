"""The deploy gate: score the candidate and production on the same fixed validation set, then decide.

Both models are scored by the same code path (the ONNX graph through
:class:`tweetpulse.training.predict.OnnxClassifier`, as `tweetpulse train` verifies exports), so the
only difference between the two numbers is the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tweetpulse.contracts import LABELS, Label
from tweetpulse.registry import VARIANTS, ArtifactError


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


def score_model(
    folder: Path, examples: list[tuple[str, Label]], variant: str = "fp32", max_length: int = 128
) -> Score:
    """Accuracy and macro-F1 of the exported model in `folder` on `examples`."""
    import numpy as np

    from tweetpulse.training.predict import OnnxClassifier

    if not examples:
        raise ValueError("cannot score a model on an empty validation set")
    graph = folder / VARIANTS[variant]
    if not graph.is_file():
        raise ArtifactError(f"{folder}: no {graph.name} to score")
    classifier = OnnxClassifier(graph, folder, max_length)
    predicted = classifier.predict([text for text, _ in examples])
    truth = np.array([LABELS.index(label) for _, label in examples])
    return Score(float((predicted == truth).mean()), _macro_f1(predicted, truth), len(examples))


def _macro_f1(predicted: Any, truth: Any) -> float:
    scores = []
    for cls in range(len(LABELS)):
        tp = int(((predicted == cls) & (truth == cls)).sum())
        fp = int(((predicted == cls) & (truth != cls)).sum())
        fn = int(((predicted != cls) & (truth == cls)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


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
