"""Search for the `fast` preset (MiniLM; `best` before it moved to MPNet): full `finetune` runs (PEFT LoRA + Trainer) side by side.

Each trial trains the `fast` preset with some fields overridden, from the same base on the same
train file, and is scored by the PyTorch fp32 accuracy on the validation file at the epoch's end
(the served int8 model is typically 0-0.5 points lower). Trials run `--parallel` at a time in
their own processes: on a GPU host they share the GPU; on 2 CPU cores run one at a time.

    python benchmarks/lora_search.py --train tweets-train.jsonl --val tweets-val.jsonl --json search.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# name -> overrides of the `fast` preset; compute per trial ~ epochs x max_length (batch size aside)
TRIALS: dict[str, dict[str, Any]] = {
    "best": {},
    "best-seed14": {"seed": 14},
    "lr5e-4": {"learning_rate": 5e-4},
    "lr1.2e-3": {"learning_rate": 1.2e-3},
    "lr2e-3": {"learning_rate": 2e-3},
    "r32": {"r": 32, "lora_alpha": 64},
    "r64": {"r": 64, "lora_alpha": 128},
    "bs16-lr5e-4": {"batch_size": 16, "learning_rate": 5e-4},
    "cosine": {"scheduler": "cosine"},
    "dropout0.1": {"lora_dropout": 0.1},
    "len48": {"max_length": 48},
    "2-epochs": {"epochs": 2},
}


def run_trial(name: str, train: str, val: str, out: Path, max_steps: int | None = None) -> dict[str, Any]:
    import dataclasses

    from tweetpulse.training.base import resolve_base
    from tweetpulse.training.data import load_source, make_splits
    from tweetpulse.training.finetune import finetune
    from tweetpulse.training.presets import PRESETS

    overrides = dict(TRIALS[name])
    seed = int(overrides.pop("seed", 13))
    preset = dataclasses.replace(PRESETS["fast"], **overrides)
    splits = make_splits(load_source(train), load_source(val), seed=seed)
    base, _ = resolve_base(None)
    result = finetune(base, splits, preset, out / name, max_steps=max_steps, seed=seed, progress=False)
    return {
        "trial": name,
        "overrides": TRIALS[name],
        "accuracy_fp32": round(result.eval_metrics["eval_accuracy"], 4),
        "train_seconds": round(result.train_seconds, 1),
        "steps": result.steps,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", required=True, help="labeled training file")
    parser.add_argument("--val", required=True, help="labeled validation file")
    parser.add_argument("--trials", nargs="*", default=list(TRIALS), help="trial names (default: all)")
    parser.add_argument("--parallel", type=int, default=1, help="trials at a time (default 1)")
    parser.add_argument("--max-steps", type=int, help="cap each trial (a smoke run)")
    parser.add_argument("--json", dest="json_path", type=Path, help="also write the results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run this trial, print its JSON
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_trial(args.one, args.train, args.val, args.out, args.max_steps)))
        return 0

    out = Path(tempfile.mkdtemp(prefix="lora-search-"))
    pending, running, results = list(args.trials), {}, []
    env = {**os.environ, "OMP_NUM_THREADS": str(max((os.cpu_count() or 2) // args.parallel, 1))}
    while pending or running:
        while pending and len(running) < args.parallel:
            name = pending.pop(0)
            cmd = [sys.executable, __file__, "--train", args.train, "--val", args.val]
            cmd += ["--one", name, "--out", str(out)] + (
                ["--max-steps", str(args.max_steps)] if args.max_steps else []
            )
            with (out / f"{name}.log").open("w") as errors:
                running[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, env=env)
        time.sleep(1)
        for name, proc in [(n, p) for n, p in running.items() if p.poll() is not None]:
            del running[name]
            lines = proc.stdout.read().decode().strip().splitlines() if proc.stdout else []
            if proc.returncode == 0 and lines:
                result = json.loads(lines[-1])
            else:
                result = {"trial": name, "failed": (out / f"{name}.log").read_text()[-600:]}
            results.append(result)
            print(json.dumps(result), flush=True)
    if args.json_path:
        args.json_path.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
