"""The served model on a GPU host: CUDA (fp32) beside the same host's CPU (int8), in one run.

What `tweetpulse bench` measures as raw_tps, for both providers side by side, plus a parity check
(CUDA vs CPU fp32 on the same texts: label agreement and the largest probability difference).
Needs only the processor's dependencies (onnxruntime-gpu, tokenizers, numpy, pydantic), no broker:

    python benchmarks/gpu_raw.py --model REGISTRY/versions/v0002 --data tweets-val.jsonl --json gpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tweetpulse.bench.machine import machine_info
from tweetpulse.bench.raw import raw_throughput
from tweetpulse.bench.texts import load_texts, take
from tweetpulse.processors.classifier import Classifier, load_classifier
from tweetpulse.registry import ModelArtifact, load_artifact


def parity(artifact: ModelArtifact, texts: list[str]) -> dict[str, Any]:
    """CUDA fp32 against CPU fp32 on `texts`: same labels, and how far the probabilities differ."""
    cuda: Classifier = load_classifier(artifact, "cuda", "fp32", chunk_size=256)
    cpu: Classifier = load_classifier(artifact, "cpu", "fp32", chunk_size=64)
    on_gpu, on_cpu = cuda.classify(texts), cpu.classify(texts)
    same = sum(a.label == b.label for a, b in zip(on_gpu, on_cpu, strict=True))
    diff = max(
        abs(a.probabilities[k] - b.probabilities[k])
        for a, b in zip(on_gpu, on_cpu, strict=True)
        for k in a.probabilities
    )
    return {"texts": len(texts), "label_agreement": round(same / len(texts), 5), "max_prob_diff": diff}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="exported model folder (a registry version folder)")
    parser.add_argument("--data", help="labeled tweet file (default: ../shared val file, else built-in)")
    parser.add_argument("--texts", type=int, default=8192, help="texts per CUDA configuration (default 8192)")
    parser.add_argument(
        "--cpu-texts", type=int, default=4096, help="texts per CPU configuration (default 4096)"
    )
    parser.add_argument("--json", dest="json_path", type=Path, help="also write the report here")
    args = parser.parse_args(argv)

    artifact = load_artifact(args.model)  # checksums verified: the copy is the published model
    texts, source = load_texts(args.data)
    report: dict[str, Any] = {"machine": machine_info(), "model": artifact.version, "data": source}
    report["parity"] = parity(artifact, take(texts, 2000))
    report["cuda_fp32"] = raw_throughput(artifact, take(texts, args.texts), "cuda", "fp32")
    report["cpu_int8"] = raw_throughput(artifact, take(texts, args.cpu_texts), "cpu", "int8")
    report["cuda_over_cpu"] = round(report["cuda_fp32"]["tps"] / report["cpu_int8"]["tps"], 2)
    for name in ("cuda_fp32", "cpu_int8"):
        part = report[name]
        print(f"{name:10} {part['tps']:>9.1f} tweets/s  best {part['best']}  ({part['provider']})")
    print(f"cuda/cpu   {report['cuda_over_cpu']:>9.2f}x   parity {report['parity']}")
    if args.json_path:
        args.json_path.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
