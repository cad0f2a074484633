"""The ONNX sentiment classifier: a fast tokenizer and an ONNX Runtime session, nothing else.

Independent of Kafka and Faust so benchmarks can measure raw model throughput with the same code.
No torch, no transformers: a processor host needs only ``tokenizers``, ``onnxruntime`` and numpy.
"""

from __future__ import annotations

import glob
import logging
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
from tokenizers import Tokenizer

from tweetpulse.contracts import LABELS
from tweetpulse.registry import ArtifactError, ModelArtifact

log = logging.getLogger(__name__)

Provider = Literal["auto", "cpu", "cuda"]
Variant = Literal["auto", "int8", "fp32"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]


def gpu_present() -> bool:
    """A CUDA device node exists (onnxruntime-gpu lists CUDA as available even without a GPU)."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def choose_providers(preference: Provider) -> list[str]:
    """Execution providers in priority order; CUDA first only when asked for or a GPU is present."""
    import onnxruntime as ort  # heavy (~0.2 s, CUDA probing): only where a model is loaded

    cuda_usable = CUDA in ort.get_available_providers()
    if preference == "cuda":
        if not cuda_usable:
            raise ArtifactError("provider 'cuda' requested but onnxruntime has no CUDAExecutionProvider")
        preload_cuda_libraries()
        return [CUDA, CPU]
    if preference == "auto" and cuda_usable and gpu_present():
        preload_cuda_libraries()
        return [CUDA, CPU]
    return [CPU]


def preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from the pip `nvidia-*` packages (the `[gpu]` extra) when they are there;
    libraries already on the loader path need nothing."""
    import onnxruntime as ort  # heavy (~0.2 s, CUDA probing): only where a model is loaded

    preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu >= 1.21
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # a partial install: the session start below reports what is missing
            log.warning("could not preload the CUDA libraries", extra={"error": str(exc)})


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class Classifier:
    """Classifies lists of texts; safe to call from several threads at once (ONNX Runtime sessions and
    fast tokenizers are; both release the GIL), which is how processor.inference_workers runs it."""

    def __init__(
        self,
        artifact: ModelArtifact,
        provider: Provider = "auto",
        variant: Variant = "auto",
        threads: int = 0,
        chunk_size: int = 64,
    ) -> None:
        import onnxruntime as ort  # heavy (~0.2 s, CUDA probing): only where a model is loaded

        self.artifact = artifact
        self.version = artifact.version
        self.chunk_size = chunk_size  # most texts in one ONNX Runtime run
        self.max_length = artifact.max_length  # tokens; longer texts are truncated
        # Padded tokens worth one more run: what a run costs beyond its tokens, in tokens (calibrate).
        self.pad_budget = 0.0
        self.id2label = artifact.id2label
        providers = choose_providers(provider)
        if variant == "auto":
            variant = "fp32" if providers[0] == CUDA else "int8"
        self.model_path = artifact.onnx_path(variant)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads sleep instead of spinning: a worker shares its cores with its event loop,
        # the tokenizer and often other workers, which spinning threads starve (`tweetpulse bench`
        # on a busy 2-core host: 3x slower 4-tweet batches, 1.5x slower 64-tweet batches with spinning).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.model_path), options, providers=providers)
            self.tokenizer = Tokenizer.from_file(str(artifact.path / "tokenizer.json"))
        except Exception as exc:  # onnxruntime and tokenizers raise their own base exceptions
            raise ArtifactError(f"{artifact.path}: cannot open model ({exc})") from exc
        self.tokenizer.no_padding()  # padding is per length-sorted chunk, below
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.provider = self.session.get_providers()[0]
        if providers[0] == CUDA and self.provider != CUDA:  # ONNX Runtime fell back to the CPU silently
            if provider == "cuda":
                raise ArtifactError(
                    "provider 'cuda' requested but ONNX Runtime could not start CUDA (are the CUDA 13 and "
                    "cuDNN 9 libraries installed? `pip install 'tweetpulse[gpu]'`)"
                )
            log.warning(
                "a GPU is present but CUDA did not start; serving on the CPU", extra={"model": variant}
            )
        pad = self.tokenizer.token_to_id(artifact.pad_token)
        self.pad_id = 0 if pad is None else pad

    def __repr__(self) -> str:
        return f"Classifier(version={self.version!r}, model={self.model_path.name}, provider={self.provider})"

    def classify(self, texts: list[str]) -> list[Prediction]:
        """One prediction per text, in input order."""
        if not texts:
            return []
        probabilities = softmax(self.logits(texts))
        labels = [self.id2label[i] for i in range(len(self.id2label))]
        return [
            Prediction(
                labels[int(row.argmax())], {label: float(p) for label, p in zip(labels, row, strict=True)}
            )
            for row in probabilities
        ]

    def logits(self, texts: list[str]) -> np.ndarray:
        """The graph's logits, one row per text in input order; the texts run in chunks of similar
        length (sorted by token count), cut where padding would cost more than another run."""
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        logits = np.empty((len(texts), len(self.id2label)), dtype=np.float32)
        for chunk in self._chunks([len(encodings[i].ids) for i in order]):
            rows = order[chunk]
            logits[rows] = self._logits([encodings[i] for i in rows])
        return logits

    def _chunks(self, lengths: list[int]) -> list[slice]:
        """Slices of the ascending `lengths`, one run each: a text joins the run before it unless that
        run is full (``chunk_size``) or padding the run up to the text's length adds more tokens than
        ``pad_budget`` (on a CPU a MiniLM run costs ~1 token more than its tokens: runs of equal
        lengths; a tiny model's run costs ~65: long runs; a GPU's more still)."""
        chunks, start = [], 0
        for end in range(1, len(lengths)):
            padding = (end - start) * (lengths[end] - lengths[end - 1])
            if end - start >= self.chunk_size or padding > self.pad_budget:
                chunks.append(slice(start, end))
                start = end
        return [*chunks, slice(start, len(lengths))] if lengths else []

    def predict(self, texts: list[str]) -> np.ndarray:
        """Class indices (columns of id2label), one per text."""
        return self.logits(texts).argmax(axis=-1) if texts else np.empty(0, dtype=np.int64)

    def _logits(self, encodings: list) -> np.ndarray:
        """Pads one chunk to its longest text (dynamic padding) and runs the session."""
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
            types[row, :n] = enc.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})[0]

    def warm_up(self) -> float:
        """Runs one small batch so the first real batch does not pay for lazy initialisation."""
        started = time.perf_counter()
        self.classify(["warming up the model", "a second, somewhat longer warm-up text"])
        return time.perf_counter() - started

    def calibrate(self, length: int = 32, texts: int = 8, repeats: int = 5) -> float:
        """Sets ``pad_budget`` from this host: the fastest of `repeats` runs of one text and of `texts`
        texts, all of `length` tokens, interleaved, give a run's cost beyond its tokens, in tokens.
        (The fastest, interleaved: noise only adds time; on a busy host the median of each size in
        turn ranged 0-14.5 tokens over 12 calibrations, this 3.4-5.3.)"""
        text = " ".join(["the"] * length)
        one, many = (self.tokenizer.encode_batch([text] * n) for n in (1, texts))

        def seconds(encodings: list) -> float:
            started = time.perf_counter()
            self._logits(encodings)
            return time.perf_counter() - started

        runs = [(seconds(one), seconds(many)) for _ in range(repeats)]
        single, batch = min(r[0] for r in runs), min(r[1] for r in runs)
        tokens = len(one[0].ids)
        per_token = max(batch - single, 1e-9) / ((texts - 1) * tokens)
        # Bounded: padding past a full run of the longest texts never pays.
        most = float(self.chunk_size * self.max_length)
        self.pad_budget = min(max(single - per_token * tokens, 0.0) / per_token, most)
        return self.pad_budget


def load_classifier(
    artifact: ModelArtifact,
    provider: Provider = "auto",
    variant: Variant = "auto",
    threads: int = 0,
    chunk_size: int = 64,
) -> Classifier:
    """Open and warm a classifier; raises :class:`ArtifactError` for a model that cannot serve."""
    classifier = Classifier(artifact, provider, variant, threads, chunk_size)
    try:
        warm_s = classifier.warm_up()
        classifier.calibrate()
    except Exception as exc:
        raise ArtifactError(f"{artifact.path}: model fails on a warm-up batch ({exc})") from exc
    if set(classifier.id2label.values()) != set(LABELS):
        raise ArtifactError(
            f"{artifact.path}: labels {sorted(classifier.id2label.values())} are not sentiment"
        )
    log.info(
        "model loaded",
        extra={
            "version": classifier.version,
            "provider": classifier.provider,
            "warm_up_s": round(warm_s, 3),
            "pad_budget_tokens": round(classifier.pad_budget, 1),
        },
    )
    return classifier
