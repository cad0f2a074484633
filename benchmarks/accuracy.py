"""Accuracy benchmark (not a test): train a preset on ../shared/data/tweets-train.jsonl with the offline
base, then evaluate the served int8 (and fp32) ONNX model on ../shared/data/tweets-val.jsonl.

    python benchmarks/accuracy.py --preset best --registry /work/notes/registry      # train + evaluate
    python benchmarks/accuracy.py --preset distilled --teacher v0001 --registry DIR  # a distilled student
    python benchmarks/accuracy.py --model v0001 v0002 --registry DIR                 # side by side

Prints one JSON object: training time, PyTorch/ONNX fp32 and int8 accuracy, macro F1, and the raw
speed of every variant (the worker's classifier, 2,000 validation tweets, best of two passes, the
models interleaved in one run so their speeds compare on this host).

Generalization, leave one source out (issue #27): ``--hold-out-source sts-gold`` trains on
tweets-train.jsonl without that source's tweets (tweets-val.jsonl without them for the gates) and
scores on every tweet of the source, in either file, next to a TF-IDF + logistic regression
baseline trained on the same tweets:

    python benchmarks/accuracy.py --preset fast --hold-out-source sts-gold --registry DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
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
    parser.add_argument("--max-samples", type=int, help="training tweets used (none: the preset's cap)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a preset field, e.g. --set epochs=1 --set learning_rate=2e-4 (VALUE read as JSON, else text)",
    )
    parser.add_argument("--transfer", nargs="*", help="the student's transfer texts (see tweetpulse train)")
    parser.add_argument("--output", type=Path, help="keep the work folder (checkpoints, curve) here")
    parser.add_argument(
        "--hold-out-source",
        metavar="SOURCE",
        help="train without this shared/data source (e.g. sts-gold, sanders) and score on its tweets",
    )
    args = parser.parse_args()
    registry = ModelRegistry(args.registry)
    result: dict[str, object] = {}
    versions = args.model
    train, val, scored = SHARED / "tweets-train.jsonl", SHARED / "tweets-val.jsonl", None
    if args.hold_out_source:
        folder = Path(tempfile.mkdtemp(prefix="holdout-"))
        train, val, scored = hold_out(args.hold_out_source, folder)
        result["hold_out"] = {"source": args.hold_out_source, "scored_tweets": len(scored)}
        result["tfidf_baseline_accuracy"] = round(tfidf_accuracy(read_labeled(train), scored), 4)
    if versions is None:
        from tweetpulse.training.pipeline import train_and_publish
        from tweetpulse.training.presets import TrainConfig

        config = TrainConfig(
            data=[str(train)],
            val=str(val),
            preset=args.preset,
            teacher=args.teacher,
            transfer=args.transfer,
            max_steps=args.max_steps,
            max_samples=args.max_samples,
            overrides=dict(map(preset_field, args.set)),
            output=args.output,
            registry_root=args.registry,
        )
        started = time.monotonic()
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs: stdout is the JSON
            versions = [train_and_publish(config, load_settings())]
        result["pipeline_seconds"] = round(time.monotonic() - started, 1)
    artifacts = [registry.load(v) for v in versions]
    if args.speed_only:
        result["gates"] = {a.version: a.manifest.get("export") for a in artifacts}
    else:
        examples = scored or read_labeled(SHARED / "tweets-val.jsonl")
        result["models"] = {a.version: evaluate_variants(a, examples) for a in artifacts}
    result["texts_per_second"] = side_by_side_speed(artifacts, args.speed_texts)
    print(json.dumps(result, indent=2, sort_keys=True))
    if args.hold_out_source:
        shutil.rmtree(train.parent, ignore_errors=True)  # the filtered copies of the shared files


def preset_field(assignment: str) -> tuple[str, object]:
    """FIELD=VALUE from --set, VALUE read as JSON when it parses (numbers, lists), else as text."""
    field, _, value = assignment.partition("=")
    try:
        return field, json.loads(value)
    except json.JSONDecodeError:
        return field, value


def hold_out(source: str, folder: Path) -> tuple[Path, Path, list[tuple[str, str]]]:
    """Training and validation files without `source`'s tweets, and every tweet of `source`."""
    scored: list[tuple[str, str]] = []
    files = []
    for name in ("tweets-train.jsonl", "tweets-val.jsonl"):
        kept = []
        for line in (SHARED / name).read_text().splitlines():
            row = json.loads(line)
            if row.get("source") == source:
                scored.append((row["text"], row["label"]))
            else:
                kept.append(line)
        (folder / name).write_text("\n".join(kept) + "\n")
        files.append(folder / name)
    if not scored:
        raise SystemExit(f"--hold-out-source {source}: no tweets of that source in {SHARED}")
    return files[0], files[1], scored


def tfidf_accuracy(train: list[tuple[str, str]], scored: list[tuple[str, str]]) -> float:
    """The bag-of-words baseline: TF-IDF (1-2 grams) + logistic regression, trained on `train`."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    features = vectorizer.fit_transform([text for text, _ in train])
    model = LogisticRegression(C=4, max_iter=2000).fit(features, [label for _, label in train])
    predicted = model.predict(vectorizer.transform([text for text, _ in scored]))
    return sum(p == label for p, (_, label) in zip(predicted, scored, strict=True)) / len(scored)


def evaluate_variants(artifact, examples: list[tuple[str, str]]) -> dict[str, object]:
    from tweetpulse.training.evaluate import evaluate_artifact

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
