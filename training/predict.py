"""Run an exported ONNX classifier with onnxruntime and tokenizers only (no torch)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from tweetpulse.registry import pad_token


class OnnxClassifier:
    """Tokenize with tokenizer.json, run the graph, return logits (inputs taken from the graph)."""

    def __init__(
        self, model: Path, folder: Path, max_length: int, providers: list[str] | None = None
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.session = ort.InferenceSession(str(model), providers=providers or ["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length)
        pad = pad_token(folder)
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id(pad) or 0, pad_token=pad)

    def logits(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Logits in input order; batches are cut from the texts sorted by length, so pad less."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        ordered = [texts[i] for i in order]
        logits = np.concatenate([self._run(batch) for batch in _batches(ordered, batch_size)])
        out = np.empty_like(logits)
        out[order] = logits
        return out

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.logits(texts, batch_size).argmax(axis=-1)

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return self.session.run(["logits"], {name: arrays[name] for name in self.inputs})[0]


def _batches(texts: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(texts), size):
        yield texts[i : i + size]
