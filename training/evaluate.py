"""Evaluate an exported ONNX model on a labeled file: accuracy, macro F1, per-class precision and
recall, confusion matrix. Needs only onnxruntime and tokenizers (no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tweetpulse.contracts import LABELS
from tweetpulse.processors.classifier import Classifier
from tweetpulse.registry import ArtifactError, ModelArtifact, ModelRegistry, load_artifact

if TYPE_CHECKING:
    from tweetpulse.training.data import Example


def resolve_model(model: str | None, registry: ModelRegistry) -> ModelArtifact:
    """``None``: the registry's production version; a folder path; or a version name. Verified."""
    if model is None:
        return registry.load()
    if Path(model).expanduser().is_dir():
        return load_artifact(Path(model).expanduser())
    if model in registry.versions():
        return registry.load(model)
    raise ArtifactError(f"{model!r} is neither a model folder nor a version in {registry.root}")


def classification_report(truth: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro F1, per-class precision/recall/F1/support and the confusion matrix
    (rows: true label, columns: predicted; label order negative, positive)."""
    n = len(LABELS)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (truth, predicted), 1)
    per_class: dict[str, dict[str, float]] = {}
    for i, label in enumerate(LABELS):
        tp = confusion[i, i]
        precision = tp / confusion[:, i].sum() if confusion[:, i].sum() else 0.0
        recall = tp / confusion[i, :].sum() if confusion[i, :].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(confusion[i, :].sum()),
        }
    return {
        "examples": len(truth),
        "accuracy": float(np.trace(confusion) / max(1, confusion.sum())),
        "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
        "per_class": per_class,
        "labels": list(LABELS),
        "confusion_matrix": confusion.tolist(),
    }


def evaluate_artifact(
    artifact: ModelArtifact, examples: list[Example], variant: str = "int8"
) -> dict[str, Any]:
    """Score `examples` with one variant of a published model, through the worker's classifier."""
    if not examples:
        raise ValueError("no labeled examples to evaluate")
    classifier = Classifier(artifact, provider="cpu", variant=variant)  # type: ignore[arg-type]
    truth = np.array([LABELS.index(label) for _, label in examples])
    predicted = classifier.predict([t for t, _ in examples])
    model = {"version": artifact.version, "path": str(artifact.path), "variant": variant}
    return {"model": model, **classification_report(truth, predicted)}


def plot_confusion(report: dict[str, Any], path: Path) -> Path:
    """The confusion matrix as a PNG, counts in the cells."""
    import matplotlib  # matplotlib: only with the train extra (evaluation itself needs only the base)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): no display needed

    matrix = np.array(report["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    labels = report["labels"]
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=color)
    ax.set_title(f"accuracy {report['accuracy']:.3f}, macro F1 {report['macro_f1']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def format_report(report: dict[str, Any]) -> str:
    model = report["model"]
    lines = [
        f"model {model['version']} ({model['variant']}) on {report['examples']} examples",
        f"accuracy  {report['accuracy']:.4f}",
        f"macro F1  {report['macro_f1']:.4f}",
        f"{'class':<10} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}",
    ]
    for label, c in report["per_class"].items():
        lines.append(
            f"{label:<10} {c['precision']:>9.4f} {c['recall']:>7.4f} {c['f1']:>7.4f} {c['support']:>8}"
        )
    lines.append("confusion (rows true, columns predicted: " + ", ".join(report["labels"]) + ")")
    lines.extend("  " + " ".join(f"{n:>6}" for n in row) for row in report["confusion_matrix"])
    return "\n".join(lines)
