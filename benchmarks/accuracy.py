"""Accuracy benchmark (not a test): train a preset on ../shared/data/tweets-train.jsonl with the offline
base, then evaluate the served int8 (and fp32) ONNX model on ../shared/data/tweets-val.jsonl.

    python benchmarks/accuracy.py --preset best --registry /work/notes/registry      # train + evaluate
    python benchmarks/accuracy.py --preset distilled --teacher v0001 --registry DIR  # a distilled student
    python benchmarks/accuracy.py --model v0001 v0002 --registry DIR                 # side by side

Prints one JSON object: training time, PyTorch/ONNX fp32 and int8 accuracy, macro F1, and the raw
speed of every variant (the worker's classifier, 2,000 validation tweets, best of two passes, the
models interleaved in one run so their speeds compare on this host).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tweetpulse.registry import ModelRegistry
from tweetpulse.settings import load_settings
from tweetpulse.tweetfiles import read_labeled

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--registry", type=Path, required=True, help="registry root to publish into / read")
    parser.add_argument("--model", nargs="+", help="evaluate these versions only (no training)")
    parser.add_argument(
        "--speed-only",
        action="store_true",
        help="with --model: only the side-by-side speed (accuracy from the gates)",
    )
    parser.add_argument("--speed-texts", type=int, default=2000, help="validation tweets timed per model")
    parser.add_argument("--teacher", help="the student's teacher (see tweetpulse train --teacher)")
    parser.add_argument("--preset", default="best", help="preset to train (default best)")
    parser.add_argument("--max-steps", type=int, help="cap the training steps (for a quick look)")
    parser.add_argument("--output", type=Path, help="keep the work folder (checkpoints, curve) here")
    args = parser.parse_args()
    registry = ModelRegistry(args.registry)
    result: dict[str, object] = {}
    versions = args.model
    if versions is None:
        from tweetpulse.training.pipeline import train_and_publish
        from tweetpulse.training.presets import TrainConfig

        config = TrainConfig(
            data=[str(SHARED / "tweets-train.jsonl")],
            val=str(SHARED / "tweets-val.jsonl"),
            preset=args.preset,
            teacher=args.teacher,
            max_steps=args.max_steps,
            output=args.output,
            registry_root=args.registry,
        )
        started = time.monotonic()
        versions = [train_and_publish(config, load_settings())]
        result["pipeline_seconds"] = round(time.monotonic() - started, 1)
    artifacts = [registry.load(v) for v in versions]
    if args.speed_only:
        result["gates"] = {a.version: a.manifest.get("export") for a in artifacts}
    else:
        result["models"] = {a.version: evaluate_variants(a) for a in artifacts}
    result["texts_per_second"] = side_by_side_speed(artifacts, args.speed_texts)
    print(json.dumps(result, indent=2, sort_keys=True))


def evaluate_variants(artifact) -> dict[str, object]:
    from tweetpulse.training.evaluate import evaluate_artifact

    examples = read_labeled(SHARED / "tweets-val.jsonl")
    manifest = artifact.manifest
    out: dict[str, object] = {
        "preset": manifest.get("preset"),
        "base": manifest.get("base_model"),
        "train_seconds": (manifest.get("metrics") or {}).get("train_seconds"),
        "torch_fp32_accuracy": (manifest.get("metrics") or {}).get("torch_fp32_accuracy"),
        "int8_scheme": (manifest.get("export") or {}).get("int8_scheme"),
        "distillation": manifest.get("distillation"),
        "val_examples": len(examples),
    }
    for variant in ("int8", "fp32"):
        report = evaluate_artifact(artifact, examples, variant)
        out[variant] = {"accuracy": round(report["accuracy"], 4), "macro_f1": round(report["macro_f1"], 4)}
    return out


def side_by_side_speed(artifacts: list, texts_n: int = 2000, rounds: int = 2) -> dict[str, dict[str, float]]:
    """Texts per second of each model's variants through the worker's classifier, best of `rounds`,
    the models taking turns within each round."""
    from tweetpulse.processors.classifier import Classifier

    texts = [t for t, _ in read_labeled(SHARED / "tweets-val.jsonl")][:texts_n]
    classifiers = {
        (a.version, variant): Classifier(a, provider="cpu", variant=variant)
        for a in artifacts
        for variant in ("int8", "fp32")
    }
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for key, classifier in classifiers.items():
            started = time.perf_counter()
            classifier.classify(texts)
            best[key] = max(best.get(key, 0.0), len(texts) / (time.perf_counter() - started))
    out: dict[str, dict[str, float]] = {}
    for (version, variant), tps in best.items():
        out.setdefault(version, {})[variant] = round(tps, 1)
    return out


if __name__ == "__main__":
    main()
