"""The worst case of the worker's per-message check: `parse_raw` on adversarial values at the size limit.

Each family is built at processor.max_message_bytes (64 KiB by default): bracket floods, strings of
escaped quotes after 17 brackets (quadratic for a regex that strips strings: issue 25), runs of
backslashes and quotes, a valid tweet at the limit, and the named hostile kinds that fit. Prints the slowest run of each family in milliseconds, and the slowest of
all; `--compare REV` runs the same values through `processors/dlq.py` as of a git revision too (the
1.7 s regex of the issue took minutes at 64 KiB, so `--compare-bytes` caps that side's size).

    python benchmarks/parse_worst_case.py --compare b642f35~1 --compare-bytes 16384
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tweetpulse.bench.hostile import HOSTILE
from tweetpulse.bench.machine import cpu_model
from tweetpulse.processors import dlq

LIMIT = dlq.DEFAULT_MAX_MESSAGE_BYTES


def families(size: int) -> dict[str, list[bytes]]:
    pad = size - 18
    return {
        "17 [ then escaped quotes": [b"[" * 17 + b'"' + b'\\"' * (pad // 2)],
        "17 [ then quotes": [b"[" * 17 + b'"' * (pad + 1)],
        "17 [ then backslashes": [b"[" * 17 + b'"' + b"\\" * pad],
        "17 { then key strings": [b"{" * 17 + b'"a":' * (pad // 4)],
        "bracket flood": [b"[" * (size // 2) + b"]" * (size // 2), b"{" * size],
        "valid tweet at the limit": [
            b'{"id": "a", "source": "replay", "text": "' + b"a" * (size - 45) + b'"}'
        ],
        "named hostile kinds": [v for v, _ in HOSTILE.values() if v is not None and len(v) <= size],
    }


def worst_ms(parse: Callable[[bytes], object], values: list[bytes], repeat: int) -> float:
    slowest = 0.0
    for value in values:
        for _ in range(repeat):
            started = time.perf_counter()
            with contextlib.suppress(ValueError):  # BadMessageError: the outcome, timed all the same
                parse(value)
            slowest = max(slowest, time.perf_counter() - started)
    return slowest * 1000


def load_revision(rev: str) -> Callable[[bytes], object]:
    source = subprocess.run(
        ["git", "show", f"{rev}:processors/dlq.py"], check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "dlq_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("dlq_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parse_raw


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bytes", type=int, default=LIMIT, help="value size (default: the size limit)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each value; the slowest counts")
    parser.add_argument("--compare", metavar="REV", help="also time processors/dlq.py at this git revision")
    parser.add_argument("--compare-bytes", type=int, default=16 * 1024, help="value size for --compare")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}")
    rows = [("now", dlq.parse_raw, args.bytes)]
    if args.compare:
        rows.append((args.compare, load_revision(args.compare), args.compare_bytes))
    for name, parse, size in rows:
        timings = {family: worst_ms(parse, values, args.repeat) for family, values in families(size).items()}
        for family, ms in timings.items():
            print(f"{name:>12}  {size // 1024:>3} KiB  {family:<28} {ms:10.2f} ms")
        print(f"{name:>12}  {size // 1024:>3} KiB  {'slowest of all':<28} {max(timings.values()):10.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
