"""train -> merge -> export -> verify -> publish, behind one function (CLI and retraining call it).

Torch-free at import: fine-tuning (torch, transformers, peft) loads only when a run starts.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tweetpulse.registry import ModelRegistry, announce_production
from tweetpulse.settings import Settings
from tweetpulse.training.base import resolve_base
from tweetpulse.training.data import Example, Splits, load_source, make_splits
from tweetpulse.training.distill import (
    Teacher,
    TransferSet,
    build_transfer_set,
    named_teacher,
    published_teacher,
)
from tweetpulse.training.export import check_parity, export_onnx, write_metrics
from tweetpulse.training.lineage import write_training_keys
from tweetpulse.training.presets import TrainConfig

log = logging.getLogger(__name__)

PARITY_SAMPLE = 64
TEACHER_PRESET = "best"


def load_splits(config: TrainConfig, settings: Settings) -> Splits:
    """The configured training and validation examples, deterministically split and capped."""
    train = [ex for spec in config.data for ex in load_source(spec, settings)]
    val = load_source(config.val, settings) if config.val else None
    return make_splits(
        train,
        val,
        config.val_fraction,
        config.seed,
        config.sample_cap(),
        config.max_val_samples,
        balance=config.balance,
    )


def export_and_verify(
    model: Any, tokenizer: Any, val: list[Example], max_length: int, work_dir: Path, config: TrainConfig
) -> tuple[Path, dict[str, Any]]:
    """Export a merged model and pass the parity gates; returns the folder and the gate results."""
    from tweetpulse.training.finetune import torch_logits  # torch: only with the train extra

    sample = [t for t, _ in val[:PARITY_SAMPLE]]
    reference = torch_logits(model, tokenizer, sample, max_length)
    folder = export_onnx(model, tokenizer, work_dir / "export", work_dir)
    report = check_parity(
        folder, reference, sample, val, max_length, config.parity_atol, config.int8_max_drop
    )
    return folder, {"inputs": report.inputs, "outputs": ["logits"], "export": report.parity}


def distillation_set(config: TrainConfig, settings: Settings, splits: Splits) -> TransferSet | None:
    """The teacher's logits over the training split and the transfer texts; None without a teacher."""
    spec = config.teacher_spec()
    if spec is None:
        return None
    teacher = resolve_teacher(spec, config, settings)
    return build_transfer_set(teacher, splits.train, splits.val, config.transfer_sources(), settings)


def resolve_teacher(spec: str, config: TrainConfig, settings: Settings) -> Teacher:
    """A teacher from --teacher: "best" (trained when there is none), or what
    :func:`~tweetpulse.training.distill.named_teacher` resolves."""
    registry = ModelRegistry(config.registry_root or settings.registry.root)
    if spec == TEACHER_PRESET:
        return published_teacher(registry.load(best_teacher(config, settings, registry)))
    return named_teacher(spec, registry)


def best_teacher(config: TrainConfig, settings: Settings, registry: ModelRegistry) -> str:
    """The newest registry version of the `best` preset trained on the same data sources; trains
    and publishes one (not promoted) when there is none."""
    wanted = {"train": config.data, "val": config.val or f"{config.val_fraction:.0%} split"}
    for version in reversed(registry.versions()):
        manifest = registry.load(version).manifest
        same_data = manifest.get("data") == wanted and manifest.get("balance", False) == config.balance
        if manifest.get("preset") == TEACHER_PRESET and same_data:
            log.info("reusing teacher", extra={"version": version})
            return version
    log.info("training the teacher", extra={"preset": TEACHER_PRESET, "data": config.data})
    teacher_config = TrainConfig(
        data=config.data,
        val=config.val,
        val_fraction=config.val_fraction,
        preset=TEACHER_PRESET,
        balance=config.balance,
        seed=config.seed,
        max_val_samples=config.max_val_samples,
        registry_root=registry.root,
        progress=config.progress,
        parity_atol=config.parity_atol,
        int8_max_drop=config.int8_max_drop,
    )
    version = train_and_publish(teacher_config, settings)
    assert version is not None  # published
    return version


def train_and_export(config: TrainConfig, settings: Settings, work_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Fine-tune, merge, export and verify; returns the export folder and its manifest fields.

    Raises ParityError (nothing is published) when the export fails its gates.
    """
    from tweetpulse.training.finetune import finetune, plot_curve  # torch: only with the train extra

    preset = config.resolved_preset()
    base_path, base_name = resolve_base(config.base_model())
    splits = load_splits(config, settings)
    transfer = distillation_set(config, settings, splits)
    log.info("training", extra={"preset": preset.name, "base": base_name, "train": len(splits.train)})
    result = finetune(
        base_path,
        splits,
        preset,
        work_dir,
        config.max_steps,
        config.target_modules,
        config.seed,
        config.progress,
        transfer,
    )
    curve = plot_curve(result.log_history, work_dir / "training-curve.png")
    folder, gates = export_and_verify(
        result.model, result.tokenizer, splits.val, preset.max_length, work_dir, config
    )
    shutil.copy(curve, folder / curve.name)
    # Published with the model (the manifest checksums it): the retrain gate never scores it on these.
    write_training_keys(folder, [t for t, _ in splits.train] + (transfer.unlabeled if transfer else []))
    metrics = {
        "val_examples": len(splits.val),
        "train_examples": len(splits.train),
        "torch_fp32_accuracy": result.eval_metrics.get("eval_accuracy"),
        "torch_fp32_eval_loss": result.eval_metrics.get("eval_loss"),
        "onnx_fp32_accuracy": gates["export"]["onnx_fp32_accuracy"],
        "onnx_int8_accuracy": gates["export"]["onnx_int8_accuracy"],
        "train_seconds": round(result.train_seconds, 1),
        "steps": result.steps,
        "log_history": result.log_history,
    }
    write_metrics(folder, metrics)
    fields = {
        "base_model": base_name,
        "preset": preset.name,
        "training": {  # the recipe as run: --teacher, --transfer and --max-samples over the preset's
            **{k: v for k, v in asdict(preset).items() if k not in ("r", "lora_alpha", "lora_dropout")},
            "teacher": config.teacher_spec(),
            "transfer": config.transfer_sources() if transfer else [],
            "max_samples": config.sample_cap(),
        },
        "lora": preset.lora_fields(result.target_modules),
        "distillation": transfer.manifest_fields(
            preset.temperature, preset.kd_weight, config.transfer_sources()
        )
        if transfer
        else None,
        "data": {"train": config.data, "val": config.val or f"{config.val_fraction:.0%} split"},
        "balance": config.balance,
        "data_fingerprint": splits.fingerprint(),
        "seed": config.seed,
        "max_steps": config.max_steps,
        "max_length": preset.max_length,
        "labels": ["negative", "positive"],
        **gates,
        "metrics": {k: v for k, v in metrics.items() if k != "log_history"},
        "trained_on": platform.node(),
        "trained_at": datetime.now(UTC).isoformat(),
    }
    return folder, fields


def publish(folder: Path, fields: dict[str, Any], config: TrainConfig, settings: Settings) -> str:
    """Publish an exported folder; with ``promote`` make it production (and announce it)."""
    registry = ModelRegistry(config.registry_root or settings.registry.root)
    version = registry.publish(folder, fields)
    log.info("published", extra={"version": version, "registry": str(registry.root)})
    if config.promote:
        registry.promote(version)
        if config.announce:
            announce_production(settings, version, registry_root=registry.root)
        log.info("promoted", extra={"version": version})
    return version


def train_and_publish(config: TrainConfig, settings: Settings) -> str | None:
    """Run the whole pipeline; returns the published version (None with publish=False).

    With ``promote`` the version becomes production, and with ``announce`` it is announced on the
    compacted models topic so that running processors hot-swap to it.
    """
    started = time.monotonic()
    work_dir = Path(config.output) if config.output else Path(tempfile.mkdtemp(prefix="tweetpulse-train-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        folder, fields = train_and_export(config, settings, work_dir)
        if not config.publish:
            log.info("exported, not published", extra={"folder": str(folder)})
            return None
        return publish(folder, fields, config, settings)
    finally:
        if config.output is None:
            shutil.rmtree(work_dir, ignore_errors=True)
        log.info("pipeline finished", extra={"seconds": round(time.monotonic() - started, 1)})


def export_adapter(
    adapter: Path,
    val: list[Example],
    max_length: int,
    config: TrainConfig,
    settings: Settings,
    work_dir: Path,
) -> tuple[Path, str | None]:
    """Merge a saved adapter (``WORK/adapter`` of a training run), export, verify, maybe publish."""
    from tweetpulse.training.finetune import load_merged  # torch: only with the train extra

    lora = json.loads((adapter / "adapter_config.json").read_text())
    # The adapter names the base it was trained on; --base overrides (e.g. a moved folder).
    base_path, base_name = resolve_base(config.base or lora.get("base_model_name_or_path"))
    model, tokenizer = load_merged(base_path, adapter)
    folder, gates = export_and_verify(model, tokenizer, val, max_length, work_dir, config)
    parity = gates["export"]
    write_metrics(
        folder, {k: parity[k] for k in ("val_examples", "onnx_fp32_accuracy", "onnx_int8_accuracy")}
    )
    fields = {
        "base_model": base_name,
        "adapter": str(adapter),
        "lora": {
            k: lora.get(k) for k in ("r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save")
        },
        "max_length": max_length,
        "labels": ["negative", "positive"],
        **gates,
    }
    version = publish(folder, fields, config, settings) if config.publish else None
    return folder, version
