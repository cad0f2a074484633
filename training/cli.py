"""`tweetpulse train`, `tweetpulse export` and `tweetpulse evaluate` (heavy imports inside handlers)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from tweetpulse.options import add_command_options, add_settings_options, command_values
from tweetpulse.registry import ArtifactError, ModelRegistry
from tweetpulse.settings import Settings
from tweetpulse.training.data import DataError, load_source, make_splits, parse_hf_spec
from tweetpulse.training.evaluate import evaluate_artifact, format_report, plot_confusion, resolve_model
from tweetpulse.training.pipeline import export_adapter, train_and_publish
from tweetpulse.training.presets import DEFAULT_PRESET, PRESETS, TUNABLE, Preset, TrainConfig
from tweetpulse.tweetfiles import TweetFileError, read_labeled

PUBLISHING = ("publish", "promote", "announce", "int8_max_drop", "parity_atol")


class EvaluateOptions(BaseModel):
    """`tweetpulse evaluate`'s own options."""

    model: str | None = Field(
        None, description="a registry version (e.g. v0003) or a model folder (none: production)"
    )
    variant: Literal["int8", "fp32"] = Field("int8", description="which ONNX graph")
    max_samples: int | None = Field(None, ge=1, description="score only the first N examples")
    plot: Path | None = Field(None, description="write the confusion matrix as a PNG here")
    json_report: bool = Field(
        False,
        description="print one JSON object (accuracy, macro_f1, ...)",
        json_schema_extra={"cli": ["--json"]},
    )


def register(sub: argparse._SubParsersAction) -> None:
    _register_train(sub)
    _register_export(sub)
    _register_evaluate(sub)


def _register_train(sub: argparse._SubParsersAction) -> None:
    presets = "; ".join(_describe(p) for p in PRESETS.values())
    parser = sub.add_parser(
        "train",
        help="fine-tune (LoRA on MPNet's first 6 layers by default), export to ONNX, verify and publish",
        description="Fine-tune a base model with the Trainer (LoRA with PEFT, merged; or every weight), "
        "optionally distilled from a teacher's softened probabilities, export to ONNX with Optimum "
        "(optimized fp32 + dynamic int8), check parity (ONNX vs PyTorch logits; int8 within 1 point "
        "of fp32 on the validation set, and not slower) and publish to the model registry. The "
        f"default preset, {DEFAULT_PRESET}, generalized best per minute of training (README, "
        "training/SEARCH.md); the distilled presets first train (or reuse from the registry) the best "
        "preset's model on the same data as their teacher. Presets: " + presets + ".",
    )
    add_command_options(parser, TrainConfig)
    add_settings_options(parser, "registry")
    add_command_options(parser, Preset, TUNABLE, dest_prefix="override_", overriding="the preset's")
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
        + (", no dropout" if p.dropout == 0 and p.lora_dropout == 0 else "")
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
    parser.add_argument("--val", required=True, metavar="SOURCE", help="validation data for the gates")
    parser.add_argument("--output", type=Path, required=True, help="work folder (the export lands in it)")
    add_command_options(parser, TrainConfig, ("base", "max_val_samples", "seed", *PUBLISHING))
    add_settings_options(parser, "registry")
    add_command_options(parser, Preset, ("max_length",), dest_prefix="override_", overriding="128")
    parser.set_defaults(handler=_export)


def _register_evaluate(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="accuracy, macro F1, per-class precision/recall and confusion matrix of an ONNX model",
        description="Score an exported model on a labeled file (any tweetpulse.tweetfiles format).",
    )
    parser.add_argument("--data", required=True, help="labeled file (JSONL, CSV, sentiment140, tweeteval)")
    add_command_options(parser, EvaluateOptions)
    add_settings_options(parser, "registry")
    parser.set_defaults(handler=_evaluate)


def _config(args: argparse.Namespace) -> TrainConfig:
    overrides = {k[9:]: v for k, v in vars(args).items() if k.startswith("override_") and v is not None}
    return TrainConfig(**command_values(args, TrainConfig), overrides=overrides)


def check_sources(specs: list[str | None]) -> None:
    """Refuse a malformed hf: spec or a missing data file before the slow training imports (the same
    DataError load_source would raise once they are done)."""

    for spec in filter(None, specs):
        if spec.startswith("hf:"):
            parse_hf_spec(spec[3:])
        elif spec != "builtin" and not spec.startswith("kafka:") and not Path(spec).expanduser().is_file():
            raise DataError(f"{spec}: no such data file (or use builtin, hf:NAME, kafka:TOPIC)")


def _train(args: argparse.Namespace, settings: Settings) -> int:
    check_sources([*args.data, args.val, *(args.transfer or [])])

    try:
        config = _config(args)
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

    try:
        config = _config(args)
        val = load_source(args.val, settings)
        val = make_splits(val, val, seed=config.seed, max_val=args.max_val_samples).val
        max_length = args.override_max_length or 128
        folder, version = export_adapter(args.adapter, val, max_length, config, settings, args.output)
    except (DataError, TweetFileError):
        raise  # bad data input: one line and exit 2 (tweetpulse.cli.run_command)
    except (ArtifactError, ValueError, FileNotFoundError, RuntimeError) as exc:  # the export failed
        print(f"tweetpulse export: {exc}", file=sys.stderr)
        return 1
    print(version or folder)
    return 0


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:

    try:
        if not Path(args.data).is_file():
            raise DataError(f"{args.data}: no such data file")
        artifact = resolve_model(args.model, ModelRegistry(settings.registry.root))
        examples = read_labeled(args.data)[: args.max_samples]
        report = evaluate_artifact(artifact, examples, args.variant)
    except (DataError, TweetFileError):
        raise  # bad data input: one line and exit 2 (tweetpulse.cli.run_command)
    except (ArtifactError, ValueError, FileNotFoundError) as exc:
        print(f"tweetpulse evaluate: {exc}", file=sys.stderr)
        return 1
    if args.plot:
        report["plot"] = str(plot_confusion(report, args.plot))
    print(json.dumps(report, sort_keys=True) if args.json_report else format_report(report))
    return 0
