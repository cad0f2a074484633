"""LoRA fine-tuning with the Hugging Face Trainer, then merging the adapter into the base."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

from tweetpulse.training.base import ID2LABEL, LABEL2ID, target_modules
from tweetpulse.training.data import Example, Splits
from tweetpulse.training.presets import Preset

log = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    model: PreTrainedModel  # the merged model (adapter folded into the base), in eval mode
    tokenizer: PreTrainedTokenizerBase
    target_modules: list[str]
    log_history: list[dict[str, Any]]
    eval_metrics: dict[str, float]
    train_seconds: float
    steps: int


def tokenize(tokenizer: PreTrainedTokenizerBase, examples: list[Example], max_length: int) -> list[dict]:
    """Unpadded features (the collator pads each batch to its longest text)."""
    encoded = tokenizer([t for t, _ in examples], truncation=True, max_length=max_length)
    return [
        {**{k: encoded[k][i] for k in encoded}, "labels": LABEL2ID[label]}
        for i, (_, label) in enumerate(examples)
    ]


def _accuracy(eval_pred: Any) -> dict[str, float]:
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def load_base(base: str, targets: list[str] | None, preset: Preset):
    """The base model with a fresh classification head and LoRA adapters, and its tokenizer."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=2, id2label=ID2LABEL, label2id=LABEL2ID, ignore_mismatched_sizes=True
        )
    except OSError as exc:  # not a folder, and the hub is unreachable or has no such model
        raise FileNotFoundError(f"cannot load base model {base!r}: {exc}") from None
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
) -> FinetuneResult:
    """Train LoRA adapters with `preset`, evaluate at each epoch's end, merge and return the model."""
    torch.manual_seed(seed)
    model, tokenizer, targets = load_base(base, targets, preset)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("lora model ready", extra={"trainable": trainable, "total": total, "targets": targets})
    train_set = tokenize(tokenizer, splits.train, preset.max_length)
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
        report_to=[],
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
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
    evals = [e for e in trainer.state.log_history if "eval_accuracy" in e]  # the epoch-end evaluation
    eval_metrics = evals[-1] if evals else trainer.evaluate()
    eval_metrics = {k: float(v) for k, v in eval_metrics.items() if k.startswith("eval_")}
    log.info("fine-tuned", extra={"seconds": round(seconds, 1), **eval_metrics})
    model.save_pretrained(work_dir / "adapter")  # for `tweetpulse export --adapter` later
    tokenizer.save_pretrained(work_dir / "adapter")
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


def load_merged(base: str, adapter: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A saved LoRA adapter (with its classifier head) merged into its base model."""
    from peft import PeftModel

    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=ID2LABEL, label2id=LABEL2ID, ignore_mismatched_sizes=True
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
