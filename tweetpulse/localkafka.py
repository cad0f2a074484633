"""`tweetpulse kafka start|stop|status`: the project's local single-node Apache Kafka (deploy/kafka/)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "kafka.sh"


def run(action: str, port: int | None = None, state_dir: str | Path | None = None) -> int:
    """Run deploy/kafka/kafka.sh ACTION; returns its exit code (status: 0 running, 3 stopped)."""
    if action not in {"start", "stop", "status"}:
        raise ValueError(f"unknown action {action!r}: expected start, stop or status")
    if not SCRIPT.is_file():
        raise FileNotFoundError(f"{SCRIPT} not found: the local broker runs from a source checkout")
    env = dict(os.environ)
    if port is not None:
        env["TWEETPULSE_KAFKA_PORT"] = str(port)
    if state_dir is not None:
        env["TWEETPULSE_KAFKA_STATE"] = str(state_dir)
    return subprocess.run(["bash", str(SCRIPT), action], env=env, check=False).returncode
