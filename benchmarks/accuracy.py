"""Accuracy benchmark (not a test): train a preset on ../shared/data/tweets-train.jsonl with the offline
base, then evaluate the served int8 (and fp32) ONNX model on ../shared/data/tweets-val.jsonl.

    python benchmarks/accuracy.py --preset best --registry /work/notes/registry      # train + evaluate
    python benchmarks/accuracy.py --model v0001 --registry /work/notes/registry      # evaluate only

Prints one JSON object: training time, PyTorch/ONNX fp32 and int8 accuracy, macro F1, texts/s.
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
    parser.add_argument("--model", help="evaluate this version only (no training)")
    parser.add_argument("--preset", default="best", help="preset to train (default best)")
    parser.add_argument("--max-steps", type=int, help="cap the training steps (for a quick look)")
    parser.add_argument("--output", type=Path, help="keep the work folder (checkpoints, curve) here")
    args = parser.parse_args()
    registry = ModelRegistry(args.registry)
    result: dict[str, object] = {}
    version = args.model
    if version is None:
        from tweetpulse.training.pipeline import train_and_publish
        from tweetpulse.training.presets import TrainConfig

        config = TrainConfig(
            data=[str(SHARED / "tweets-train.jsonl")],
            val=str(SHARED / "tweets-val.jsonl"),
            preset=args.preset,
            max_steps=args.max_steps,
            output=args.output,
            registry_root=args.registry,
        )
        started = time.monotonic()
        version = train_and_publish(config, load_settings())
        result["pipeline_seconds"] = round(time.monotonic() - started, 1)
    artifact = registry.load(version)
    result.update(
        version=version, preset=artifact.manifest.get("preset"), metrics=artifact.manifest.get("metrics")
    )
    result.update(evaluate_variants(artifact))
    print(json.dumps(result, indent=2, sort_keys=True))


def evaluate_variants(artifact) -> dict[str, object]:
    from tweetpulse.training.evaluate import evaluate_artifact

    examples = read_labeled(SHARED / "tweets-val.jsonl")
    out: dict[str, object] = {"val_examples": len(examples)}
    for variant in ("int8", "fp32"):
        started = time.monotonic()
        report = evaluate_artifact(artifact, examples, variant, batch_size=32)
        seconds = time.monotonic() - started
        out[variant] = {
            "accuracy": round(report["accuracy"], 4),
            "macro_f1": round(report["macro_f1"], 4),
            "texts_per_second": round(len(examples) / seconds, 1),
        }
    return out


if __name__ == "__main__":
    main()
