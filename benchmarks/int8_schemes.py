"""Int8 weight schemes of one exported model, side by side (not a test): each re-quantized from the
same fp32 graph, scored on the first N tweets of ../shared/data/tweets-val.jsonl through the worker's
classifier, with texts/s on 512 of them.

    python benchmarks/int8_schemes.py REGISTRY/versions/v0001 --texts 1000

How training/SEARCH.md found that MPNet's u8s8 loss comes from per-tensor weight scales.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tweetpulse.contracts import LABELS
from tweetpulse.registry import VARIANTS, ModelArtifact, load_artifact
from tweetpulse.training.export import INT8_SCHEMES, quantize_int8, serving_classifier, throughput
from tweetpulse.tweetfiles import read_labeled

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def score(artifact: ModelArtifact, variant: str, texts: list[str], truth: np.ndarray) -> dict[str, float]:
    """Accuracy and speed, measured as the export gate measures them."""
    classifier = serving_classifier(artifact, variant)
    accuracy = float((classifier.predict(texts) == truth).mean())
    return {"accuracy": round(accuracy, 4), "texts_per_second": round(throughput(classifier, texts[:512]), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="a published model folder")
    parser.add_argument("--texts", type=int, default=1000, help="validation tweets scored")
    args = parser.parse_args()
    artifact = load_artifact(args.model)
    examples = read_labeled(SHARED / "tweets-val.jsonl")[: args.texts]
    texts, truth = [t for t, _ in examples], np.array([LABELS.index(label) for _, label in examples])
    results = {"fp32": score(artifact, "fp32", texts, truth)}
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in INT8_SCHEMES:
            folder = Path(tmp) / scheme
            shutil.copytree(args.model, folder, ignore=shutil.ignore_patterns(VARIANTS["int8"]))
            quantize_int8(folder / VARIANTS["fp32"], folder / VARIANTS["int8"], scheme)
            results[scheme] = score(ModelArtifact(folder, artifact.manifest), "int8", texts, truth)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
