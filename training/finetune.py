"""LoRA fine-tuning with the Hugging Face Trainer, then merging the adapter into the base."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from torch.nn import functional
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

from tweetpulse.training.base import ID2LABEL, LABEL2ID, bf16_native, target_modules
from tweetpulse.training.data import Example, Splits
from tweetpulse.training.distill import TransferSet
from tweetpulse.training.presets import Preset

log = logging.getLogger(__name__)

IGNORE = -100  # the label of a teacher-only row (cross-entropy's ignore_index)


@dataclass
class FinetuneResult:
    model: PreTrainedModel  # the merged model (adapter folded into the base), in eval mode
    tokenizer: PreTrainedTokenizerBase
    target_modules: list[str]
    log_history: list[dict[str, Any]]
    eval_metrics: dict[str, float]
    train_seconds: float
    steps: int


def tokenize(
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    max_length: int,
    transfer: TransferSet | None = None,
) -> list[dict]:
    """Unpadded features (the collator pads each batch to its longest text); with a transfer set,
    every row also carries the teacher's logits, and its teacher-only texts come as unlabeled rows."""
    rows: list[tuple[str, int]] = [(t, LABEL2ID[label]) for t, label in examples]
    if transfer is not None:
        rows += [(t, IGNORE) for t in transfer.unlabeled]
    encoded = tokenizer([t for t, _ in rows], truncation=True, max_length=max_length)
    features = [{**{k: encoded[k][i] for k in encoded}, "labels": label} for i, (_, label) in enumerate(rows)]
    if transfer is not None:
        for feature, (text, _) in zip(features, rows, strict=True):
            feature["teacher_logits"] = transfer.logits[text].tolist()
    return features


def distillation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher: torch.Tensor | None,
    temperature: float,
    kd_weight: float,
) -> torch.Tensor:
    """Hinton et al. (2015): kd_weight x T^2 x KL(teacher || student) on temperature-softened
    probabilities, plus (1 - kd_weight) x cross-entropy on the labeled rows (labels != IGNORE).
    Without teacher logits (evaluation rows): the cross-entropy alone."""
    logits = logits.float()
    labeled = labels != IGNORE
    hard = functional.cross_entropy(logits[labeled], labels[labeled]) if labeled.any() else logits.sum() * 0
    if teacher is None:
        return hard
    t = temperature
    soft = functional.kl_div(
        functional.log_softmax(logits / t, dim=-1),
        functional.softmax(teacher.float() / t, dim=-1),
        reduction="batchmean",
    )
    return kd_weight * t * t * soft + (1 - kd_weight) * hard


class DistillationTrainer(Trainer):
    """The Trainer with :func:`distillation_loss`; rows carry the teacher's logits as `teacher_logits`."""

    def __init__(self, *args: Any, temperature: float, kd_weight: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.temperature = temperature
        self.kd_weight = kd_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher = inputs.pop("teacher_logits", None)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = distillation_loss(outputs.logits, labels, teacher, self.temperature, self.kd_weight)
        return (loss, outputs) if return_outputs else loss


def _accuracy(eval_pred: Any) -> dict[str, float]:
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def classifier_config(source: str | Path, layers: int | None = None) -> PretrainedConfig:
    """A base's config for the two-label classifier, cut to its first `layers` transformer layers (a
    smaller, faster model: only those layers are built and loaded)."""
    config = AutoConfig.from_pretrained(source, num_labels=2, id2label=ID2LABEL, label2id=LABEL2ID)
    if layers is not None:
        if not 0 < layers <= config.num_hidden_layers:
            raise ValueError(f"layers {layers}: the base has {config.num_hidden_layers} transformer layers")
        config.num_hidden_layers = layers
    return config


def set_dropout(config: PretrainedConfig, p: float) -> None:
    """Every dropout probability of a model config (hidden, attention, classifier: names differ by
    architecture) set to `p`."""
    for key, value in list(vars(config).items()):
        if "dropout" in key and (value is None or isinstance(value, float)):
            setattr(config, key, p)


def load_base(base: str, targets: list[str] | None, preset: Preset):
    """The base model with a fresh classification head, cut to `preset.layers` and with LoRA adapters
    (for the lora method), and its tokenizer."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        config = classifier_config(base, preset.layers)
        if preset.dropout is not None:
            set_dropout(config, preset.dropout)
        model = AutoModelForSequenceClassification.from_pretrained(
            base, config=config, ignore_mismatched_sizes=True
        )
    except OSError as exc:  # not a folder, and the hub is unreachable or has no such model
        raise FileNotFoundError(f"cannot load base model {base!r}: {exc}") from None
    if preset.method == "full":
        return model, tokenizer, []
    targets = targets or target_modules(model.config.model_type, preset.targets)
    lora = LoraConfig(
        task_type="SEQ_CLS",  # also trains and saves the new classifier head (modules_to_save)
        r=preset.r,
        lora_alpha=preset.lora_alpha,
        lora_dropout=preset.lora_dropout,
        target_modules=targets,
    )
    return get_peft_model(model, lora), tokenizer, targets


def finetune(
    base: str,
    splits: Splits,
    preset: Preset,
    work_dir: Path,
    max_steps: int | None = None,
    targets: list[str] | None = None,
    seed: int = 13,
    progress: bool = True,
    transfer: TransferSet | None = None,
) -> FinetuneResult:
    """Train with `preset` (LoRA adapters, or every weight), on the labels and, with a transfer set, on
    the teacher's logits; evaluate at each epoch's end; return the merged model."""
    torch.manual_seed(seed)
    model, tokenizer, targets = load_base(base, targets, preset)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("model ready", extra={"method": preset.method, "trainable": trainable, "total": total})
    train_set = tokenize(tokenizer, splits.train, preset.max_length, transfer)
    val_set = tokenize(tokenizer, splits.val, preset.max_length)
    steps_per_epoch = -(-len(train_set) // preset.batch_size)
    args = TrainingArguments(
        output_dir=str(work_dir / "checkpoints"),
        learning_rate=preset.learning_rate,
        per_device_train_batch_size=preset.batch_size,
        per_device_eval_batch_size=64,
        num_train_epochs=preset.epochs,
        max_steps=max_steps or -1,
        warmup_ratio=preset.warmup_ratio,
        weight_decay=preset.weight_decay,
        lr_scheduler_type=preset.scheduler,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        save_only_model=True,
        logging_steps=max(1, min(50, steps_per_epoch // 20)),
        group_by_length=True,  # tweets are short: batch similar lengths, pad less
        seed=seed,
        data_seed=seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=bf16_native(),  # mixed precision: fp32 master weights, bf16 matmuls
        report_to=[],
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        # The rows carry `teacher_logits` for DistillationTrainer.compute_loss; by default the Trainer
        # drops every column forward() does not take, and the students learned from the labels alone.
        remove_unused_columns=False,
    )
    loss = {"temperature": preset.temperature, "kd_weight": preset.kd_weight} if transfer else {}
    trainer = (DistillationTrainer if transfer else Trainer)(
        **loss,
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_accuracy,
    )
    started = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - started
    # bf16 wraps forward() to cast outputs to fp32; the ONNX exporter must trace the plain forward.
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    evals = [e for e in trainer.state.log_history if "eval_accuracy" in e]  # the epoch-end evaluation
    eval_metrics = evals[-1] if evals else trainer.evaluate()
    eval_metrics = {k: float(v) for k, v in eval_metrics.items() if k.startswith("eval_")}
    log.info("fine-tuned", extra={"seconds": round(seconds, 1), **eval_metrics})
    if preset.method == "full":
        merged = model.eval()
        model.save_pretrained(work_dir / "model")
        tokenizer.save_pretrained(work_dir / "model")
    else:
        model.save_pretrained(work_dir / "adapter")  # for `tweetpulse export --adapter` later
        tokenizer.save_pretrained(work_dir / "adapter")
        model.config.save_pretrained(work_dir / "adapter")  # the base as trained: its layer cut
        merged = model.merge_and_unload().eval()
    return FinetuneResult(
        merged,
        tokenizer,
        targets,
        trainer.state.log_history,
        eval_metrics,
        seconds,
        trainer.state.global_step,
    )


def adapted_layers(adapter: Path) -> int | None:
    """How many of the base's first layers a saved adapter's weights reach (`layer.N`: the highest N
    plus one), None when it names no layers."""
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        return None
    with safe_open(str(weights), "pt") as f:
        found = [re.search(r"\.layer\.(\d+)\.", key) for key in f.keys()]  # noqa: SIM118 (not a dict)
    indices = [int(match.group(1)) for match in found if match]
    return max(indices) + 1 if indices else None


def load_merged(base: str, adapter: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A saved LoRA adapter (with its classifier head) merged into its base model, cut to the layers it
    was trained on: the adapter folder's config.json, or, for adapters saved without one, the layers
    its weights reach."""
    if (adapter / "config.json").is_file():
        config = classifier_config(adapter)
    else:
        config = classifier_config(base)
        layers = adapted_layers(adapter)
        if layers and layers < config.num_hidden_layers:
            cut = {"layers": layers, "base_layers": config.num_hidden_layers}
            log.warning("adapter without config.json: cutting the base to the layers it adapts", extra=cut)
            config = classifier_config(base, layers)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, config=config, ignore_mismatched_sizes=True
    )
    tokenizer_source = adapter if (adapter / "tokenizer.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    return PeftModel.from_pretrained(model, adapter).merge_and_unload().eval(), tokenizer


@torch.no_grad()
def torch_logits(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int
) -> np.ndarray:
    """PyTorch logits of `texts` (the reference for the ONNX parity gate)."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(texts), 64):
        batch = tokenizer(
            texts[i : i + 64], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        ).to(device)
        out.append(model(**batch).logits.float().cpu().numpy())
    return np.concatenate(out)


def plot_curve(log_history: list[dict[str, Any]], path: Path) -> Path:
    """Training loss and validation accuracy against the step, as a PNG."""
    import matplotlib  # matplotlib: slow to import, and only with the train extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): no display needed

    losses = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    evals = [(e["step"], e["eval_accuracy"]) for e in log_history if "eval_accuracy" in e]
    fig, ax = plt.subplots(figsize=(7, 4))
    if losses:
        ax.plot(*zip(*losses, strict=True), label="training loss", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if evals:
        acc = ax.twinx()
        acc.plot(*zip(*evals, strict=True), "o-", label="validation accuracy", color="tab:orange")
        acc.set_ylabel("validation accuracy")
    fig.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
